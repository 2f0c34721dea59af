"""Scores → tags and tasks: each rule of the design notes on a tiny frame."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from crm_predict.serving.writeback import (
    ModelVersionRef,
    tag_frame,
    tag_values,
    task_specs,
)

from crm_predict.core import rules as R

NOW = datetime(2026, 6, 30, 2, 0)


def _model(name: str, version: str = "3") -> ModelVersionRef:
    return ModelVersionRef(name=name, version=version, run_id=f"run-{name}")


def _values(model_name: str, scored: pd.DataFrame, **kwargs) -> dict[str, list]:
    return {k: list(v) for k, v in tag_values(model_name, scored, **kwargs).items()}


def test_lead_grade_score_and_mql():
    scored = pd.DataFrame(
        {
            "entity_id": [1, 2, 3, 4],
            "score": [0.9, 0.6, 0.3, 0.001],
            "rule_points": [120, 100, 99, None],
        }  # fmt: skip
    )
    values = _values("lead_scoring", scored)
    assert values[R.TAG_LEAD_SCORE] == ["90", "60", "30", "1"]
    assert values[R.TAG_LEAD_GRADE] == ["A", "B", "C", "D"]
    assert values[R.TAG_MQL] == ["true", "true", "false", "false"]


def test_mql_is_skipped_without_rule_points():
    assert R.TAG_MQL not in tag_values("lead_scoring", pd.DataFrame({"entity_id": [1], "score": [0.5]}))  # fmt: skip


def test_deal_health_colour_bands():
    scored = pd.DataFrame({"entity_id": [1, 2, 3, 4], "score": [0.8, 0.79, 0.6, 0.59]})
    values = _values("deal_health", scored)
    assert values[R.TAG_DEAL_HEALTH] == ["80", "79", "60", "59"]
    assert values[R.TAG_DEAL_COLOUR] == ["green", "yellow", "yellow", "red"]


def test_churn_risk_and_warning_after_30_inactive_days():
    scored = pd.DataFrame(
        {"entity_id": [1, 2, 3], "score": [0.7, 0.4, 0.1], "days_inactive": [30, 29, None]}
    )
    values = _values("churn", scored)
    assert values[R.TAG_CHURN_RISK] == ["high", "medium", "low"]
    # No activity ever counts as inactive.
    assert values[R.TAG_CHURN_WARNING] == ["true", "false", "true"]


def test_clv_tier_rfm_activity_and_potential():
    scored = pd.DataFrame(
        {
            "entity_id": [1, 2, 3],
            "score": [5e6, 1e5, 10.0],
            "yearly_spend": [1_000_001, 500_000, 499_999],
            "recency_days": [5, 50, 500],
            "frequency": [20, 5, 1],
            "monetary": [900.0, 100.0, 10.0],
            "visits_30d": [10, 9, 0],
            "spend_last_3m": [300.0, 299.0, 5.0],
            "spend_prior_3m": [100.0, 100.0, 0.0],
        }
    )
    values = _values("clv", scored)
    assert values[R.TAG_CLV_TIER] == ["diamond", "gold", "normal"]
    assert values[R.TAG_RFM_SEGMENT] == ["champions", "champions", "lost"]
    assert values[R.TAG_HIGH_ACTIVITY] == ["true", "false", "false"]
    # +200 % (300 vs 100) is potential, +199 % is not, nor is growth from nothing (#20).
    assert values[R.TAG_POTENTIAL] == ["true", "false", "false"]


def test_rfm_uses_population_medians_when_given():
    scored = pd.DataFrame(
        {
            "entity_id": [1],
            "score": [1.0],
            "recency_days": [10],
            "frequency": [3],
            "monetary": [50.0],
        }  # fmt: skip
    )
    assert _values("clv", scored, rfm_medians=(5.0, 4.0, 60.0))[R.TAG_RFM_SEGMENT] == ["lost"]
    assert _values("clv", scored, rfm_medians=(20.0, 2.0, 10.0))[R.TAG_RFM_SEGMENT] == ["champions"]


def test_best_contact_slot_label():
    scored = pd.DataFrame(
        {"entity_id": [7], "score": [0.3], "best_slots": [[38, 2, 100]], "best_channel": ["email"]}
    )
    assert _values("next_best_time", scored)[R.TAG_BEST_SLOT] == ["Tue 14:00 email"]


def test_tag_frame_carries_provenance():
    scored = pd.DataFrame({"entity_id": [1, 2], "score": [0.9, 0.1]})
    tags = tag_frame(_model("churn", "5"), scored, NOW)
    assert len(tags) == 2
    assert set(tags["entity_type"]) == {"contact"}
    assert set(tags["model_version"]) == {"5"} and set(tags["run_id"]) == {"run-churn"}
    assert (tags["scored_at"] == NOW).all()


def test_new_lead_gets_first_contact_task_and_escalation_after_24h():
    scored = pd.DataFrame(
        {
            "entity_id": [1, 2, 3],
            "score": [0.5, 0.5, 0.5],
            "owner_id": [10, 11, 12],
            "manager_id": [100, 100, 100],
            "created_at": [
                NOW - timedelta(hours=1),
                NOW - timedelta(hours=25),
                NOW - timedelta(days=3),
            ],  # fmt: skip
            "first_contacted_at": [None, None, NOW - timedelta(days=2)],
        }
    )
    tasks = task_specs("lead_scoring", scored, NOW)
    kinds = sorted((t.type, t.entity_id, t.owner_id) for t in tasks)
    assert kinds == [
        (R.TASK_ESCALATION, 2, 100),
        (R.TASK_FIRST_CONTACT, 1, 10),
        (R.TASK_FIRST_CONTACT, 2, 11),
    ]
    first = next(t for t in tasks if t.entity_id == 1)
    assert first.sla_hours == 2 and first.due_at == NOW + timedelta(hours=1)


def test_whitepaper_download_gets_24h_follow_up_once():
    scored = pd.DataFrame(
        {
            "entity_id": [1, 2, 3],
            "score": [0.5, 0.5, 0.5],
            "owner_id": [10, 11, 12],
            "contact_id": [50, 51, 50],
            "last_whitepaper_at": [
                NOW - timedelta(hours=3),
                NOW - timedelta(hours=30),
                NOW - timedelta(hours=3),
            ],  # fmt: skip
        }
    )
    tasks = task_specs("lead_scoring", scored, NOW)
    assert [(t.type, t.entity_type, t.entity_id) for t in tasks] == [
        (R.TASK_WHITEPAPER_FOLLOW_UP, "contact", 50)
    ]
    assert tasks[0].due_at == NOW + timedelta(hours=21)


def test_red_deal_gets_rescue_and_idle_deal_escalation():
    scored = pd.DataFrame(
        {
            "entity_id": [1, 2, 3],
            "score": [0.3, 0.9, 0.9],
            "owner_id": [10, 11, 12],
            "manager_id": [100, 100, 101],
            "stage": ["proposal", "negotiation", "qualification"],
            "days_idle": [1, 7, 6.9],
        }
    )
    tasks = task_specs("deal_health", scored, NOW)
    assert sorted((t.type, t.entity_id, t.owner_id) for t in tasks) == [
        (R.TASK_ESCALATION, 2, 100),
        (R.TASK_RESCUE_DEAL, 1, 10),
    ]


def test_retention_only_for_high_value_customers_at_high_risk():
    scored = pd.DataFrame(
        {
            "entity_id": [1, 2, 3, 4],
            "score": [0.9, 0.9, 0.5, 0.95],
            "owner_id": [10, 11, 12, 13],
            "yearly_spend": [2_000_000, 600_000, 2_000_000, 1_000],
        }
    )
    tasks = task_specs("churn", scored, NOW)
    assert sorted((t.type, t.entity_id) for t in tasks) == [
        (R.TASK_RETENTION, 1),
        (R.TASK_RETENTION, 2),
    ]


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        tag_values("nope", pd.DataFrame({"entity_id": [1], "score": [0.1]}))


def test_best_slot_tags_vectorised_equal_the_row_by_row_label():
    from crm_predict.training.next_best_time import best_slot_value
    from crm_predict.training.next_best_time import tag_values as next_best_time_tag_values

    rng = np.random.default_rng(4)
    slots = [list(rng.integers(0, 168, 3)) for _ in range(500)]
    channels = rng.choice(np.array(["email", "phone", None], dtype=object), 500)
    scored = pd.DataFrame({"best_slots": slots, "best_channel": channels})
    got = next_best_time_tag_values(scored)["best_contact_slot"]
    assert list(got) == [best_slot_value(s, c) for s, c in zip(slots, channels, strict=True)]
    plain = next_best_time_tag_values(scored[["best_slots"]])["best_contact_slot"]
    assert list(plain) == [best_slot_value(s, None) for s in slots]
    assert len(next_best_time_tag_values(scored.iloc[:0])["best_contact_slot"]) == 0
