"""The report's model-quality section reads champion/challenger metrics and plots from MLflow."""

from __future__ import annotations

from crm_predict.registry.quality import download_plot, model_quality
from tiny_registry import register_version


def test_no_registered_models_gives_an_empty_report(mlflow_client):
    assert model_quality(mlflow_client) == []


def test_champion_and_challenger_metrics_and_plots(mlflow_client, tmp_path):
    v1 = register_version(mlflow_client, "churn", {"auc": 0.71, "brier": 0.2, "ece": 0.05})
    v2 = register_version(
        mlflow_client, "churn", {"auc": 0.74, "brier": 0.18, "lift_at_10": 2.5}, tmp_path
    )
    mlflow_client.set_registered_model_alias("churn", "champion", v1)
    mlflow_client.set_registered_model_alias("churn", "challenger", v2)
    register_version(mlflow_client, "clv", {"mae_purchases": 0.9})  # no alias: latest shown

    churn, clv = model_quality(mlflow_client)
    assert churn.name == "churn"
    assert [(v.alias, v.version) for v in churn.versions] == [("champion", v1), ("challenger", v2)]
    assert churn.versions[0].metrics["auc"] == 0.71
    assert churn.metric_names == ["auc", "brier", "ece", "lift_at_10"]
    assert churn.versions[0].plots == []
    assert churn.versions[1].plots == ["holdout/calibration.png", "plots/calibration.png"]
    assert (clv.name, clv.versions[0].alias, clv.metric_names) == (
        "clv",
        "latest",
        ["mae_purchases"],
    )

    local = download_plot(
        mlflow_client, churn.versions[1].run_id, "plots/calibration.png", tmp_path / "dl"
    )
    assert local.read_bytes().startswith(b"\x89PNG")
