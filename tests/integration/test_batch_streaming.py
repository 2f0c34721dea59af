"""The default batch (export, then the snapshot read range of entities by range) on SQLite and
PostgreSQL: its tags, tasks and prediction log are those of a run over every entity at once, a
run that fails midway resumes to exactly those rows, and no chunk warns."""

from __future__ import annotations

import warnings
from functools import partial

import crm_predict.serving.batch as batch
import pytest
from batch_world import AT
from crm_predict.crm_store import arrow_io
from crm_predict.crm_store.db import session_factory
from crm_predict.crm_store.demo import generate_demo
from crm_predict.features import export as fx
from crm_predict.features.scoring import scoring_frame
from crm_predict.serving.batch import run_batch
from serving_models import register_models
from test_batch import _clear_outputs, _outputs

from crm_predict.core.settings import Settings

CHUNK = 40


class Boom(RuntimeError):
    pass


@pytest.fixture
def demo(engine, tmp_path, mlflow_client, monkeypatch):
    """A small demo CRM read by ADBC in pieces, snapshots in small row groups, chunks of 40 and
    ranges of 80 ids: every family spans several ranges and row groups."""
    monkeypatch.setattr(arrow_io, "SMALL_ROWS", 0)
    monkeypatch.setattr(arrow_io, "CHUNK_ROWS", 700)
    monkeypatch.setattr(fx, "ROW_GROUP_ROWS", 300)
    monkeypatch.setattr(batch, "RANGE_CHUNKS", 2)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=engine.url.render_as_string(hide_password=False),
        mlflow_tracking_uri=mlflow_client.tracking_uri, batch_chunk_size=CHUNK, seed=7,
    )  # fmt: skip
    settings.ensure_dirs()
    with session_factory(engine)() as session:
        generate_demo(session, settings, 300, seed=5)
        session.commit()
    register_models(mlflow_client)
    return settings


def _run(engine, client, settings, **kwargs):
    with session_factory(engine)() as session:
        return run_batch(session, client, settings, at=AT, log_to_mlflow=False, **kwargs)


def _at_once(engine, client, settings):
    """The batch over every entity at once: features of the whole snapshot, the rule context
    from the store's tables."""
    with session_factory(engine)() as session:
        fx.export_snapshots(session, settings)
    tables = fx.load_snapshots(settings, strings="category")
    whole = partial(scoring_frame, tables=tables, cache={})
    return _run(engine, client, settings, scoring_frame=whole)


def test_ranges_write_what_a_run_over_every_entity_at_once_writes(
    engine, demo, mlflow_client, monkeypatch
):
    at_once = _at_once(engine, mlflow_client, demo)
    expected = _outputs(engine)
    _clear_outputs(engine)

    ranges, real = {}, batch.SnapshotSource.ranges

    def counted(self, family, names, at, done):
        for piece in real(self, family, names, at, done):
            ranges[family] = ranges.get(family, 0) + 1
            yield piece

    monkeypatch.setattr(batch.SnapshotSource, "ranges", counted)
    ranged = _run(engine, mlflow_client, demo)

    assert ranges["contact"] > 2 and ranges["lead"] > 1 and ranges["deal"] == 1
    assert _outputs(engine) == expected
    assert ranged.tag_counts == at_once.tag_counts
    assert ranged.tasks_created == at_once.tasks_created > 0
    for mine, theirs in zip(ranged.models, at_once.models, strict=True):
        assert (mine.name, mine.entities, mine.chunks) == (theirs.name, theirs.entities, theirs.chunks)  # fmt: skip
        assert mine.chunks == -(-mine.entities // CHUNK)  # chunks run on across the ranges


def test_a_failed_ranged_run_resumes_to_the_clean_runs_rows(
    engine, demo, mlflow_client, monkeypatch
):
    clean = _run(engine, mlflow_client, demo)
    expected = _outputs(engine)
    _clear_outputs(engine)
    total = sum(m.chunks for m in clean.models)

    real, calls = batch.apply_write, {"n": 0}

    def failing(session, prepared, seconds=None):
        calls["n"] += 1
        if calls["n"] == total // 2:
            raise Boom("write failed")
        return real(session, prepared, seconds)

    monkeypatch.setattr(batch, "apply_write", failing)
    with pytest.raises(Boom):
        _run(engine, mlflow_client, demo)
    monkeypatch.setattr(batch, "apply_write", real)
    rerun = _run(engine, mlflow_client, demo, export=False)

    assert rerun.resumed
    assert _outputs(engine) == expected
    assert rerun.tag_counts == clean.tag_counts
    assert [m.entities for m in rerun.models] == [m.entities for m in clean.models]


def test_a_ranged_run_warns_of_nothing(engine, demo, mlflow_client):
    """No library warning per chunk or range (pandas' deprecations included)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(engine, mlflow_client, demo)
    mine = [w for w in caught if "crm_predict" in w.filename or "/work/" in w.filename or issubclass(w.category, FutureWarning)]  # fmt: skip
    assert not mine, [f"{w.filename}:{w.lineno}: {w.message}" for w in mine]


def test_a_pyfunc_is_given_only_its_signature_columns(mlflow_client):
    """A pyfunc whose training columns (its ``feature_names`` tag, as next-best-time's) are not
    its signature's scores on the signature's columns: no MLflow warning per chunk, same output."""
    import logging

    import mlflow
    import pandas as pd
    from crm_predict.serving.loader import load_model
    from serving_models import NextBestTimeToy, _log

    example = pd.DataFrame({"entity_id": [1, 2]})
    _log(
        mlflow_client, "next_best_time",
        lambda a: mlflow.pyfunc.log_model(
            name=a, python_model=NextBestTimeToy(), input_example=example, pip_requirements=[]
        ),
        ["slot", "channel", "segment", "responded"],
    )  # fmt: skip
    model = load_model(mlflow_client, "next_best_time", alias="champion")
    features = pd.DataFrame({"entity_id": [3, 4, 5], "responses_total": [1, 0, 2], "best_slot": [7, 8, 9]})  # fmt: skip
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("mlflow")
    logger.addHandler(handler)
    try:
        scored = batch.score(model, features)
    finally:
        logger.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]
    expected = batch.score(model, features[["entity_id"]])
    pd.testing.assert_frame_equal(scored, expected)
