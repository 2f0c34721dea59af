"""The online API's cheap calls give the Pipeline's own numbers: the preprocessor's row path equals
its pandas path, and a loaded classifier's prepared matrix + final estimator equals the Pipeline's
``predict_proba``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crm_predict.serving.loader import LoadedModel, build_explainer, single_threaded
from crm_predict.training.classifier import TablePreprocessor
from serving_models import _classifier, lead_frame
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier


def messy(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Every kind of column the preprocessor types, with blanks, tokens and stray values."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "visits": rng.poisson(3, n),
            "amount": np.where(rng.uniform(size=n) < 0.2, np.nan, rng.normal(100, 30, n)),
            "tenure_text": rng.choice(["1", "5", " 12", "", "7"], n),
            "paperless": rng.choice(["Yes", "no", "Y", "N", None], n),
            "flag": rng.integers(0, 2, n),
            "senior": rng.choice([True, False], n),
            "plan": rng.choice(["basic", "pro", " Pro ", "N/A", None, "enterprise"], n),
            "region": rng.choice(["north", "south", "east"], n),
            "signed_up": pd.Timestamp("2025-01-01")
            + pd.to_timedelta(rng.integers(0, 300, n), "D"),  # fmt: skip
        }
    )
    return frame


def new_rows(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """Rows as scoring sees them: plain, single, object columns of ints and None (an online read
    with a missing entity), text and infinities where numbers were, unseen categories."""
    one = frame.head(1)
    sparse = frame.head(3).astype(object)
    sparse.iloc[1, :] = None
    odd = frame.head(4).astype(object)
    odd["visits"] = ["3", "x", 2, None]
    odd["amount"] = [np.inf, -np.inf, 5.5, "7"]
    odd["flag"] = ["yes", 1, 0, None]
    odd["plan"] = ["platinum", 3, 2.5, "null"]
    odd["senior"] = [True, None, False, True]
    big = frame.head(2).astype(object)
    big["visits"] = [2**70, 1]
    infinite = frame.head(3).assign(amount=[np.inf, 1.0, -np.inf])
    unusual = frame.head(3).astype(object)
    unusual["plan"] = [pd.NA, np.float32(1.5), np.int64(2)]
    unusual["region"] = [pd.NaT, "north", " "]
    return [frame, one, sparse, odd, big, infinite, unusual, frame.iloc[5:9]]


@pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
def test_row_path_equals_the_pandas_path(encoding):
    train = messy(80)
    prep = TablePreprocessor(encoding=encoding).fit(train)
    assert {"numeric", "boolean", "categorical", "ignored"} <= set(prep.kinds_.values())
    for rows in new_rows(messy(12, seed=1)):
        np.testing.assert_array_equal(prep.transform_rows(rows), prep.transform(rows))


def test_row_path_falls_back_for_what_it_does_not_handle():
    prep = TablePreprocessor().fit(messy(30))
    rows = messy(3, seed=2)
    np.testing.assert_array_equal(prep.transform_rows(rows.to_numpy()), prep.transform(rows.to_numpy()))  # fmt: skip
    with pytest.raises(ValueError):  # reordered columns are refused as transform refuses them
        prep.transform_rows(rows[list(reversed(rows.columns))])


def _loaded(model: Pipeline, features: list[str]) -> LoadedModel:
    return LoadedModel(
        name="lead_scoring", version="1", alias="champion", run_id="r", model=model,
        flavor="sklearn", feature_names=features,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["xgboost", "random_forest", "logistic"])
def test_loaded_classifier_gives_the_pipelines_predict_proba(kind):
    frame = lead_frame(200)
    label = (frame["site_visits_30d"] + 2 * frame["is_decision_maker"] > 4).astype(int)
    model = _classifier(frame, label.to_numpy(), kind)  # CalibratedClassifierCV(cv=3)
    loaded = _loaded(model, list(frame.columns))
    rows = lead_frame(30, seed=9)
    for part in (rows, rows.head(1), rows.assign(entity_id=7)[["entity_id", *rows.columns]]):
        expected = model.predict_proba(part[list(frame.columns)])[:, 1]
        np.testing.assert_array_equal(loaded.predict_proba(part), expected)
        np.testing.assert_array_equal(loaded.predict_proba(part, loaded.matrix(part)), expected)


def test_training_shaped_pipeline_scores_the_same_and_single_threaded():
    """TablePreprocessor + a calibrated FrozenEstimator, as ``crm_predict.training.classifier`` logs it."""
    frame = messy(300, seed=3)
    label = ((frame["visits"] > 3) ^ (frame["region"] == "north")).astype(int)
    prep = TablePreprocessor(encoding="ordinal").fit(frame)
    booster = XGBClassifier(n_estimators=20, max_depth=3, n_jobs=2).fit(prep.transform(frame), label)  # fmt: skip
    calibrated = CalibratedClassifierCV(FrozenEstimator(booster), method="sigmoid")
    model = Pipeline([("prepare", prep), ("classifier", calibrated.fit(prep.transform(frame), label))])  # fmt: skip
    single_threaded(model)
    assert booster.n_jobs == 1 and booster.get_booster().attr("nthread") is None
    assert '"nthread":"1"' in booster.get_booster().save_config().replace(" ", "")
    loaded = _loaded(model, list(frame.columns))
    for rows in new_rows(messy(10, seed=4)):
        np.testing.assert_array_equal(loaded.predict_proba(rows), model.predict_proba(rows)[:, 1])
    explainer = build_explainer(model, list(frame.columns))
    rows = messy(5, seed=5)
    matrix = loaded.matrix(rows)
    assert explainer.reasons(rows, matrix=matrix) == explainer.reasons(rows)


def _pandas_rule_score(industry, dm, region, visits, pricing, papers, trials, days, rules):
    """The rule score as first written, one pandas pass per term (the reference)."""
    return (
        industry.fillna("").str.lower().isin(rules.target_industries) * rules.points_target_industry
        + dm.fillna(False).astype(bool) * rules.points_decision_maker
        + ~region.fillna("").str.lower().isin(rules.target_regions) * rules.points_outside_region
        + visits.fillna(0) * rules.points_per_activity.visit
        + pricing.fillna(0) * rules.points_per_activity.pricing
        + papers.fillna(0) * rules.points_per_activity.content
        + trials.fillna(0) * rules.points_per_activity.trial
        + (days.fillna(np.inf) >= 30) * rules.points_inactive
    ).astype(float)


def test_rule_score_on_arrays_equals_the_pandas_expression():
    """The on-demand rule score runs per request; its numpy form scores what pandas scored."""
    import warnings

    from crm_predict.core.rules import RULES, rule_based_lead_score

    rng = np.random.default_rng(0)
    n = 200
    columns = [
        pd.Series(rng.choice(["Software", "finance", " retail", None, "HEALTHCARE"], n)),
        pd.Series(rng.choice([1, 0, None], n), dtype=object),
        pd.Series(rng.choice(["north", "East", "south", None], n)),
        pd.Series(rng.poisson(3, n)),
        pd.Series(rng.choice([0, 1, 2, None], n), dtype=object),
        pd.Series(np.where(rng.uniform(size=n) < 0.2, np.nan, rng.poisson(1, n))),
        pd.Series(rng.integers(0, 2, n)),
        pd.Series(np.where(rng.uniform(size=n) < 0.2, np.nan, rng.exponential(30, n))),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pandas' object fillna downcast notice
        expected = _pandas_rule_score(*columns, RULES.lead)
        for rows in (slice(None), slice(0, 1), slice(7, 9)):
            part = [c.iloc[rows] for c in columns]
            pd.testing.assert_series_equal(
                rule_based_lead_score(*part), expected.iloc[rows], check_names=False
            )
            # Lists and arrays (the on-demand view's python mode) score the same, as an array.
            for form in (list, lambda c: c.to_numpy()):
                got = rule_based_lead_score(*(form(c) for c in part))
                assert isinstance(got, np.ndarray)
                np.testing.assert_array_equal(got, expected.iloc[rows].to_numpy())


def _series_rule_score(industry, dm, region, visits, pricing, papers, trials, days, rules):
    """The Series-only rule score as it was before the array path (the reference)."""

    def lower_in(values, allowed):
        return np.fromiter((isinstance(v, str) and v.lower() in allowed for v in values), bool, len(values))  # fmt: skip

    def numbers(values, missing):
        try:
            x = values.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return np.where(np.isnan(x), missing, x)

    def flag(values):
        try:
            x = values.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            return values.fillna(False).astype(bool).to_numpy()
        return np.where(np.isnan(x), 0.0, x) != 0

    score = (
        lower_in(industry, rules.target_industries) * rules.points_target_industry
        + flag(dm) * rules.points_decision_maker
        + ~lower_in(region, rules.target_regions) * rules.points_outside_region
        + numbers(visits, 0.0) * rules.points_per_activity.visit
        + numbers(pricing, 0.0) * rules.points_per_activity.pricing
        + numbers(papers, 0.0) * rules.points_per_activity.content
        + numbers(trials, 0.0) * rules.points_per_activity.trial
        + (numbers(days, np.inf) >= 30) * rules.points_inactive
    )
    return pd.Series(score.astype(float), index=industry.index)


def test_rule_score_takes_any_column_kind_as_the_series_path_did():
    """Extension dtypes, text numbers and flags, datetimes, odd scalars: Series, lists and arrays
    all score what the Series-only implementation scored."""
    import warnings

    from crm_predict.core.rules import RULES, rule_based_lead_score

    kinds = [
        pd.Series([1, None, 3, 0, 2, None], dtype="Int64"),
        pd.Series([1.5, None, np.nan, 0.0, 2.0, 40.0], dtype="Float64"),
        pd.Series(["3", "x", None, " 2", "1e1", ""], dtype=object),
        pd.Series(["3", None, "40", "5", "0", "1"], dtype="string"),
        pd.Series([True, False, None, True, pd.NA, False], dtype="boolean"),
        pd.Series([np.int64(2), 2**70, pd.NA, pd.NaT, np.float32(1.5), True], dtype=object),
        pd.Series(pd.to_datetime(["2026-01-01", None, "2026-02-01", None, "2026-03-01", None])),
        pd.Series([0, 1, 2, 3, 4, 50], index=[9, 8, 7, 6, 5, 4]),
    ]
    text = pd.Series(["Software", None, "finance", 3, "HEALTHCARE", "retail"])
    region = pd.Series(["north", "EAST", None, "south", np.nan, "north"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pandas' object fillna downcast notice
        for column in kinds:
            index = column.index
            args = [text.set_axis(index), column, region.set_axis(index), *[column] * 5]
            expected = _series_rule_score(*args, RULES.lead)
            pd.testing.assert_series_equal(rule_based_lead_score(*args), expected)
            for form in (list, lambda c: c.to_numpy()):
                got = rule_based_lead_score(*(form(c) for c in args))
                np.testing.assert_array_equal(got, expected.to_numpy())


def test_coalesced_jobs_each_get_their_own_rows_scores_and_errors():
    """A micro-batch of id, repeated-id, explain, raw-row and unknown-id requests is read once and
    scored per explain flag; every request gets exactly what it would get alone."""
    from crm_predict.serving.hub import Job, ModelHub, UnknownIdsError
    from crm_predict.serving.loader import LoadedModel
    from serving_models import LEAD_FEATURES, FakeOnline

    from crm_predict.core.settings import Settings

    frame = lead_frame(200)
    label = (frame["site_visits_30d"] + 2 * frame["is_decision_maker"] > 4).astype(int)
    pipeline = _classifier(frame, label.to_numpy(), "xgboost")
    model = LoadedModel(
        name="lead_scoring", version="1", alias="champion", run_id="r", model=pipeline,
        flavor="sklearn", feature_names=LEAD_FEATURES,
        explainer=build_explainer(pipeline, LEAD_FEATURES),
    )  # fmt: skip
    online = FakeOnline()
    hub = ModelHub(Settings(), online=online)
    hub.models["lead_scoring"] = model
    raw = lead_frame(2, seed=4)
    jobs = [
        Job(ids=[3, 1, 3]), Job(ids=[2], explain=True), Job(frame=raw), Job(ids=[1]),
        Job(ids=[5, 4], explain=True),
    ]  # fmt: skip
    reads = online.reads
    together = hub.score_jobs("lead_scoring", jobs)
    assert online.reads == reads + 1
    for job, result in zip(jobs, together, strict=True):
        (alone,) = hub.score_jobs("lead_scoring", [job])
        assert result.records == alone.records
        pd.testing.assert_frame_equal(
            result.features[LEAD_FEATURES], alone.features[LEAD_FEATURES], check_dtype=False
        )
    assert [r["lead_id"] for r in together[0].records] == [3, 1, 3]
    with_unknown = hub.score_jobs("lead_scoring", [Job(ids=[2]), Job(ids=[7, 999])])
    assert with_unknown[0].records == hub.score_jobs("lead_scoring", [Job(ids=[2])])[0].records
    assert isinstance(with_unknown[1], UnknownIdsError) and with_unknown[1].ids == [999]
    hub.close()


@pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
def test_one_row_object_frame_scores_and_explains_like_the_typed_frame(encoding):
    """The online read's single-id frame (one object block of Python values, ``typed=False``)
    gives the same scores, grades and reasons as the frame pandas types column by column."""
    from crm_predict.serving import scoring
    from crm_predict.serving.loader import LoadedModel

    frame = messy(300, seed=6).drop(columns="signed_up")
    frame["rule_score"] = (frame["visits"] * 5.0).astype(float)
    label = ((frame["visits"] > 3) ^ (frame["region"] == "north")).astype(int)
    prep = TablePreprocessor(encoding=encoding).fit(frame)
    booster = XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1).fit(prep.transform(frame), label)  # fmt: skip
    calibrated = CalibratedClassifierCV(FrozenEstimator(booster), method="sigmoid")
    pipeline = Pipeline([("prepare", prep), ("classifier", calibrated.fit(prep.transform(frame), label))])  # fmt: skip
    features = list(frame.columns)
    model = LoadedModel(
        name="lead_scoring", version="1", alias="champion", run_id="r", model=pipeline,
        flavor="sklearn", feature_names=features,
        explainer=build_explainer(pipeline, features),
    )  # fmt: skip
    names = ["entity_id", *features]
    rows = messy(12, seed=7).drop(columns="signed_up").astype(object)
    rows["rule_score"] = [None, 5.0, 0.0, 35.5, *[float(k) for k in range(8)]]
    rows.iloc[3, :] = None  # nothing stored for the row's views
    rows.iloc[4, 1] = "7"  # text where a number was
    rows.insert(0, "entity_id", range(100, 112))
    for row in rows.to_numpy(dtype=object).tolist():
        row = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in row]
        row = [v.item() if isinstance(v, np.generic) else v for v in row]  # as Feast gives them
        typed = pd.DataFrame({name: [v] for name, v in zip(names, row, strict=True)})
        block = np.empty((1, len(names)), dtype=object)
        block[0, :] = row
        objects = pd.DataFrame(block, columns=names, dtype=object)
        for explain in (False, True):
            assert scoring.score(model, objects, explain) == scoring.score(model, typed, explain)


def test_load_model_leaves_threading_alone_unless_serving_asks(tmp_path):
    """The nightly batch loads champions as logged (its predicts may use every core); the online
    API's loader makes them score on the calling thread. Same numbers either way."""
    from crm_predict.serving.hub import ModelHub, load_for_serving
    from crm_predict.serving.loader import _base_estimators, _split, load_model
    from mlflow import MlflowClient
    from serving_models import churn_frame, register_models

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    register_models(client, only=("churn",))  # a calibrated LogisticRegression, n_jobs=None

    def n_jobs(loaded) -> set:
        return {b.get_params()["n_jobs"] for b in _base_estimators(_split(loaded.model)[1])}

    as_logged = load_model(client, "churn")
    serving = load_model(client, "churn", single_thread=True)
    assert n_jobs(as_logged) == {None} and n_jobs(serving) == {1}
    assert n_jobs(load_for_serving(client, "churn", "champion")) == {1}
    from crm_predict.core.settings import Settings

    assert ModelHub(Settings(data_dir=tmp_path / "d")).loader is load_for_serving
    rows = churn_frame(20, seed=9)
    np.testing.assert_array_equal(as_logged.predict_proba(rows), serving.predict_proba(rows))


@pytest.mark.parametrize(
    "values",
    [[3, None, 2.5, float("nan"), 10**20], ["4", None, "x", 1], [True, None, 2], [None, None]],
)
def test_rule_points_of_object_values_are_to_numerics(values):
    """A single-id read hands the rule score over as Python objects: plain numbers take a
    short path, anything else pandas' coercion; the same floats either way."""
    from crm_predict.serving.scoring import RULE_SCORE, _rule_points

    frame = pd.DataFrame({RULE_SCORE: pd.Series(values, dtype=object)})
    expected = pd.to_numeric(frame[RULE_SCORE], errors="coerce").to_numpy(dtype=float)
    got = _rule_points(frame)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)
