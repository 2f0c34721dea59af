"""Single-row latency of a registered classifier, measured the way the service runs it: loaded
with ``load_model`` (single-threaded native model and its explainer) and scored with ``score``, one
holdout row per call, with and without reasons (clock: ``crm_predict.core.timing``). The registry's
latency gate takes :func:`measure_serving_latency` as its probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from crm_predict.registry.evaluation import base_model_name
from crm_predict.serving.loader import load_model
from crm_predict.serving.scoring import score

from crm_predict.core.timing import Latency, time_calls

if TYPE_CHECKING:
    from mlflow import MlflowClient

ENTITY_ID = "entity_id"


def single_rows(
    holdout: pd.DataFrame, features: list[str], n: int, seed: int
) -> list[pd.DataFrame]:
    """``n`` seeded holdout rows, each a one-row frame shaped like an online read (``entity_id``
    first, then the model's features in order)."""
    columns = [c for c in (ENTITY_ID,) if c in holdout.columns] + list(features)
    sample = holdout.sample(n=min(n, len(holdout)), random_state=seed)[columns]
    return [sample.iloc[[i]] for i in range(len(sample))]


@dataclass(frozen=True)
class ServingLatency:
    """Predict and explain latency of one version; ``explain`` is None when it cannot explain."""

    predict: Latency
    explain: Latency | None
    explain_method: str | None


def measure_serving_latency(
    client: MlflowClient,
    name: str,
    version: str,
    holdout: pd.DataFrame,
    *,
    rows: int,
    repeats: int,
    warmup: int,
    seed: int,
) -> ServingLatency:
    """Load ``name`` v``version`` as the service does and time single-row scoring on holdout rows."""
    base = base_model_name(name)
    model = load_model(client, base, alias="candidate", single_thread=True, pinned=(name, version))
    frames = single_rows(holdout, model.feature_names, rows, seed)
    predict = time_calls(lambda f: score(model, f), frames, warmup=warmup, repeats=repeats)
    if model.explainer is None:
        return ServingLatency(predict, None, None)
    explain = time_calls(
        lambda f: score(model, f, explain=True), frames, warmup=warmup, repeats=repeats
    )
    return ServingLatency(predict, explain, model.explainer.method)
