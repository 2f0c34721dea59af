"""Lead scoring: P(conversion within 90 days) for a lead, shown as 1–99 and grade A–D.

Baseline: the design notes' rule-based points score (MQL at ≥ 100 points); the MQL rule's precision
and recall on the holdout are logged next to the model's at the same number of flagged leads.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from crm_predict.training.classifier import (
    LABEL,
    ClassifierSpec,
    TrainResult,
    parse_boolean,
    train_classifier,
)

from crm_predict.core import rules as R
from crm_predict.core.model_spec import ModelSpec
from crm_predict.core.rules import (
    RULES,
    Rules,
    TaskSpec,
    is_mql,
    lead_grade,
    lead_score_1_99,
    rule_based_lead_score,
)
from crm_predict.core.settings import Settings
from crm_predict.core.tagging import flag, has, high_activity, optional_id, optional_timestamp

MODEL = ModelSpec(
    name="lead_scoring",
    kind="classifier",
    entity="lead",
    crm_entity="lead",
    id_field="lead_id",
    score_output="probability",
    label="converted_90d",
    views=(
        ("lead_profile", ("lead_source", "lead_region", "industry", "size_band", "annual_revenue_band", "role", "is_decision_maker")),
        ("lead_behaviour", None),
        ("rule_based_lead_score", ("rule_score",)),
    ),
    purpose="Probability that a lead converts within 90 days, scored 7 days after it was "
    "created; shown as a 1–99 score with grades A–D and top reasons.",
    known_limits="Trained on leads older than 7 days; leads converted in their first week "
    "are not scored. Sources or regions unseen in training get no learned weight.",
    decision_threshold=lambda rules: 0.75,  # grade A starts at a 1–99 score of 75
    record_context=("rule_points",),
    tag_features=("site_visits_30d",),
)  # fmt: skip
RULE_SCORE = "rule_score"
# Columns the points rule reads when a table has no ready-made ``rule_score`` (in rule order).
RULE_INPUTS = (
    "industry",
    "is_decision_maker",
    "region",
    "site_visits",
    "pricing_views",
    "whitepapers",
    "trial_requests",
    "days_since_last_interaction",
)


def rule_points(rows: pd.DataFrame) -> np.ndarray | None:
    """The points score of each lead, or None when the table lacks the rule's inputs."""
    if RULE_SCORE in rows.columns:
        return pd.to_numeric(rows[RULE_SCORE], errors="coerce").fillna(0).to_numpy(dtype=float)
    if not set(RULE_INPUTS) <= set(rows.columns):
        return None
    inputs = {c: rows[c] for c in RULE_INPUTS}
    inputs["is_decision_maker"] = parse_boolean(rows["is_decision_maker"])
    if inputs["is_decision_maker"] is None:
        return None
    inputs["is_decision_maker"] = inputs["is_decision_maker"].fillna(0).astype(bool)
    return rule_based_lead_score(**inputs).to_numpy()


def baseline(older: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray | None:
    """Rule-based points need no training data."""
    return rule_points(rows)


def mql_metrics(
    holdout: pd.DataFrame, p_model: np.ndarray, points: np.ndarray | None
) -> dict[str, float]:
    """Precision/recall of the MQL rule, and of the model flagging the same number of leads."""
    if points is None:
        return {}
    y = holdout[LABEL].to_numpy().astype(bool)
    mql = is_mql(points, RULES.lead)
    metrics = {"baseline_mql_rate": float(mql.mean()), "baseline_mql_recall": 0.0}
    if mql.any():
        top = np.zeros_like(mql)
        top[np.argsort(-p_model, kind="stable")[: int(mql.sum())]] = True
        metrics |= {
            "baseline_mql_precision": float(y[mql].mean()),
            "baseline_mql_recall": float((y & mql).sum() / y.sum()),
            "mql_volume_precision": float(y[top].mean()),
            "mql_volume_recall": float((y & top).sum() / y.sum()),
        }
    return metrics


SPEC = ClassifierSpec(MODEL, baseline, "rule_based_points", extra_metrics=mql_metrics)


def train(settings: Settings, client: Any, frame: pd.DataFrame, **options: Any) -> TrainResult:
    """Train, log and register the lead scoring model (options: see ``train_classifier``)."""
    return train_classifier(settings, client, frame, SPEC, **options)


def outputs(probability: np.ndarray | pd.Series) -> pd.DataFrame:
    """Score 1–99 and grade A–D for each conversion probability."""
    score = lead_score_1_99(probability)
    return pd.DataFrame({"lead_score": score, "lead_grade": lead_grade(score)})


def response(p: np.ndarray, rules: Rules = RULES) -> dict[str, np.ndarray]:
    """The API record's fields from P(convert): score 1–99, the probability and grade A–D (the
    service adds the rule points and MQL flag, ``MODEL.record_context``)."""
    score = lead_score_1_99(p)
    return {"score": score, "probability": p, "grade": lead_grade(score)}


# --- Tags and tasks (the write-back's rules for this model) ----------------------------------


def tag_values(
    scored: pd.DataFrame, rules: Rules = RULES, rfm_medians: tuple | None = None
) -> dict[str, np.ndarray]:
    """Lead score 1–99 and grade A–D from P(convert); MQL from the rule-based points."""
    score = R.lead_score_1_99(scored["score"])
    values = {
        R.TAG_LEAD_SCORE: score.astype(str).astype(object),
        R.TAG_LEAD_GRADE: R.lead_grade(score),
    }
    if has(scored, "rule_points"):
        values[R.TAG_MQL] = flag(R.is_mql(scored["rule_points"].fillna(0), rules.lead))
    if has(scored, "site_visits_30d"):
        values[R.TAG_HIGH_ACTIVITY] = high_activity(scored["site_visits_30d"], rules)
    return values


def tasks(scored: pd.DataFrame, now: datetime, rules: Rules = RULES) -> list[TaskSpec]:
    """First contact (2 h SLA) for leads nobody has contacted, escalation to the manager after 24 h
    unhandled, and a 24 h follow-up on a whitepaper download in the last 24 h."""
    tasks: list[TaskSpec] = []
    if has(scored, "created_at", "first_contacted_at"):
        new = scored[scored["first_contacted_at"].isna() & scored["created_at"].notna()]
        owners = new["owner_id"] if has(new, "owner_id") else [None] * len(new)
        managers = new["manager_id"] if has(new, "manager_id") else [None] * len(new)
        for lead_id, created, owner, manager in zip(
            new["entity_id"], new["created_at"], owners, managers, strict=True
        ):
            created = optional_timestamp(created)
            tasks.append(R.first_contact_task(int(lead_id), optional_id(owner), created, rules))
            escalation = R.lead_escalation_task(
                int(lead_id), optional_id(manager), created, now, rules
            )
            if escalation is not None:
                tasks.append(escalation)
    if has(scored, "contact_id", "last_whitepaper_at"):
        window = timedelta(hours=rules.lead.whitepaper_follow_up_hours)
        downloaded = pd.to_datetime(scored["last_whitepaper_at"])
        recent = scored[
            (downloaded <= now) & (downloaded > now - window) & scored["contact_id"].notna()
        ]
        recent = recent.drop_duplicates("contact_id")
        owners = recent["owner_id"] if has(recent, "owner_id") else [None] * len(recent)
        for contact_id, at, owner in zip(
            recent["contact_id"], recent["last_whitepaper_at"], owners, strict=True
        ):
            tasks.append(
                R.whitepaper_follow_up_task(
                    int(contact_id), optional_id(owner), optional_timestamp(at), rules
                )
            )
    return tasks
