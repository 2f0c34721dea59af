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

from features.online_store import encode_entity_keys, encode_values


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
