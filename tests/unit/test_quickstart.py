"""The quickstart promotes a first champion only when it beats its baseline, says so plainly when
one does not, and scores in batch only the models that have a champion."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import typer
from crm_predict.registry.lifecycle import CHAMPION, on_new_version, version_for_alias
from crm_predict.training.specs import ALL_SPECS
from registry_fixtures import log_metrics_version
from rich.console import Console

from crm_predict.quickstart import quality_table, run_quickstart

# (holdout metric, baseline metric) per model: lead_scoring is the case (0.8153 vs 0.8155).
BELOW = {
    "lead_scoring": (0.8153, 0.8155),
    "deal_health": (0.70, 0.72),
    "churn": (0.60, 0.65),
    "clv": (1.2, 1.0),  # mae: lower is better
    "next_best_time": (0.20, 0.30),
    "message_intent": (0.55, 0.60),
}
ABOVE = {"clv": (0.8, 1.0), "next_best_time": (0.40, 0.30)}


def _fake_quickstart(client, tmp_path, results):
    """``invoke`` as the quickstart's: ``train`` registers a metrics-only version (challenger),
    ``registry …`` runs the real CLI, the rest is recorded."""
    from crm_predict.cli import app

    command = typer.main.get_command(app)
    holdout = pd.DataFrame(
        {"entity_id": range(1, 41), "event_timestamp": pd.Timestamp("2026-06-01"),
         "label": [0, 1] * 20, "frequency": 1.0}
    )  # fmt: skip
    calls = []

    def invoke(args):
        calls.append(list(args))
        if args[0] == "train":
            metric, baseline, _ = ALL_SPECS[args[1]].quality
            mine, theirs = results[args[1]]
            pyfunc = args[1] in ("clv", "next_best_time")  # a classifier's card loads its model
            version = log_metrics_version(
                client, args[1], {metric: mine, baseline: theirs}, holdout, ["frequency"],
                card=pyfunc,
            )  # fmt: skip
            on_new_version(client, args[1], version)
        elif args[0] == "registry" and args[1] == "promote":
            command.main(["--data-dir", str(tmp_path / "data"), *args], standalone_mode=False)

    return invoke, calls


@pytest.fixture
def quickstart_client(mlflow_client, tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_PREDICT_MLFLOW_TRACKING_URI", mlflow_client.tracking_uri)
    return mlflow_client


def test_only_a_model_that_beats_its_baseline_becomes_champion(quickstart_client, tmp_path):
    client = quickstart_client
    invoke, calls = _fake_quickstart(client, tmp_path, BELOW | {"clv": ABOVE["clv"]})
    out = io.StringIO()
    table = run_quickstart(invoke, client, Console(file=out, width=200), customers=10)
    printed = out.getvalue()

    assert version_for_alias(client, "clv", CHAMPION) == "1"
    for model in ("lead_scoring", "deal_health", "churn", "next_best_time", "message_intent"):
        assert version_for_alias(client, model, CHAMPION) is None
    assert "lead_scoring v1 does not beat its baseline (auc 0.8153 vs baseline 0.8155)" in printed
    assert "not promoted; no champion" in printed and "forcing" not in printed
    assert not any("--force" in call for call in calls)
    batch = [call for call in calls if call[0] == "batch"]
    assert batch == [["batch", "score", "--models", "clv", "--at", "2026-06-30T23:00:00"]]
    assert ["report"] in calls
    Console(file=out, width=200).print(table)
    assert "none (challenger v1)" in out.getvalue()


def test_when_no_model_beats_its_baseline_nothing_is_promoted_or_scored(
    quickstart_client, tmp_path
):
    client = quickstart_client
    invoke, calls = _fake_quickstart(client, tmp_path, BELOW)
    out = io.StringIO()
    run_quickstart(invoke, client, Console(file=out, width=200), customers=10)
    assert "No model beats its baseline: no champion, nothing to score." in out.getvalue()
    assert not [call for call in calls if call[0] == "batch"]
    assert ["report"] in calls
    assert all(version_for_alias(client, m, CHAMPION) is None for m in BELOW)
    quality_table(client)  # a table of challengers, no error
