"""Deal health: P(win) of an open deal, shown as 0–100 and a green/yellow/red colour.

Baseline: the win rate of the deal's stage, learned on the training rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from crm_predict.model_spec import ModelSpec
from crm_predict.rules import RULES, deal_colour, deal_health_score
from crm_predict.settings import Settings
from training.classifier import LABEL, ClassifierSpec, TrainResult, train_classifier

MODEL = ModelSpec(
    name="deal_health",
    kind="classifier",
    entity="deal",
    crm_entity="deal",
    id_field="deal_id",
    score_output="p_win",
    quality=("auc", "baseline_auc", "oracle_auc"),
    purpose="Probability that an open deal is won, scored 21 days after creation; shown "
    "as health 0–100 and a green/yellow/red colour (red → rescue task).",
    known_limits="Only closed deals carry labels, so very long open deals are under-represented.",
    decision_threshold=lambda rules: rules.deal.yellow_at / 100,  # below → red → rescue task
)
MODEL_NAME = MODEL.name
FEATURE_SERVICE = MODEL.feature_service
STAGE = "stage"
PRIOR_ROWS = 5  # shrink small stages toward the overall win rate


def baseline(older: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray | None:
    """Stage-only win rate from the training rows; unseen stages get the overall rate."""
    if STAGE not in older.columns or STAGE not in rows.columns:
        return None
    overall = older[LABEL].mean()
    stats = older.groupby(older[STAGE].astype(str))[LABEL].agg(["sum", "count"])
    rate = (stats["sum"] + PRIOR_ROWS * overall) / (stats["count"] + PRIOR_ROWS)
    return rows[STAGE].astype(str).map(rate).fillna(overall).to_numpy(dtype=float)


SPEC = ClassifierSpec(
    name=MODEL_NAME,
    feature_service=FEATURE_SERVICE,
    entity=MODEL.entity,
    baseline=baseline,
    baseline_name="stage_win_rate",
)


def train(settings: Settings, client: Any, frame: pd.DataFrame, **options: Any) -> TrainResult:
    """Train, log and register the deal health model (options: see ``train_classifier``)."""
    return train_classifier(settings, client, frame, SPEC, **options)


def outputs(probability: np.ndarray | pd.Series) -> pd.DataFrame:
    """Health 0–100 and colour for each win probability."""
    health = deal_health_score(probability)
    return pd.DataFrame(
        {"deal_health": health, "deal_health_colour": deal_colour(health, RULES.deal)}
    )
