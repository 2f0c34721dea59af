"""Business rules as a user-edited file: the shipped defaults are the built-in ones, a bad key or
value is named, the file is found and read where the jobs run, and user tag rules and owner
assignment do what the file says."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from crm_predict.serving.writeback import ModelVersionRef, assign_owners, prepare_write, tag_frame
from typer.testing import CliRunner

from crm_predict.cli import app
from crm_predict.core.conditions import ConditionError, parse_condition
from crm_predict.core.errors import UserError
from crm_predict.core.rules import DEFAULT_RULES_FILE, RULES, TaskSpec, load_rules
from crm_predict.core.settings import Settings

NOW = datetime(2026, 6, 30, 2, 0)
LEAD_MODEL = ModelVersionRef("lead_scoring", "1", "run")


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_default_file_equals_the_built_in_rules():
    assert load_rules(DEFAULT_RULES_FILE) == RULES
    assert load_rules(None) is RULES


def test_missing_keys_keep_their_defaults(tmp_path):
    rules = load_rules(_write(tmp_path / "rules.yaml", "lead:\n  mql_threshold: 80\n"))
    assert rules.lead.mql_threshold == 80
    assert rules.lead.points_per_activity == RULES.lead.points_per_activity
    assert rules.deal == RULES.deal


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "lead:\n  mql_threshold: lots\n",
            "rules.yaml: lead.mql_threshold: Input should be a valid integer",
        ),  # fmt: skip
        (
            "lead:\n  mql_treshold: 80\n",
            "rules.yaml: lead.mql_treshold: unknown key; allowed: target_industries",
        ),  # fmt: skip
        (
            "lead:\n  points_per_activity: {webinar: 10}\n",
            "lead.points_per_activity.webinar: unknown key; allowed: visit, pricing, content, trial",
        ),  # fmt: skip
        ("deal:\n  green_at: 50\n", "deal: yellow_at (60) is above green_at (50)"),
        (
            "tags:\n  - {name: hot, entity: lead, when: 'visits >= ten'}\n",
            "tags.0.when: bad condition",
        ),  # fmt: skip
        (
            "tags:\n  - {name: hot, entity: account, when: 'a > 1'}\n",
            "tags.0.entity: Input should be 'lead', 'deal' or 'customer'",
        ),  # fmt: skip
        ("- just a list\n", "expected a mapping of sections"),
        ("lead: [\n", "not valid YAML"),
    ],
)
def test_a_bad_file_is_an_error_naming_the_file_and_key(tmp_path, text, message):
    with pytest.raises(UserError) as caught:
        load_rules(_write(tmp_path / "rules.yaml", text))
    assert message in str(caught.value)


def test_rules_file_comes_from_the_env_var_else_the_data_dir(tmp_path, monkeypatch):
    assert Settings(data_dir=tmp_path).rules_path is None
    _write(tmp_path / "rules.yaml", "lead: {mql_threshold: 70}\n")
    assert Settings(data_dir=tmp_path).load_rules().lead.mql_threshold == 70
    other = _write(tmp_path / "other.yaml", "lead: {mql_threshold: 60}\n")
    monkeypatch.setenv("CRM_PREDICT_RULES_FILE", str(other))
    settings = Settings(data_dir=tmp_path)
    assert settings.rules_path == other and settings.load_rules().lead.mql_threshold == 60


# --- conditions --------------------------------------------------------------------------------


def test_conditions_are_parsed_not_evaluated_and_vectorised():
    frame = pd.DataFrame(
        {"visits": [12, 3, None, 20], "stage": ["proposal", "won", "proposal", None]}
    )
    assert parse_condition("visits >= 10").evaluate(frame).tolist() == [True, False, False, True]
    either = parse_condition("visits < 5 or stage == 'proposal' and visits > 10")
    assert either.evaluate(frame).tolist() == [True, True, False, False]
    assert parse_condition('stage != "won"').evaluate(frame).tolist() == [True, False, True, False]
    for bad in ("__import__('os')", "visits >= 10 and", "stage > 'x'", "visits => 3", ""):
        with pytest.raises(ConditionError):
            parse_condition(bad)


# --- write-back ---------------------------------------------------------------------------------


def _leads() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": [1, 2, 3],
            "score": [0.2, 0.5, 0.9],
            "rule_points": [40.0, 90.0, 130.0],
            "site_visits_30d": [12, 2, 10],
        }
    )


def test_mql_threshold_and_user_tag_rules_decide_lead_tags(tmp_path):
    rules = load_rules(
        _write(
            tmp_path / "rules.yaml",
            "lead: {mql_threshold: 80}\n"
            "tags:\n"
            "  - {name: high_activity, entity: lead, when: 'site_visits_30d >= 10'}\n"
            "  - {name: heat, value: hot, entity: lead, when: 'rule_points >= 100'}\n"
            "  - {name: heat, value: warm, entity: lead, when: 'rule_points >= 50'}\n",
        )
    )
    tags = tag_frame(LEAD_MODEL, _leads(), NOW, rules=rules)
    by = {(r.entity_id, r.name): r.value for r in tags.itertuples()}
    assert [by[(i, "mql")] for i in (1, 2, 3)] == [None, "true", "true"]
    assert [by[(i, "high_activity")] for i in (1, 2, 3)] == ["true", None, "true"]
    assert [by[(i, "heat")] for i in (1, 2, 3)] == [None, "warm", "hot"]  # first rule holding
    default = {(r.entity_id, r.name): r.value for r in tag_frame(LEAD_MODEL, _leads(), NOW).itertuples()}  # fmt: skip
    assert default[(2, "mql")] is None
    # Built in for leads too (#20): value.high_activity_visits_30d over the lead's site_visits_30d.
    assert [default[(i, "high_activity")] for i in (1, 2, 3)] == ["true", None, "true"]


def test_tasks_without_owner_go_to_the_region_default_owner_else_the_queue():
    rules = RULES.model_copy(
        update={
            "assignment": RULES.assignment.model_copy(
                update={"default_owner_by_region": {"north": "rep_n"}, "queue": "inbox"}
            )
        }
    )
    scored = pd.DataFrame({"entity_id": [1, 2, 3], "region": ["North", "south", "north"]})
    tasks = [
        TaskSpec("first_contact", "lead", i, owner, NOW, 2, "New lead")
        for i, owner in ((1, None), (2, None), (3, 9))
    ]
    out, counts = assign_owners(tasks, scored, rules, default_owners={"north": 7})
    assert [t.owner_id for t in out] == [7, None, 9]
    assert out[1].reason == "[queue:inbox] New lead" and out[1].dedup_key == tasks[1].dedup_key
    assert counts == {"default_owner": 1, "queue": 1}


def test_prepared_write_counts_assignments():
    leads = _leads().assign(
        created_at=pd.Timestamp(NOW) - pd.Timedelta(hours=1), first_contacted_at=pd.NaT,
        owner_id=[None, 4, None], region=["north", "north", "west"],
    )  # fmt: skip
    prepared = prepare_write(LEAD_MODEL, leads, NOW, "sqlite", default_owners={"north": 5})
    assert [t.owner_id for t in prepared.tasks] == [5, 4, None]
    assert prepared.assignment_counts == {"default_owner": 1, "queue": 1}


# --- CLI ----------------------------------------------------------------------------------------


def test_rules_check_and_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRM_PREDICT_RULES_FILE", raising=False)
    runner = CliRunner()
    env = {"CRM_PREDICT_DATA_DIR": str(tmp_path)}
    good = _write(
        tmp_path / "good.yaml",
        "lead: {mql_threshold: 90}\n"
        "tags: [{name: high_activity, entity: lead, when: 'site_visits_30d >= 10'}]\n",
    )
    ok = runner.invoke(app, ["rules", "check", str(good)], env=env)
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "MQL at 90 points" in ok.output and "1 rule(s)" in ok.output

    bad = _write(tmp_path / "bad.yaml", "lead: {mql_threshold: lots}\n")
    failed = runner.invoke(app, ["rules", "check", str(bad)], env=env)
    assert failed.exit_code == 2
    assert "bad.yaml: lead.mql_threshold: Input should be a valid integer" in failed.output

    column = _write(tmp_path / "col.yaml", "tags: [{name: x, entity: deal, when: 'visits > 1'}]\n")
    unknown = runner.invoke(app, ["rules", "check", str(column)], env=env)
    assert unknown.exit_code == 2 and "unknown column 'visits' for a deal" in unknown.output

    shown = runner.invoke(app, ["rules", "show"], env=env)
    assert shown.exit_code == 0 and "built-in defaults" in shown.output
    _write(tmp_path / "rules.yaml", good.read_text())
    shown = runner.invoke(app, ["rules", "show"], env=env)
    assert shown.exit_code == 0, shown.output
    assert str(tmp_path / "rules.yaml") in shown.output and "mql_threshold: 90" in shown.output


# --- the batch and the API read the file ---------------------------------------------------------


def test_lead_context_points_follow_the_rules():
    from crm_predict.features.rule_context import lead_context

    tables = {
        "users": pd.DataFrame({"id": [1], "external_id": ["u1"], "manager_id": [None]}),
        "accounts": pd.DataFrame({"id": [1], "industry": ["software"]}),
        "contacts": pd.DataFrame({"id": [1], "owner_id": [1], "is_decision_maker": [True]}),
        "leads": pd.DataFrame(
            {
                "id": [1],
                "contact_id": [1],
                "account_id": [1],
                "owner_id": [1],
                "region": ["north"],
                "created_at": [pd.Timestamp(NOW) - pd.Timedelta(days=2)],
                "first_contacted_at": [pd.NaT],
                "converted_at": [pd.NaT],
            }
        ),  # fmt: skip
        "activities": pd.DataFrame(
            {
                "contact_id": [1],
                "lead_id": [1],
                "deal_id": [np.nan],
                "type": ["site_visit"],
                "category": ["visit"],
                "occurred_at": [pd.Timestamp(NOW) - pd.Timedelta(days=1)],
            }
        ),  # fmt: skip
    }
    points = lead_context(tables, NOW)["rule_points"].iloc[0]
    assert points == 20 + 30 + 5  # target industry, decision maker, one visit
    richer = RULES.model_copy(
        update={"lead": RULES.lead.model_copy(update={"points_decision_maker": 100})}
    )
    assert lead_context(tables, NOW, richer)["rule_points"].iloc[0] == points + 70
