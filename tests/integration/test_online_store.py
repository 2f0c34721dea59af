"""Offline → online round trip through the bulk write path, on SQLite and on real Redis: what Feast's
``get_online_features`` returns equals the features the batch job computes for the same time, and
the online API's own FeatureService reader returns exactly what Feast returns."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.features.export import export, export_as_of
from crm_predict.features.materialize import materialize
from crm_predict.features.online import ServiceReader, UnknownEntityError, online_features
from crm_predict.features.scoring import scoring_frame
from crm_predict.features.store import apply
from feature_sample import build_crm

from crm_predict.core.rules import MODEL_NAMES
from crm_predict.core.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("online") / "data")
    settings.ensure_dirs()
    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        build_crm(session)
        export(session, settings)
    engine.dispose()
    return settings


def _assert_round_trip(settings: Settings, store) -> None:
    as_of = export_as_of(settings)
    for model in MODEL_NAMES:
        expected = scoring_frame(settings, model, as_of)
        got = online_features(store, model, expected["entity_id"].tolist())
        pd.testing.assert_frame_equal(
            got.reset_index(drop=True), expected, check_dtype=False, obj=model
        )


@pytest.fixture(scope="module")
def sqlite_store(exported):
    store = apply(exported)
    counts = materialize(store, export_as_of(exported))
    return store, counts


def test_sqlite_round_trip_offline_to_online(exported, sqlite_store):
    store, counts = sqlite_store
    assert counts["customer_transactions"] == 2
    _assert_round_trip(exported, store)


def test_unknown_entities_are_named(sqlite_store):
    store, _ = sqlite_store
    with pytest.raises(UnknownEntityError, match="424242, 434343"):
        online_features(store, "churn", [3, 424242, 434343])
    assert online_features(store, "churn", 3)["entity_id"].tolist() == [3]


def test_feast_stock_write_path_round_trips_into_the_compact_layout(exported, sqlite_store):
    store, _ = sqlite_store
    as_of = export_as_of(exported)
    before = online_features(store, "deal_health", [2])
    materialize(store, as_of, views=["deal_activity"], stock=True)
    pd.testing.assert_frame_equal(online_features(store, "deal_health", [2]), before)


@contextmanager
def _redis_store(exported: Settings, redis_url: str):
    """The exported features applied under a fresh project and materialized into real Redis."""
    import redis

    settings = exported.model_copy(update={"online_store": "redis", "redis_url": redis_url})
    project = f"t{uuid.uuid4().hex[:10]}"
    store = apply(settings, project=project)
    try:
        materialize(store, export_as_of(settings))
        yield settings, store
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"*{project}"))
        if keys:
            client.delete(*keys)


def test_redis_round_trip_offline_to_online(exported, redis_url):
    with _redis_store(exported, redis_url) as (settings, store):
        _assert_round_trip(settings, store)
        with pytest.raises(UnknownEntityError, match="999"):
            online_features(store, "next_best_time", [999])


# --- the online API's FeatureService reader equals Feast's get_online_features --------------------


def _assert_reader_equals_feast(settings: Settings, store) -> None:
    """Stored views and the on-demand rule score, values and dtypes, in any order and repeated."""
    as_of = export_as_of(settings)
    for model in MODEL_NAMES:
        reader = ServiceReader.open(store, model)
        ids = scoring_frame(settings, model, as_of)["entity_id"].tolist()
        for wanted in (ids, ids[:1], list(reversed(ids)) + ids[:1]):
            typed = reader.read(wanted)
            pd.testing.assert_frame_equal(typed, online_features(store, model, wanted), obj=model)
            # The object-block frame holds the same values (types as Feast gives them); one row
            # of it is the typed frame once pandas infers the dtypes.
            objects = reader.read(wanted, typed=False)
            # One object block: to_numpy hands out that block itself, not a fresh copy per call.
            assert all(d.kind == "O" for d in objects.dtypes)
            assert np.shares_memory(objects.to_numpy(), objects.to_numpy())
            assert objects.to_numpy(dtype=object).tolist() == _plain(typed)
            if len(wanted) == 1:
                pd.testing.assert_frame_equal(objects.infer_objects(), typed, obj=model)
        for i in ids:
            pd.testing.assert_frame_equal(
                reader.read([i], typed=False).infer_objects(), reader.read([i]), obj=model
            )
        with pytest.raises(UnknownEntityError, match="987654") as caught:
            reader.read([ids[0], 987654])
        assert caught.value.entity_ids == [987654]


def _plain(frame: pd.DataFrame) -> list[list]:
    """Rows as Python values, blanks (NaN from pandas' numeric inference) as None."""
    return [[None if pd.isna(v) else v for v in row] for row in frame.to_numpy(dtype=object).tolist()]  # fmt: skip


def test_reader_equals_feast_on_sqlite(exported, sqlite_store):
    _assert_reader_equals_feast(exported, sqlite_store[0])


def test_reader_equals_feast_on_redis(exported, redis_url):
    with _redis_store(exported, redis_url) as (settings, store):
        _assert_reader_equals_feast(settings, store)


def _bulk_redis_views(tmp_path, schemas: dict[str, dict]):
    from feast import Entity, FeatureView, Field, FileSource, ValueType

    entity = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    views = [
        FeatureView(
            name=name,
            entities=[entity],
            schema=[Field(name=k, dtype=t) for k, t in schema.items()],
            source=FileSource(
                path=str(tmp_path / "unused.parquet"), timestamp_field="event_timestamp"
            ),
        )
        for name, schema in schemas.items()
    ]
    return entity, views


def test_redis_bulk_write_writes_the_hashes_feast_writes(tmp_path, redis_url):
    """Bulk-written hashes equal, field for field, the ones Feast's own Redis store writes for
    the same rows (``write_to_online_store`` on the stock store); a second view's bulk write
    merges into the same hashes (one HSET each)."""
    import redis
    from crm_predict.features.online_store import BulkRedisOnlineStore
    from crm_predict.features.store import feature_store, repo_config
    from feast.types import Float64, Int64, String

    rng = np.random.default_rng(5)
    n = 300
    x = rng.normal(0, 1e3, n)
    x[rng.random(n) < 0.2] = np.nan
    frame = pd.DataFrame(
        {
            "customer_id": rng.permutation(np.arange(1, n + 1)) * 7919,
            "event_timestamp": pd.Timestamp("2026-06-30 12:00", tz="UTC")
            - pd.to_timedelta(rng.integers(0, 10**6, n), unit="s"),
            "x": x,
            "k": rng.integers(-(2**40), 2**40, n),
            "s": rng.choice(np.array(["a", "ü", "", "z" * 70, "y" * 300, None], dtype=object), n),
        }
    )
    entity, (view, other) = _bulk_redis_views(
        tmp_path, {"bulk_v": {"x": Float64, "k": Int64, "s": String}, "bulk_w": {"x": Float64}}
    )
    settings = Settings(data_dir=tmp_path / "d", online_store="redis", redis_url=redis_url)
    projects = {p: f"t{uuid.uuid4().hex[:10]}" for p in ("bulk", "stock")}
    client = redis.Redis.from_url(redis_url)
    try:
        bulk_config = repo_config(settings, projects["bulk"])
        bulk = BulkRedisOnlineStore()
        assert bulk.bulk_write(bulk_config, view, frame, "customer_id", "event_timestamp") == n
        before = client.info("commandstats").get("cmdstat_hset", {}).get("calls", 0)
        bulk.bulk_write(bulk_config, other, frame, "customer_id", "event_timestamp")
        merged = client.info("commandstats")["cmdstat_hset"]["calls"] - before
        assert merged == n  # one HSET per entity, keeping the first view's fields

        stock = feature_store(settings, projects["stock"], bulk=False)
        stock.apply([entity, view, other])
        for written in (view, other):
            stock.write_to_online_store(written.name, frame)

        bulk_keys = sorted(client.scan_iter(match=f"*{projects['bulk']}", count=1000))
        assert len(bulk_keys) == n
        for key in bulk_keys:
            stock_key = key[: -len(projects["bulk"])] + projects["stock"].encode()
            assert client.hgetall(key) == client.hgetall(stock_key)
    finally:
        for project in projects.values():
            keys = list(client.scan_iter(match=f"*{project}"))
            if keys:
                client.delete(*keys)
