"""Register hand-made model versions in an MLflow registry (metrics, optional calibration plot)."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient


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
    experiment = client.get_experiment_by_name(name)
    if experiment is None:  # artifacts beside the sqlite tracking db, not in ./mlruns
        root = Path(client.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
        experiment_id = client.create_experiment(name, artifact_location=root.as_uri())
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id)
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
