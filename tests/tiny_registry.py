"""Register hand-made model versions in an MLflow registry (metrics, optional calibration plot)."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from crm_predict.core.tracking import experiment_id


def write_png(path: Path) -> None:
    """A small real PNG (a diagonal line)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [0, 1])
    fig.savefig(path)


def register_version(
    client: MlflowClient, name: str, metrics: dict[str, float], plot_dir: Path | None = None
) -> str:
    """A run with ``metrics`` (and ``calibration.png`` under plots/ and holdout/ if ``plot_dir``)
    registered as a new version of ``name``; returns the version."""
    run = client.create_run(experiment_id(client, name))  # artifacts beside the sqlite db
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    if plot_dir is not None:
        plot = plot_dir / "calibration.png"
        write_png(plot)
        client.log_artifact(run.info.run_id, str(plot), "plots")
        client.log_artifact(run.info.run_id, str(plot), "holdout")  # found in any folder
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    return str(mv.version)
