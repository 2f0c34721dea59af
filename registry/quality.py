"""Model quality as the registry sees it: per registered model, the champion and challenger versions
with their holdout metrics and any calibration/lift plots their runs logged. Read-only; used by the
HTML report (``crm_predict.serving.report``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from crm_predict.core.rules import MODEL_NAMES
from crm_predict.core.tracking import CHALLENGER, CHAMPION

ALIASES = (CHAMPION, CHALLENGER)
# Metrics the report shows, in this order, when a run logged them (classifiers, CLV, NBT).
REPORT_METRICS = (
    "auc", "oracle_auc", "baseline_auc", "pr_auc", "brier", "ece", "log_loss", "lift_at_10",
    "mae_purchases", "hit_rate_top1", "hit_rate_top3", "baseline_hit_rate_top1",
)  # fmt: skip
PLOT_KEYWORDS = ("calibration", "lift", "reliability")


@dataclass(frozen=True)
class VersionQuality:
    """One registered version under one alias (or ``latest`` when no alias is set)."""

    alias: str
    version: str
    run_id: str | None
    metrics: dict[str, float]
    plots: list[str] = field(default_factory=list)  # artifact paths of calibration/lift PNGs


@dataclass(frozen=True)
class ModelQuality:
    name: str
    versions: list[VersionQuality]

    @property
    def metric_names(self) -> list[str]:
        """Report metrics any of its versions logged, in ``REPORT_METRICS`` order."""
        logged = {m for v in self.versions for m in v.metrics}
        return [m for m in REPORT_METRICS if m in logged]


def _quality_plots(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    """Artifact paths of PNGs whose name mentions calibration or lift, searched recursively."""
    found = []
    for item in client.list_artifacts(run_id, path):
        lowered = item.path.lower()
        if item.is_dir:
            found.extend(_quality_plots(client, run_id, item.path))
        elif lowered.endswith(".png") and any(k in lowered for k in PLOT_KEYWORDS):
            found.append(item.path)
    return sorted(found)


def _version_quality(client: MlflowClient, alias: str, mv) -> VersionQuality:
    metrics, plots = {}, []
    if mv.run_id:
        try:
            metrics = dict(client.get_run(mv.run_id).data.metrics)
            plots = _quality_plots(client, mv.run_id)
        except MlflowException:  # run deleted: the version is still worth listing
            pass
    return VersionQuality(alias, str(mv.version), mv.run_id, metrics, plots)


def model_quality(client: MlflowClient) -> list[ModelQuality]:
    """Champion and challenger of every registered model (known model names first); a model with
    versions but no alias shows its latest version. Empty list when nothing is registered."""
    registered = {m.name: m for m in client.search_registered_models()}
    order = [n for n in MODEL_NAMES if n in registered] + sorted(
        n for n in registered if n not in MODEL_NAMES
    )
    report = []
    for name in order:
        aliases = registered[name].aliases or {}
        versions = [
            _version_quality(client, alias, client.get_model_version_by_alias(name, alias))
            for alias in ALIASES
            if alias in aliases
        ]
        if not versions:
            latest = client.search_model_versions(
                f"name = '{name}'", order_by=["version_number DESC"], max_results=1
            )
            versions = [_version_quality(client, "latest", mv) for mv in latest]
        report.append(ModelQuality(name, versions))
    return report


def download_plot(client: MlflowClient, run_id: str, artifact_path: str, dst: Path) -> Path:
    """Download one logged plot into ``dst`` and return its local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, artifact_path, str(dst)))
