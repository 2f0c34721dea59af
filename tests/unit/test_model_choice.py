"""Model choice on small tables: time-ordered CV with its spread below the row threshold, one
validation split above it, and the chosen model set beside two untuned sklearn models."""

from __future__ import annotations

import dataclasses

import crm_predict.training.classifier as classifier
import mlflow
import numpy as np
import pandas as pd
import pytest
from crm_predict.training import lead_scoring
from training_frames import lead_frame


@pytest.fixture
def small(settings):
    # No latency pruning: these tests are about the choice (the budget has its own tests).
    return settings.model_copy(update={"optuna_trials": 2, "predict_latency_budget_ms": 0})


def _window(n: int = 500, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    frame["label"] = (x[:, 0] - x[:, 1] + rng.normal(size=n) > 0).astype(int)
    return frame.iloc[:400], frame.iloc[400:], ["a", "b", "c"]


def test_time_folds_fit_on_the_past_and_shrink_when_a_class_is_rare():
    y = np.tile([0, 1], 300)
    folds = classifier.time_folds(y, n_splits=5, min_class=5)
    assert len(folds) == 5
    for fit, block in folds:
        assert fit.max() < block.min()  # every fitting row is older than the block it scores
    assert np.concatenate([b for _, b in folds]).tolist() == list(range(100, 600))

    rare = np.zeros(600, dtype=int)
    rare[[50, 150, 250, 350, 450, 550]] = 1  # one positive per 100 rows
    assert classifier.time_folds(rare, n_splits=5, min_class=1) != []
    assert len(classifier.time_folds(rare, n_splits=5, min_class=2)) < 5
    assert classifier.time_folds(rare, n_splits=5, min_class=5) == []


def test_below_the_threshold_trials_are_scored_by_time_ordered_cv():
    train, validation, features = _window()
    chosen = classifier.select_model(
        train, validation, features, n_trials=2, seed=0,
        candidates=classifier.CANDIDATES[:1], cv_below_rows=10_000,
    )  # fmt: skip
    assert chosen.method == "time_cv"
    cv = chosen.cv_auc["logistic_regression"]
    assert len(cv["folds"]) == classifier.CV_FOLDS
    assert cv["mean"] == pytest.approx(np.mean(cv["folds"]))
    assert cv["std"] == pytest.approx(np.std(cv["folds"])) and cv["std"] > 0
    assert all("cv_fold_auc" in t and "val_auc" not in t for t in chosen.trials)
    # The kept model is fitted on the training split only: validation rows stay unseen.
    x_val = chosen.preprocessor.transform(validation[features])
    p = chosen.estimator.predict_proba(x_val)[:, 1]
    from sklearn.metrics import roc_auc_score

    assert chosen.validation_auc["logistic_regression"] == pytest.approx(
        roc_auc_score(validation["label"], p)
    )
    assert classifier.selection_metrics(chosen)["cv_folds"] == classifier.CV_FOLDS


def test_above_the_threshold_one_validation_split_is_enough():
    train, validation, features = _window()
    chosen = classifier.select_model(
        train, validation, features, n_trials=2, seed=0,
        candidates=classifier.CANDIDATES[:1], cv_below_rows=len(train) + len(validation),
    )  # fmt: skip
    assert chosen.method == "validation_split" and chosen.cv_auc == {}
    assert all("val_auc" in t and "cv_fold_auc" not in t for t in chosen.trials)
    assert not any(k.startswith("cv_") for k in classifier.selection_metrics(chosen))


def test_small_table_run_logs_the_cv_spread_and_both_untuned_baselines(small, mlflow_client):
    result = lead_scoring.train(small, mlflow_client, lead_frame(), min_class_count=20)
    run = mlflow_client.get_run(result.run_id)
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["selection_method"] == "time_cv"
    for candidate in classifier.CANDIDATES:
        assert 0.5 < metrics[f"cv_auc_mean_{candidate.name}"] <= 1.0
        assert metrics[f"cv_auc_std_{candidate.name}"] > 0
    summary = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/selection/summary.json")
    assert summary["method"] == "time_cv" and summary["chosen"] == result.candidate
    assert summary["n_folds"] == metrics["cv_folds"] >= 2
    spread = summary["cv_auc"][result.candidate]
    assert spread["mean"] == pytest.approx(metrics[f"cv_auc_mean_{result.candidate}"])
    for name in ("logreg", "hgb"):
        assert 0.5 < metrics[f"holdout_auc_baseline_{name}"] < 1.0


def test_large_enough_table_run_uses_one_validation_split(small, mlflow_client):
    single = small.model_copy(update={"cv_below_rows": 100})
    result = lead_scoring.train(single, mlflow_client, lead_frame(), min_class_count=20)
    run = mlflow_client.get_run(result.run_id)
    assert run.data.tags["selection_method"] == "validation_split"
    assert not any(k.startswith("cv_") for k in run.data.metrics)
    assert "holdout_auc_baseline_logreg" in run.data.metrics


def _ring_frame(n: int = 700, seed: int = 5) -> pd.DataFrame:
    """Converts when a point lies inside a ring: no linear boundary in the raw columns."""
    rng = np.random.default_rng(seed)
    x, y, noise = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    radius = np.hypot(x, y)
    label = (np.abs(radius - 1.0) + 0.25 * noise < 0.5).astype(int)
    return pd.DataFrame({
        "entity_id": np.arange(n),
        "event_timestamp": pd.Timestamp("2025-01-01") + pd.to_timedelta(np.arange(n), "h"),
        "x": x, "y": y, "spend": rng.lognormal(3, 1, n), "label": label,
    })  # fmt: skip


def test_on_a_nonlinear_signal_the_chosen_model_beats_the_untuned_logistic_regression(
    small, mlflow_client
):
    ring = dataclasses.replace(lead_scoring.MODEL, name="ring")
    spec = classifier.ClassifierSpec(ring, baseline=lambda older, rows: None, baseline_name="none")
    frame = _ring_frame()
    result = classifier.train_classifier(small, mlflow_client, frame, spec, min_class_count=20)
    m = result.metrics
    assert result.candidate != "logistic_regression"
    assert m["auc"] > m["holdout_auc_baseline_logreg"] + 0.1
    assert m["auc"] >= m["holdout_auc_baseline_hgb"] - 0.03  # tuned trees ≈ untuned trees here
