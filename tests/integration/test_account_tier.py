"""B2B accounts reach gold/diamond: the nightly batch tags each account with ``account_tier`` from
its deals won in the 12 months up to the run's ``at`` (lost and older deals do not count), and a
rerun writes no second tag and no history."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from batch_world import AT, build_crm, tiny_scoring_frame, world_settings
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import Account, Deal
from crm_predict.serving.batch import run_batch
from sqlalchemy import text

DAY = timedelta(days=1)


def _deal(i: int, account: int, amount: float, outcome: str | None, closed_days_ago: float | None):
    closed = None if closed_days_ago is None else AT - closed_days_ago * DAY
    created = AT - 800 * DAY
    return Deal(
        id=i, account_id=account, owner_id=2, name=f"big{i}", amount=amount, stage="negotiation",
        stage_entered_at=created, created_at=created, closed_at=closed, outcome=outcome,
        updated_at=closed or created,
    )  # fmt: skip


@pytest.fixture
def world(tmp_path, mlflow_client):
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    with session_factory(engine)() as session:
        build_crm(session)  # accounts 1-3: a few small won deals (normal)
        created = AT - 900 * DAY
        session.add_all(
            [
                Account(id=i, name=f"b2b{i}", created_at=created, updated_at=created)
                for i in (4, 5, 6)
            ]
        )
        session.add(Account(id=7, name="later", created_at=AT + DAY, updated_at=AT + DAY))
        session.flush()
        session.add_all(
            [
                # 4: 300k + 250k won this year = 550k → gold; the lost million and the win of
                # two years ago do not count.
                _deal(101, 4, 300_000, "won", 30),
                _deal(102, 4, 250_000, "won", 364),
                _deal(103, 4, 1_000_000, "lost", 10),
                _deal(104, 4, 2_000_000, "won", 400),
                _deal(105, 4, 900_000, None, None),  # open
                _deal(106, 5, 1_200_000, "won", 100),  # diamond
                _deal(107, 6, 499_000, "won", 5),  # just below gold
                _deal(108, 6, 9_000_000, "won", -1),  # won after ``at``: not yet
            ]
        )
        session.commit()
    settings = world_settings(engine, tmp_path / "data", mlflow_client)
    yield engine, settings
    engine.dispose()


def _run(engine, client, settings, models=("deal_health",)):
    with session_factory(engine)() as session:
        return run_batch(
            session, client, settings, list(models), at=AT, scoring_frame=tiny_scoring_frame
        )


def _account_tags(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(
            text("SELECT * FROM tags WHERE entity_type = 'account' ORDER BY entity_id, name"), conn
        )


def _history(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT COUNT(*) FROM tag_history WHERE entity_type = 'account'")
        ).scalar_one()


def test_accounts_are_tiered_by_won_deals_of_the_last_12_months(world, mlflow_client):
    engine, settings = world
    summary = _run(engine, mlflow_client, settings)
    tags = _account_tags(engine)
    assert set(tags["name"]) == {"account_tier"}
    tier = dict(zip(tags["entity_id"], tags["value"], strict=True))
    assert tier == {1: "normal", 2: "normal", 3: "normal", 4: "gold", 5: "diamond", 6: "normal"}
    assert set(tags["model_name"]) == {"rules"}
    assert summary.tag_counts["account_tier=gold"] == 1
    assert summary.as_dict()["tag_counts"]["account_tier=diamond"] == 1


def test_rerun_writes_no_duplicate_account_tier(world, mlflow_client):
    engine, settings = world
    _run(engine, mlflow_client, settings)
    before = _account_tags(engine)
    second = _run(engine, mlflow_client, settings)
    after = _account_tags(engine)
    assert len(after) == len(before) == 6 and after.equals(before)
    assert _history(engine) == 0
    assert second.tag_counts["account_tier=gold"] == 1


def test_a_tier_that_no_longer_holds_changes_with_history(world, mlflow_client):
    engine, settings = world
    _run(engine, mlflow_client, settings)
    with engine.begin() as conn:
        conn.execute(text("UPDATE deals SET outcome = 'lost' WHERE id = 101"))
    _run(engine, mlflow_client, settings)
    tier = _account_tags(engine).set_index("entity_id")["value"]
    assert tier[4] == "normal" and _history(engine) == 1


def test_the_value_thresholds_of_the_rules_file_tier_accounts(world, mlflow_client):
    engine, settings = world
    (settings.data_dir / "rules.yaml").write_text(
        "value: {gold_from: 400000, diamond_above: 500000}\n"
    )
    _run(engine, mlflow_client, settings)
    tier = _account_tags(engine).set_index("entity_id")["value"]
    assert (tier[4], tier[5], tier[6]) == ("diamond", "diamond", "gold")


def test_runs_without_deal_health_leave_accounts_alone(world, mlflow_client):
    engine, settings = world
    _run(engine, mlflow_client, settings, models=("lead_scoring",))
    assert _account_tags(engine).empty
