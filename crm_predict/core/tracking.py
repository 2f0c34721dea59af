"""MLflow experiments shared by training, the registry and the batch job."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Registry aliases: the served version and the freshly trained one waiting for the gates.
CHAMPION = "champion"
CHALLENGER = "challenger"


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


def version_for_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None; unknown model → UserError."""
    from mlflow.exceptions import MlflowException

    from crm_predict.core.errors import UserError

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise UserError(f"no registered model named {name!r}") from exc
        raise
    version = (model.aliases or {}).get(alias)
    return None if version is None else str(version)
