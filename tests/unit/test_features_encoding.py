"""The bulk online path writes exactly the bytes Feast's own write path writes."""

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
