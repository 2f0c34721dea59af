"""The bulk online path writes exactly the bytes Feast's own write path writes, over connections of
its own to the database or server Feast's config names."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
from crm_predict.features.online_store import (
    Encoded,
    encode_entity_keys,
    encode_values,
    feature_field,
    hset_commands,
)
from crm_predict.features.store import feature_store
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import compute_table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Float64, Int64, String

from crm_predict.core.settings import Settings


def _frame(n: int = 200, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1e6, n)
    x[rng.random(n) < 0.2] = np.nan
    x[:3] = [0.0, -0.0, 1.5]
    counts = rng.integers(-(2**40), 2**40, n)
    counts[:6] = [0, 1, 127, 128, -1, 2**62]
    text = rng.choice(np.array(["north", "ü-süd", "", "a" * 200, None], dtype=object), n)
    return pd.DataFrame(
        {
            "customer_id": rng.permutation(np.arange(1, n + 1)) * 1_000_003,
            "event_timestamp": pd.Timestamp("2026-06-30"),
            "x": x,
            "n": counts,
            "s": text,
        }
    )


def test_encoded_values_are_byte_identical_to_feasts_write_path(tmp_path):
    """The rows Feast's stock SQLite store keeps after ``write_to_online_store`` (its own
    conversion and write): per entity key and feature, the value bytes the bulk encoders give."""
    frame = _frame()
    entity = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    schema = {"x": Float64, "n": Int64, "s": String}
    view = FeatureView(
        name="v",
        entities=[entity],
        schema=[Field(name=k, dtype=t) for k, t in schema.items()],
        source=FileSource(path=str(tmp_path / "unused.parquet"), timestamp_field="event_timestamp"),
    )
    store = feature_store(Settings(data_dir=tmp_path / "data"), bulk=False)
    store.apply([entity, view])
    store.write_to_online_store(view.name, frame)
    config = store.config
    table = compute_table_id(
        config.project, view, config.registry.enable_online_feature_view_versioning
    )
    with sqlite3.connect(config.online_store.path) as conn:
        rows = conn.execute(f'SELECT entity_key, feature_name, value FROM "{table}"').fetchall()
    stored = {(key, name): value for key, name, value in rows}

    keys = encode_entity_keys(frame["customer_id"], "customer_id").tolist()
    assert len(stored) == len(keys) * len(schema)
    for name, dtype in schema.items():
        expected = [stored[key, name] for key in keys]
        assert encode_values(frame[name], dtype).tolist() == expected, name


def test_entity_keys_match_feasts_serialization():
    ids = pd.Series([1, 2, 300, 2**40, 7], dtype="int64")
    expected = [
        serialize_entity_key(
            EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=i)]), 3
        )  # fmt: skip
        for i in ids
    ]
    assert encode_entity_keys(ids, "customer_id").tolist() == expected


def test_hset_commands_are_resp_hsets_of_each_rows_fields():
    """One ``HSET`` per row in RESP: the key (with the project suffix), then each field with the
    row's value (numpy-framed columns first: a hash has no order); a null is the empty value, as Feast writes an empty ``ValueProto``. Fixed-width
    keys and columns (numpy-framed) and dictionary ones give the same commands."""

    def resp(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    floats = np.frombuffer(b"abcdef", np.uint8).reshape(3, 2).copy()
    values = [
        Encoded(uniques=[b"\x29abcdefgh", b"y" * 70], codes=np.array([0, 1, -1])),
        Encoded(fixed=floats, null=np.array([False, True, False])),
        Encoded(fixed=floats),
    ]
    expected = [
        resp(b"HSET", b"k1p", b"f", b"\x29abcdefgh", b"g", b"ab", b"h", b"ab"),
        resp(b"HSET", b"k2p", b"f", b"y" * 70, b"g", b"", b"h", b"cd"),
        resp(b"HSET", b"k1p", b"f", b"", b"g", b"ef", b"h", b"ef"),
    ]
    by_code = Encoded(uniques=[b"k1", b"k2"], codes=np.array([0, 1, 0]))
    fixed = Encoded(fixed=np.frombuffer(b"k1k2k1", np.uint8).reshape(3, 2).copy())
    for keys in (by_code, fixed):
        got = hset_commands(keys, [b"f", b"g", b"h"], values, b"p")
        assert [_hset(c) for c in got] == [_hset(c) for c in expected]


def _hset(command: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """(key, {field: value}) of one RESP ``HSET``, checking its framing."""
    head, rest = command.split(b"\r\n", 1)
    args = []
    while rest:
        size, rest = rest.split(b"\r\n", 1)
        n = int(size[1:])
        args.append(rest[:n])
        assert rest[n : n + 2] == b"\r\n"
        rest = rest[n + 2 :]
    assert head == b"*%d" % len(args) and args[0] == b"HSET"
    return args[1], dict(zip(args[2::2], args[3::2], strict=True))


def test_feature_field_is_feasts_murmur3_layout():
    """Feast keys a feature's hash field by murmur3_32 (unsigned) of ``view:feature``, written as
    the low 4 bytes of a little-endian 64-bit integer (the Redis test checks it against Feast's
    own writes)."""
    import struct

    import mmh3

    for view, feature in (("churn_profile", "spend_12m"), ("v", "ü"), ("w" * 100, "x" * 300)):
        expected = struct.pack("<Q", mmh3.hash(f"{view}:{feature}", signed=False))[:4]
        assert feature_field(view, feature) == expected


def test_bulk_redis_client_follows_feasts_connection_string():
    """The bulk write's own client reaches the server, database and credentials Feast's
    connection string names (the form ``features.store.redis_connection_string`` writes)."""
    from crm_predict.features.online_store import redis_client
    from crm_predict.features.store import redis_connection_string
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    for url, expected in (
        ("redis://127.0.0.1:6390/2", {"host": "127.0.0.1", "port": 6390, "db": 2}),
        (
            "redis://:s3cr%3Dt@cache.local/0",
            {"host": "cache.local", "port": 6379, "db": 0, "password": "s3cr=t"},
        ),  # fmt: skip
        ("redis://h:7000", {"host": "h", "port": 7000, "db": 0, "password": None}),
    ):
        store = RedisOnlineStoreConfig(connection_string=redis_connection_string(url))
        kwargs = redis_client(store).connection_pool.connection_kwargs
        assert {k: kwargs.get(k) for k in expected} == expected, url
    tls = RedisOnlineStoreConfig(connection_string=redis_connection_string("rediss://h:7000"))
    assert redis_client(tls).connection_pool.connection_class.__name__ == "SSLConnection"


def test_bulk_sqlite_store_survives_teardown(tmp_path):
    """After Feast's teardown deletes the database, the store writes and reads a new one (its
    own write connection is closed with the file, not left on the deleted one)."""
    entity = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="v",
        entities=[entity],
        schema=[Field(name="x", dtype=Float64)],
        source=FileSource(path=str(tmp_path / "unused.parquet"), timestamp_field="event_timestamp"),
    )
    frame = pd.DataFrame(
        {"customer_id": [1, 2], "event_timestamp": pd.Timestamp("2026-06-30"), "x": [1.5, 2.5]}
    )
    store = feature_store(Settings(data_dir=tmp_path / "data"))
    for x in ([1.5, 2.5], [3.5, 4.5]):
        store.apply([entity, view])
        store.write_to_online_store(view.name, frame.assign(x=x))
        got = store.get_online_features(
            features=["v:x"], entity_rows=[{"customer_id": 1}, {"customer_id": 2}]
        ).to_dict()
        assert got["x"] == x
        store.teardown()
