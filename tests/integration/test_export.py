"""``crm-predict export tags|tasks|predictions``: results carry each entity's external id beside its
internal id (an empty cell where it has none), round-trip to the same CRM rows, stream in chunks,
and bad input is one message with nothing written (on SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import pytest
from crm_predict.crm_store import export
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import (
    Account,
    Contact,
    Deal,
    Lead,
    PredictionLog,
    Tag,
    Task,
    User,
)
from sqlalchemy import select
from typer.testing import CliRunner

from crm_predict.cli import app
from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

T = datetime(2026, 6, 30, 2, 0)
TAG_HEADER = ["entity_type", "entity_id", "entity_external_id", "name", "value", "model_name", "model_version", "run_id", "scored_at"]  # fmt: skip
TASK_HEADER = ["id", "dedup_key", "type", "entity_type", "entity_id", "entity_external_id", "owner_id", "owner_external_id", "due_at", "sla_hours", "status", "escalation_level", "reason", "created_at", "updated_at"]  # fmt: skip
PREDICTION_HEADER = ["id", "entity_type", "entity_id", "entity_external_id", "model_name", "model_version", "score", "source", "request_id", "predicted_at"]  # fmt: skip


def seed(session) -> None:
    """Entities with and without external ids (the same integer id in several tables), a tag on
    each, tasks with and without an owner's external id, two prediction-log rows."""
    stamps = {"created_at": T, "updated_at": T}
    session.add_all([User(id=1, name="Ana", external_id="rep_ana"), User(id=2, name="Bo")])
    session.flush()
    session.add_all(
        [
            Account(id=7, name="Acme", external_id="acct_000007", **stamps),
            Contact(id=7, external_id="cont_000007", **stamps),
            Contact(id=8, **stamps),
            Lead(id=7, external_id="lead_000007", owner_id=1, **stamps),
            Lead(id=8, **stamps),
            Deal(id=7, external_id="opp_7, \"big\"", stage="proposal_sent", stage_entered_at=T, **stamps),
        ]
    )  # fmt: skip
    session.flush()
    tag = {"model_name": "lead_scoring", "model_version": "3", "run_id": "r1", "scored_at": T}
    session.add_all(
        [
            Tag(entity_type="lead", entity_id=7, name="lead_grade", value="A", **tag),
            Tag(entity_type="lead", entity_id=7, name="mql", value="true", **tag),
            Tag(entity_type="lead", entity_id=8, name="lead_grade", value="C", **tag),
            Tag(entity_type="deal", entity_id=7, name="deal_colour", value="red", **tag),
            Tag(entity_type="contact", entity_id=7, name="churn_risk", value="high", **tag),
            Tag(entity_type="contact", entity_id=8, name="churn_risk", value="low", **tag),
            Tag(entity_type="customer", entity_id=7, name="value_tier", value="gold", **tag),
            Tag(entity_type="account", entity_id=7, name="value_tier", value="diamond", **tag),
            Tag(entity_type="lead", entity_id=404, name="lead_grade", value="B", **tag),
        ]
    )  # fmt: skip
    task = {"due_at": T, "sla_hours": 4, "escalation_level": 0, "reason": "r", **stamps}
    session.add_all(
        [
            Task(
                dedup_key="k1",
                type="first_contact",
                entity_type="lead",
                entity_id=7,
                owner_id=1,
                status="open",
                **task,
            ),  # fmt: skip
            Task(
                dedup_key="k2",
                type="rescue_deal",
                entity_type="deal",
                entity_id=7,
                owner_id=2,
                status="done",
                **task,
            ),  # fmt: skip
            Task(
                dedup_key="k3",
                type="retention",
                entity_type="contact",
                entity_id=8,
                owner_id=None,
                status="open",
                **task,
            ),  # fmt: skip
        ]
    )
    session.add_all(
        [
            PredictionLog(
                entity_type="contact",
                entity_id=7,
                model_name="churn",
                model_version="2",
                score=0.25,
                source="batch",
                predicted_at=T,
            ),  # fmt: skip
            PredictionLog(
                entity_type="lead",
                entity_id=8,
                model_name="lead_scoring",
                model_version="3",
                score=0.5,
                source="api",
                request_id="req",
                predicted_at=T,
            ),  # fmt: skip
        ]
    )
    session.commit()


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_export_tags_carries_external_ids_and_an_empty_cell_where_there_is_none(session, tmp_path):
    seed(session)
    out = tmp_path / "tags.csv"
    assert export.export_tags(session, out) == 9
    header, rows = read(out)
    assert header == TAG_HEADER
    got = {(r["entity_type"], r["entity_id"], r["name"]): r["entity_external_id"] for r in rows}
    assert got == {
        ("account", "7", "value_tier"): "acct_000007",
        ("contact", "7", "churn_risk"): "cont_000007",
        ("contact", "8", "churn_risk"): "",
        ("customer", "7", "value_tier"): "cont_000007",
        ("deal", "7", "deal_colour"): 'opp_7, "big"',
        ("lead", "7", "lead_grade"): "lead_000007",
        ("lead", "7", "mql"): "lead_000007",
        ("lead", "8", "lead_grade"): "",
        ("lead", "404", "lead_grade"): "",  # an entity the store no longer has
    }
    assert [(r["entity_type"], int(r["entity_id"]), r["name"]) for r in rows] == sorted(
        (r["entity_type"], int(r["entity_id"]), r["name"]) for r in rows
    )  # key order
    first = rows[0]
    assert first["value"] == "diamond" and first["model_name"] == "lead_scoring"
    assert first["model_version"] == "3" and first["run_id"] == "r1"
    assert datetime.fromisoformat(first["scored_at"]) == T


def test_exported_external_ids_name_the_same_crm_rows(session, tmp_path):
    """The round trip a CRM admin relies on: external id → the row the internal id is."""
    seed(session)
    out = tmp_path / "tags.csv"
    export.export_tags(session, out)
    _, rows = read(out)
    for row in rows:
        if not row["entity_external_id"]:
            continue
        table = export.ENTITY_TABLES[row["entity_type"]]
        found = session.scalar(select(table.id).where(table.external_id == row["entity_external_id"]))  # fmt: skip
        assert found == int(row["entity_id"])


def test_export_tags_filters_by_entity_type_and_name(session, tmp_path):
    seed(session)
    out = tmp_path / "leads.csv"
    assert export.export_tags(session, out, entity_type="lead", name="lead_grade") == 3
    _, rows = read(out)
    assert [(r["entity_id"], r["entity_external_id"]) for r in rows] == [("7", "lead_000007"), ("8", ""), ("404", "")]  # fmt: skip
    assert export.export_tags(session, out, entity_type="account", name="mql") == 0
    header, rows = read(out)
    assert header == TAG_HEADER and rows == []  # an empty export still has its header


def test_export_tasks_has_every_column_plus_entity_and_owner_external_ids(session, tmp_path):
    seed(session)
    out = tmp_path / "tasks.csv"
    assert export.export_tasks(session, out) == 3
    header, rows = read(out)
    assert header == TASK_HEADER
    assert [
        (r["dedup_key"], r["entity_external_id"], r["owner_id"], r["owner_external_id"])
        for r in rows
    ] == [  # fmt: skip
        ("k1", "lead_000007", "1", "rep_ana"),
        ("k2", 'opp_7, "big"', "2", ""),
        ("k3", "", "", ""),
    ]
    assert rows[0]["sla_hours"] == "4" and rows[0]["status"] == "open"
    assert export.export_tasks(session, out, status="open", entity_type="contact") == 1
    assert read(out)[1][0]["dedup_key"] == "k3"


def test_export_predictions_carries_external_ids(session, tmp_path):
    seed(session)
    out = tmp_path / "predictions.csv"
    assert export.export_predictions(session, out) == 2
    header, rows = read(out)
    assert header == PREDICTION_HEADER
    got = {(r["model_name"], r["entity_external_id"], float(r["score"])) for r in rows}
    assert got == {("churn", "cont_000007", 0.25), ("lead_scoring", "", 0.5)}
    assert export.export_predictions(session, out, model_name="churn") == 1


def test_export_streams_in_chunks_to_the_same_file(session, tmp_path):
    seed(session)
    whole, chunked = tmp_path / "whole.csv", tmp_path / "chunked.csv"
    export.export_tags(session, whole)
    assert export.export_tags(session, chunked, chunk_rows=2) == 9
    assert chunked.read_bytes() == whole.read_bytes()


def test_a_failed_export_leaves_no_file_and_the_old_one_untouched(sqlite_session, tmp_path, monkeypatch):  # fmt: skip
    seed(sqlite_session)
    out = tmp_path / "tags.csv"
    out.write_text("old\n")

    def broken(*args, **kwargs):
        raise RuntimeError("connection lost")

    monkeypatch.setattr(sqlite_session, "execute", broken)
    with pytest.raises(RuntimeError):
        export.export_tags(sqlite_session, out)
    assert out.read_text() == "old\n"
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entity_type": "opportunity"}, "unknown entity type 'opportunity'"),
        ({"out": "missing/tags.csv"}, "does not exist"),
        ({"out": "."}, "is a directory"),
    ],
)
def test_bad_options_are_a_user_error_before_any_write(sqlite_session, tmp_path, kwargs, message):
    out = tmp_path / kwargs.pop("out", "tags.csv")
    with pytest.raises(UserError, match=message):
        export.export_tags(sqlite_session, out, **kwargs)
    assert not (tmp_path / "tags.csv").exists() and not list(tmp_path.glob(".*.part"))


# --- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli_store(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with session_factory(engine)() as session:
        seed(session)
    engine.dispose()
    monkeypatch.setenv("CRM_PREDICT_DATABASE_URL", url)
    Settings(data_dir=tmp_path / "data").ensure_dirs()  # what every command's callback makes
    return tmp_path


def run(tmp_path: Path, *args: str):
    return CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "export", *args])


def test_cli_exports_tags_tasks_and_predictions(cli_store):
    result = run(cli_store, "tags", "--out", str(cli_store / "tags.csv"), "--entity-type", "lead", "--name", "mql")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 tags" in result.output
    assert [r["entity_external_id"] for r in read(cli_store / "tags.csv")[1]] == ["lead_000007"]
    result = run(cli_store, "tasks", "--out", str(cli_store / "tasks.csv"), "--status", "done")
    assert result.exit_code == 0, result.output
    header, rows = read(cli_store / "tasks.csv")
    assert header == TASK_HEADER and [r["dedup_key"] for r in rows] == ["k2"]
    result = run(cli_store, "predictions", "--out", str(cli_store / "log.csv"), "--model", "churn")
    assert result.exit_code == 0, result.output
    assert [r["entity_external_id"] for r in read(cli_store / "log.csv")[1]] == ["cont_000007"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["users", "--out", "{d}/x.csv"],
            "unknown export 'users'; known: tags, tasks, predictions",
        ),
        (["tags", "--out", "{d}/x.csv", "--entity-type", "opp"], "unknown entity type 'opp'"),
        (["tasks", "--out", "{d}/no/such/x.csv"], "does not exist"),
        (["predictions", "--out", "{d}"], "is a directory"),
    ],
)
def test_cli_bad_input_is_one_message_exit_2_and_nothing_written(cli_store, args, message):
    before = sorted(p.name for p in cli_store.iterdir())
    result = run(cli_store, *(a.format(d=cli_store) for a in args))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert sorted(p.name for p in cli_store.iterdir()) == before
