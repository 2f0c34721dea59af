"""Churn: P(no order in the next 90 days) for a customer, calibrated, with a risk level.

Baseline: days since the last order (the longer the silence, the likelier the churn).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from crm_predict.rules import RULES, churn_risk_level
from crm_predict.settings import Settings
from training.classifier import ClassifierSpec, TrainResult, parse_numeric, train_classifier

MODEL_NAME = "churn"
FEATURE_SERVICE = "churn_v1"
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
    entity="customer",
    baseline=baseline,
    baseline_name="days_since_last_order",
)


def train(settings: Settings, client: Any, frame: pd.DataFrame, **options: Any) -> TrainResult:
    """Train, log and register the churn model (options: see ``train_classifier``)."""
    return train_classifier(settings, client, frame, SPEC, **options)


def outputs(probability: np.ndarray | pd.Series) -> pd.DataFrame:
    """Churn probability and risk level (high / medium / low)."""
    p = np.asarray(probability, dtype=float)
    return pd.DataFrame({"churn_probability": p, "churn_risk": churn_risk_level(p, RULES.churn)})
