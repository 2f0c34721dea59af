"""Feast online stores with a bulk write path: the supported way (``online_store: type:
features.online_store.Bulk…OnlineStore``) to make materialization fast.

Feast's stock path turns every (entity, feature) value into a protobuf in Python and writes it row by
row (~2.5k entities/s on SQLite here). These subclasses keep Feast's on-disk formats and read paths
unchanged (``get_online_features`` reads them with the stock ``online_read``) and add
``bulk_write(config, feature_view, frame)``, which encodes whole columns at once with numpy:

- entity keys: Feast's ``serialize_entity_key`` layout, a constant prefix + the 8-byte id;
- values: the serialized ``ValueProto`` bytes (double = tag + 8 bytes, int64 = tag + varint,
  string = tag + length + utf-8, null = empty message), checked byte-for-byte against Feast's own
  converter in the tests;
- SQLite: one row per (entity, feature) as Feast reads it, loaded through a staging table and one
  ``INSERT … SELECT`` in key order into a ``WITHOUT ROWID`` table (no separate rowid b-tree);
- Redis: one hash per entity (mmh3 field names, ``_ts:<view>`` timestamp), sent as pre-built RESP
  ``HSET`` commands over one connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from feast.feature_view import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_table_id
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    _versioned_fv_name,
)
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig, _quote_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig
from feast.types import Bool, Float32, Float64, Int32, Int64, String
from google.protobuf.timestamp_pb2 import Timestamp

Progress = Callable[[int], object] | None

# ValueProto field tags (field number << 3 | wire type).
_TAG_STRING = 0x12  # 2, length-delimited
_TAG_INT32 = 0x18  # 3, varint
_TAG_INT64 = 0x20  # 4, varint
_TAG_DOUBLE = 0x29  # 5, 64-bit
_TAG_FLOAT = 0x35  # 6, 32-bit
_TAG_BOOL = 0x38  # 7, varint


# --- Encoding whole columns --------------------------------------------------------------------


class Encoded:
    """A column of byte strings: fixed-width rows in a uint8 matrix when possible (cheap to frame
    and concatenate with numpy), else a list of ``bytes``."""

    def __init__(self, fixed: np.ndarray | None = None, items: list[bytes] | None = None):
        self.fixed = fixed
        self.items = items

    def __len__(self) -> int:
        return len(self.fixed) if self.fixed is not None else len(self.items)

    def tolist(self) -> list[bytes]:
        if self.items is not None:
            return self.items
        width = self.fixed.shape[1]
        return np.ascontiguousarray(self.fixed).view(f"V{width}").ravel().tolist()

    def framed(self, prefix: bytes, suffix: bytes) -> Encoded:
        """Each item wrapped as ``prefix + item + suffix``."""
        if self.fixed is not None:
            n = len(self.fixed)
            pre = np.broadcast_to(np.frombuffer(prefix, np.uint8), (n, len(prefix)))
            suf = np.broadcast_to(np.frombuffer(suffix, np.uint8), (n, len(suffix)))
            return Encoded(fixed=np.hstack([pre, self.fixed, suf]))
        return Encoded(items=[prefix + item + suffix for item in self.items])

    def take(self, order: np.ndarray) -> Encoded:
        if self.fixed is not None:
            return Encoded(fixed=self.fixed[order])
        return Encoded(items=[self.items[i] for i in order])


def _varint_matrix(values: np.ndarray, tag: int) -> Encoded:
    """``tag + varint(value)`` for an int64 array (negatives as 10-byte two's complement)."""
    u = np.asarray(values, dtype=np.int64).view(np.uint64)
    n_bytes = np.ones(len(u), np.int64)
    for k in range(1, 10):
        n_bytes += u >= (np.uint64(1) << np.uint64(7 * k))
    out = np.zeros((len(u), 11), np.uint8)
    out[:, 0] = tag
    for i in range(10):
        low = ((u >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8)
        out[:, 1 + i] = low | np.where(i < n_bytes - 1, 0x80, 0).astype(np.uint8)
    widths = n_bytes + 1  # incl. the tag
    if len(u) == 0 or (widths == widths[0]).all():
        return Encoded(fixed=out[:, : int(widths[0]) if len(u) else 2])
    items: list[bytes] = [b""] * len(u)
    for width in np.unique(widths).tolist():
        idx = np.flatnonzero(widths == width)
        chunk = np.ascontiguousarray(out[idx, :width]).view(f"V{width}").ravel().tolist()
        for i, item in zip(idx.tolist(), chunk, strict=True):
            items[i] = item
    return Encoded(items=items)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_values(series: pd.Series, dtype) -> Encoded:
    """Serialized ``ValueProto`` of every value of a column, as Feast writes them (null → empty)."""
    null = series.isna().to_numpy()
    values = series
    if dtype in (Float64, Float32):
        np_dtype, tag = ("<f8", _TAG_DOUBLE) if dtype == Float64 else ("<f4", _TAG_FLOAT)
        arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float).astype(np_dtype)
        body = arr.view(np.uint8).reshape(len(arr), -1)
        enc = Encoded(fixed=np.hstack([np.full((len(arr), 1), tag, np.uint8), body]))
    elif dtype in (Int64, Int32, Bool):
        tag = {Int64: _TAG_INT64, Int32: _TAG_INT32, Bool: _TAG_BOOL}[dtype]
        filled = values.where(~null, 0) if null.any() else values
        enc = _varint_matrix(np.asarray(filled, dtype=np.int64), tag)
    elif dtype == String:
        items = []
        for v in values.astype(object).tolist():
            raw = str(v).encode()
            items.append(bytes([_TAG_STRING]) + _varint(len(raw)) + raw)
        enc = Encoded(items=items)
    else:
        raise TypeError(f"bulk write does not encode {dtype}; use the stock materialize path")
    if null.any():
        items = enc.tolist()
        for i in np.flatnonzero(null).tolist():
            items[i] = b""
        enc = Encoded(items=items)
    return enc


def encode_entity_keys(ids: pd.Series, join_key: str, version: int = 3) -> Encoded:
    """``serialize_entity_key`` of single int64 (vectorised) or string join keys."""
    if pd.api.types.is_integer_dtype(ids):
        template = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=0)])
        prefix = serialize_entity_key(template, entity_key_serialization_version=version)[:-8]
        body = np.asarray(ids, dtype="<i8").view(np.uint8).reshape(len(ids), 8)
        enc = Encoded(fixed=body).framed(prefix, b"")
        first = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=int(ids.iloc[0]))])  # fmt: skip
        # A cheap guard that the layout still matches this Feast version.
        if len(ids) and enc.tolist()[0] != serialize_entity_key(first, version):
            raise RuntimeError("entity key layout differs from Feast's serialize_entity_key")
        return enc
    return Encoded(
        items=[
            serialize_entity_key(
                EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(string_val=str(v))]),
                entity_key_serialization_version=version,
            )
            for v in ids.tolist()
        ]
    )


def _key_order(ids: pd.Series) -> np.ndarray:
    """Row order that sorts the serialized keys bytewise (b-tree friendly inserts)."""
    if pd.api.types.is_integer_dtype(ids):
        # Little-endian bytes compare like the big-endian reading of the same memory.
        return np.argsort(np.asarray(ids, dtype="<i8").view(">u8"), kind="stable")
    return np.argsort(ids.astype(str).to_numpy(), kind="stable")


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Naive-UTC timestamps as Unix seconds (Feast's SQLite adapter stores ints)."""
    ts = pd.to_datetime(ts)
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return (ts.astype("datetime64[us]").astype("int64") // 1_000_000).to_numpy()


# --- SQLite ------------------------------------------------------------------------------------


class BulkSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    type: Literal["features.online_store.BulkSqliteOnlineStore"] = (
        "features.online_store.BulkSqliteOnlineStore"
    )


class BulkSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store with WITHOUT ROWID tables and a set-based bulk write."""

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete,
        entities_to_keep,
        partial: bool,
    ):
        conn = self._get_conn(config)
        versioning = config.registry.enable_online_feature_view_versioning
        for table in tables_to_keep:
            name = _quote_id(compute_table_id(config.project, table, versioning))
            # Same columns Feast reads; the primary key is the clustered index, so lookups by
            # entity_key use its prefix and no rowid b-tree or extra index slows the writes.
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (entity_key BLOB, feature_name TEXT, "
                "value BLOB, value_text TEXT, vector_value BLOB, event_ts timestamp, "
                "created_ts timestamp, PRIMARY KEY (entity_key, feature_name)) WITHOUT ROWID"
            )
        for table in tables_to_delete:
            name = _quote_id(compute_table_id(config.project, table, versioning))
            conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.commit()

    def bulk_write(
        self,
        config: RepoConfig,
        feature_view: FeatureView,
        frame: pd.DataFrame,
        join_key: str,
        timestamp_field: str,
        progress: Progress = None,
        chunk_size: int = 250_000,
    ) -> int:
        """Upsert the latest row per entity of ``frame`` in Feast's SQLite layout."""
        conn = self._get_conn(config)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB page cache for the load
        table = _quote_id(
            compute_table_id(
                config.project, feature_view, config.registry.enable_online_feature_view_versioning
            )
        )
        features = sorted(feature_view.features, key=lambda f: f.name)  # key order in the b-tree
        frame = frame.iloc[_key_order(frame[join_key])]
        value_cols = ", ".join(f"v{i} BLOB" for i in range(len(features)))
        conn.execute("DROP TABLE IF EXISTS temp.bulk_stage")
        conn.execute(f"CREATE TEMP TABLE bulk_stage (k BLOB, ts INTEGER, {value_cols})")
        conn.execute("DROP TABLE IF EXISTS temp.bulk_names")
        conn.execute("CREATE TEMP TABLE bulk_names (i INTEGER, name TEXT)")
        conn.executemany(
            "INSERT INTO bulk_names VALUES (?, ?)", [(i, f.name) for i, f in enumerate(features)]
        )
        pick = " ".join(f"WHEN {i} THEN s.v{i}" for i in range(len(features)))
        marks = ", ".join("?" for _ in range(len(features) + 2))
        written = 0
        with conn:
            for start in range(0, len(frame), chunk_size):
                part = frame.iloc[start : start + chunk_size]
                keys = encode_entity_keys(
                    part[join_key], join_key, config.entity_key_serialization_version
                ).tolist()
                stamps = _epoch_seconds(part[timestamp_field]).tolist()
                columns = [encode_values(part[f.name], f.dtype).tolist() for f in features]
                conn.execute("DELETE FROM bulk_stage")
                conn.executemany(
                    f"INSERT INTO bulk_stage VALUES ({marks})",
                    zip(keys, stamps, *columns, strict=True),
                )
                # CROSS JOIN keeps bulk_stage outermost: rows arrive in (entity_key, name) order.
                conn.execute(
                    f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
                    f"SELECT s.k, n.name, CASE n.i {pick} END, NULL, s.ts, NULL "
                    "FROM bulk_stage s CROSS JOIN bulk_names n WHERE true "
                    "ON CONFLICT (entity_key, feature_name) DO UPDATE SET value = excluded.value, "
                    "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
                )  # fmt: skip
                written += len(part)
                if progress:
                    progress(len(part))
        conn.execute("DROP TABLE IF EXISTS temp.bulk_stage")
        return written


# --- Redis -------------------------------------------------------------------------------------


class BulkRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    type: Literal["features.online_store.BulkRedisOnlineStore"] = (  # type: ignore[assignment]
        "features.online_store.BulkRedisOnlineStore"
    )


def _bulk_str(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


class BulkRedisOnlineStore(RedisOnlineStore):
    """Feast's Redis online store plus a bulk write of pre-encoded HSET commands."""

    def bulk_write(
        self,
        config: RepoConfig,
        feature_view: FeatureView,
        frame: pd.DataFrame,
        join_key: str,
        timestamp_field: str,
        progress: Progress = None,
        chunk_size: int = 20_000,
    ) -> int:
        """Write the latest row per entity of ``frame`` as Feast's Redis hashes (one per entity,
        overwriting the view's fields; other views' fields in the same hash are kept)."""
        client = self._get_client(config.online_store)
        fv_name = _versioned_fv_name(feature_view, config)
        features = list(feature_view.features)
        n_args = 2 + 2 * (len(features) + 1)
        project = config.project.encode()
        ttl = config.online_store.key_ttl_seconds

        conn = client.connection_pool.get_connection()
        written = 0
        try:
            for start in range(0, len(frame), chunk_size):
                part = frame.iloc[start : start + chunk_size]
                keys = encode_entity_keys(
                    part[join_key], join_key, config.entity_key_serialization_version
                )
                command = b"*%d\r\n$4\r\nHSET\r\n" % n_args
                if keys.fixed is not None:
                    keys = keys.framed(b"", project)
                    width = keys.fixed.shape[1]
                    head = keys.framed(command + b"$%d\r\n" % width, b"\r\n").tolist()
                else:
                    keys = Encoded(items=[k + project for k in keys.items])
                    head = [command + _bulk_str(k) for k in keys.items]
                segments = [head, self._timestamps(part[timestamp_field], fv_name)]
                for f in features:
                    field = _bulk_str(_mmh3(f"{fv_name}:{f.name}"))
                    segments.append(self._framed_values(part[f.name], f.dtype, field))
                commands = [b"".join(parts) for parts in zip(*segments, strict=True)]
                if ttl:
                    commands = [
                        c + b"*3\r\n$6\r\nEXPIRE\r\n" + _bulk_str(k) + _bulk_str(str(ttl).encode())
                        for c, k in zip(commands, keys.tolist(), strict=True)
                    ]
                conn.send_packed_command([b"".join(commands)], check_health=False)
                for _ in range(len(commands) * (2 if ttl else 1)):
                    conn.read_response()  # raises on an error reply
                written += len(part)
                if progress:
                    progress(len(part))
        finally:
            client.connection_pool.release(conn)
        return written

    @staticmethod
    def _framed_values(series: pd.Series, dtype, field: bytes) -> list[bytes]:
        enc = encode_values(series, dtype)
        if enc.fixed is not None:
            width = enc.fixed.shape[1]
            return enc.framed(field + b"$%d\r\n" % width, b"\r\n").tolist()
        return [field + _bulk_str(v) for v in enc.items]

    @staticmethod
    def _timestamps(ts: pd.Series, fv_name: str) -> list[bytes]:
        """``_ts:<view>`` field with a protobuf Timestamp per row (encoded once per distinct time)."""
        field = _bulk_str(f"_ts:{fv_name}".encode())
        codes, uniques = pd.factorize(pd.to_datetime(ts))
        encoded = []
        for value in uniques:
            stamp = Timestamp()
            stamp.FromDatetime(pd.Timestamp(value).tz_localize(None).to_pydatetime())
            encoded.append(field + _bulk_str(stamp.SerializeToString()))
        return [encoded[c] for c in codes.tolist()]


def sqlite_row_count(path: str, table: str) -> int:
    """Rows in one online table (for tests and benchmarks)."""
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {_quote_id(table)}").fetchone()[0]


__all__ = [
    "BulkRedisOnlineStore",
    "BulkRedisOnlineStoreConfig",
    "BulkSqliteOnlineStore",
    "BulkSqliteOnlineStoreConfig",
    "encode_entity_keys",
    "encode_values",
]
