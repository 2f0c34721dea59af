"""The batch and the online API see the same rule context: for the same lead, deal and customer at
the same ``at``, the batch's context (``crm_predict.serving.batch.rule_context`` over the run's CRM snapshot)
and the API's write-back frame (the Feast online features, materialized at ``at``, through
``crm_predict.serving.hub.scored_frame``) hold the same rule points, days idle, days inactive and yearly
spend, and the write-back derives the same MQL, churn-warning and value tags from them, under the
built-in rules and under a rules file that moves the thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from batch_world import AT, build_crm
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.features.export import export, load_snapshots
from crm_predict.features.materialize import materialize
from crm_predict.features.scoring import scoring_frame
from crm_predict.features.store import apply
from crm_predict.serving import batch
from crm_predict.serving.hub import FeastOnline, Scored, crm_context, scored_frame
from crm_predict.serving.writeback import tag_values

from crm_predict.core.rules import RULES, Rules
from crm_predict.core.settings import Settings

MODELS = ("lead_scoring", "deal_health", "churn")
# The rule values each model's write-back reads, and the tags they decide.
COMPARED = {
    "lead_scoring": ("rule_points",),
    "deal_health": ("days_idle",),
    "churn": ("days_inactive", "yearly_spend"),
}
RULE_TAGS = {"lead_scoring": ("mql",), "deal_health": (), "churn": ("churn_warning",)}
# Records as the scoring gives them: a fixed score (the rule values, not the model, are compared).
RECORDS = {
    "lead_scoring": lambda i: {"lead_id": i, "score": 50, "probability": 0.5},
    "deal_health": lambda i: {"deal_id": i, "health": 50, "p_win": 0.5, "colour": "red"},
    "churn": lambda i: {"customer_id": i, "p_churn": 0.5, "risk": "medium"},
}
STRICT = Rules.model_validate(
    {
        "lead": {"mql_threshold": 20, "points_per_activity": {"visit": 9}},
        "churn": {"inactive_warning_days": 45},
        "value": {"gold_from": 2_000, "diamond_above": 500_000},
    }
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The batch tests' tiny CRM in SQLite, exported at ``AT`` and materialized online."""
    tmp = tmp_path_factory.mktemp("parity")
    engine = make_engine(f"sqlite:///{tmp / 'crm.db'}")
    upgrade(engine)
    settings = Settings(
        data_dir=tmp / "data", database_url=engine.url.render_as_string(hide_password=False)
    )
    settings.ensure_dirs()
    with session_factory(engine)() as session:
        build_crm(session)
        export(session, settings, as_of=AT)
    store = apply(settings)
    materialize(store, AT)
    yield engine, settings
    engine.dispose()


def _batch_frame(engine, settings, model: str, rules: Rules) -> pd.DataFrame:
    """The batch's rule context for ``model`` over the snapshot a ``run_batch`` reads."""
    tables = load_snapshots(settings, columns=batch.snapshot_columns(MODELS), strings="category")
    with session_factory(engine)() as session:
        crm = batch.crm_tables(session, MODELS, snapshot=tables)
    return batch.rule_context(crm, model, AT, rules).set_index("entity_id")


def _api_frame(engine, settings, model: str, ids: list[int], rules: Rules) -> pd.DataFrame:
    """The API's write-back frame for ``ids``: the online features as ``ModelHub`` reads them,
    all in one read, and the first few one id a request (the service's usual call)."""
    online = FeastOnline(settings)
    frames = []
    for chunk in [ids, *([i] for i in ids[:4])]:
        features = online.read(model, chunk)
        records = [RECORDS[model](i) for i in chunk]
        frame = scored_frame(model, Scored(None, records, features), rules)
        with session_factory(engine)() as session:
            frame = frame.merge(crm_context(session, model, chunk), "left", "entity_id")
        frames.append(frame)
    together, single = frames[0], pd.concat(frames[1:], ignore_index=True)
    pd.testing.assert_frame_equal(single, together.iloc[: len(single)], check_dtype=False)
    return together.set_index("entity_id")


def _entities(settings, model: str) -> list[int]:
    """Every entity the batch scores (its features' rows as of ``AT``)."""
    tables = load_snapshots(settings, columns=batch.snapshot_columns(MODELS), strings="category")
    return [int(i) for i in scoring_frame(settings, model, AT, tables=tables)["entity_id"]]


@pytest.mark.parametrize("rules", [RULES, STRICT], ids=["built-in", "rules-file"])
@pytest.mark.parametrize("model", MODELS)
def test_batch_and_api_write_back_the_same_rule_values(world, model, rules):
    engine, settings = world
    context = _batch_frame(engine, settings, model, rules)
    ids = _entities(settings, model)
    assert len(ids) > 5 and set(ids) <= set(context.index)
    api = _api_frame(engine, settings, model, ids, rules)
    mine = context.loc[ids]
    for column in COMPARED[model]:
        got, want = api[column].to_numpy(dtype=float), mine[column].to_numpy(dtype=float)
        np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=f"{model}.{column}")
    assert not np.isnan(mine[COMPARED[model][0]].to_numpy(dtype=float)).all()

    score = pd.Series(0.5, index=range(len(ids)))
    batch_scored = mine.reset_index().assign(score=score)
    api_scored = api.reset_index().assign(score=score)
    batch_tags, api_tags = tag_values(model, batch_scored, rules=rules), tag_values(model, api_scored, rules=rules)  # fmt: skip
    for tag in RULE_TAGS[model]:
        assert tag in batch_tags and tag in api_tags, tag
        assert list(api_tags[tag]) == list(batch_tags[tag]), f"{model} {tag}"


def test_the_worlds_values_tell_the_paths_apart(world):
    """The comparison above can fail: the world has leads whose points count their contact's
    untargeted visits, and customers whose last order is newer than their last activity."""
    engine, settings = world
    leads = _batch_frame(engine, settings, "lead_scoring", RULES)
    own_only = batch.rule_context(
        {**_own_activities(settings), "users": _users(engine)}, "lead_scoring", AT
    ).set_index("entity_id")
    assert (leads["rule_points"] != own_only.loc[leads.index, "rule_points"]).any()
    customers = _batch_frame(engine, settings, "churn", RULES)
    assert (customers["days_inactive"] < customers["recency_days"]).any()
    assert (customers["days_inactive"] == customers["recency_days"]).any()


def _own_activities(settings) -> dict[str, pd.DataFrame]:
    """The snapshot without the activities that name no lead (the contacts' own)."""
    tables = load_snapshots(settings, columns=batch.snapshot_columns(MODELS))
    acts = tables["activities"]
    return {**tables, "activities": acts[acts["lead_id"].notna()].reset_index(drop=True)}


def _users(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql("SELECT id, external_id, manager_id FROM users", conn)
