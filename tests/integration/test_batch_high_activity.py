"""``high_activity`` (site visits in 30 days ≥ ``value.high_activity_visits_30d``) is a lead's and
any contact's tag too, not only a customer's: the batch writes it for leads (their
``site_visits_30d`` feature), customers (CLV) and the other contacts (next-best-time)."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from batch_world import AT, build_crm, tiny_scoring_frame, world_settings
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import Activity, Lead
from crm_predict.serving.batch import run_batch
from sqlalchemy import text

BUSY_LEAD, QUIET_LEAD = 101, 102
PROSPECT = 2  # a contact without orders (the world's customers start at contact 15)
DAY = timedelta(days=1)


def _visits(n: int, days: float, **on) -> list[Activity]:
    return [
        Activity(type="site_visit", occurred_at=AT - (days + k / 10) * DAY, created_at=AT, **on)
        for k in range(n)
    ]


@pytest.fixture
def world(tmp_path, mlflow_client):
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    with session_factory(engine)() as session:
        build_crm(session)
        for lead in (BUSY_LEAD, QUIET_LEAD):
            session.add(
                Lead(
                    id=lead, owner_id=2, region="north", status="new", created_at=AT - 60 * DAY,
                    first_contacted_at=AT - 59 * DAY, updated_at=AT - 60 * DAY,
                )
            )  # fmt: skip
        session.flush()
        session.add_all(
            _visits(12, 1, lead_id=BUSY_LEAD)
            + _visits(9, 1, lead_id=QUIET_LEAD)
            + _visits(12, 40, lead_id=QUIET_LEAD)  # too old for the 30-day window
            + _visits(11, 2, contact_id=PROSPECT)
        )
        session.commit()
    settings = world_settings(engine, tmp_path / "data", mlflow_client)
    yield engine, settings
    engine.dispose()


def features(settings, model_name, at, entity_ids=None) -> pd.DataFrame:
    """The tiny reader, with what ``crm_predict.features.scoring`` gives beside it here: leads'
    ``site_visits_30d``, and every contact (not only customers) for next-best-time."""
    engine = make_engine(settings.crm_url)
    try:
        with engine.connect() as conn:
            if model_name == "next_best_time":
                ids = pd.read_sql(text("SELECT id AS entity_id FROM contacts"), conn)
                return ids.astype("int64")
            visits = pd.read_sql(
                text(
                    "SELECT lead_id AS entity_id, COUNT(*) AS site_visits_30d FROM activities "
                    "WHERE type = 'site_visit' AND lead_id IS NOT NULL AND occurred_at > :since "
                    "GROUP BY lead_id"
                ),
                conn,
                params={"since": (at - 30 * DAY).strftime("%Y-%m-%d %H:%M:%S")},
            )
    finally:
        engine.dispose()
    frame = tiny_scoring_frame(settings, model_name, at, entity_ids)
    if model_name == "lead_scoring":
        frame = frame.merge(visits, on="entity_id", how="left")
        frame["site_visits_30d"] = frame["site_visits_30d"].fillna(0).astype("int64")
    return frame


def _run(engine, client, settings, models):
    with session_factory(engine)() as session:
        return run_batch(session, client, settings, list(models), at=AT, scoring_frame=features)


def _flagged(engine, entity_type: str) -> set[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT entity_id FROM tags WHERE name = 'high_activity' AND value = 'true' "
                "AND entity_type = :t"
            ),
            {"t": entity_type},
        )
        return {int(r[0]) for r in rows}


def test_a_lead_with_many_visits_gets_high_activity(world, mlflow_client):
    engine, settings = world
    summary = _run(engine, mlflow_client, settings, ["lead_scoring"])
    flagged = _flagged(engine, "lead")
    assert BUSY_LEAD in flagged and QUIET_LEAD not in flagged
    assert summary.tag_counts["high_activity=true"] == len(flagged)


def test_the_leads_threshold_is_the_rules_files(world, mlflow_client):
    engine, settings = world
    (settings.data_dir / "rules.yaml").write_text("value: {high_activity_visits_30d: 9}\n")
    _run(engine, mlflow_client, settings, ["lead_scoring"])
    assert {BUSY_LEAD, QUIET_LEAD} <= _flagged(engine, "lead")


def test_contacts_without_orders_get_high_activity_and_customers_keep_it(world, mlflow_client):
    engine, settings = world
    _run(engine, mlflow_client, settings, ["clv"])
    customers = _flagged(engine, "contact")
    assert customers and PROSPECT not in customers and min(customers) >= 15
    alone = _run(engine, mlflow_client, settings, ["next_best_time"])
    # Next-best-time flags the other contacts and leaves the customers' flags to CLV.
    assert _flagged(engine, "contact") == customers | {PROSPECT}
    assert alone.tag_counts["high_activity=true"] == 1
    summary = _run(engine, mlflow_client, settings, ["next_best_time", "clv"])
    assert _flagged(engine, "contact") == customers | {PROSPECT}
    # One writer per contact's flag, so the summary counts each once.
    assert summary.tag_counts["high_activity=true"] == len(customers) + 1
