"""Deal health: P(win) of an open deal, shown as 0–100 and a green/yellow/red colour.

Baseline: the win rate of the deal's stage, learned on the training rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from crm_predict.training.classifier import LABEL, ClassifierSpec, TrainResult, train_classifier

from crm_predict.core import rules as R
from crm_predict.core.model_spec import ModelSpec
from crm_predict.core.rules import RULES, Rules, TaskSpec, deal_colour, deal_health_score
from crm_predict.core.settings import Settings
from crm_predict.core.tagging import has, optional_id

MODEL = ModelSpec(
    name="deal_health",
    kind="classifier",
    entity="deal",
    crm_entity="deal",
    id_field="deal_id",
    score_output="p_win",
    label="won",
    views=(("deal_activity", None),),
    purpose="Probability that an open deal is won, scored 21 days after creation; shown "
    "as health 0–100 and a green/yellow/red colour (red → rescue task).",
    known_limits="Only closed deals carry labels, so very long open deals are under-represented.",
    decision_threshold=lambda rules: rules.deal.yellow_at / 100,  # below → red → rescue task
)
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


SPEC = ClassifierSpec(MODEL, baseline, baseline_name="stage_win_rate")


def train(settings: Settings, client: Any, frame: pd.DataFrame, **options: Any) -> TrainResult:
    """Train, log and register the deal health model (options: see ``train_classifier``)."""
    return train_classifier(settings, client, frame, SPEC, **options)


def outputs(probability: np.ndarray | pd.Series) -> pd.DataFrame:
    """Health 0–100 and colour for each win probability."""
    health = deal_health_score(probability)
    return pd.DataFrame(
        {"deal_health": health, "deal_health_colour": deal_colour(health, RULES.deal)}
    )


def response(p: np.ndarray, rules: Rules = RULES) -> dict[str, np.ndarray]:
    """The API record's fields from P(win): health 0–100, the probability and the colour."""
    health = deal_health_score(p)
    return {"health": health, "p_win": p, "colour": deal_colour(health, rules.deal)}


# --- Tags and tasks (the write-back's rules for this model) ----------------------------------


def tag_values(
    scored: pd.DataFrame, rules: Rules = RULES, rfm_medians: tuple | None = None
) -> dict[str, np.ndarray]:
    """Deal health 0–100 and its colour."""
    health = R.deal_health_score(scored["score"])
    return {R.TAG_DEAL_HEALTH: health.astype(str).astype(object), R.TAG_DEAL_COLOUR: R.deal_colour(health, rules.deal)}  # fmt: skip


def tasks(scored: pd.DataFrame, now: datetime, rules: Rules = RULES) -> list[TaskSpec]:
    """Rescue for red deals, escalation to the manager for deals idle ≥ 7 days."""
    colours = R.deal_colour(R.deal_health_score(scored["score"]), rules.deal)
    idle = scored["days_idle"].fillna(0) if has(scored, "days_idle") else pd.Series(0.0, index=scored.index)  # fmt: skip
    wanted = (colours == "red") | (idle.to_numpy() >= rules.deal.idle_escalation_days)
    rows = scored[wanted]

    def column(name: str) -> list:
        return rows[name].tolist() if has(rows, name) else [None] * len(rows)

    tasks: list[TaskSpec] = []
    for deal_id, owner, manager, stage, colour, days in zip(
        rows["entity_id"].tolist(), column("owner_id"), column("manager_id"), column("stage"),
        colours[wanted], idle[wanted].tolist(), strict=True,
    ):  # fmt: skip
        tasks += R.deal_tasks(
            int(deal_id), optional_id(owner), optional_id(manager), str(colour), float(days),
            str(stage or ""), now, rules,
        )  # fmt: skip
    return tasks
