"""The registry's promises on a real MLflow sqlite store: challenger on arrival, gates that block
for their own reason, forced promotions on record, one-command rollback, same-row comparisons,
drift flags and the global fallback."""

import json
import sys
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from crm_predict.registry.card import write_model_card
from crm_predict.registry.compare import compare_versions, log_comparison
from crm_predict.registry.drift import drift_report
from crm_predict.registry.gates import GateConfig, check_gates
from crm_predict.registry.lifecycle import (
    CHALLENGER,
    CHAMPION,
    PromotionBlocked,
    history,
    on_new_version,
    promote,
    resolve_model,
    rollback,
    version_for_alias,
)
from registry_fixtures import (
    FEATURES,
    classifier_pipeline,
    log_classifier_version,
    log_metrics_version,
    synthetic_frame,
)

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

# The fixture pipeline (ColumnTransformer on pandas) costs ~4 ms a row: near the default budget;
# the latency gate has its own tests (test_registry_latency.py) on pipelines shaped as trained.
CONFIG = GateConfig(predict_latency_budget_ms=0, explain_latency_budget_ms=0)
NAME = "churn"


@pytest.fixture
def client(mlflow_client):
    return mlflow_client


@pytest.fixture
def champion(client) -> str:
    version = log_classifier_version(client, NAME, synthetic_frame(seed=1), card=True)
    promote(client, NAME, version, CONFIG, by="tester")
    return version


def _failed(report) -> list[str]:
    return [r.name for r in report.failed]


def test_new_version_becomes_challenger(client):
    v1 = log_classifier_version(client, NAME, synthetic_frame(seed=1))
    on_new_version(client, NAME, v1)
    assert version_for_alias(client, NAME, CHALLENGER) == v1
    v2 = log_classifier_version(client, NAME, synthetic_frame(seed=2))
    on_new_version(client, NAME, v2)
    assert version_for_alias(client, NAME, CHALLENGER) == v2


def test_promote_then_rollback_round_trip(client, champion):
    v2 = log_classifier_version(client, NAME, synthetic_frame(seed=2), card=True)
    on_new_version(client, NAME, v2)
    event, report = promote(client, NAME, v2, CONFIG, by="alice")
    assert report.passed, report.failure_message()
    assert (event.version, event.previous) == (v2, champion)
    assert version_for_alias(client, NAME, CHAMPION) == v2
    assert version_for_alias(client, NAME, CHALLENGER) is None  # the challenger won
    tags = client.get_model_version(NAME, v2).tags
    assert tags["previous_champion"] == champion and tags["promoted_by"] == "alice"
    assert "promoted_at" in tags

    back = rollback(client, NAME, reason="bad tags in prod", by="bob")
    assert version_for_alias(client, NAME, CHAMPION) == champion
    assert (back.version, back.previous) == (champion, v2)
    events = history(client, NAME)
    assert [e["action"] for e in events] == ["promote", "promote", "rollback"]
    assert events[-1]["by"] == "bob" and events[-1]["reason"] == "bad tags in prod"
    with pytest.raises(UserError, match="no recorded previous champion"):
        rollback(client, NAME)


def test_worse_auc_than_champion_blocks_promotion(client, champion):
    worse = log_classifier_version(
        client, NAME, synthetic_frame(seed=2), features=["x_noise"], card=True
    )
    with pytest.raises(PromotionBlocked, match="not_worse_than_champion: AUC") as blocked:
        promote(client, NAME, worse, CONFIG)
    assert _failed(blocked.value.report) == ["not_worse_than_champion"]
    assert version_for_alias(client, NAME, CHAMPION) == champion


def test_too_few_positives_blocks_promotion(client):
    frame = synthetic_frame(seed=3)
    train = pd.concat(
        [frame[frame.label == 1].head(30), frame[frame.label == 0].head(30)]
    ).sort_values("event_timestamp")
    version = log_classifier_version(client, NAME, train, synthetic_frame(seed=4), card=True)
    report = check_gates(client, NAME, version, CONFIG)
    assert _failed(report) == ["minimum_data"]
    assert "30 positives" in report.failed[0].detail


def test_disparate_impact_below_four_fifths_blocks_promotion(client):
    frame = synthetic_frame(seed=5, gender_effect=0.9)
    version = log_classifier_version(client, NAME, frame, card=True)
    report = check_gates(client, NAME, version, CONFIG)
    assert _failed(report) == ["disparate_impact"]
    assert "threshold 0.6 (default for churn)" in report.failed[0].detail


@pytest.mark.parametrize("absent", ["all_empty", "no_column"])
def test_fairness_gates_without_a_protected_attribute_are_not_applicable_and_do_not_block(
    client, absent
):
    """B2B deals belong to companies: their holdout's gender is empty (or not there at all)."""
    frame = synthetic_frame(seed=1)
    if absent == "all_empty":
        frame["gender"] = None
    else:
        frame = frame.drop(columns="gender")
    version = log_classifier_version(client, "deal_health", frame, card=True)
    report = check_gates(client, "deal_health", version, CONFIG)
    gates = {r.name: r for r in report.results}
    for name in ("disparate_impact", "proxy_features"):
        assert gates[name].status == "N/A" and not gates[name].applicable
        assert "not applicable" in gates[name].detail and "'gender'" in gates[name].detail
    assert report.passed and not report.failed, report.failure_message()
    event, _ = promote(client, "deal_health", version, CONFIG, by="tester")
    assert event.forced_gates == ()
    tags = client.get_model_version("deal_health", version).tags
    assert tags["promotion_forced"] == "false"
    assert tags["promotion_not_applicable_gates"] == "disparate_impact,proxy_features"
    card = client.get_model_version("deal_health", version).description
    assert "| disparate_impact | N/A | not applicable" in card


def test_proxy_feature_blocks_promotion(client):
    frame = synthetic_frame(seed=6, proxy=True)
    version = log_classifier_version(
        client, NAME, frame, features=[*FEATURES, "loyalty_band"], card=True
    )
    report = check_gates(client, NAME, version, CONFIG)
    assert _failed(report) == ["proxy_features"]
    assert "loyalty_band" in report.failed[0].detail


def test_protected_attribute_as_feature_blocks_promotion(client):
    version = log_classifier_version(
        client, NAME, synthetic_frame(seed=1), features=[*FEATURES, "gender"], card=True
    )
    assert "protected_not_a_feature" in _failed(check_gates(client, NAME, version, CONFIG))


def test_missing_model_card_blocks_until_written(client):
    uncalibrated = {"brier_uncalibrated": 0.2, "ece_uncalibrated": 0.1}
    version = log_classifier_version(
        client, NAME, synthetic_frame(seed=1), extra_metrics=uncalibrated
    )
    assert _failed(check_gates(client, NAME, version, CONFIG)) == ["model_card"]
    card = write_model_card(client, NAME, version, CONFIG)
    assert check_gates(client, NAME, version, CONFIG).passed
    description = client.get_model_version(NAME, version).description
    assert description.startswith(f"# Model card: {NAME} v{version}")
    for section in ("## Purpose", "## Training data", "## Features", "- `activity`", "oracle",
                    "## Calibration", "## Fairness checks", "disparate_impact", "## Known limits",
                    "Not promoted yet"):  # fmt: skip
        assert section in card
    assert "Before calibration: Brier 0.200, ECE 0.100." in card


def test_force_override_records_reason(client):
    version = log_classifier_version(client, NAME, synthetic_frame(seed=1))  # no card
    with pytest.raises(UserError, match="--force needs --reason"):
        promote(client, NAME, version, CONFIG, force=True)
    event, report = promote(
        client, NAME, version, CONFIG, force=True, reason="card follows today", by="carol"
    )
    assert _failed(report) == ["model_card"] and event.forced_gates == ("model_card",)
    assert version_for_alias(client, NAME, CHAMPION) == version
    tags = client.get_model_version(NAME, version).tags
    assert tags["promotion_forced"] == "true"
    assert tags["promotion_forced_gates"] == "model_card"
    assert tags["promotion_reason"] == "card follows today"
    assert history(client, NAME)[-1]["forced_gates"] == ["model_card"]


def test_compare_identical_models_on_the_same_rows_gives_identical_metrics(client):
    frame = synthetic_frame(seed=7)
    train, holdout = frame.iloc[:8000], frame.iloc[8000:]

    model = classifier_pipeline(FEATURES, train).fit(train[FEATURES], train["label"])
    v1 = log_classifier_version(client, NAME, train, holdout, model=model)
    v2 = log_classifier_version(client, NAME, train, holdout, model=model)
    comparison = compare_versions(client, NAME, [v1, v2])
    assert comparison.n_rows == len(holdout)
    metrics = comparison.table.drop(columns="version")
    assert metrics.iloc[0].tolist() == metrics.iloc[1].tolist()
    assert metrics.iloc[0]["auc"] > 0.75

    run_id = log_comparison(client, comparison)
    logged = {f.path for f in client.list_artifacts(run_id, "compare")}
    assert {"compare/lift_calibration.png", "compare/metrics.md"} <= logged
    run_metrics = client.get_run(run_id).data.metrics
    assert run_metrics[f"v{v1}_auc"] == run_metrics[f"v{v2}_auc"]


def test_compare_sees_a_worse_model_on_the_same_rows(client, champion):
    worse = log_classifier_version(client, NAME, synthetic_frame(seed=2), features=["x_noise"])
    comparison = compare_versions(client, NAME, [champion, worse])
    auc = dict(zip(comparison.table["version"], comparison.table["auc"], strict=True))
    assert auc[f"v{champion} (champion)"] > auc[f"v{worse}"] + 0.2


def test_drift_flags_shifted_feature_not_unshifted(client, champion, tmp_path):
    current = tmp_path / "current.parquet"
    synthetic_frame(seed=9, n=1000, shift=1.0).to_parquet(current)
    settings = Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=client.tracking_uri)
    report = drift_report(settings, client, NAME, data=current)
    assert report.version == champion
    assert report.flagged == ["activity"]
    psi = dict(zip(report.table["feature"], report.table["psi"], strict=True))
    assert psi["recency"] < 0.1 and psi["region"] < 0.1
    assert client.get_run(report.run_id).data.metrics["psi_activity"] == pytest.approx(
        psi["activity"]
    )


def test_drift_reads_the_scoring_frame_when_no_file_is_given(
    client, champion, tmp_path, monkeypatch
):
    asked = {}

    def scoring_frame(settings, model_name, at, entity_ids=None):
        asked.update(model=model_name, at=at)
        return synthetic_frame(seed=10, n=1000)

    monkeypatch.setitem(
        sys.modules, "crm_predict.features.scoring", SimpleNamespace(scoring_frame=scoring_frame)
    )
    settings = Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=client.tracking_uri)
    at = datetime(2026, 6, 30)
    report = drift_report(settings, client, NAME, at=at, log=False)
    assert asked == {"model": NAME, "at": at}
    assert report.flagged == [] and report.run_id is None
    assert "scoring frame at 2026-06-30" in report.source


def test_fallback_picks_global_model_when_segment_model_missing(client, champion):
    choice = resolve_model(client, NAME, "tenant_a")
    assert (choice.name, choice.version, choice.fallback) == (NAME, champion, True)
    assert "not registered" in choice.reason


def test_fallback_picks_global_model_when_segment_model_lacks_data(client, champion):
    frame = synthetic_frame(seed=3)
    small = pd.concat([frame[frame.label == 1].head(20), frame[frame.label == 0].head(20)])
    seg = log_classifier_version(client, f"{NAME}__tenant_b", small.sort_values("event_timestamp"))
    client.set_registered_model_alias(f"{NAME}__tenant_b", CHAMPION, seg)
    choice = resolve_model(client, NAME, "tenant_b")
    assert choice.name == NAME and choice.fallback and "positives" in choice.reason

    enough = log_classifier_version(client, f"{NAME}__tenant_b", synthetic_frame(seed=8))
    client.set_registered_model_alias(f"{NAME}__tenant_b", CHAMPION, enough)
    choice = resolve_model(client, NAME, "tenant_b")
    assert (choice.name, choice.version, choice.fallback) == (f"{NAME}__tenant_b", enough, False)


def test_history_is_json_on_the_registered_model(client, champion):
    raw = client.get_registered_model(NAME).tags["champion_history"]
    (event,) = json.loads(raw)
    assert (event["action"], event["version"], event["by"]) == ("promote", champion, "tester")
    assert event["previous"] is None and event["at"]


def test_clv_champion_gate_compares_logged_holdout_metrics(client):
    rng = np.random.default_rng(0)
    features = ["frequency", "recency", "T", "monetary_value"]
    holdout = pd.DataFrame(rng.gamma(2.0, 3.0, (400, 4)), columns=features)
    holdout["entity_id"] = np.arange(400)
    holdout["gender"] = rng.choice(["F", "M"], 400)
    v1 = log_metrics_version(client, "clv", {"mae_purchases": 1.0}, holdout, features)
    promote(client, "clv", v1, CONFIG)
    worse = log_metrics_version(client, "clv", {"mae_purchases": 1.2}, holdout, features)
    with pytest.raises(PromotionBlocked, match="mae_purchases 1.200 vs champion 1.000"):
        promote(client, "clv", worse, CONFIG)
    close = log_metrics_version(client, "clv", {"mae_purchases": 1.02}, holdout, features)
    report = check_gates(client, "clv", close, CONFIG)
    assert report.passed, report.failure_message()
    assert "not applicable" in {r.name: r.detail for r in report.results}["disparate_impact"]
