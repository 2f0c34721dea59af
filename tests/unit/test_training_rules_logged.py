"""Every training run logs the rules file in effect (``CRM_PREDICT_RULES_FILE``), not the
built-in defaults, and CLV/next-best-time train with that file's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clv_nbt_frames import planted_events, synthetic_transactions
from training_frames import telco_csv

RULES_YAML = "lead:\n  mql_threshold: 77\nvalue:\n  horizon_weeks: 104\n  gold_from: 1234\n"


@pytest.fixture
def custom_rules(tmp_path, monkeypatch, mlflow_client):
    path = tmp_path / "team-rules.yaml"
    path.write_text(RULES_YAML)
    monkeypatch.setenv("CRM_PREDICT_RULES_FILE", str(path))
    monkeypatch.setenv("CRM_PREDICT_MLFLOW_TRACKING_URI", mlflow_client.tracking_uri)
    monkeypatch.setenv("CRM_PREDICT_OPTUNA_TRIALS", "2")
    return path


def _logged_rules(client, model: str, artifact: str) -> dict:
    run_id = client.get_model_version(model, "1").run_id
    return json.loads(Path(client.download_artifacts(run_id, artifact)).read_text())


def test_classifier_run_logs_the_rules_file_in_effect(custom_rules, cli, tmp_path, mlflow_client):
    path = tmp_path / "customers.csv"
    telco_csv().to_csv(path, index=False)
    result = cli(
        "train", "churn", "--csv", str(path), "--target", "Churn", "--id", "customerID",
        "--time", "signup", "--min-class-count", "20",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    logged = _logged_rules(mlflow_client, "churn", "config/rules.json")
    assert logged["lead"]["mql_threshold"] == 77 and logged["value"]["gold_from"] == 1234


def test_clv_and_next_best_time_train_with_the_rules_file(
    custom_rules, cli, tmp_path, mlflow_client
):
    transactions = tmp_path / "tx.csv"
    synthetic_transactions().to_csv(transactions, index=False)
    clv = cli(
        "train", "clv", "--transactions", str(transactions), "--customer-col", "cust",
        "--date-col", "when", "--amount-col", "value", "--freq", "W",
    )  # fmt: skip
    assert clv.exit_code == 0, clv.output
    logged = _logged_rules(mlflow_client, "clv", "rules.json")
    assert logged["value"]["horizon_weeks"] == 104 and logged["value"]["gold_from"] == 1234
    run = mlflow_client.get_run(mlflow_client.get_model_version("clv", "1").run_id)
    assert run.data.params["horizon_weeks"] == "104"  # the file's horizon, not the default 156

    events = tmp_path / "events.csv"
    planted_events().to_csv(events, index=False)
    nbt = cli(
        "train", "next_best_time", "--events", str(events), "--contact-col", "who",
        "--time-col", "at", "--responded-col", "answered", "--channel-col", "via",
        "--segment-col", "seg",
    )  # fmt: skip
    assert nbt.exit_code == 0, nbt.output
    assert (
        _logged_rules(mlflow_client, "next_best_time", "rules.json")["lead"]["mql_threshold"] == 77
    )


def test_a_bad_rules_file_stops_training_before_anything_is_logged(
    custom_rules, cli, tmp_path, mlflow_client
):
    custom_rules.write_text("value:\n  horizon_weeks: soon\n")
    transactions = tmp_path / "tx.csv"
    synthetic_transactions().to_csv(transactions, index=False)
    clv = cli(
        "train", "clv", "--transactions", str(transactions), "--customer-col", "cust",
        "--date-col", "when", "--amount-col", "value",
    )  # fmt: skip
    assert clv.exit_code == 2 and "value.horizon_weeks" in clv.output
    assert mlflow_client.search_registered_models() == []
