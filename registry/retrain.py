"""Retrain: a new challenger from fresh data, its model card, the gates, and — only when
``settings.auto_promote`` is on and every gate passes — promotion to ``champion``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crm_predict.registry.evaluation import (
    CLASSIFIERS,
    MODEL_CARD_ARTIFACT,
    get_version,
    has_artifact,
)

from crm_predict.core.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from crm_predict.registry.gates import GateConfig, GateReport
    from crm_predict.registry.lifecycle import ChampionEvent
    from mlflow import MlflowClient

    from crm_predict.core.settings import Settings


@dataclass
class RetrainResult:
    name: str
    version: str
    report: GateReport
    promoted: ChampionEvent | None


def training_frame(settings: Settings, name: str, data: Path | None) -> tuple[pd.DataFrame, dict]:
    """The training table (a user's CSV/Parquet in the training-set shape, else the demo CRM's
    Feast training set) and the options that go with it."""
    if data is not None:
        from crm_predict.registry.drift import read_table

        return read_table(data), {"source": f"file:{data.name}"}
    from crm_predict.features.training import demo_training_set  # Feast: only when asked

    frame, truth = demo_training_set(settings, name)
    return frame, {"truth": truth, "source": "demo"}


def retrain(
    settings: Settings,
    client: MlflowClient,
    name: str,
    config: GateConfig,
    *,
    data: Path | None = None,
    by: str | None = None,
    **train_options: Any,
) -> RetrainResult:
    """Train ``name`` with ``training.<name>.train``, make it challenger, write its card, run the
    gates (``config``, with its latency probe) and promote only if ``settings.auto_promote`` and all
    gates pass."""
    from crm_predict.registry.card import write_model_card
    from crm_predict.registry.gates import check_gates
    from crm_predict.registry.lifecycle import promote

    if name not in CLASSIFIERS:
        raise UserError(
            f"retrain knows {', '.join(CLASSIFIERS)}; {name!r} is trained by its own job"
        )
    module = importlib.import_module(f"crm_predict.training.{name}")
    frame, options = training_frame(settings, name, data)
    result = module.train(settings, client, frame, **(options | train_options))
    version = str(result.version)
    if not has_artifact(client, get_version(client, name, version).run_id, MODEL_CARD_ARTIFACT):
        write_model_card(client, name, version, config)
    report = check_gates(client, name, version, config)
    promoted = None
    if settings.auto_promote and report.passed:
        promoted, report = promote(client, name, version, config, by=by or "retrain")
    return RetrainResult(name, version, report, promoted)
