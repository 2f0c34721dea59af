"""MLflow plumbing shared by the pyfunc trainers: one run in the model's experiment, on the
tracking server of the ``MlflowClient`` the caller passes (not whatever URI is global)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow import MlflowClient


@contextmanager
def model_run(client: MlflowClient, model_name: str, run_name: str) -> Iterator[mlflow.ActiveRun]:
    """Start a fluent run in experiment ``model_name`` on ``client``'s tracking and registry URIs.

    ``mlflow.pyfunc.log_model`` only speaks to the fluent API, so the global URIs are pointed at the
    client's for the duration of the run and restored afterwards.
    """
    experiment = client.get_experiment_by_name(model_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(model_name)
    previous_tracking, previous_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client._registry_uri)  # no public getter in MLflow 3
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            yield run
    finally:
        mlflow.set_tracking_uri(previous_tracking)
        mlflow.set_registry_uri(previous_registry)
