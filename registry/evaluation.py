"""Read what training logged for a model version and score it again on a holdout.

Everything here reads the MLflow contract in docs/architecture.md: run metrics, the tags
``feature_service`` / ``feature_names`` / ``data_window`` and the artifact
``holdout/holdout.parquet``. Classifiers are reloaded as their native sklearn ``Pipeline``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from crm_predict.training.specs import ALL_SPECS, CLASSIFIERS

from crm_predict.core.errors import UserError

if TYPE_CHECKING:
    from crm_predict.training.message_intent import TextModelSpec
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from crm_predict.core.model_spec import ModelSpec

HOLDOUT_ARTIFACT = "holdout/holdout.parquet"
MODEL_CARD_ARTIFACT = "model_card.md"
KEY_COLUMNS = ["entity_id", "event_timestamp"]
LABEL = "label"

# Metrics training logs (training.classifier) from which the training class counts follow:
# rows used for fitting and calibration = n_rows − n_holdout, with train_positive_rate positives.
TRAIN_COUNT_METRICS = ("n_rows", "n_holdout", "train_positive_rate")


def base_model_name(name: str) -> str:
    """``churn__tenant_a`` → ``churn``: segment/tenant models share their global model's kind."""
    return name.split("__", 1)[0]


def is_classifier(name: str) -> bool:
    return base_model_name(name) in CLASSIFIERS


def model_spec(name: str) -> ModelSpec | TextModelSpec | None:
    """The spec of registered model ``name`` (tabular or text; a tenant model's global one)."""
    return ALL_SPECS.get(base_model_name(name))


def key_metrics(name: str) -> dict[str, bool]:
    """The metrics ``list``/``compare``/gates show for a model, ``True`` where higher is better."""
    spec = model_spec(name)
    return dict(spec.key_metrics) if spec else {}


@dataclass
class VersionInfo:
    """A registered version with the run that produced it."""

    name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    aliases: list[str] = field(default_factory=list)
    version_tags: dict[str, str] = field(default_factory=dict)
    creation_timestamp: int = 0

    @property
    def feature_names(self) -> list[str]:
        raw = self.tags.get("feature_names")
        if not raw:
            raise UserError(
                f"{self.name} v{self.version}: run {self.run_id} has no 'feature_names' tag"
            )
        return list(json.loads(raw))

    def train_counts(self) -> tuple[int, int] | None:
        """(positives, negatives) in the training data (train + validation), if logged."""
        if not all(key in self.metrics for key in TRAIN_COUNT_METRICS):
            return None
        rows = int(self.metrics["n_rows"] - self.metrics["n_holdout"])
        positives = int(round(rows * self.metrics["train_positive_rate"]))
        return positives, rows - positives


def get_version(client: MlflowClient, name: str, version: str | int) -> VersionInfo:
    """Version ``version`` of registered model ``name`` with its run's metrics, params and tags."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise UserError(f"model {name!r} has no version {version}") from exc
    return _version_info(client, mv)


def _version_info(
    client: MlflowClient, mv: ModelVersion, aliases: list[str] | None = None
) -> VersionInfo:
    if not mv.run_id:
        raise UserError(f"{mv.name} v{mv.version} was registered without a run")
    run: Run = client.get_run(mv.run_id)
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        aliases=list(mv.aliases or []) if aliases is None else aliases,
        version_tags=dict(mv.tags or {}),
        creation_timestamp=int(mv.creation_timestamp or 0),
    )


def all_versions(client: MlflowClient, name: str) -> list[VersionInfo]:
    """Every version of ``name``, oldest first, with its aliases. ``search_model_versions`` leaves
    a version's aliases empty, so they are read from the registered model (alias → version)."""
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise UserError(f"no versions registered under {name!r}")
    by_version: dict[str, list[str]] = {}
    aliases = client.get_registered_model(name).aliases or {}
    for alias in sorted(aliases, key=lambda a: (a != "champion", a != "challenger", a)):
        by_version.setdefault(str(aliases[alias]), []).append(alias)
    return [
        _version_info(client, mv, by_version.get(str(mv.version), []))
        for mv in sorted(versions, key=lambda mv: int(mv.version))
    ]


def load_holdout(client: MlflowClient, run_id: str) -> pd.DataFrame:
    """The holdout rows training evaluated on (``holdout/holdout.parquet`` of the run)."""
    names = {f.path for f in client.list_artifacts(run_id, "holdout")}
    if HOLDOUT_ARTIFACT not in names:
        raise UserError(f"run {run_id} has no {HOLDOUT_ARTIFACT} artifact")
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, HOLDOUT_ARTIFACT, tmp)
        return pd.read_parquet(local)


def has_artifact(client: MlflowClient, run_id: str, path: str) -> bool:
    parent = str(Path(path).parent)
    listed = client.list_artifacts(run_id, None if parent == "." else parent)
    return any(f.path == path for f in listed)


def score_version(client: MlflowClient, info: VersionInfo, frame: pd.DataFrame) -> np.ndarray:
    """P(label = 1) for each row of ``frame`` by a classifier version's native sklearn Pipeline
    (raw table in), loaded from where the registry keeps its files (not the process-wide URI)."""
    import mlflow.sklearn

    missing = [f for f in info.feature_names if f not in frame.columns]
    if missing:
        raise UserError(f"holdout lacks features the model needs: {', '.join(missing)}")
    model = mlflow.sklearn.load_model(
        client.get_model_version_download_uri(info.name, info.version)
    )
    if not hasattr(model, "predict_proba"):
        raise UserError(f"{info.name} v{info.version} is not a classifier with predict_proba")
    return np.asarray(model.predict_proba(frame[info.feature_names])[:, 1], dtype=float)
