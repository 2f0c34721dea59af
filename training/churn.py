"""Churn: P(no order in the next 90 days) for a customer, calibrated, with a risk level.

Baseline: days since the last order (the longer the silence, the likelier the churn).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from crm_predict.training.classifier import (
    ClassifierSpec,
    TrainResult,
    parse_numeric,
    train_classifier,
)

from crm_predict.core import rules as R
from crm_predict.core.model_spec import ModelSpec
from crm_predict.core.rules import RULES, Rules, TaskSpec, churn_risk_level
from crm_predict.core.settings import Settings
from crm_predict.core.tagging import flag, has, optional_id

MODEL = ModelSpec(
    name="churn",
    kind="classifier",
    entity="customer",
    crm_entity="contact",
    id_field="customer_id",
    score_output="p_churn",
    label="churned_90d",
    views=(
        ("customer_profile", ("region", "acquisition_source", "has_account")),
        ("customer_transactions", None),
        ("customer_behaviour", None),
    ),
    purpose="Probability that a customer places no order in the next 90 days; written as the "
    "churn_risk tag (high → retention task for high-value customers).",
    known_limits="A 90-day window: seasonal buyers with longer gaps look like churners.",
    decision_threshold=lambda rules: rules.churn.high_at,  # high risk → retention task
)
# Recency column of the feature service first, then common names in customer tables.
RECENCY_COLUMNS = ("rfm_recency_days", "days_since_last_order")


def baseline(older: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray | None:
    """Days since the last order; customers who never ordered rank as the most silent."""
    column = next((c for c in RECENCY_COLUMNS if c in rows.columns), None)
    if column is None:
        return None
    days = parse_numeric(rows[column], min_share=0.0)
    return days.fillna(days.max() + 1 if days.notna().any() else 0).to_numpy(dtype=float)


SPEC = ClassifierSpec(MODEL, baseline, baseline_name="days_since_last_order")


def train(settings: Settings, client: Any, frame: pd.DataFrame, **options: Any) -> TrainResult:
    """Train, log and register the churn model (options: see ``train_classifier``)."""
    return train_classifier(settings, client, frame, SPEC, **options)


def outputs(probability: np.ndarray | pd.Series) -> pd.DataFrame:
    """Churn risk level (high / medium / low) of each probability."""
    return pd.DataFrame(
        {"churn_risk": churn_risk_level(np.asarray(probability, dtype=float), RULES.churn)}
    )


def response(p: np.ndarray, rules: Rules = RULES) -> dict[str, np.ndarray]:
    """The API record's fields from P(churn): the probability and the risk level."""
    return {"p_churn": p, "risk": churn_risk_level(p, rules.churn)}


# --- Tags and tasks (the write-back's rules for this model) ----------------------------------


def tag_values(
    scored: pd.DataFrame, rules: Rules = RULES, rfm_medians: tuple | None = None
) -> dict[str, np.ndarray]:
    """Churn risk high/medium/low, and the churn warning after 30 days without activity."""
    values = {R.TAG_CHURN_RISK: R.churn_risk_level(scored["score"], rules.churn)}
    if has(scored, "days_inactive"):
        values[R.TAG_CHURN_WARNING] = flag(
            R.is_churn_warning(scored["days_inactive"].fillna(np.inf), rules.churn)
        )
    return values


def tasks(scored: pd.DataFrame, now: datetime, rules: Rules = RULES) -> list[TaskSpec]:
    """Retention for high-value (diamond/gold by yearly spend) customers at high churn risk."""
    if not has(scored, "yearly_spend"):
        return []
    risk = R.churn_risk_level(scored["score"], rules.churn)
    tier = R.value_tier(scored["yearly_spend"].fillna(0), rules.value)
    wanted = (risk == "high") & (tier != "normal")
    rows = scored[wanted]
    owners = rows["owner_id"] if has(rows, "owner_id") else [None] * len(rows)
    tasks = []
    for contact_id, owner, r, t in zip(rows["entity_id"], owners, risk[wanted], tier[wanted], strict=True):  # fmt: skip
        task = R.retention_task(int(contact_id), optional_id(owner), str(r), str(t), now, rules)
        if task is not None:
            tasks.append(task)
    return tasks
