"""MLflow experiments shared by training, the registry and the batch job."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from mlflow import MlflowClient


def artifact_location(client: MlflowClient, name: str) -> str | None:
    """Artifacts beside a local sqlite tracking store (``<dir>/mlartifacts/<name>``), not in the
    working directory where MLflow's default would put them; None for remote stores."""
    uri = client.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(urlparse(uri).path)
    return (db.parent / "mlartifacts" / name).resolve().as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment called ``name``, created (or restored) on first use."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location(client, name))
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id
