"""Data checks before training: a leak stops the run, ids/constants/duplicates are dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import test_training_cli
from crm_predict.training.data_checks import check_table
from test_training_cli import run_cli
from training_frames import telco_csv

workspace = test_training_cli.workspace


def leaky_table(n: int = 300) -> pd.DataFrame:
    table = telco_csv(n)
    # Filled after the outcome: the stage the customer ended in.
    table["current_stage"] = np.where(table["Churn"] == "Yes", "cancelled", "active")
    table["row_no"] = np.random.default_rng(0).permutation(n)
    table["source_system"] = "crm"
    table["MonthlyChargesCents"] = table["MonthlyCharges"] * 100
    return table


def train(monkeypatch, capsys, workspace, table, *extra):
    path = workspace / "customers.csv"
    table.to_csv(path, index=False)
    return run_cli(
        monkeypatch, capsys, "--data-dir", str(workspace / "data"), "train", "churn",
        "--csv", str(path), "--target", "Churn", "--id", "customerID", "--time", "signup",
        "--min-class-count", "20", *extra,
    )  # fmt: skip


def test_leak_column_stops_the_run_and_registers_nothing(
    workspace,
    monkeypatch,
    capsys,
    mlflow_client,
):
    code, out = train(monkeypatch, capsys, workspace, leaky_table())
    assert code == 2, out
    assert "current_stage (AUC 1.000)" in out and "--exclude current_stage" in out
    assert "--allow-leakage" in out and "Traceback" not in out
    assert mlflow_client.search_registered_models() == []
    experiment = mlflow_client.get_experiment_by_name("churn")
    if experiment is not None:
        assert mlflow_client.search_runs([experiment.experiment_id]) == []


def test_exclude_trains_and_drops_ids_constants_and_duplicates(
    workspace,
    monkeypatch,
    capsys,
    mlflow_client,
):
    code, out = train(monkeypatch, capsys, workspace, leaky_table(), "--exclude", "current_stage")
    assert code == 0, out
    run = mlflow_client.get_run(mlflow_client.get_model_version("churn", "1").run_id)
    features = json.loads(run.data.tags["feature_names"])
    for dropped in ("current_stage", "row_no", "source_system", "MonthlyChargesCents"):
        assert dropped not in features
        assert dropped in out
    assert "MonthlyCharges" in features
    path = mlflow_client.download_artifacts(run.info.run_id, "data_checks.json", str(workspace))
    report = json.loads(Path(path).read_text())
    checks = {f["column"]: f["check"] for f in report["findings"]}
    assert checks == {
        "row_no": "identifier", "source_system": "constant",
        "MonthlyChargesCents": "near_duplicate",
    }  # fmt: skip
    assert report["excluded"] == ["current_stage"]


def test_allow_leakage_trains_and_records_the_leak(
    workspace,
    monkeypatch,
    capsys,
    mlflow_client,
):
    code, out = train(monkeypatch, capsys, workspace, leaky_table(), "--allow-leakage")
    assert code == 0, out
    run = mlflow_client.get_run(mlflow_client.get_model_version("churn", "1").run_id)
    path = mlflow_client.download_artifacts(run.info.run_id, "data_checks.json", str(workspace))
    leaks = [f for f in json.loads(Path(path).read_text())["findings"] if f["check"] == "leakage"]
    assert [f["column"] for f in leaks] == ["current_stage"] and leaks[0]["score"] > 0.99


def test_unknown_exclude_column_is_exit_2_naming_it(
    workspace,
    monkeypatch,
    capsys,
    mlflow_client,
):
    code, out = train(monkeypatch, capsys, workspace, telco_csv(120), "--exclude", "nope")
    assert code == 2, out
    assert "nope" in out and "tenure" in out and "Traceback" not in out
    assert mlflow_client.search_registered_models() == []


def test_one_class_target_after_exclusion_is_exit_2(
    workspace,
    monkeypatch,
    capsys,
    mlflow_client,
):
    table = telco_csv(120).assign(Churn="No")
    code, out = train(monkeypatch, capsys, workspace, table, "--exclude", "tenure")
    assert code == 2 and "only one class" in out, out
    assert mlflow_client.search_registered_models() == []


def test_honest_features_pass():
    table = telco_csv(300)
    table["label"] = (table["Churn"] == "Yes").astype(int)
    features = ["SeniorCitizen", "Partner", "tenure", "Contract", "MonthlyCharges"]
    checks = check_table(table, features, "label")
    assert checks.findings == [] and checks.features == features
