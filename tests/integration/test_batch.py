"""The nightly batch job's promises, on SQLite and PostgreSQL: every entity scored once per model,
tags and tasks written once however often it runs, and a run killed midway finishes as a clean one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from batch_world import AT, build_crm, tiny_scoring_frame, world_settings
from crm_predict.crm_store.db import session_factory
from crm_predict.crm_store.models import BatchCheckpoint, BatchRun
from crm_predict.serving.batch import OUTPUT_TABLES, run_batch
from crm_predict.serving.batch_cli import batch_app, parse_models
from sqlalchemy import text
from typer.testing import CliRunner

from crm_predict.core.rules import FLAG_TAGS, MODEL_NAMES, SCORE_TAGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(engine, tmp_path, mlflow_client):
    """The tiny CRM in ``engine``'s store and five champions; settings pointing at both."""
    with session_factory(engine)() as session:
        build_crm(session)
    settings = world_settings(engine, tmp_path / "data", mlflow_client)
    return settings


def _run(engine, mlflow_client, settings, **kwargs):
    with session_factory(engine)() as session:
        return run_batch(
            session, mlflow_client, settings, at=AT, scoring_frame=tiny_scoring_frame, **kwargs
        )


def _frame(engine, sql: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(text(sql), conn)


def _outputs(engine) -> dict[str, list[tuple]]:
    """What a run leaves behind, without the wall-clock stamps."""
    tags = _frame(
        engine,
        "SELECT entity_type, entity_id, name, value, model_name, model_version, run_id, scored_at "
        "FROM tags ORDER BY entity_type, entity_id, name",
    )
    tasks = _frame(
        engine,
        "SELECT dedup_key, type, entity_type, entity_id, owner_id, due_at, sla_hours, escalation_level "
        "FROM tasks ORDER BY dedup_key",
    )
    log = _frame(
        engine,
        "SELECT entity_type, entity_id, model_name, model_version, score FROM prediction_log "
        "ORDER BY model_name, entity_id",
    )
    tags["scored_at"] = pd.to_datetime(tags["scored_at"], format="ISO8601")
    tasks["due_at"] = pd.to_datetime(tasks["due_at"], format="ISO8601")
    log["score"] = log["score"].round(9)
    return {
        "tags": list(tags.itertuples(index=False, name=None)),
        "tasks": list(tasks.itertuples(index=False, name=None)),
        "log": list(log.itertuples(index=False, name=None)),
        "history": _frame(engine, "SELECT COUNT(*) AS n FROM tag_history")["n"].tolist(),
    }


def _clear_outputs(engine) -> None:
    with engine.begin() as conn:
        for table in OUTPUT_TABLES:
            conn.execute(text(f"DELETE FROM {table}"))


def test_batch_scores_every_entity_once_and_writes_tags_tasks_and_summary(
    engine, world, mlflow_client
):
    summary = _run(engine, mlflow_client, world)

    log = _frame(engine, "SELECT model_name, entity_id FROM prediction_log")
    assert not log.duplicated().any()  # one prediction-log row per entity and model
    per_model = log.groupby("model_name").size().to_dict()
    assert per_model == {m.name: m.entities for m in summary.models}
    for name in MODEL_NAMES:
        expected = tiny_scoring_frame(world, name, AT)["entity_id"]
        assert sorted(log[log["model_name"] == name]["entity_id"]) == sorted(expected)

    tags = _frame(engine, "SELECT name, value, model_name, model_version, run_id FROM tags")
    flags = tags["name"].isin(FLAG_TAGS)
    assert set(tags.loc[~flags, "name"]) == {
        "lead_score", "lead_grade", "deal_health", "deal_health_colour", "churn_risk", "clv_tier",
        "rfm_segment", "best_contact_slot", "account_tier",
    }  # fmt: skip
    # A flag is a tag only where it holds (no lead of this world is an MQL).
    assert set(tags.loc[flags, "name"]) == {"churn_warning", "high_activity", "potential"}
    assert set(tags.loc[flags, "value"]) == {"true"}
    assert tags["model_version"].notna().all() and tags["run_id"].notna().all()
    # The summary's counts per tag value are the store's (numeric scores counted per tag).
    values = tags["value"].where(~tags["name"].isin(SCORE_TAGS), "*")
    db_counts = Counter(f"{n}={v}" for n, v in zip(tags["name"], values, strict=True))
    assert summary.tag_counts == db_counts

    tasks = _frame(engine, "SELECT type, entity_type FROM tasks")
    assert summary.tasks_created == len(tasks) > 0
    assert {"first_contact", "escalation", "rescue_deal", "retention", "whitepaper_follow_up"} <= set(tasks["type"])  # fmt: skip
    assert Counter(tasks["type"]) == sum((m.result.task_counts for m in summary.models), Counter())

    with session_factory(engine)() as session:
        run = session.get(BatchRun, summary.batch_run_id)
        assert run.status == "done" and json.loads(run.summary)["tasks_created"] == len(tasks)
    logged = mlflow_client.get_run(summary.mlflow_run_id)
    assert logged.data.metrics["tasks_created"] == len(tasks)
    assert logged.data.params["churn_version"] == "1"


def test_rerun_creates_no_duplicate_tags_or_tasks(engine, world, mlflow_client):
    first = _run(engine, mlflow_client, world)
    before = _outputs(engine)
    second = _run(engine, mlflow_client, world)
    after = _outputs(engine)

    assert second.batch_run_id != first.batch_run_id and not second.resumed
    assert second.tasks_created == 0
    assert after["tags"] == before["tags"] and after["tasks"] == before["tasks"]
    assert after["history"] == before["history"] == [0]  # unchanged values are not history
    assert second.tag_counts == first.tag_counts


def test_sigkill_midway_then_rerun_equals_clean_run(engine, world, mlflow_client, tmp_path):
    clean = _run(engine, mlflow_client, world, log_to_mlflow=False)
    expected = _outputs(engine)
    _clear_outputs(engine)

    args = [
        sys.executable, str(Path(__file__).with_name("batch_world.py")), str(world.data_dir), "2",
        world.crm_url, world.tracking_uri,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600  # imports alone can take a minute on a busy machine
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        committed = _frame(engine, "SELECT COUNT(*) AS n FROM batch_checkpoints")["n"][0]
        if committed >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    total_chunks = sum(-(-m.entities // 2) for m in clean.models)
    killed_at = _frame(engine, "SELECT COUNT(*) AS n FROM batch_checkpoints")["n"][0]
    assert 3 <= killed_at < total_chunks  # really midway

    done = subprocess.run(args, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    resumed = json.loads(done.stdout.decode().strip().splitlines()[-1])

    assert resumed["resumed"] is True
    assert _outputs(engine) == expected  # no duplicate, no missing tag, task or log row
    assert resumed["tag_counts"] == clean.as_dict()["tag_counts"]
    assert resumed["tasks_created"] == clean.tasks_created
    with session_factory(engine)() as session:
        runs = session.query(BatchRun).all()
        assert [r.status for r in runs] == ["done"]
        assert session.query(BatchCheckpoint).count() == total_chunks


def test_cli_batch_score_rejects_unknown_models():
    result = CliRunner().invoke(batch_app, ["score", "--models", "churn,nope"])
    assert result.exit_code != 0
    assert parse_models("clv,churn") == ["churn", "clv"]


def test_cli_batch_score_on_a_demo_store(settings, mlflow_client, monkeypatch):
    """`crm-predict batch score` end to end: demo CRM, feature export, five champions, write-back."""
    from crm_predict.crm_store.db import make_engine, upgrade
    from crm_predict.crm_store.demo import generate_demo
    from serving_models import register_models

    from crm_predict.cli import app

    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        generate_demo(session, settings, 60, seed=5)
        session.commit()
    register_models(mlflow_client)
    monkeypatch.setenv("CRM_PREDICT_MLFLOW_TRACKING_URI", mlflow_client.tracking_uri)
    args = ["--data-dir", str(settings.data_dir), "batch", "score", "--at", "2026-06-30T02:00"]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Batch run" in result.output and "churn_risk=" in result.output

    log = _frame(engine, "SELECT model_name, COUNT(*) AS n FROM prediction_log GROUP BY model_name")
    assert set(log["model_name"]) == set(MODEL_NAMES)
    tasks_before = _frame(engine, "SELECT COUNT(*) AS n FROM tasks")["n"][0]
    again = CliRunner().invoke(app, [*args, "--quiet", "--models", "deal_health,lead_scoring"])
    assert again.exit_code == 0, again.output
    assert _frame(engine, "SELECT COUNT(*) AS n FROM tasks")["n"][0] == tasks_before
    engine.dispose()


def test_cli_batch_score_reads_messages_when_message_intent_has_a_champion(
    settings, mlflow_client, monkeypatch
):
    """`batch score` reads the demo's messages after the tabular models once message_intent has
    a champion; without one it says so (default) or stops before any write (asked for)."""
    from datetime import datetime

    from crm_predict.crm_store.db import make_engine, upgrade
    from crm_predict.crm_store.demo import generate_demo
    from crm_predict.crm_store.demo_messages import generate_messages
    from crm_predict.training import message_intent as mi

    from crm_predict.cli import app

    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        generate_demo(session, settings, 40, seed=6)
        session.commit()
    monkeypatch.setenv("CRM_PREDICT_MLFLOW_TRACKING_URI", mlflow_client.tracking_uri)
    args = ["--data-dir", str(settings.data_dir), "batch", "score", "--at", "2026-06-30T02:00"]
    asked = CliRunner().invoke(app, [*args, "--quiet", "--models", "message_intent"])
    assert asked.exit_code != 0 and "message_intent has no 'champion'" in str(asked.exception)
    assert _frame(engine, "SELECT COUNT(*) AS n FROM batch_runs")["n"][0] == 0

    monkeypatch.chdir(settings.data_dir.parent)  # MLflow's artifacts beside the test's files
    data = mi.prepare(generate_messages(600, 3, datetime(2025, 1, 1), datetime(2025, 7, 1)))
    trained = mi.train(mlflow_client, data, n_trials=1, lexicons=False)
    mlflow_client.set_registered_model_alias("message_intent", "champion", trained.version)
    first = CliRunner().invoke(app, [*args, "--quiet", "--models", "message_intent"])
    assert first.exit_code == 0, first.output
    assert "Messages read by message_intent" in first.output
    inbound = _frame(engine, "SELECT COUNT(*) AS n FROM messages WHERE direction = 'inbound'")
    read = _frame(engine, "SELECT COUNT(*) AS n FROM tags WHERE entity_type = 'message' AND name IN ('intent', 'unreadable')")  # fmt: skip
    assert inbound["n"][0] > 0 and read["n"][0] == inbound["n"][0]
    tasks = _frame(engine, "SELECT COUNT(*) AS n FROM tasks")["n"][0]
    again = CliRunner().invoke(app, [*args, "--quiet", "--models", "message_intent"])
    assert again.exit_code == 0, again.output
    assert _frame(engine, "SELECT COUNT(*) AS n FROM tasks")["n"][0] == tasks
    engine.dispose()
