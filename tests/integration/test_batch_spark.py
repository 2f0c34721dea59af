"""``--engine spark`` in local[2] on a small demo CRM: the single-machine job's tags, tasks and
prediction log; a rerun creates no task; a run killed midway resumes to the same rows; bad input
(an unreachable master, no Java, no champion) stops before anything is written."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from functools import partial

import batch_world
import cloudpickle
import mlflow
import pytest
import skops.io
from batch_world import AT
from crm_predict.crm_store import arrow_io
from crm_predict.crm_store.db import session_factory
from crm_predict.crm_store.demo import generate_demo
from crm_predict.features import export as fx
from crm_predict.serving import batch
from crm_predict.serving.batch import run_batch
from mlflow.models import infer_signature
from serving_models import (
    CLV_FEATURES,
    N_ROWS,
    _classifier,
    _log,
    churn_frame,
    deal_frame,
    lead_frame,
)
from test_batch import _clear_outputs, _frame, _outputs

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

IN_CI = os.environ.get("CI", "").lower() == "true"
CHUNK = 40
CLOSED_PORT = "spark://127.0.0.1:9"  # discard port: nothing listens there


def _require_spark() -> None:
    missing = []
    if importlib.util.find_spec("pyspark") is None:
        missing.append("pyspark (extra `spark`)")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        missing.append("a Java runtime")
    if missing:
        message = f"Spark path needs {' and '.join(missing)}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: required, not skipped)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def spark():
    _require_spark()
    from crm_predict.serving.batch_spark import spark_session

    session = spark_session("local[2]")
    yield session
    session.stop()


def register_probability_champions(client) -> None:
    """The serving tests' toy champions, classifiers logged as ``crm-predict train`` logs them:
    their pyfunc gives ``predict_proba`` (what ``spark_udf`` calls)."""
    frames = {"lead_scoring": lead_frame(N_ROWS), "deal_health": deal_frame(N_ROWS), "churn": churn_frame(N_ROWS)}  # fmt: skip
    for i, (name, frame) in enumerate(frames.items()):
        signal = frame.select_dtypes("number").rank(pct=True).mean(axis=1).to_numpy()
        model = _classifier(frame, (signal > 0.5).astype(int), ["xgboost", "random_forest", "logistic"][i])  # fmt: skip

        def log(artifact, model=model, frame=frame):
            example = frame.head(3)
            mlflow.sklearn.log_model(
                model, name=artifact, input_example=example, pyfunc_predict_fn="predict_proba",
                signature=infer_signature(example, model.predict_proba(example)),
                serialization_format="skops", pip_requirements=[],
                skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
            )  # fmt: skip

        _log(client, name, log, list(frame.columns))
    # The tiny pyfuncs pickled by value: a Spark worker unpickles them without importing the
    # serving tests' module (and its imports, seconds per worker).
    cloudpickle.register_pickle_by_value(batch_world)
    for name, model, features in (
        ("clv", batch_world.TinyClv(), CLV_FEATURES), ("next_best_time", batch_world.TinyNextBestTime(), ["entity_id"]),
    ):  # fmt: skip
        log = partial(mlflow.pyfunc.log_model, python_model=model, pip_requirements=[])
        _log(client, name, lambda artifact, log=log: log(name=artifact), features)


@pytest.fixture
def demo(engine, tmp_path, mlflow_client, monkeypatch):
    """A small demo CRM; chunks of 40 and ranges of 80 ids, so the contacts span several ranges
    (several Spark tasks) and the snapshot several row groups."""
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
        generate_demo(session, settings, 200, seed=5)
        session.commit()
    register_probability_champions(mlflow_client)
    return settings


def _single(engine, client, settings, **kwargs):
    with session_factory(engine)() as session:
        return run_batch(session, client, settings, at=AT, log_to_mlflow=False, **kwargs)


def _spark(engine, client, settings, spark, **kwargs):
    from crm_predict.serving.batch_spark import run_spark_batch

    with session_factory(engine)() as session:
        return run_spark_batch(
            session, client, settings, at=AT, spark=spark, log_to_mlflow=False, **kwargs
        )


def test_spark_engine_writes_the_single_machine_jobs_tags_tasks_and_log(
    engine, demo, mlflow_client, spark
):
    t = time.perf_counter()
    single = _single(engine, mlflow_client, demo)
    single_s = time.perf_counter() - t
    expected = _outputs(engine)
    _clear_outputs(engine)

    t = time.perf_counter()
    on_spark = _spark(engine, mlflow_client, demo, spark, export=False)
    spark_s = time.perf_counter() - t
    print(f"\n{engine.dialect.name}: single machine {single_s:.2f} s, Spark local[2] {spark_s:.2f} s")  # fmt: skip

    assert _outputs(engine) == expected  # tags, tasks, log (ids, scores, versions), history
    assert on_spark.tag_counts == single.tag_counts
    assert on_spark.tasks_created == single.tasks_created > 0
    assert [(m.name, m.version, m.entities) for m in on_spark.models] == [
        (m.name, m.version, m.entities) for m in single.models
    ]
    assert sum(m.chunks for m in on_spark.models) > len(on_spark.models)  # several ranges

    # The rerun through the CLI (the module's session is the active one: `--master` is checked).
    result = _cli(demo, "--engine", "spark", "--master", "local[2]", "--no-export")
    assert result.exit_code == 0, result.output
    assert "tasks created 0" in result.output and "churn_risk=" in result.output
    again = _outputs(engine)
    assert (again["tags"], again["tasks"], again["history"]) == (
        expected["tags"], expected["tasks"], expected["history"],
    )  # fmt: skip


def _cli(settings, *args):
    from typer.testing import CliRunner

    from crm_predict.cli import app

    env = {
        "CRM_PREDICT_DATABASE_URL": settings.database_url or "",
        "CRM_PREDICT_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri or "",
        "CRM_PREDICT_BATCH_CHUNK_SIZE": str(settings.batch_chunk_size),
    }
    data = ["--data-dir", str(settings.data_dir)]
    return CliRunner().invoke(app, [*data, "batch", "score", "--at", "2026-06-30T02:00", *args], env=env)  # fmt: skip


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_a_killed_spark_run_resumes_to_the_single_machine_jobs_rows(
    engine, demo, mlflow_client, spark, monkeypatch
):
    """On SQLite the driver commits each range (one writer), so a failure can be injected there;
    on PostgreSQL the executors run the same ``batch.commit_chunk``."""
    from crm_predict.serving import batch

    clean = _single(engine, mlflow_client, demo)
    expected = _outputs(engine)
    _clear_outputs(engine)

    real, calls = batch.commit_chunk, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed("driver killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "commit_chunk", dying)
    with pytest.raises(Killed):
        _spark(engine, mlflow_client, demo, spark, export=False)
    committed = _frame(engine, "SELECT COUNT(*) AS n FROM batch_checkpoints")["n"][0]
    assert committed == 2  # the ranges committed before the kill
    monkeypatch.setattr(batch, "commit_chunk", real)
    resumed = _spark(engine, mlflow_client, demo, spark, export=False)

    assert resumed.resumed
    assert _outputs(engine) == expected  # nothing missing, nothing twice (the log included)
    assert resumed.tag_counts == clean.tag_counts
    assert [m.entities for m in resumed.models] == [m.entities for m in clean.models]


def _written(engine) -> int:
    return int(
        _frame(
            engine,
            "SELECT (SELECT COUNT(*) FROM batch_runs) + (SELECT COUNT(*) FROM tags) "
            "+ (SELECT COUNT(*) FROM tasks) + (SELECT COUNT(*) FROM prediction_log) AS n",
        )["n"][0]
    )


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_unreachable_master_missing_java_or_champion_stop_before_any_write(
    engine, tmp_path, mlflow_client, monkeypatch
):
    from crm_predict.serving.batch_spark import run_spark_batch

    settings = Settings(data_dir=tmp_path / "data", database_url=str(engine.url))

    def attempt(client=mlflow_client, master=CLOSED_PORT):
        with session_factory(engine)() as session:
            run_spark_batch(session, client, settings, at=AT, master=master, log_to_mlflow=False)

    t = time.perf_counter()
    with pytest.raises(UserError, match=r"Spark master spark://127.0.0.1:9 cannot be reached"):
        attempt()
    assert time.perf_counter() - t < 10
    with pytest.raises(UserError, match=r"not a Spark master URL"):
        attempt(master="mesos://x:5050")
    with monkeypatch.context() as m:
        m.setenv("PATH", "/nonexistent")
        m.delenv("JAVA_HOME", raising=False)
        with pytest.raises(UserError, match="needs a Java runtime"):
            attempt(master="local[2]")
    with pytest.raises(UserError, match="no champion registered for lead_scoring, deal_health"):
        attempt(master="local[2]")  # an empty registry
    assert _written(engine) == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "spark", "--master", CLOSED_PORT], "cannot be reached within 5 s"),
        (["--engine", "spark", "--master", "local[two]"], "is not a Spark master URL"),
        (["--master", "local[2]"], "--master is for --engine spark"),
        (["--engine", "flink"], "--engine 'flink': choose one of single, spark"),
    ],
)
def test_batch_score_spark_refuses_bad_engine_or_master_before_touching_any_store(
    tmp_path, args, expected
):
    settings = Settings(data_dir=tmp_path, batch_chunk_size=40)
    result = _cli(settings, *args)
    assert isinstance(result.exception, UserError), result.output
    assert expected in str(result.exception)
    assert not list(tmp_path.rglob("*.db"))  # neither the CRM store nor MLflow was created
