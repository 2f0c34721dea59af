"""Reasons are real contributions mapped to raw feature names; the micro-batcher coalesces
concurrent requests without mixing their answers or errors."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from crm_predict.serving.hub import MicroBatcher
from crm_predict.serving.loader import _raw_name, build_explainer
from serving_models import lead_frame
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from xgboost import XGBClassifier


@pytest.fixture(scope="module")
def xgb_pipeline():
    frame = lead_frame(200)
    label = (frame["site_visits_30d"] + 2 * frame["is_decision_maker"] > 3).astype(int)
    numeric = [c for c in frame.columns if frame[c].dtype != object]
    prep = ColumnTransformer(
        [
            ("num", "passthrough", numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["industry", "lead_region"]),
        ]  # fmt: skip
    )
    model = Pipeline([("prep", prep), ("clf", XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1))])  # fmt: skip
    return model.fit(frame, label), frame


@pytest.mark.parametrize("exact", [True, False])
def test_contributions_add_up_to_the_model_margin(xgb_pipeline, exact):
    model, frame = xgb_pipeline
    explainer = build_explainer(model, list(frame.columns), exact=exact)
    rows = frame.head(5)
    contributions = explainer.contributions(rows)
    assert set(contributions.columns) == set(frame.columns)  # one-hot columns folded back
    margin = model[-1].predict(model[:-1].transform(rows), output_margin=True)
    bias = (
        model[-1]
        .get_booster()
        .predict(xgb.DMatrix(model[:-1].transform(rows)), pred_contribs=True)[:, -1]
    )
    np.testing.assert_allclose(contributions.sum(axis=1) + bias, margin, rtol=1e-4, atol=1e-4)


def test_reasons_are_top_positive_and_negative_with_raw_values(xgb_pipeline):
    model, frame = xgb_pipeline
    explainer = build_explainer(model, list(frame.columns))
    rows = frame.head(3)
    table = explainer.contributions(rows)
    for i, (pos, neg) in enumerate(explainer.reasons(rows, top=2)):
        assert [r.feature for r in pos] == list(table.iloc[i][table.iloc[i] > 0].nlargest(2).index)
        assert [r.feature for r in neg] == list(table.iloc[i][table.iloc[i] < 0].nsmallest(2).index)
        for reason in pos + neg:
            assert reason.value == rows.iloc[i][reason.feature]


@pytest.mark.parametrize(
    ("transformed", "raw"),
    [
        ("cat__industry_software", "industry"),
        ("industry=software", "industry"),
        ("num__days_since_last_interaction", "days_since_last_interaction"),
        ("days_since_last_interaction__missing", "days_since_last_interaction"),
        ("site_visits_30d", "site_visits_30d"),
        ("remainder__other", "other"),
    ],
)
def test_transformed_columns_map_back_to_raw_feature_names(transformed, raw):
    names = ["industry", "days_since_last_interaction", "site_visits_30d", "site_visits"]
    assert _raw_name(transformed, sorted(names, key=len, reverse=True)) == raw


def test_explainer_is_none_for_an_estimator_it_cannot_explain():
    from sklearn.neighbors import KNeighborsClassifier

    frame = lead_frame(50)[["site_visits_30d", "pricing_views_30d"]]
    model = KNeighborsClassifier(3).fit(frame, (frame["site_visits_30d"] > 3).astype(int))
    assert build_explainer(model, list(frame.columns)) is None


def test_micro_batcher_coalesces_concurrent_requests_and_isolates_errors():
    executor = ThreadPoolExecutor(1)
    gate = threading.Event()
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int | BaseException]:
        gate.wait(5)  # the first batch holds the worker while the others queue
        calls.append(list(items))
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]

    async def scenario():
        batcher = MicroBatcher(run, executor, max_items=8)
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.05)  # first batch is running alone
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in (2, -3, 4, 5)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        return batcher, results

    started = time.monotonic()
    batcher, results = asyncio.run(scenario())
    executor.shutdown()
    assert time.monotonic() - started < 5
    assert calls == [[1], [2, -3, 4, 5]]
    assert batcher.batch_sizes == [1, 4]
    assert results[0] == 10 and results[1] == 20 and results[3] == 40 and results[4] == 50
    assert isinstance(results[2], ValueError) and "bad -3" in str(results[2])


def test_calibrated_frozen_estimator_is_explained_through_its_base(xgb_pipeline):
    """Training calibrates a frozen fitted model on a validation split; reasons see through it."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    model, frame = xgb_pipeline
    label = (frame["site_visits_30d"] > 3).astype(int)
    calibrated = CalibratedClassifierCV(FrozenEstimator(model[-1])).fit(
        model[:-1].transform(frame), label
    )
    pipeline = Pipeline([("prep", model[:-1]), ("clf", calibrated)])
    explainer = build_explainer(pipeline, list(frame.columns))
    assert explainer is not None and explainer.method == "xgboost_treeshap"
    plain = build_explainer(model, list(frame.columns))
    np.testing.assert_allclose(
        explainer.contributions(frame.head(4)).to_numpy(),
        plain.contributions(frame.head(4)).to_numpy(),
    )


def test_calibrated_scaled_logistic_regression_is_explained_in_scaled_space(xgb_pipeline):
    """Training's logistic regression is a scaler + logreg pipeline inside the calibrator: its
    reasons are coefficient × scaled value, adding up to the base model's margin."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    model, frame = xgb_pipeline
    prep = model[:-1]
    x = prep.transform(frame)
    label = (frame["site_visits_30d"] + 2 * frame["is_decision_maker"] > 3).astype(int)
    base = Pipeline([("scale", StandardScaler(with_mean=False)), ("logreg", LogisticRegression())])
    base.fit(x, label)
    calibrated = CalibratedClassifierCV(FrozenEstimator(base)).fit(x, label)
    explainer = build_explainer(
        Pipeline([("prep", prep), ("clf", calibrated)]), list(frame.columns)
    )
    assert explainer is not None and explainer.method == "linear"
    rows = frame.head(5)
    contributions = explainer.contributions(rows)
    assert set(contributions.columns) == set(frame.columns)
    margin = base.decision_function(prep.transform(rows)) - base[-1].intercept_[0]
    np.testing.assert_allclose(contributions.sum(axis=1), margin, rtol=1e-9, atol=1e-9)


def test_micro_batcher_scores_small_batches_on_the_loop_and_keeps_coalescing():
    """Small batches run on the event loop (no thread hand-off); concurrent requests are still
    one batch; a big batch, or one while another holds the scoring lock, goes to the executor."""
    executor = ThreadPoolExecutor(1)
    lock = threading.Lock()
    calls: list[tuple[bool, list[int]]] = []

    def run(items: list[int]) -> list[int]:
        assert lock.locked()  # every run holds the scoring lock
        calls.append((threading.get_ident() == loop_thread, list(items)))
        return [i * 10 for i in items]

    async def scenario():
        batcher = MicroBatcher(run, executor, inline=lambda items: sum(items) <= 10, lock=lock)
        one = await batcher.submit(1)
        many = await asyncio.gather(*(batcher.submit(i) for i in (2, 3, 4)))
        big = await batcher.submit(50)
        lock.acquire()  # another batch (or a readiness probe) is scoring
        held = asyncio.ensure_future(batcher.submit(5))
        await asyncio.sleep(0.05)
        assert not held.done()
        lock.release()
        return one, many, big, await held, batcher

    loop_thread = threading.get_ident()
    one, many, big, held, batcher = asyncio.run(scenario())
    executor.shutdown()
    assert (one, many, big, held) == (10, [20, 30, 40], 500, 50)
    assert calls == [(True, [1]), (True, [2, 3, 4]), (False, [50]), (False, [5])]
    assert batcher.batch_sizes == [1, 3, 1, 1] and batcher.inline_batches == 2


def test_api_reasons_are_exact_treeshap_like_the_review_page(tmp_path):
    """The API's explainer (``load_for_serving``) and the review page's (``load_model``) are one
    method, exact TreeSHAP, and give the same contributions for the same rows."""
    from crm_predict.serving.hub import load_for_serving
    from crm_predict.serving.loader import load_model
    from mlflow import MlflowClient
    from serving_models import lead_frame, register_models

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    register_models(client, only=("lead_scoring",))
    api = load_for_serving(client, "lead_scoring")
    review = load_model(client, "lead_scoring", single_thread=True)
    assert api.explainer.method == review.explainer.method == "xgboost_treeshap"
    rows = lead_frame(5, seed=3)[api.feature_names]
    mine = api.explainer.contributions(rows)
    pd.testing.assert_frame_equal(mine, review.explainer.contributions(rows))
