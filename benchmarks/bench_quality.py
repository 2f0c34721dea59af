"""Model quality in the same run: a small seeded demo CRM, each of the five models trained once
with a small search budget, and its holdout figure beside the baseline and the oracle (the demo's
latent truth) that training measured on the same holdout.

Run: ``python -m benchmarks.bench_quality [n_customers] [optuna_trials]`` (or ``make bench``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from crm_predict.training.specs import SPECS

from benchmarks.figures import Figure
from crm_predict.core.rules import MODEL_NAMES
from crm_predict.quickstart import DEMO_AS_OF

# What each model's baseline is (the classifiers name theirs in training.<model>.SPEC).
BASELINES = {
    "clv": "calibration-period purchase rate",
    "next_best_time": "everyone's global best slot",
}
UNITS = {"auc": "AUC", "mae_purchases": "MAE", "hit_rate_top1": "hit rate"}


def quality_figures(model: str, metrics: dict[str, float], baseline_name: str) -> list[Figure]:
    """One row: the model's holdout metric beside its baseline, with the oracle as the ceiling."""
    metric, baseline, oracle = SPECS[model].quality
    if metric not in metrics:
        return []
    return [
        Figure(
            f"{model} holdout {metric}", metrics[metric], UNITS.get(metric, ""),
            metrics.get(baseline), f"baseline: {baseline_name}",
            "lower" if metric.startswith("mae") else "higher", metrics.get(oracle),
        )
    ]  # fmt: skip


def train_all(settings, client) -> dict[str, tuple[dict[str, float], str]]:
    """Train every model on the exported demo CRM; its metrics and baseline name per model."""
    import importlib

    from crm_predict.features.training import demo_training_set
    from crm_predict.training.clv import run_training as train_clv
    from crm_predict.training.next_best_time import run_training as train_nbt

    out = {}
    for model in MODEL_NAMES:
        start = time.perf_counter()
        if model == "clv":
            out[model] = (train_clv(settings, client).metrics, BASELINES[model])
        elif model == "next_best_time":
            out[model] = (train_nbt(settings, client).metrics, BASELINES[model])
        else:
            module = importlib.import_module(f"crm_predict.training.{model}")
            frame, truth = demo_training_set(settings, model)
            result = module.train(settings, client, frame, truth=truth, source="demo")
            out[model] = (result.metrics, module.SPEC.baseline_name)
        print(f"  trained {model} in {time.perf_counter() - start:.0f} s", flush=True)
    return out


def demo_world(directory: Path, n_customers: int, optuna_trials: int):
    """Settings in ``directory`` over a seeded demo CRM of ``n_customers``, exported and applied
    (training reads each model's FeatureService from the Feast registry), and an MlflowClient."""
    from datetime import datetime

    from crm_predict.crm_store.db import store_session
    from crm_predict.crm_store.demo import generate_demo
    from crm_predict.features.export import export
    from crm_predict.features.store import apply
    from mlflow import MlflowClient

    from crm_predict.core.settings import Settings

    settings = Settings(data_dir=directory / "data", optuna_trials=optuna_trials, seed=42)
    settings.ensure_dirs()
    with store_session(settings.crm_url) as session:
        as_of = datetime.fromisoformat(DEMO_AS_OF)
        generate_demo(session, settings, n_customers, as_of=as_of, seed=settings.seed)
        session.commit()
        export(session, settings)
    apply(settings)
    return settings, MlflowClient(
        tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
    )


def main(n_customers: int = 5000, optuna_trials: int = 3) -> list[Figure]:
    """Demo CRM of ``n_customers`` → feature export → five trainings; one Figure per model."""
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as tmp:
        start = time.perf_counter()
        settings, client = demo_world(Path(tmp), n_customers, optuna_trials)
        print(f"demo CRM ({n_customers:,} customers), feature export and apply: "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
        trained = train_all(settings, client)
    rows = [f for model, (m, name) in trained.items() for f in quality_figures(model, m, name)]
    for f in rows:
        oracle = f"{f.ceiling:.3f}" if f.ceiling is not None else "—"
        floor = f"{f.floor:.3f}" if f.floor is not None else "—"
        print(f"  {f.name:36} {f.value:8.3f}  baseline {floor:>7}  oracle {oracle:>7}")
    return rows


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
