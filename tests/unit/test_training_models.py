"""Lead scoring, deal health and churn train end to end on tiny seeded tables into MLflow."""

from __future__ import annotations

import json

import crm_predict.training.classifier as classifier
import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from crm_predict.training import churn, deal_health, lead_scoring
from training_frames import churn_frame, deal_frame, lead_frame

from crm_predict.core.errors import UserError

MODELS = {
    "lead_scoring": (lead_scoring, lead_frame),
    "deal_health": (deal_health, deal_frame),
    "churn": (churn, churn_frame),
}
HOLDOUT_METRICS = ("auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10")
# Latency budgets are this many times the run's linear floor: the linear family always fits, a
# 400-tree forest (20-60 times the floor) misses it many times over, whatever the machine.
FLOOR_MULTIPLE = 5


@pytest.fixture(scope="module")
def floor_ms() -> float:
    """This run's floor: the single-row predict p99 of a fitted logistic regression (the
    search's cheapest family), timed as the search times its trials; the least of three, so a
    hiccup does not lift every budget."""
    train, _, features = _split()
    x = train[features].to_numpy()
    linear = classifier.CANDIDATES[0].build(optuna.trial.FixedTrial({"C": 1.0}), 0, 1)
    linear.fit(x, train["label"])
    return min(classifier.single_row_latency(linear, x)[1] for _ in range(3))


@pytest.fixture
def small(settings, floor_ms):
    budget = FLOOR_MULTIPLE * floor_ms
    return settings.model_copy(update={"optuna_trials": 2, "predict_latency_budget_ms": budget})


@pytest.mark.parametrize("name", list(MODELS))
def test_model_beats_its_baseline_and_is_registered(name, small, mlflow_client):
    module, make_frame = MODELS[name]
    frame = make_frame()
    result = module.train(small, mlflow_client, frame, min_class_count=20)

    assert result.version == 1
    version = mlflow_client.get_model_version(name, "1")
    assert version.run_id == result.run_id
    run = mlflow_client.get_run(result.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    for key in (*HOLDOUT_METRICS, "baseline_auc", "oracle_auc", "brier_uncalibrated"):
        assert key in metrics, key
    assert metrics["auc"] > metrics["baseline_auc"] + 0.05
    assert metrics["auc"] >= 0.85 * metrics["oracle_auc"]
    assert tags["feature_service"] == f"{name}_v1"
    features = json.loads(tags["feature_names"])
    assert "gender" not in features and "oracle_p" not in features and "label" not in features
    assert tags["entity"] == module.MODEL.entity and tags["data_window"].startswith("train ")

    local = mlflow.artifacts.download_artifacts(
        run_id=result.run_id,
        artifact_path="holdout/holdout.parquet",
        tracking_uri=mlflow_client.tracking_uri,
    )
    holdout = pd.read_parquet(local)
    assert len(holdout) == int(metrics["n_holdout"]) == int(np.ceil(len(frame) * 0.2))
    newest = frame.sort_values("event_timestamp").tail(len(holdout))
    assert set(holdout["entity_id"]) == set(newest["entity_id"])
    assert {"gender", "label", "event_timestamp"} <= set(holdout.columns)
    assert "oracle_p" not in holdout.columns
    artifacts = {a.path for a in mlflow_client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {"plots/calibration.png", "plots/shap_summary.png"}
    trials = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/selection/trials.json")
    assert {t["candidate"] for t in trials} == {c.name for c in classifier.CANDIDATES}
    # The search kept only trials within the budget it was given (a multiple of this run's floor).
    assert metrics["predict_p99_ms"] <= small.predict_latency_budget_ms

    with classifier.tracking_at(mlflow_client):
        model = mlflow.sklearn.load_model(f"models:/{name}/1")
    p = model.predict_proba(holdout[features])[:, 1]
    assert np.allclose(p, model.predict_proba(holdout[features].iloc[::-1])[::-1, 1])
    assert ((p > 0) & (p < 1)).all()
    out = module.outputs(p)
    assert len(out) == len(p) and out.notna().all().all()


def test_outputs_map_probabilities_with_the_business_rules():
    lead = lead_scoring.outputs(np.array([0.9, 0.6, 0.3, 0.001]))
    assert lead["lead_score"].tolist() == [90, 60, 30, 1]
    assert lead["lead_grade"].tolist() == ["A", "B", "C", "D"]
    deal = deal_health.outputs(np.array([0.85, 0.65, 0.2]))
    assert deal["deal_health"].tolist() == [85, 65, 20]
    assert deal["deal_health_colour"].tolist() == ["green", "yellow", "red"]
    risk = churn.outputs(np.array([0.7, 0.4, 0.1]))["churn_risk"].tolist()
    assert risk == ["high", "medium", "low"]


def test_baselines():
    frame = lead_frame(50)
    assert np.array_equal(lead_scoring.baseline(frame, frame), frame["rule_score"].to_numpy())
    older = pd.DataFrame({"stage": ["a", "a", "b", "b"], "label": [1, 1, 0, 0]})
    rows = pd.DataFrame({"stage": ["a", "b", "new"]})
    rates = deal_health.baseline(older, rows)
    assert rates[0] > rates[2] > rates[1]  # unseen stage → overall rate
    silent = pd.DataFrame({"rfm_recency_days": [3.0, None, 50.0]})
    assert churn.baseline(silent, silent).tolist() == [3.0, 51.0, 50.0]
    assert churn.baseline(silent, pd.DataFrame({"x": [1]})) is None


def test_lead_run_logs_mql_precision_and_recall(small, mlflow_client):
    result = lead_scoring.train(small, mlflow_client, lead_frame(), min_class_count=20)
    metrics = mlflow_client.get_run(result.run_id).data.metrics
    assert {"baseline_mql_precision", "baseline_mql_recall", "mql_volume_precision"} <= set(metrics)


def test_holdout_never_reaches_model_selection(small, mlflow_client, monkeypatch):
    seen = {}
    real = classifier.select_model

    def spy(train, validation, *args, **kwargs):
        seen["train"], seen["validation"] = train.copy(), validation.copy()
        return real(train, validation, *args, **kwargs)

    monkeypatch.setattr(classifier, "select_model", spy)
    frame = churn_frame()
    result = churn.train(small, mlflow_client, frame, min_class_count=20)
    local = mlflow.artifacts.download_artifacts(
        run_id=result.run_id,
        artifact_path="holdout/holdout.parquet",
        tracking_uri=mlflow_client.tracking_uri,
    )
    holdout = pd.read_parquet(local)
    used = pd.concat([seen["train"], seen["validation"]])
    assert not set(used["entity_id"]) & set(holdout["entity_id"])
    assert used["event_timestamp"].max() <= holdout["event_timestamp"].min()
    # Validation is itself the newest slice of what selection sees.
    assert seen["train"]["event_timestamp"].max() <= seen["validation"]["event_timestamp"].min()
    assert len(used) + len(holdout) == len(frame)


def test_oracle_from_a_truth_table_matches_the_column(small, mlflow_client):
    frame = deal_frame()
    truth = frame[["entity_id", "event_timestamp", "oracle_p", "label"]].rename(
        columns={"oracle_p": "p"}
    )
    result = deal_health.train(
        small, mlflow_client, frame.drop(columns="oracle_p"), truth=truth, min_class_count=20
    )
    from sklearn.metrics import roc_auc_score

    newest = frame.sort_values("event_timestamp").tail(int(result.metrics["n_holdout"]))
    expected = roc_auc_score(newest["label"], newest["oracle_p"])
    assert result.metrics["oracle_auc"] == pytest.approx(expected)
    assert result.metrics["oracle_coverage"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="label"), "target column 'label' not found"),
        (lambda f: f.assign(label=1), "only one class"),
        (lambda f: f.head(0), "empty"),
        (lambda f: f.assign(label="maybe"), "must be binary"),
        (lambda f: f[["entity_id", "event_timestamp", "label", "gender"]], "no feature columns"),
    ],
)
def test_bad_input_is_a_user_error_and_leaves_no_run(change, message, small, mlflow_client):
    with pytest.raises(UserError, match=message):
        churn.train(small, mlflow_client, change(churn_frame(120)), min_class_count=5)
    assert_nothing_logged(mlflow_client, "churn")


def test_too_few_positives_needs_an_explicit_flag(small, mlflow_client):
    frame = churn_frame(100)  # about 23 churners
    with pytest.raises(UserError, match="too little data"):
        churn.train(small, mlflow_client, frame)  # settings.min_class_count = 40
    assert_nothing_logged(mlflow_client, "churn")


def test_failure_while_logging_deletes_the_run(small, mlflow_client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("artifact store down")

    monkeypatch.setattr(mlflow.sklearn, "log_model", broken)
    with pytest.raises(RuntimeError, match="artifact store down"):
        churn.train(small, mlflow_client, churn_frame(), min_class_count=20)
    assert_nothing_logged(mlflow_client, "churn")


def assert_nothing_logged(client, name: str) -> None:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        assert client.search_runs([experiment.experiment_id]) == []
    assert client.search_model_versions(f"name = '{name}'") == []


def _split(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["label"] = (x[:, 0] - x[:, 1] + rng.normal(size=n) > 0).astype(int)
    return frame.iloc[:400], frame.iloc[400:], ["a", "b", "c"]


def test_search_leaves_out_a_family_too_slow_for_the_latency_budget(monkeypatch, floor_ms):
    monkeypatch.setattr(classifier, "GIVE_UP_AFTER", 2)  # fewer slow fits in a unit test
    from sklearn.ensemble import RandomForestClassifier

    def slow_forest(trial, seed, n_jobs):  # shallow forests, too many trees for the budget
        trees = trial.suggest_int("n_estimators", 400, 420)
        return RandomForestClassifier(trees, max_depth=3, n_jobs=n_jobs, random_state=seed)

    train, validation, features = _split()
    lr_rf = (
        classifier.CANDIDATES[0],
        classifier.Candidate("random_forest", "ordinal", slow_forest),
    )
    budget = FLOOR_MULTIPLE * floor_ms
    chosen = classifier.select_model(
        train, validation, features, n_trials=4, seed=0, candidates=lr_rf, latency_budget_ms=budget
    )
    assert chosen.candidate == "logistic_regression"
    assert set(chosen.validation_auc) == {"logistic_regression"}
    forests = [t for t in chosen.trials if t["candidate"] == "random_forest"]
    assert len(forests) == 2  # stopped once it showed it cannot fit
    assert all(not t["within_budget"] and t["predict_p99_ms"] > budget for t in forests), (
        f"floor {floor_ms:.3f} ms"
    )
    metrics = classifier.latency_metrics(chosen)
    assert metrics["predict_p99_ms"] <= budget < metrics["predict_p99_ms_random_forest"]


def test_no_candidate_within_the_latency_budget_is_a_user_error():
    train, validation, features = _split()
    with pytest.raises(UserError, match="latency budget of 1e-06 ms"):
        classifier.select_model(
            train, validation, features, n_trials=1, seed=0,
            candidates=classifier.CANDIDATES[:1], latency_budget_ms=1e-6,
        )  # fmt: skip
