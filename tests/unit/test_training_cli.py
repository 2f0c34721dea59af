"""``crm-predict train`` / ``predict`` on a user's own messy CSV, and clear errors on bad input."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from training_frames import deal_frame, telco_csv

from crm_predict import cli


@pytest.fixture
def workspace(tmp_path, monkeypatch, mlflow_client):
    """CLI settings pointing at the test's MLflow store, with a tiny tuning budget."""
    monkeypatch.setenv("CRM_PREDICT_MLFLOW_TRACKING_URI", mlflow_client.tracking_uri)
    monkeypatch.setenv("CRM_PREDICT_OPTUNA_TRIALS", "2")
    return tmp_path


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the real entry point (the one that turns UserError into exit 2)."""
    monkeypatch.setattr(sys, "argv", ["crm-predict", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def test_byod_messy_csv_trains_and_predicts(workspace, monkeypatch, capsys, mlflow_client):
    table = telco_csv()
    train_path = workspace / "customers.csv"
    table.to_csv(train_path, index=False)
    data_dir = str(workspace / "data")
    code, out = run_cli(
        monkeypatch, capsys, "--data-dir", data_dir, "train", "churn", "--csv", str(train_path),
        "--target", "Churn", "--id", "customerID", "--time", "signup", "--min-class-count", "20",
    )  # fmt: skip
    assert code == 0, out
    assert "churn version 1" in out
    version = mlflow_client.get_model_version("churn", "1")
    run = mlflow_client.get_run(version.run_id)
    features = run.data.tags["feature_names"]
    for never in ("customerID", "Churn", "signup", "gender"):
        assert f'"{never}"' not in features
    assert run.data.metrics["auc"] > 0.7

    new = table.head(25).drop(columns="Churn").copy()
    new.loc[0, "Contract"] = "Three year"  # a category the model never saw
    new.loc[1, "TotalCharges"] = " "
    new.loc[2, "Partner"] = "no"
    new_path, out_path = workspace / "new.csv", workspace / "scores" / "out.csv"
    new.to_csv(new_path, index=False)
    code, out = run_cli(
        monkeypatch, capsys, "--data-dir", data_dir, "predict", "churn", "--csv", str(new_path),
        "--out", str(out_path), "--version", "1",
    )  # fmt: skip
    assert code == 0, out
    scores = pd.read_csv(out_path)
    assert list(scores.columns) == ["id", "p_churn", "churn_risk"]  # the API's and tags' names
    assert scores["id"].tolist() == new["customerID"].tolist()
    assert scores["p_churn"].between(0, 1).all() and scores["p_churn"].nunique() > 5
    assert set(scores["churn_risk"]) <= {"high", "medium", "low"}


def test_byod_without_time_column_uses_file_order(workspace, monkeypatch, capsys, mlflow_client):
    path = workspace / "customers.csv"
    telco_csv().drop(columns="signup").to_csv(path, index=False)
    code, out = run_cli(
        monkeypatch, capsys, "--data-dir", str(workspace / "data"), "train", "lead_scoring",
        "--csv", str(path), "--target", "Churn", "--id", "customerID", "--allow-small-data",
    )  # fmt: skip
    assert code == 0, out
    run = mlflow_client.get_run(mlflow_client.get_model_version("lead_scoring", "1").run_id)
    assert run.data.tags["data_window"].startswith("row order")
    assert run.data.tags["baseline"] == "unavailable"


def write(path, text: str):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "churn", "--csv", "{good}", "--target", "Nope", "--id", "customerID"],
         "target column 'Nope' not found"),
        (["train", "churn", "--csv", "{one_class}", "--target", "Churn", "--id", "customerID"],
         "only one class"),
        (["train", "churn", "--csv", "{empty}", "--target", "Churn", "--id", "customerID"],
         "is empty"),
        (["train", "churn", "--csv", "{header}", "--target", "Churn", "--id", "customerID"],
         "no rows"),
        (["train", "churn", "--csv", "{missing}", "--target", "Churn", "--id", "customerID"],
         "does not exist"),
        (["train", "upsell", "--csv", "{good}", "--target", "Churn", "--id", "customerID"],
         "unknown model 'upsell'"),
        (["train", "churn", "--csv", "{good}", "--id", "customerID"], "--target"),
        (["predict", "churn", "--csv", "{good}", "--out", "{out}"], "no registered version"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_a_clear_message_and_no_run(
    args, message, workspace, monkeypatch, capsys, mlflow_client
):
    table = telco_csv(120)
    paths = {
        "good": workspace / "good.csv",
        "one_class": workspace / "one.csv",
        "empty": write(workspace / "empty.csv", ""),
        "header": write(workspace / "header.csv", "customerID,Churn,tenure\n"),
        "missing": workspace / "nowhere" / "x.csv",
        "out": workspace / "out.csv",
    }
    table.to_csv(paths["good"], index=False)
    table.assign(Churn="No").to_csv(paths["one_class"], index=False)
    argv = [a.format(**paths) for a in args]
    code, out = run_cli(monkeypatch, capsys, "--data-dir", str(workspace / "data"), *argv)
    assert code == 2, out
    assert message in out
    assert "Traceback" not in out
    for name in ("churn", "upsell"):
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is not None:
            assert mlflow_client.search_runs([experiment.experiment_id]) == []
    assert mlflow_client.search_registered_models() == []


def test_demo_path_reads_the_training_set_and_the_truth(
    workspace, monkeypatch, capsys, mlflow_client
):
    """``train <model>`` without --csv: features.training's frame plus the generator's truth."""

    frame = deal_frame()
    asked = []

    def fake_training_set(settings, model_name):
        asked.append(model_name)
        return frame.drop(columns="oracle_p")

    from crm_predict.features import training as feature_training

    monkeypatch.setattr(feature_training, "training_set", fake_training_set)
    data_dir = workspace / "data"
    truth = frame[["entity_id", "event_timestamp", "oracle_p", "label"]]
    (data_dir / "demo_truth").mkdir(parents=True)
    truth.rename(columns={"oracle_p": "p"}).to_parquet(
        data_dir / "demo_truth" / "deal_health.parquet"
    )
    code, out = run_cli(
        monkeypatch, capsys, "--data-dir", str(data_dir), "train", "deal_health",
        "--min-class-count", "20",
    )  # fmt: skip
    assert code == 0, out
    assert asked == ["deal_health"] and "oracle_auc=" in out
    run = mlflow_client.get_run(mlflow_client.get_model_version("deal_health", "1").run_id)
    assert run.data.tags["source"] == "demo" and run.data.metrics["oracle_coverage"] == 1.0
