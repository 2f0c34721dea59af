"""Offline → online round trip through the bulk write path, on SQLite and on real Redis: what Feast's
``get_online_features`` returns equals the features the batch job computes for the same time."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest
from feature_sample import build_crm

from crm_predict.rules import MODEL_NAMES
from crm_predict.settings import Settings
from crm_store.db import make_engine, session_factory, upgrade
from features.export import export, export_as_of
from features.materialize import materialize
from features.online import UnknownEntityError, online_features
from features.scoring import scoring_frame
from features.store import apply

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


def test_redis_round_trip_offline_to_online(exported, redis_url):
    import redis

    settings = exported.model_copy(update={"online_store": "redis", "redis_url": redis_url})
    project = f"t{uuid.uuid4().hex[:10]}"
    store = apply(settings, project=project)
    try:
        materialize(store, export_as_of(settings))
        _assert_round_trip(settings, store)
        with pytest.raises(UnknownEntityError, match="999"):
            online_features(store, "next_best_time", [999])
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"*{project}"))
        if keys:
            client.delete(*keys)
