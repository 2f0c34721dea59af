"""The online API's FeatureService reader returns exactly what Feast's ``get_online_features``
returns (stored views and the on-demand rule score, values and dtypes), on SQLite and on Redis."""

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
from features.online import ServiceReader, UnknownEntityError, online_features
from features.scoring import scoring_frame
from features.store import apply

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("reader") / "data")
    settings.ensure_dirs()
    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        build_crm(session)
        export(session, settings)
    engine.dispose()
    return settings


def _assert_reader_equals_feast(settings: Settings, store) -> None:
    as_of = export_as_of(settings)
    for model in MODEL_NAMES:
        reader = ServiceReader.open(store, model)
        ids = scoring_frame(settings, model, as_of)["entity_id"].tolist()
        for wanted in (ids, ids[:1], list(reversed(ids)) + ids[:1]):
            pd.testing.assert_frame_equal(
                reader.read(wanted), online_features(store, model, wanted), obj=model
            )
        with pytest.raises(UnknownEntityError, match="987654") as caught:
            reader.read([ids[0], 987654])
        assert caught.value.entity_ids == [987654]


def test_reader_equals_feast_on_sqlite(exported):
    store = apply(exported)
    materialize(store, export_as_of(exported))
    _assert_reader_equals_feast(exported, store)


def test_reader_equals_feast_on_redis(exported, redis_url):
    import redis

    settings = exported.model_copy(update={"online_store": "redis", "redis_url": redis_url})
    project = f"t{uuid.uuid4().hex[:10]}"
    store = apply(settings, project=project)
    try:
        materialize(store, export_as_of(settings))
        _assert_reader_equals_feast(settings, store)
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"*{project}"))
        if keys:
            client.delete(*keys)
