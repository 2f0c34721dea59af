"""The table preprocessor follows the scikit-learn contract and copes with messy customer tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crm_predict.training.classifier import (
    TablePreprocessor,
    out_of_time_split,
    parse_boolean,
    parse_numeric,
)
from sklearn.utils.estimator_checks import parametrize_with_checks

from crm_predict.core.metrics import expected_calibration_error, lift_at


@parametrize_with_checks([TablePreprocessor(), TablePreprocessor(encoding="ordinal")])
def test_sklearn_contract(estimator, check):
    check(estimator)


def messy() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenure": ["1", "5", " ", "12", "7", ""],
            "paperless": ["Yes", "No", "yes", "NO", None, "Y"],
            "senior": [True, False, False, True, False, False],
            "plan": ["basic", "pro", "basic", None, "pro", "basic"],
            "charges": [10.5, np.nan, 30.0, 40.0, 50.0, 60.0],
        }
    )


def test_columns_are_typed_from_their_values():
    prep = TablePreprocessor().fit(messy())
    assert prep.kinds_ == {
        "tenure": "numeric",
        "paperless": "boolean",
        "senior": "boolean",
        "plan": "categorical",
        "charges": "numeric",
    }
    names = list(prep.get_feature_names_out())
    assert "tenure__missing" in names and "plan=basic" in names and "plan=(missing)" in names


def test_blanks_are_imputed_with_training_median_and_flagged():
    prep = TablePreprocessor().fit(messy())
    out = pd.DataFrame(prep.transform(messy()), columns=prep.get_feature_names_out())
    assert out.loc[2, "tenure"] == 6.0  # median of 1, 5, 12, 7
    assert out.loc[2, "tenure__missing"] == 1.0
    assert out["paperless"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]  # blank → median (yes)
    assert not np.isnan(out.to_numpy()).any()


@pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
def test_unseen_category_at_predict_time_is_not_an_error(encoding):
    prep = TablePreprocessor(encoding=encoding).fit(messy())
    new = messy().head(2).assign(plan=["enterprise", "pro"], tenure=["abc", "3"])
    out = pd.DataFrame(prep.transform(new), columns=prep.get_feature_names_out())
    if encoding == "onehot":
        assert out.filter(like="plan=").iloc[0].sum() == 0.0
        assert out.filter(like="plan=").iloc[1].sum() == 1.0
    else:
        assert out.loc[0, "plan"] == 0.0 and out.loc[1, "plan"] > 0
    assert out.loc[0, "tenure"] == 6.0  # unparseable text at predict time → imputed


def test_parsers_reject_what_they_cannot_read():
    assert parse_boolean(pd.Series(["yes", "maybe"])) is None
    assert parse_numeric(pd.Series(["1", "x", "y"])) is None
    assert parse_numeric(pd.Series(["1", "2", ""])).isna().tolist() == [False, False, True]


def test_ece_and_lift():
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0])) == 0.0
    assert expected_calibration_error(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.0
    assert expected_calibration_error(y, np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(1.0)
    y10 = np.array([1] + [0] * 9)
    assert lift_at(y10, np.linspace(1, 0, 10), 0.1) == pytest.approx(10.0)


def test_holdout_is_the_newest_rows():
    frame = pd.DataFrame({"t": pd.to_datetime(["2024-03-01", "2024-01-01", "2024-02-01"] * 4)})
    older, newest = out_of_time_split(frame, 0.25, "t")
    assert len(newest) == 3 and older["t"].max() <= newest["t"].min()
    older, newest = out_of_time_split(frame.reset_index(drop=True), 0.25, None)
    assert list(newest.index) == [9, 10, 11]  # file order when there is no time column
