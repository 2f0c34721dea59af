"""Logging one finished training to MLflow: the contract every model shares (params, tags,
metrics, dicts, figures, the holdout table, the model registered with alias ``challenger``), the
model itself in its own flavour (an sklearn pipeline, or a pyfunc for CLV and next best time)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from crm_predict.core.tracking import CHALLENGER, experiment_id

# What a logged classifier pipeline needs to load.
SKLEARN_REQUIREMENTS = ("scikit-learn", "xgboost", "skops", "pandas", "numpy", "scipy", "mlflow")


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    version: str


def pinned(packages: tuple[str, ...]) -> list[str]:
    """``packages`` at their installed versions: listed, not inferred, because MLflow infers
    them by re-importing the model in a subprocess (slow)."""
    return [f"{p}=={version(p)}" for p in packages]


@contextmanager
def tracking_at(client: Any) -> Iterator[None]:
    """Point the fluent MLflow API at the client's store for the duration of a run. The project's
    clients keep runs and models in one store (registry URI = tracking URI)."""
    import mlflow

    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_tracking)
        mlflow.set_registry_uri(old_registry)


def log_run(
    client: MlflowClient,
    name: str,
    log_model: Callable[[], Any],
    *,
    holdout: pd.DataFrame,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    dicts: dict[str, Any] | None = None,
    figures: dict[str, Any] | None = None,
    run_name: str | None = None,
) -> LoggedModel:
    """Log one finished training and register it as ``name`` (alias ``challenger``).

    ``log_model()`` logs the model inside the run with ``registered_model_name=name`` and returns
    MLflow's ``ModelInfo``. A failure while logging deletes the run and the version, so a broken
    run never reaches the registry.
    """
    import matplotlib.pyplot as plt
    import mlflow

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
                model_version = str(log_model().registered_model_version)
                # A fresh version waits as challenger for the gates (the previous one loses it).
                client.set_registered_model_alias(name, CHALLENGER, model_version)
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


def log_sklearn_run(
    client: MlflowClient, name: str, pipeline: Any, example: pd.DataFrame, **run: Any
) -> LoggedModel:
    """:func:`log_run` with a fitted sklearn pipeline scoring by ``predict_proba``, saved with
    skops; ``example``: a few training rows of its feature columns."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    # Integer columns become doubles in the schema: a blank at scoring time arrives as NaN.
    example = example.astype(
        {c: float for c in example if pd.api.types.is_integer_dtype(example[c])}
    )
    signature = infer_signature(example, pipeline.predict_proba(example))
    # skops refuses unknown types on load unless listed; these are exactly the types saved.
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))

    def log_model() -> Any:
        return mlflow.sklearn.log_model(
            pipeline,
            name=name,
            signature=signature,
            input_example=example,
            registered_model_name=name,
            pyfunc_predict_fn="predict_proba",
            serialization_format="skops",
            skops_trusted_types=trusted,
            pip_requirements=pinned(SKLEARN_REQUIREMENTS),
        )

    return log_run(client, name, log_model, **run)


def log_pyfunc_run(
    client: MlflowClient,
    name: str,
    python_model: Any,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    *,
    artifacts: dict[str, str] | None = None,
    requirements: tuple[str, ...] = ("pandas", "numpy"),
    **run: Any,
) -> LoggedModel:
    """:func:`log_run` with a ``mlflow.pyfunc.PythonModel`` (``run``: its keyword arguments)."""
    import mlflow
    from mlflow.models import infer_signature

    def log_model() -> Any:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=python_model,
            artifacts=artifacts,
            signature=infer_signature(input_example, output_example),
            input_example=input_example,
            registered_model_name=name,
            pip_requirements=pinned(("mlflow", *requirements)),
        )

    return log_run(client, name, log_model, **run)
