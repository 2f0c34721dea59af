"""The bulk online path writes exactly the bytes Feast's own conversion writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Float64, Int64, String
from feast.utils import _convert_arrow_to_proto

from features.online_store import Encoded, encode_entity_keys, encode_values, restore_payloads


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


def test_encoded_values_are_byte_identical_to_feasts_conversion():
    frame = _frame()
    entity = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    schema = {"x": Float64, "n": Int64, "s": String}
    view = FeatureView(
        name="v",
        entities=[entity],
        schema=[Field(name=k, dtype=t) for k, t in schema.items()],
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
    )
    rows = _convert_arrow_to_proto(
        pa.Table.from_pandas(frame), view, {"customer_id": ValueType.INT64}
    )
    for name, dtype in schema.items():
        expected = [values[name].SerializeToString() for _, values, _, _ in rows]
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


def _crc64_jones(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x95AC9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc


def _listpack_entry(value: bytes) -> bytes:
    n = len(value)
    if n < 64:
        head = bytes([0x80 | n])
    elif n < 4096:
        head = bytes([0xE0 | (n >> 8), n & 0xFF])
    else:
        head = b"\xf0" + n.to_bytes(4, "little")
    size = len(head) + n
    # Redis's thresholds (lpEncodeBacklen): 16383 itself already takes three bytes.
    width = 1 if size <= 127 else 2 if size < 16383 else 3 if size < 2097151 else 4
    back = [(size >> 7 * (width - 1)) & 127] + [(size >> 7 * k) & 127 | 128 for k in reversed(range(width - 1))]  # fmt: skip
    return head + value + bytes(back)


def _dump_hash(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Redis's DUMP format of a listpack hash, written from the format's description."""
    body = b"".join(_listpack_entry(x) for pair in pairs for x in pair)
    lp = (7 + len(body)).to_bytes(4, "little") + (2 * len(pairs)).to_bytes(2, "little") + body + b"\xff"  # fmt: skip
    n = len(lp)
    length = bytes([n]) if n < 64 else bytes([0x40 | n >> 8, n & 0xFF]) if n < 16384 else b"\x80" + n.to_bytes(4, "big")  # fmt: skip
    payload = b"\x10" + length + lp + (10).to_bytes(2, "little")
    return payload + _crc64_jones(payload).to_bytes(8, "little")


def test_restore_payloads_follow_the_dump_format():
    assert _crc64_jones(b"123456789") == 0xE9C6D914C4B8D9CA  # the reference check value
    big = bytes(range(256)) * 70  # 4-byte string length, 3-byte back-length, 32-bit RDB length
    keys = Encoded(uniques=[b"k1", b"k2" * 40], codes=np.array([0, 1, 0]))
    floats = np.frombuffer(b"abcdef", np.uint8).reshape(3, 2).copy()
    values = [
        Encoded(uniques=[b"\x29abcdefgh", b"y" * 70, b"z" * 300], codes=np.array([0, 1, -1])),
        Encoded(fixed=floats, null=np.array([False, True, False])),
        Encoded(uniques=[big, b"q" * 16378], codes=np.array([0, -1, 1])),
    ]
    rows = [
        [(b"f", b"\x29abcdefgh"), (b"g", b"ab"), (b"h", big)],
        [(b"f", b"y" * 70), (b"g", b""), (b"h", b"")],
        [(b"f", b""), (b"g", b"ef"), (b"h", b"q" * 16378)],  # entry of 16383 bytes
    ]
    expected = b""
    for key, pairs in zip([b"k1", b"k2" * 40, b"k1"], rows, strict=True):
        payload = _dump_hash(pairs)
        expected += b"*4\r\n$7\r\nRESTORE\r\n$%d\r\n%sp\r\n$4\r\n5000\r\n$%d\r\n%s\r\n" % (
            len(key) + 1, key, len(payload), payload
        )  # fmt: skip
    assert restore_payloads(keys, [b"f", b"g", b"h"], values, b"p", 5000).tobytes() == expected
