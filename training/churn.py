"""Churn: P(no order in the next 90 days) for a customer, calibrated, with a risk level.

Baseline: days since the last order (the longer the silence, the likelier the churn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from crm_predict.model_spec import ModelSpec
from crm_predict.rules import RULES, churn_risk_level
from crm_predict.settings import Settings
from training.classifier import ClassifierSpec, TrainResult, parse_numeric, train_classifier

MODEL = ModelSpec(
    name="churn",
    kind="classifier",
    entity="customer",
    crm_entity="contact",
    id_field="customer_id",
    score_output="p_churn",
    quality=("auc", "baseline_auc", "oracle_auc"),
    purpose="Probability that a customer places no order in the next 90 days; written as the "
    "churn_risk tag (high → retention task for high-value customers).",
    known_limits="A 90-day window: seasonal buyers with longer gaps look like churners.",
    decision_threshold=lambda rules: rules.churn.high_at,  # high risk → retention task
)
MODEL_NAME = MODEL.name
FEATURE_SERVICE = MODEL.feature_service
# Recency column of the feature service first, then common names in customer tables.
RECENCY_COLUMNS = ("rfm_recency_days", "days_since_last_order")


def baseline(older: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray | None:
    """Days since the last order; customers who never ordered rank as the most silent."""
    column = next((c for c in RECENCY_COLUMNS if c in rows.columns), None)
    if column is None:
        return None
    days = parse_numeric(rows[column], min_share=0.0)
    return days.fillna(days.max() + 1 if days.notna().any() else 0).to_numpy(dtype=float)


SPEC = ClassifierSpec(
    name=MODEL_NAME,
    feature_service=FEATURE_SERVICE,
    entity=MODEL.entity,
    baseline=baseline,
    baseline_name="days_since_last_order",
)


def train(settings: Settings, client: Any, frame: pd.DataFrame, **options: Any) -> TrainResult:
    """Train, log and register the churn model (options: see ``train_classifier``)."""
    return train_classifier(settings, client, frame, SPEC, **options)


def outputs(probability: np.ndarray | pd.Series) -> pd.DataFrame:
    """Churn risk level (high / medium / low) of each probability."""
    return pd.DataFrame(
        {"churn_risk": churn_risk_level(np.asarray(probability, dtype=float), RULES.churn)}
    )
