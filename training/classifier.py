"""One path for every classifier (lead scoring, deal health, churn): validate the table, split
it out of time (newest rows = holdout), tune logistic regression / random forest / XGBoost with
Optuna, calibrate on the validation split, evaluate once on the holdout against the model's
baseline, two untuned sklearn models and the oracle, and log + register the calibrated sklearn
``Pipeline`` in MLflow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from crm_predict.training.data_checks import (
    MISSING_TOKENS,
    DataChecks,
    apply_exclusions,
    check_table,
    clean_text,
    column_kind,
    parse_boolean,
    parse_numeric,
)
from crm_predict.training.tracking import log_sklearn_run, tracking_at
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from crm_predict.core.errors import UserError
from crm_predict.core.metrics import holdout_metrics
from crm_predict.core.model_spec import ModelSpec
from crm_predict.core.settings import Settings

ENTITY_ID, EVENT_TIMESTAMP, LABEL, ORACLE_P = "entity_id", "event_timestamp", "label", "oracle_p"
N_JOBS = 2  # the machine is shared; never grab every core
# Below this many training rows one thread is faster: OpenMP threads spin-wait on a busy machine.
THREADED_FROM_ROWS = 5000
MISSING_CATEGORY = "(missing)"
# Per-trial single-row latency: rows × passes timed (the registry gate times the served pipeline
# more thoroughly); a family whose first trials all miss the budget is not searched further.
LATENCY_ROWS, LATENCY_REPEATS, LATENCY_WARMUP = 10, 3, 3
GIVE_UP_AFTER = 3
# Model choice below ``Settings.cv_below_rows`` training + validation rows: time-ordered folds,
# each block holding at least ``CV_MIN_CLASS`` of either class (else fewer folds, else one split).
CV_BELOW_ROWS = Settings.model_fields["cv_below_rows"].default
CV_FOLDS, CV_MIN_CLASS = 5, 5
# Settings that may hold secrets or hosts never go into a run.
PRIVATE_SETTINGS = frozenset({"api_token", "database_url", "redis_url", "mlflow_tracking_uri"})


# --- Parsing messy columns ------------------------------------------------------------------


def _plain_numbers(values: np.ndarray) -> np.ndarray | None:
    """Floats (NaN for missing or infinite) when every value is a plain int/float or None, which
    ``parse_boolean``/``parse_numeric`` map to exactly that; else None (let them decide)."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v is None:
            out[i] = np.nan
        elif isinstance(v, float) or (type(v) is int and abs(v) < 2**63):
            out[i] = v
        else:  # text, booleans, big or unusual numbers
            return None
    out[np.isinf(out)] = np.nan
    return out


def _plain_categories(values: np.ndarray) -> np.ndarray | None:
    """``clean_text(...).fillna(MISSING_CATEGORY)`` of plain str/int/float/None values; else None."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v):
            out[i] = MISSING_CATEGORY
        elif isinstance(v, str | int | float):
            text = str(v).strip()
            out[i] = MISSING_CATEGORY if text.lower() in MISSING_TOKENS else text
        else:
            return None
    return out


class TablePreprocessor(TransformerMixin, BaseEstimator):
    """Make any clean-enough table model-ready: numbers, text numbers, text booleans, categories.

    Each column is classified at ``fit``: boolean (yes/no, true/false, y/n, 1/0 → 1/0), numeric
    (numeric dtype, or text where ≥ ``numeric_share`` of the present values parse), datetime
    (dropped: absolute dates do not carry over to the future) or categorical. Numbers are imputed
    with the training median (plus a ``__missing`` indicator when training had blanks); categories
    keep the ``max_categories`` most frequent values and are one-hot (``encoding="onehot"``,
    unseen → all zeros) or ordinal (``encoding="ordinal"``, unseen → 0, missing → its own code).
    """

    def __init__(
        self,
        encoding: str = "onehot",
        max_categories: int = 30,
        numeric_share: float = 0.95,
        missing_indicator: bool = True,
    ) -> None:
        self.encoding = encoding
        self.max_categories = max_categories
        self.numeric_share = numeric_share
        self.missing_indicator = missing_indicator

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

    def _frame(self, X: Any, reset: bool) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            # Keep per-column dtypes; sklearn still checks names and column count.
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[0] == 0 or X.shape[1] == 0:
                raise ValueError(
                    f"Found array with shape {X.shape}; at least 1 sample and 1 feature are required."
                )
            frame = X.copy()
        else:
            array = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False)
            frame = pd.DataFrame(array)
        if reset:
            self.columns_ = [str(c) for c in frame.columns]
        frame.columns = self.columns_
        return frame

    def fit(self, X: Any, y: Any = None) -> TablePreprocessor:
        if self.encoding not in ("onehot", "ordinal"):
            raise ValueError(f"encoding must be 'onehot' or 'ordinal', got {self.encoding!r}")
        frame = self._frame(X, reset=True)
        self.kinds_: dict[str, str] = {}
        self.medians_: dict[str, float] = {}
        self.categories_: dict[str, list[str]] = {}
        self.indicators_: list[str] = []
        for column in self.columns_:
            kind, values = column_kind(frame[column], self.numeric_share)
            self.kinds_[column] = kind
            if kind in ("numeric", "boolean"):
                median = values.median()
                self.medians_[column] = 0.0 if pd.isna(median) else float(median)
                if self.missing_indicator and values.isna().any():
                    self.indicators_.append(column)
            elif kind == "categorical":
                counts = values.fillna(MISSING_CATEGORY).value_counts(sort=False)
                # Most frequent first; ties broken by name so refits give the same columns.
                ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
                self.categories_[column] = [name for name, _ in ranked[: self.max_categories]]
        self.feature_names_out_ = np.array(self._names(), dtype=object)
        return self

    def _names(self) -> list[str]:
        names = []
        for column in self.columns_:
            kind = self.kinds_[column]
            if kind in ("numeric", "boolean"):
                names.append(column)
                if column in self.indicators_:
                    names.append(f"{column}__missing")
            elif kind == "categorical":
                if self.encoding == "onehot":
                    names.extend(f"{column}={value}" for value in self.categories_[column])
                else:
                    names.append(column)
        return names

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "kinds_")
        return self._encode(self._frame(X, reset=False), None)

    def transform_rows(self, X: Any) -> np.ndarray:
        """``transform`` for a few rows (the online API's path): value by value instead of one
        pandas pass per column, same output. A column holding anything but plain numbers or
        scalars goes through ``transform``'s parsers."""
        check_is_fitted(self, "kinds_")
        names = getattr(self, "feature_names_in_", None)
        if (
            not isinstance(X, pd.DataFrame) or names is None or len(X) == 0
            or list(X.columns) != list(names)
        ):  # fmt: skip
            return self.transform(X)
        return self._encode(X, X.to_numpy(dtype=object))

    def _encode(self, frame: pd.DataFrame, values: np.ndarray | None) -> np.ndarray:
        """The model matrix; ``values`` (the frame as objects) enables the per-value fast path."""
        blocks: list[np.ndarray] = []
        for j, column in enumerate(self.columns_):
            kind = self.kinds_[column]
            if kind in ("numeric", "boolean"):
                raw = None if values is None else _plain_numbers(values[:, j])
                if raw is None:
                    raw = self._parsed_numbers(kind, frame.iloc[:, j])
                blocks.append(np.where(np.isnan(raw), self.medians_[column], raw)[:, None])
                if column in self.indicators_:
                    blocks.append(np.isnan(raw).astype(float)[:, None])
            elif kind == "categorical":
                text = None if values is None else _plain_categories(values[:, j])
                if text is None:
                    text = clean_text(frame.iloc[:, j]).fillna(MISSING_CATEGORY).to_numpy()
                categories = self.categories_[column]
                if self.encoding == "onehot":
                    blocks.append((text[:, None] == np.array(categories)[None, :]).astype(float))
                else:
                    codes = {value: i + 1 for i, value in enumerate(categories)}
                    blocks.append(np.array([codes.get(v, 0) for v in text], dtype=float)[:, None])
        return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))

    def _parsed_numbers(self, kind: str, series: pd.Series) -> np.ndarray:
        values = parse_boolean(series) if kind == "boolean" else None
        if values is None:  # a boolean column may get numbers at predict time
            values = parse_numeric(series, min_share=0.0)
        if values is None:
            return np.full(len(series), np.nan)
        return values.to_numpy(dtype=float)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()


# --- Model specs and results -----------------------------------------------------------------

Baseline = Callable[[pd.DataFrame, pd.DataFrame], "np.ndarray | None"]
ExtraMetrics = Callable[[pd.DataFrame, np.ndarray, "np.ndarray | None"], dict[str, float]]


@dataclass(frozen=True)
class ClassifierSpec:
    """A classifier's model spec (its names) with its baseline and extra holdout metrics."""

    model: ModelSpec
    baseline: Baseline  # (train rows, rows to score) → baseline scores, None if columns missing
    baseline_name: str
    extra_metrics: ExtraMetrics | None = None


@dataclass
class TrainResult:
    """What a training run produced: where to find it in MLflow and how good it is."""

    model_name: str
    run_id: str
    version: int
    candidate: str
    metrics: dict[str, float] = field(default_factory=dict)
    feature_names: list[str] = field(default_factory=list)
    data_checks: DataChecks | None = None


@dataclass
class PreparedData:
    """The validated, time-ordered table split into train / validation / holdout."""

    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame
    features: list[str]
    has_time: bool
    dropped_unlabelled: int


# --- Input validation and the out-of-time split ----------------------------------------------


def parse_label(series: pd.Series, column: str) -> pd.Series:
    """Target as 0/1 (NaN where blank) from yes/no, true/false, y/n, 1/0; else a UserError."""
    values = parse_boolean(series)
    if values is None:
        numbers = parse_numeric(series, min_share=1.0)
        if numbers is not None and set(numbers.dropna().unique()) <= {0.0, 1.0}:
            values = numbers
    if values is None:
        seen = ", ".join(map(repr, clean_text(series).dropna().unique()[:6]))
        raise UserError(
            f"target column {column!r} must be binary (yes/no, true/false, y/n or 1/0); "
            f"found values {seen}"
        )
    return values


def out_of_time_split(
    frame: pd.DataFrame, fraction: float, time_column: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(older, newest): the newest ``fraction`` of rows by ``time_column`` (else by row order)."""
    if time_column is not None:
        frame = frame.sort_values(time_column, kind="stable")
    n_new = max(1, math.ceil(len(frame) * fraction))
    return frame.iloc[: len(frame) - n_new], frame.iloc[len(frame) - n_new :]


def prepare_data(
    settings: Settings,
    frame: pd.DataFrame,
    *,
    target: str = LABEL,
    id_column: str | None = ENTITY_ID,
    time_column: str | None = EVENT_TIMESTAMP,
    truth: pd.DataFrame | None = None,
    min_class_count: int | None = None,
    allow_small_data: bool = False,
) -> PreparedData:
    """Validate a training table, name its columns per the contract and split it out of time."""
    if frame is None or frame.empty:
        raise UserError("the training table is empty")
    for role, column in (("target", target), ("id", id_column), ("time", time_column)):
        if column is not None and column not in frame.columns:
            shown = ", ".join(map(str, frame.columns[:20]))
            raise UserError(f"{role} column {column!r} not found; the table has: {shown}")
    renames = {column: canonical for column, canonical in (
        (target, LABEL), (id_column, ENTITY_ID), (time_column, EVENT_TIMESTAMP)
    ) if column is not None and column != canonical}  # fmt: skip
    clashes = [canonical for canonical in renames.values() if canonical in frame.columns]
    if clashes:
        raise UserError(f"column(s) {clashes} would be overwritten; rename them in the table")
    data = frame.rename(columns=renames).reset_index(drop=True)
    if ENTITY_ID not in data.columns:
        data[ENTITY_ID] = np.arange(len(data))  # row number stands in for a missing id
    data[LABEL] = parse_label(data[LABEL], target)
    unlabelled = int(data[LABEL].isna().sum())
    data = data[data[LABEL].notna()].copy()
    data[LABEL] = data[LABEL].astype(int)

    has_time = time_column is not None
    if has_time:
        stamps = pd.to_datetime(data[EVENT_TIMESTAMP], errors="coerce")
        if stamps.isna().any():
            bad = data.loc[stamps.isna(), EVENT_TIMESTAMP].head(3).tolist()
            raise UserError(
                f"time column {time_column!r} has {int(stamps.isna().sum())} values that are "
                f"not dates, e.g. {bad}"
            )
        data[EVENT_TIMESTAMP] = stamps.astype("datetime64[ns]")
    if truth is not None:
        data = attach_oracle(data, truth)

    reserved = {ENTITY_ID, EVENT_TIMESTAMP, LABEL, ORACLE_P, settings.protected_attribute}
    reserved |= set(settings.excluded_features)
    # A user's table may spell a sensitive column "Gender" or " AGE_BAND ": match loosely.
    reserved = {str(c).strip().lower() for c in reserved}
    features = [str(c) for c in data.columns if str(c).strip().lower() not in reserved]
    if not features:
        raise UserError("no feature columns left after removing id, time, target and excluded")

    positives, negatives = int(data[LABEL].sum()), int((data[LABEL] == 0).sum())
    if min(positives, negatives) == 0:
        raise UserError(
            f"target {target!r} has only one class ({positives} positives, {negatives} "
            "negatives); a classifier needs both"
        )
    threshold = settings.min_class_count if min_class_count is None else min_class_count
    if min(positives, negatives) < threshold and not allow_small_data:
        raise UserError(
            f"too little data: {positives} positives and {negatives} negatives, at least "
            f"{threshold} of each are needed (or allow small data explicitly)"
        )

    by = EVENT_TIMESTAMP if has_time else None
    older, holdout = out_of_time_split(data, settings.holdout_fraction, by)
    # Validation is the newest slice of the older part, so model choice is out of time as well.
    train, validation = out_of_time_split(older, settings.holdout_fraction, by)
    for part, rows in (("training", train), ("validation", validation), ("holdout", holdout)):
        if rows[LABEL].nunique() < 2:
            raise UserError(
                f"the {part} split ({len(rows)} rows) has only one class; add more data"
            )
    return PreparedData(train, validation, holdout, features, has_time, unlabelled)


def attach_oracle(data: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Join the generator's latent probability ``p`` as ``oracle_p`` (never a feature)."""
    keys = [ENTITY_ID] + ([EVENT_TIMESTAMP] if EVENT_TIMESTAMP in data.columns else [])
    missing = [k for k in [*keys, "p"] if k not in truth.columns]
    if missing:
        raise UserError(f"truth table lacks column(s) {missing}")
    truth = truth[[*keys, "p"]].rename(columns={"p": ORACLE_P})
    if EVENT_TIMESTAMP in keys:
        truth[EVENT_TIMESTAMP] = pd.to_datetime(truth[EVENT_TIMESTAMP]).astype("datetime64[ns]")
    data = data.drop(columns=[ORACLE_P], errors="ignore")
    merged = data.merge(truth.drop_duplicates(keys), on=keys, how="left", validate="many_to_one")
    merged.index = data.index
    return merged


# --- Candidates and model choice -------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A model family: the encoding it wants and how to build it from an Optuna trial."""

    name: str
    encoding: str
    build: Callable[..., BaseEstimator]  # (optuna trial, seed, n_jobs) → unfitted estimator


def _logistic_regression(trial: Any, seed: int, n_jobs: int = N_JOBS) -> BaseEstimator:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    c = trial.suggest_float("C", 1e-3, 1e2, log=True)
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("logreg", LogisticRegression(C=c, max_iter=2000, random_state=seed)),
        ]
    )


def _random_forest(trial: Any, seed: int, n_jobs: int = N_JOBS) -> BaseEstimator:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=trial.suggest_int("n_estimators", 100, 400, step=50),
        max_depth=trial.suggest_int("max_depth", 3, 20),
        min_samples_leaf=trial.suggest_int("min_samples_leaf", 1, 50, log=True),
        max_features=trial.suggest_categorical("max_features", ["sqrt", 0.3, 0.6]),
        n_jobs=n_jobs,
        random_state=seed,
    )


def _xgboost(trial: Any, seed: int, n_jobs: int = N_JOBS) -> BaseEstimator:
    from xgboost import XGBClassifier

    return XGBClassifier(
        n_estimators=trial.suggest_int("n_estimators", 100, 600, step=50),
        learning_rate=trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        max_depth=trial.suggest_int("max_depth", 2, 7),
        min_child_weight=trial.suggest_float("min_child_weight", 1.0, 30.0, log=True),
        subsample=trial.suggest_float("subsample", 0.6, 1.0),
        colsample_bytree=trial.suggest_float("colsample_bytree", 0.5, 1.0),
        reg_lambda=trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        tree_method="hist",
        eval_metric="logloss",
        n_jobs=n_jobs,
        random_state=seed,
    )


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("logistic_regression", "onehot", _logistic_regression),
    Candidate("random_forest", "ordinal", _random_forest),
    Candidate("xgboost", "ordinal", _xgboost),
)


@dataclass
class Selection:
    """The chosen candidate, fitted on the training split, with its preprocessor."""

    candidate: str
    params: dict[str, Any]
    preprocessor: TablePreprocessor
    estimator: BaseEstimator
    # Per candidate: AUC on the validation split of its best trial's model fitted on train.
    validation_auc: dict[str, float]
    # Every trial: candidate, number, params, val_auc (or cv_auc_mean / cv_auc_std / cv_fold_auc),
    # predict_p50_ms / p99_ms, within_budget.
    trials: list[dict[str, Any]] = field(default_factory=list)
    method: str = "validation_split"  # or "time_cv": how trials were scored
    # Per candidate with ``method == "time_cv"``: mean / std / per-fold AUC of its best trial.
    cv_auc: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """How the choice was made, per candidate: what ``selection/summary.json`` holds."""
        return {
            "method": self.method,
            "n_folds": len(next(iter(self.cv_auc.values()))["folds"]) if self.cv_auc else 0,
            "chosen": self.candidate,
            "params": self.params,
            "validation_auc": self.validation_auc,
            "cv_auc": self.cv_auc,
        }


@contextmanager
def _one_thread(model: Any) -> Iterator[None]:
    """Predict on the calling thread while timing, as the service scores (a fitted model keeps
    its training thread count for batch use afterwards; XGBoost passes it on to its booster)."""
    n_jobs = model.get_params(deep=False).get("n_jobs") if hasattr(model, "get_params") else None
    if n_jobs is not None:
        model.set_params(n_jobs=1)
    try:
        yield
    finally:
        if n_jobs is not None:
            model.set_params(n_jobs=n_jobs)


def single_row_latency(model: Any, x: np.ndarray) -> tuple[float, float]:
    """(p50, p99) CPU ms of ``predict_proba`` on one preprocessed row, single-threaded: the
    estimator's share of an online prediction."""
    from crm_predict.core.timing import time_calls

    rows = [x[i : i + 1] for i in range(min(LATENCY_ROWS, len(x)))]
    with _one_thread(model):
        figures = time_calls(
            model.predict_proba, rows, warmup=LATENCY_WARMUP, repeats=LATENCY_REPEATS
        )
    return figures.p50_ms, figures.p99_ms


def time_folds(
    y: np.ndarray, n_splits: int = CV_FOLDS, min_class: int = CV_MIN_CLASS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window folds over time-ordered rows (sklearn ``TimeSeriesSplit``: each fold fits
    on every row before its block and scores the block). Fewer folds when a block or its fitting
    rows would hold fewer than ``min_class`` of either class; [] when not even two folds can."""
    from sklearn.model_selection import TimeSeriesSplit

    y = np.asarray(y).astype(int)
    for k in range(n_splits, 1, -1):
        folds = list(TimeSeriesSplit(n_splits=k).split(y))
        if all(
            np.bincount(y[part], minlength=2).min() >= min_class
            for fit, block in folds
            for part in (fit, block)
        ):
            return folds
    return []


Matrices = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_fit, y_fit, x_score, y_score


def _matrices(
    encoding: str, fit_rows: pd.DataFrame, score_rows: pd.DataFrame, features: list[str]
) -> tuple[TablePreprocessor, Matrices]:
    prep = TablePreprocessor(encoding=encoding).fit(fit_rows[features])
    x_fit, x_score = prep.transform(fit_rows[features]), prep.transform(score_rows[features])
    return prep, (x_fit, fit_rows[LABEL].to_numpy(), x_score, score_rows[LABEL].to_numpy())


def select_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    features: list[str],
    n_trials: int,
    seed: int,
    candidates: tuple[Candidate, ...] = CANDIDATES,
    latency_budget_ms: float = 0.0,
    cv_below_rows: int = CV_BELOW_ROWS,
) -> Selection:
    """Tune every candidate with Optuna and keep the best by AUC.

    Below ``cv_below_rows`` training + validation rows a trial is scored by its mean AUC over
    time-ordered folds of those rows (``time_folds``): on a few thousand rows one validation split
    is too noisy to rank candidates by. Otherwise, or when the classes are too rare for folds, by
    its AUC on the validation split. Either way the chosen model is fitted on the training split,
    so the validation split stays unseen for calibration. Only training and validation rows come
    in here: the holdout cannot influence the choice. With ``latency_budget_ms`` > 0 a trial whose
    single-row predict p99 exceeds it is pruned (never kept), and a family whose first
    ``GIVE_UP_AFTER`` trials all exceed it is not searched on.
    """
    import optuna
    from sklearn.metrics import roc_auc_score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    window = pd.concat([train, validation])
    folds = time_folds(window[LABEL].to_numpy()) if len(window) < cv_below_rows else []
    n_jobs = N_JOBS if len(train) >= THREADED_FROM_ROWS else 1
    # Per encoding: the final preprocessor (fitted on train) with the train → validation matrices,
    # and the (fit, score) matrices each trial is scored on: every fold with its own preprocessor.
    final_prep: dict[str, TablePreprocessor] = {}
    splits: dict[str, Matrices] = {}
    scoring: dict[str, list[Matrices]] = {}
    for encoding in sorted({c.encoding for c in candidates}):
        final_prep[encoding], splits[encoding] = _matrices(encoding, train, validation, features)
        scoring[encoding] = [
            _matrices(encoding, window.iloc[fit], window.iloc[block], features)[1]
            for fit, block in folds
        ] or [splits[encoding]]
    method = "time_cv" if folds else "validation_split"

    trials: list[dict[str, Any]] = []
    kept_by_name: dict[str, dict[str, Any]] = {}
    for candidate in candidates:
        kept: dict[str, Any] = {}

        def objective(trial, candidate=candidate, sets=scoring[candidate.encoding], kept=kept):
            aucs = []
            for x_fit, y_fit, x_score, y_score in sets:
                model = candidate.build(trial, seed, n_jobs).fit(x_fit, y_fit)
                aucs.append(float(roc_auc_score(y_score, model.predict_proba(x_score)[:, 1])))
            # Timed on the last fit: the most rows, the closest to the model that is kept.
            p50, p99 = single_row_latency(model, x_score)
            fits = latency_budget_ms <= 0 or p99 <= latency_budget_ms
            record = {"candidate": candidate.name, "trial": trial.number,
                      "params": dict(trial.params)}  # fmt: skip
            if folds:
                record |= {"cv_auc_mean": float(np.mean(aucs)), "cv_auc_std": float(np.std(aucs)),
                           "cv_fold_auc": aucs}  # fmt: skip
            else:
                record["val_auc"] = aucs[0]
            trials.append(record | {"predict_p50_ms": p50, "predict_p99_ms": p99,
                                    "within_budget": fits})  # fmt: skip
            if not fits:
                raise optuna.TrialPruned(f"predict p99 {p99:.2f} ms > {latency_budget_ms:g} ms")
            score = float(np.mean(aucs))
            if score > kept.get("score", -np.inf):  # keep the fitted best instead of refitting
                kept.update(score=score, aucs=aucs, model=model, params=dict(trial.params))
            return score

        def give_up(study, trial, kept=kept):
            if not kept and len(study.trials) >= GIVE_UP_AFTER:
                study.stop()

        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        study.optimize(objective, n_trials=n_trials, callbacks=[give_up])
        if kept:  # else no trial of this family meets the latency budget
            kept_by_name[candidate.name] = kept
    if not kept_by_name:
        raise UserError(
            f"no candidate ({', '.join(c.name for c in candidates)}) predicts one row within "
            f"the latency budget of {latency_budget_ms:g} ms (CRM_PREDICT_PREDICT_LATENCY_BUDGET_MS; "
            "0 turns the limit off)"
        )

    validation_auc: dict[str, float] = {}
    cv_auc: dict[str, dict[str, Any]] = {}
    for candidate in (c for c in candidates if c.name in kept_by_name):
        kept = kept_by_name[candidate.name]
        if folds:  # fold models saw validation rows: the kept model is the one fitted on train
            x_train, y_train, x_val, y_val = splits[candidate.encoding]
            kept["model"] = candidate.build(
                optuna.trial.FixedTrial(kept["params"]), seed, n_jobs
            ).fit(x_train, y_train)
            validation_auc[candidate.name] = float(
                roc_auc_score(y_val, kept["model"].predict_proba(x_val)[:, 1])
            )
            cv_auc[candidate.name] = {"mean": kept["score"], "std": float(np.std(kept["aucs"])),
                                      "folds": kept["aucs"]}  # fmt: skip
        else:
            validation_auc[candidate.name] = kept["score"]
    name = max(kept_by_name, key=lambda n: kept_by_name[n]["score"])  # first best on ties
    chosen = kept_by_name[name]
    encoding = next(c.encoding for c in candidates if c.name == name)
    return Selection(
        name, chosen["params"], final_prep[encoding], chosen["model"], validation_auc,
        trials, method, cv_auc,
    )  # fmt: skip


def latency_metrics(selection: Selection) -> dict[str, float]:
    """Single-row predict p99 of the chosen trial (``predict_p99_ms``) and of each family's fastest
    trial (``predict_p99_ms_<candidate>``): what each family costs, also the ones left out."""
    out: dict[str, float] = {}
    for trial in selection.trials:
        key = f"predict_p99_ms_{trial['candidate']}"
        out[key] = min(out.get(key, math.inf), trial["predict_p99_ms"])
        if trial["candidate"] == selection.candidate and trial["params"] == selection.params:
            out |= {k: trial[k] for k in ("predict_p50_ms", "predict_p99_ms")}
    return out


def selection_metrics(selection: Selection) -> dict[str, float]:
    """Validation AUC per candidate and, when chosen by time-ordered folds, the mean and spread
    (``cv_auc_mean_<candidate>``, ``cv_auc_std_<candidate>``) and the fold count."""
    out = {f"val_auc_{name}": auc for name, auc in selection.validation_auc.items()}
    for name, cv in selection.cv_auc.items():
        out |= {f"cv_auc_mean_{name}": cv["mean"], f"cv_auc_std_{name}": cv["std"]}
    if selection.cv_auc:
        out["cv_folds"] = float(selection.summary()["n_folds"])
    return out


def default_model_baselines(
    train: pd.DataFrame, holdout: pd.DataFrame, features: list[str], seed: int
) -> dict[str, float]:
    """Holdout AUC of two untuned models on the same preprocessing and the same training rows as
    the chosen model (the training split): sklearn's ``LogisticRegression()`` after standard
    scaling (unscaled, lbfgs stops short on amounts in the thousands: a strawman) and its default
    ``HistGradientBoostingClassifier()``. The search is worth its time only when it beats both."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    models = {
        "logreg": ("onehot", make_pipeline(StandardScaler(), LogisticRegression())),
        # random_state only fixes the early-stopping split it draws on more than 10,000 rows.
        "hgb": ("ordinal", HistGradientBoostingClassifier(random_state=seed)),
    }
    # HistGradientBoosting takes every core through OpenMP, whose threads spin-wait on a busy
    # machine (a 300-row fit: 0.06 s on one thread, 4-12 s on all); the candidates' thread rule.
    threads = N_JOBS if len(train) >= THREADED_FROM_ROWS else 1
    out = {}
    for name, (encoding, model) in models.items():
        _, (x_train, y_train, x_holdout, y) = _matrices(encoding, train, holdout, features)
        with threadpool_limits(limits=threads, user_api="openmp"):
            p = model.fit(x_train, y_train).predict_proba(x_holdout)[:, 1]
        out[f"holdout_auc_baseline_{name}"] = float(roc_auc_score(y, p))
    return out


def calibrated_pipeline(
    selection: Selection, validation: pd.DataFrame, features: list[str], method: str
):
    """Raw table in → calibrated probability out; the calibrator is fitted on validation only."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.pipeline import Pipeline

    x_val = selection.preprocessor.transform(validation[features])
    calibrator = CalibratedClassifierCV(FrozenEstimator(selection.estimator), method=method)
    calibrator.fit(x_val, validation[LABEL].to_numpy())
    return Pipeline([("prepare", selection.preprocessor), ("classifier", calibrator)])


# --- Plots -----------------------------------------------------------------------------------


def calibration_figure(y: np.ndarray, before: np.ndarray, after: np.ndarray):
    """Reliability diagram on the holdout, uncalibrated vs calibrated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    for name, p in (("uncalibrated", before), ("calibrated", after)):
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, "o-", label=name)
    ax.set(xlabel="predicted probability", ylabel="observed rate", title="Holdout calibration")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def shap_summary(
    selection: Selection, rows: pd.DataFrame, features: list[str], max_rows: int = 300
):
    """SHAP summary plot of the uncalibrated model on holdout rows, plus mean |SHAP| per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    sample = rows[features].head(max_rows)
    x = selection.preprocessor.transform(sample)
    names = list(selection.preprocessor.get_feature_names_out())
    model = selection.estimator
    if hasattr(model, "named_steps"):  # scaled logistic regression: explain in scaled space
        scaled = model.named_steps["scale"].transform(x)
        values = shap.LinearExplainer(model.named_steps["logreg"], scaled).shap_values(scaled)
    else:
        values = shap.TreeExplainer(model).shap_values(x)
    values = np.asarray(values)
    if values.ndim == 3:  # (rows, features, classes) for random forests
        values = values[:, :, 1]
    shap.summary_plot(values, x, feature_names=names, show=False, max_display=15)
    fig = plt.gcf()
    fig.tight_layout()
    importance = dict(zip(names, np.abs(values).mean(axis=0).round(6).tolist(), strict=True))
    return fig, dict(sorted(importance.items(), key=lambda kv: -kv[1]))


# --- Training entry point --------------------------------------------------------------------


def data_window(prepared: PreparedData) -> str:
    if not prepared.has_time:
        n_old = len(prepared.train) + len(prepared.validation)
        return f"row order: train rows 0-{n_old - 1}, holdout rows {n_old}-{n_old + len(prepared.holdout) - 1}"
    older = pd.concat([prepared.train, prepared.validation])[EVENT_TIMESTAMP]
    newest = prepared.holdout[EVENT_TIMESTAMP]
    return (
        f"train {older.min():%Y-%m-%d}..{older.max():%Y-%m-%d}; "
        f"holdout {newest.min():%Y-%m-%d}..{newest.max():%Y-%m-%d}"
    )


def train_classifier(
    settings: Settings,
    client: Any,
    frame: pd.DataFrame,
    spec: ClassifierSpec,
    *,
    target: str = LABEL,
    id_column: str | None = ENTITY_ID,
    time_column: str | None = EVENT_TIMESTAMP,
    truth: pd.DataFrame | None = None,
    min_class_count: int | None = None,
    allow_small_data: bool = False,
    calibration: str = "sigmoid",
    candidates: tuple[Candidate, ...] = CANDIDATES,
    source: str = "demo",
    exclude: Sequence[str] = (),
    allow_leakage: bool = False,
) -> TrainResult:
    """Train, evaluate, log and register one classifier; bad input raises UserError, no run left.

    ``exclude``: columns never to use; the data checks (``data_checks``) then drop constant,
    identifier-like and near-duplicate columns and stop on target leakage unless
    ``allow_leakage``, all before any model is fitted or anything is logged.
    """
    from sklearn.metrics import roc_auc_score

    if calibration not in ("sigmoid", "isotonic"):
        raise UserError(f"calibration must be 'sigmoid' or 'isotonic', got {calibration!r}")
    roles = {"target": target, "id": id_column, "time": time_column}
    frame = apply_exclusions(frame, exclude, roles) if frame is not None else frame
    prepared = prepare_data(
        settings, frame, target=target, id_column=id_column, time_column=time_column,
        truth=truth, min_class_count=min_class_count, allow_small_data=allow_small_data,
    )  # fmt: skip
    older = pd.concat([prepared.train, prepared.validation])
    checks = check_table(
        older, prepared.features, LABEL, allow_leakage=allow_leakage, excluded=list(exclude)
    )
    if not checks.features:
        raise UserError(
            "no feature columns left after the data checks dropped "
            f"{', '.join(checks.dropped) or 'none'}; nothing was trained"
        )
    prepared.features = features = checks.features
    holdout = prepared.holdout
    selection = select_model(
        prepared.train, prepared.validation, features, n_trials=settings.optuna_trials,
        seed=settings.seed, candidates=candidates,
        latency_budget_ms=settings.predict_latency_budget_ms, cv_below_rows=settings.cv_below_rows,
    )  # fmt: skip
    pipeline = calibrated_pipeline(selection, prepared.validation, features, calibration)

    y = holdout[LABEL].to_numpy()
    p_after = pipeline.predict_proba(holdout[features])[:, 1]
    x_holdout = selection.preprocessor.transform(holdout[features])
    p_before = selection.estimator.predict_proba(x_holdout)[:, 1]
    before = holdout_metrics(y, p_before)
    metrics = holdout_metrics(y, p_after) | {
        "brier_uncalibrated": before["brier"], "ece_uncalibrated": before["ece"]
    }  # fmt: skip
    metrics |= selection_metrics(selection) | latency_metrics(selection)
    metrics |= default_model_baselines(prepared.train, holdout, features, settings.seed)
    baseline = spec.baseline(older, holdout)
    if baseline is not None:
        metrics["baseline_auc"] = float(roc_auc_score(y, baseline))
    if spec.extra_metrics is not None:
        metrics |= spec.extra_metrics(holdout, p_after, baseline)
    if ORACLE_P in holdout.columns:
        known = holdout[ORACLE_P].notna().to_numpy()
        metrics["oracle_coverage"] = float(known.mean())
        if known.any() and len(np.unique(y[known])) == 2:
            metrics["oracle_auc"] = float(roc_auc_score(y[known], holdout[ORACLE_P][known]))
    metrics |= {
        "n_rows": float(len(older) + len(holdout)),
        "data_checks_dropped": float(len(checks.dropped)),
        "data_checks_seconds": checks.seconds,
        "n_train": float(len(prepared.train)),
        "n_validation": float(len(prepared.validation)),
        "n_holdout": float(len(holdout)),
        "n_unlabelled_dropped": float(prepared.dropped_unlabelled),
        "train_positive_rate": float(older[LABEL].mean()),
        "holdout_positive_rate": float(y.mean()),
    }
    calibration_fig = calibration_figure(y, p_before, p_after)
    shap_fig, importance = shap_summary(selection, holdout, features)

    keep = [ENTITY_ID, EVENT_TIMESTAMP, LABEL, settings.protected_attribute, *features]
    holdout_table = holdout[[c for c in dict.fromkeys(keep) if c in holdout.columns]]
    tags = {
        "feature_service": spec.model.feature_service,
        "feature_names": json.dumps(features),
        "data_window": data_window(prepared),
        "entity": spec.model.entity,
        "model_type": selection.candidate,
        "selection_method": selection.method,
        "baseline": spec.baseline_name if baseline is not None else "unavailable",
        "source": source,
        "target_column": target,
        "id_column": id_column or "",
        "time_column": time_column or "",
        "excluded_columns": json.dumps(list(exclude)),
        "data_checks_dropped": json.dumps(checks.dropped),
        "data_checks_leaks": json.dumps([f.column for f in checks.leaks]),
    }
    params = {
        "candidate": selection.candidate,
        "calibration": calibration,
        "optuna_trials": settings.optuna_trials,
        "cv_below_rows": settings.cv_below_rows,
        "holdout_fraction": settings.holdout_fraction,
        "seed": settings.seed,
        "n_features": len(features),
        "predict_latency_budget_ms": settings.predict_latency_budget_ms,
        "allow_leakage": allow_leakage,
    } | {f"model.{key}": value for key, value in selection.params.items()}
    logged = log_sklearn_run(
        client,
        spec.model.name,
        pipeline,
        older[features].head(5),
        holdout=holdout_table,
        metrics=metrics,
        params=params,
        tags=tags,
        dicts={
            "config/settings.json": settings.model_dump(mode="json", exclude=set(PRIVATE_SETTINGS)),
            "config/rules.json": settings.load_rules().as_dict(),  # the file in effect
            "selection/validation_auc.json": selection.validation_auc,
            "selection/summary.json": selection.summary(),
            "selection/trials.json": selection.trials,
            "shap/importance.json": importance,
            "data_checks.json": checks.as_dict(),
        },
        figures={"plots/calibration.png": calibration_fig, "plots/shap_summary.png": shap_fig},
    )
    return TrainResult(
        spec.model.name, logged.run_id, int(logged.version), selection.candidate, metrics, features,
        checks,
    )  # fmt: skip


# --- Scoring with a registered version -------------------------------------------------------


def registered_version(
    client: Any, name: str, version: int | None = None, alias: str | None = None
) -> Any:
    """The ModelVersion asked for: by number, by alias, or else the newest one."""
    from mlflow.exceptions import MlflowException

    if version is not None and alias is not None:
        raise UserError("give --version or --alias, not both")
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if version is not None:
            return client.get_model_version(name, str(version))
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        wanted = f"alias {alias!r}" if alias else f"version {version}"
        raise UserError(f"model {name!r} has no {wanted} in the registry") from exc
    if not versions:
        raise UserError(f"model {name!r} has no registered version; train it first")
    return max(versions, key=lambda v: int(v.version))


def score_table(
    client: Any,
    name: str,
    frame: pd.DataFrame,
    version: int | None = None,
    alias: str | None = None,
) -> tuple[pd.DataFrame, int]:
    """``id, score`` for every row of a raw table, with the registered model's own columns."""
    import mlflow

    model_version = registered_version(client, name, version, alias)
    tags = client.get_run(model_version.run_id).data.tags
    features = json.loads(tags["feature_names"])
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise UserError(f"the table lacks feature column(s) the model needs: {missing}")
    if frame.empty:
        raise UserError("the table to score has no rows")
    with tracking_at(client):
        pipeline = mlflow.sklearn.load_model(f"models:/{name}/{model_version.version}")
    id_column = tags.get("id_column") or ""
    ids = frame[id_column] if id_column in frame.columns else pd.Series(range(len(frame)))
    score = pipeline.predict_proba(frame[features])[:, 1]
    return pd.DataFrame({"id": ids.to_numpy(), "score": score}), int(model_version.version)
