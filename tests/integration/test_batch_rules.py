"""The batch reads the rules file at the start of every run: a changed MQL threshold changes the
mql tags, a user tag rule tags leads, ownerless tasks go to a default owner or the queue and are
counted, and an unknown column in a tag rule is reported in the summary, not a crash."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from batch_world import AT, build_crm, tiny_scoring_frame, world_settings
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.serving.batch import run_batch
from sqlalchemy import text


@pytest.fixture
def world(tmp_path, mlflow_client):
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    with session_factory(engine)() as session:
        build_crm(session)
    settings = world_settings(engine, tmp_path / "data", mlflow_client)
    yield engine, settings
    engine.dispose()


def _run(engine, client, settings, models=("lead_scoring",)):
    with session_factory(engine)() as session:
        return run_batch(
            session, client, settings, list(models), at=AT, scoring_frame=tiny_scoring_frame
        )


def _tags(engine, name: str) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(text("SELECT entity_id, value FROM tags WHERE name = :n"), conn, params={"n": name})  # fmt: skip


def test_the_next_batch_picks_up_a_changed_rules_file(world, mlflow_client):
    engine, settings = world
    first = _run(engine, mlflow_client, settings)
    assert first.rules_file is None and _tags(engine, "mql").empty  # no lead reaches 100 points
    (settings.data_dir / "rules.yaml").write_text(
        "lead: {mql_threshold: -1000}\n"
        "tags:\n"
        "  - {name: high_activity, entity: lead, when: 'n_activities >= 3'}\n"
        "  - {name: typo, entity: lead, when: 'n_activitys >= 3'}\n"
    )
    second = _run(engine, mlflow_client, settings)
    assert second.rules_file == str(settings.data_dir / "rules.yaml")
    leads = tiny_scoring_frame(settings, "lead_scoring", AT)
    assert sorted(_tags(engine, "mql")["entity_id"]) == sorted(leads["entity_id"])
    busy = leads.loc[leads["n_activities"] >= 3, "entity_id"]
    assert len(busy) and sorted(_tags(engine, "high_activity")["entity_id"]) == sorted(busy)
    assert len(second.rule_errors) == 1 and "unknown column 'n_activitys'" in second.rule_errors[0]
    assert second.as_dict()["rule_errors"] == second.rule_errors
    logged = mlflow_client.download_artifacts(second.mlflow_run_id, "rules.json")
    assert '"mql_threshold": -1000' in Path(logged).read_text()


def test_ownerless_tasks_go_to_the_region_default_owner_or_the_queue(world, mlflow_client):
    engine, settings = world
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET external_id = 'rep_ann' WHERE id = 2"))
        conn.execute(text("UPDATE leads SET owner_id = NULL"))
        conn.execute(text("UPDATE users SET manager_id = NULL"))
    (settings.data_dir / "rules.yaml").write_text(
        "assignment: {default_owner_by_region: {north: rep_ann}, queue: inbound}\n"
    )
    summary = _run(engine, mlflow_client, settings)
    with engine.connect() as conn:
        tasks = pd.read_sql(
            text(
                "SELECT t.owner_id, t.reason, l.region FROM tasks t "
                "JOIN leads l ON t.entity_type = 'lead' AND l.id = t.entity_id"
            ),
            conn,
        )
    assert len(tasks) and set(tasks["region"]) == {"north", "south"}
    north, south = tasks[tasks["region"] == "north"], tasks[tasks["region"] == "south"]
    assert (north["owner_id"] == 2).all()
    assert (
        south["owner_id"].isna().all() and south["reason"].str.startswith("[queue:inbound] ").all()
    )
    counted = summary.as_dict()
    assert counted["tasks_to_default_owner"] >= len(north)
    assert counted["tasks_to_queue"] >= len(south)
    assert counted["tasks_to_default_owner"] + counted["tasks_to_queue"] == summary.tasks_created
