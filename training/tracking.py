"""Logging a pyfunc model run (CLV, next best time): the same MLflow contract as the classifiers
(``training.classifier``), with a ``mlflow.pyfunc.PythonModel`` instead of an sklearn pipeline."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from crm_predict.tracking import experiment_id
from training.classifier import tracking_at


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    version: str


def log_pyfunc_run(
    client: MlflowClient,
    name: str,
    python_model: Any,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    *,
    holdout: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    dicts: dict[str, Any] | None = None,
    figures: dict[str, Any] | None = None,
    artifacts: dict[str, str] | None = None,
    requirements: tuple[str, ...] = ("pandas", "numpy"),
    run_name: str | None = None,
) -> LoggedModel:
    """Log one finished training and register it as ``name`` (alias ``challenger``).

    Everything is computed before this is called; a failure while logging deletes the run and the
    version, so a broken run never reaches the registry.
    """
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.models import infer_signature

    from registry.lifecycle import on_new_version

    figures = figures or {}
    run_id = model_version = None
    with tracking_at(client):
        try:
            with mlflow.start_run(
                experiment_id=experiment_id(client, name), run_name=run_name
            ) as run:
                run_id = run.info.run_id
                mlflow.log_params(params)
                mlflow.set_tags(tags)
                mlflow.log_metrics(metrics)
                for path, payload in (dicts or {}).items():
                    mlflow.log_dict(payload, path)
                for path, figure in figures.items():
                    mlflow.log_figure(figure, path)
                with tempfile.TemporaryDirectory() as tmp:
                    local = Path(tmp) / "holdout.parquet"
                    holdout.to_parquet(local, index=False)
                    mlflow.log_artifact(str(local), artifact_path="holdout")
                info = mlflow.pyfunc.log_model(
                    name=name,
                    python_model=python_model,
                    artifacts=artifacts,
                    signature=infer_signature(input_example, output_example),
                    input_example=input_example,
                    registered_model_name=name,
                    # Listed, not inferred: inference re-imports the model in a subprocess (slow).
                    pip_requirements=[f"{p}=={version(p)}" for p in ("mlflow", *requirements)],
                )
                model_version = str(info.registered_model_version)
                on_new_version(client, name, model_version)
        except BaseException:
            if model_version is not None:
                client.delete_model_version(name, model_version)
            if run_id is not None:
                client.delete_run(run_id)
            raise
        finally:
            for figure in figures.values():
                plt.close(figure)
    return LoggedModel(run_id=run_id, version=model_version)
