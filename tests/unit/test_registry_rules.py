"""The registry's numbers on tiny frames: gate arithmetic, PSI, holdout row policies, metrics."""

import numpy as np
import pandas as pd
import pytest
from crm_predict.registry.compare import holdout_rows
from crm_predict.registry.drift import drift_table, psi
from crm_predict.registry.gates import (
    GateConfig,
    gate_disparate_impact,
    gate_minimum_data,
    gate_not_worse_classifier,
    gate_not_worse_logged,
    gate_protected_not_a_feature,
    proxy_correlations,
)

from crm_predict.core.errors import UserError
from crm_predict.core.metrics import classification_metrics, expected_calibration_error, lift_at

CONFIG = GateConfig()


def _metrics(auc, brier=0.15, ece=0.03):
    return {"auc": auc, "brier": brier, "ece": ece, "lift_at_10": 2.0}


def test_champion_gate_allows_the_margin_and_no_more():
    champion = _metrics(0.80)
    assert gate_not_worse_classifier(_metrics(0.795), champion, CONFIG).passed
    worse = gate_not_worse_classifier(_metrics(0.78), champion, CONFIG)
    assert not worse.passed and "AUC 0.780" in worse.detail
    miscalibrated = gate_not_worse_classifier(_metrics(0.80, ece=0.10), champion, CONFIG)
    assert not miscalibrated.passed and "ece" in miscalibrated.detail
    assert gate_not_worse_classifier(_metrics(0.5), None, CONFIG).passed  # first champion


def test_pyfunc_champion_gate_reads_direction():
    directions = {"mae_purchases": False}
    assert gate_not_worse_logged({"mae_purchases": 1.02}, {"mae_purchases": 1.0}, directions, CONFIG).passed  # fmt: skip
    assert not gate_not_worse_logged({"mae_purchases": 1.2}, {"mae_purchases": 1.0}, directions, CONFIG).passed  # fmt: skip


def test_minimum_data_needs_both_classes():
    assert gate_minimum_data((40, 40), CONFIG).passed
    assert not gate_minimum_data((39, 500), CONFIG).passed
    assert not gate_minimum_data(None, CONFIG).passed


def test_disparate_impact_is_the_ratio_of_positive_rates():
    groups = pd.Series(["F"] * 100 + ["M"] * 100)
    # F: 50 % at or above 0.5; M: 35 % → ratio 0.7.
    p = np.r_[np.repeat([0.9, 0.1], 50), np.repeat([0.9, 0.1], [35, 65])]
    result = gate_disparate_impact(p, groups, 0.5, "test", CONFIG)
    assert not result.passed and "ratio 0.70" in result.detail
    p_fair = np.r_[np.repeat([0.9, 0.1], 50), np.repeat([0.9, 0.1], [45, 55])]
    assert gate_disparate_impact(p_fair, groups, 0.5, "test", CONFIG).passed


def test_disparate_impact_ignores_tiny_groups():
    groups = pd.Series(["F"] * 100 + ["M"] * 100 + ["X"] * 3)
    p = np.r_[np.full(200, 0.9), np.full(3, 0.1)]
    assert gate_disparate_impact(p, groups, 0.5, "test", CONFIG).passed


def test_proxy_correlation_finds_numeric_and_categorical_proxies():
    rng = np.random.default_rng(0)
    gender = pd.Series(rng.choice(["F", "M"], 500))
    frame = pd.DataFrame(
        {
            "gender": gender,
            "numeric_proxy": (gender == "F") * 1.0 + rng.normal(0, 0.2, 500),
            "title": gender.map({"F": "ms", "M": "mr"}),
            "noise": rng.normal(0, 1, 500),
        }
    )
    corr = proxy_correlations(frame, ["numeric_proxy", "title", "noise"], "gender")
    assert corr["numeric_proxy"] > 0.9 and corr["title"] == pytest.approx(1.0)
    assert corr["noise"] < 0.2


def test_protected_attribute_is_never_a_feature():
    assert not gate_protected_not_a_feature(["activity", "age_band"], CONFIG).passed
    assert gate_protected_not_a_feature(["activity"], CONFIG).passed


def test_psi_is_zero_for_same_data_and_large_for_shift():
    rng = np.random.default_rng(1)
    reference = pd.Series(rng.normal(0, 1, 2000))
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-9)
    assert psi(reference, pd.Series(rng.normal(0, 1, 2000))) < 0.05
    assert psi(reference, pd.Series(rng.normal(1, 1, 2000))) > 0.2
    cats = pd.Series(["a"] * 50 + ["b"] * 50)
    assert psi(cats, pd.Series(["a"] * 90 + ["c"] * 10)) > 0.2


def test_drift_table_names_missing_features():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(UserError, match="lacks features: y"):
        drift_table(frame, frame, ["x", "y"])


def _holdout(ids, version):
    return pd.DataFrame(
        {
            "entity_id": ids,
            "event_timestamp": pd.Timestamp("2026-01-01"),
            "label": 1,
            "from_version": version,
        }
    )


def test_holdout_row_policies():
    old, new = _holdout([1, 2, 3], 1), _holdout([2, 3, 4], 2)
    assert holdout_rows([old, new], "newest")["entity_id"].tolist() == [2, 3, 4]
    both = holdout_rows([old, new], "intersection")
    assert both["entity_id"].tolist() == [2, 3] and set(both["from_version"]) == {2}
    union = holdout_rows([old, new], "union").sort_values("entity_id")
    assert union["entity_id"].tolist() == [1, 2, 3, 4]
    assert union.set_index("entity_id").loc[2, "from_version"] == 2  # newest copy wins
    with pytest.raises(UserError, match="rows must be one of"):
        holdout_rows([old, new], "all")


def test_metrics_on_a_known_case():
    y = np.array([0, 0, 1, 1] * 25)
    p = np.array([0.1, 0.2, 0.8, 0.9] * 25)
    metrics = classification_metrics(y, p)
    assert metrics["auc"] == 1.0
    assert metrics["lift_at_10"] == pytest.approx(2.0)
    assert expected_calibration_error(y, p) == pytest.approx(0.15)
    assert lift_at(np.zeros(10), np.ones(10)) != lift_at(np.zeros(10), np.ones(10))  # NaN
