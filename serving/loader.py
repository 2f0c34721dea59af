"""Load a registered model by alias for online serving: the native flavour (fast path), its feature
list, input types from the signature, and an explainer that turns a row into readable reasons."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import mlflow.artifacts
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
from crm_predict.training.specs import CLASSIFIERS
from mlflow import MlflowClient
from mlflow.models import Model

TOP_REASONS = 3


@dataclass(frozen=True)
class Reason:
    """One feature's push on a prediction, in log-odds of the uncalibrated classifier."""

    feature: str
    value: object
    contribution: float


@dataclass
class Explainer:
    """Per-row feature contributions of a Pipeline's classifier, summed back onto raw features.

    ``transform`` is every Pipeline step but the last; ``contribs`` maps the transformed matrix to
    an (n_rows, n_columns) array of margin contributions (XGBoost ``pred_contribs``, SHAP
    TreeExplainer or coefficient × value); ``groups[j]`` names the raw feature column j came from
    (one-hot columns fold back onto their categorical feature).
    """

    transform: Callable[[pd.DataFrame], np.ndarray]
    contribs: Callable[[np.ndarray], np.ndarray]
    groups: list[str] | None
    method: str

    def _folded(self, rows: pd.DataFrame, matrix=None) -> tuple[list[str], np.ndarray]:
        """(raw feature names, contributions per row and raw feature)."""
        x = self.transform(rows) if matrix is None else _dense(matrix)
        values = np.asarray(self.contribs(x), dtype=float)
        groups = self.groups
        if groups is None or len(groups) != values.shape[1]:
            groups = [f"component_{j}" for j in range(values.shape[1])]
        names = list(dict.fromkeys(groups))
        position = {name: k for k, name in enumerate(names)}
        fold = np.zeros((len(groups), len(names)))
        fold[np.arange(len(groups)), [position[g] for g in groups]] = 1.0
        return names, values @ fold

    def contributions(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Contribution per raw feature (columns) for each row."""
        names, values = self._folded(rows)
        return pd.DataFrame(values, columns=names)

    def reasons(
        self, rows: pd.DataFrame, top: int = TOP_REASONS, matrix=None
    ) -> list[tuple[list[Reason], list[Reason]]]:
        """Top positive and top negative reasons per row, with the row's raw feature values;
        ``matrix`` is the rows' transformed matrix when the caller already has it."""
        names, values = self._folded(rows, matrix)
        column = {name: j for j, name in enumerate(rows.columns)}
        raw = rows.to_numpy(dtype=object)
        out = []
        for i, contrib in enumerate(values):
            order = np.argsort(contrib, kind="stable")
            row = raw[i]

            def reason(k: int, row=row, contrib=contrib) -> Reason:
                j = column.get(names[k])
                return _reason(names[k], None if j is None else row[j], contrib[k])

            pos = [reason(k) for k in order[::-1][:top] if contrib[k] > 0]
            neg = [reason(k) for k in order[:top] if contrib[k] < 0]
            out.append((pos, neg))
        return out


def _reason(feature: str, value: object, contribution: float) -> Reason:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        value = None
    return Reason(feature, value, round(float(contribution), 4))


@dataclass
class LoadedModel:
    """A registered model version ready to score: what it is and how to call it."""

    name: str
    version: str
    alias: str
    run_id: str
    model: object
    flavor: str  # "sklearn" (classifiers) or "pyfunc" (clv, next_best_time)
    feature_names: list[str]
    input_types: dict[str, str] = field(default_factory=dict)  # mlflow type name per column
    explainer: Explainer | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    def __post_init__(self) -> None:
        if self.flavor == "sklearn":
            prep, self._final = _split(self.model)
            self._prepare = _prepare_fn(prep, self.feature_names)

    def matrix(self, frame: pd.DataFrame):
        """The classifier's input for ``frame`` (every Pipeline step but the last)."""
        return self._prepare(frame)

    def predict_proba(self, frame: pd.DataFrame, matrix=None) -> np.ndarray:
        """P(positive class) per row for classifiers (from ``matrix`` when given): the final
        estimator's own ``predict_proba``."""
        x = self.matrix(frame) if matrix is None else matrix
        return np.asarray(self._final.predict_proba(x))[:, 1]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The pyfunc output frame (CLV, next-best-time)."""
        cols = [c for c in self.feature_names if c in frame.columns]
        result = self.model.predict(frame[cols] if cols else frame)
        return result if isinstance(result, pd.DataFrame) else pd.DataFrame(result)


def _split(model: object) -> tuple[list[object], object]:
    """(preprocessing steps, final estimator) of a Pipeline or a bare estimator."""
    steps = getattr(model, "steps", None)
    if not steps:
        return [], model
    prep = [step for _, step in steps[:-1] if step is not None and step != "passthrough"]
    return prep, steps[-1][1]


def _prepare_fn(prep: list[object], feature_names: list[str]) -> Callable[[pd.DataFrame], object]:
    """Every step but the last; a step's ``transform_rows`` (see ``TablePreprocessor``) when it
    has one, the cheap path for a few rows with the same output as ``transform``."""
    width = len(feature_names)

    def prepare(rows: pd.DataFrame):
        # Online reads end with the model's features in order (entity_id first): a column
        # slice is much cheaper than selecting by name.
        tail = rows.columns[-width:] if width else rows.columns[:0]
        x = rows.iloc[:, -width:] if width and list(tail) == feature_names else rows[feature_names]
        for step in prep:
            x = step.transform_rows(x) if hasattr(step, "transform_rows") else step.transform(x)
        return x

    return prepare


def single_threaded(model: object) -> None:
    """Score on the calling thread: a thread pool costs more than it saves on a few rows, and the
    service already runs one scoring thread per process on a shared machine."""
    _, final = _split(model)
    for base in _base_estimators(final):
        params = base.get_params(deep=False) if hasattr(base, "get_params") else {}
        if "n_jobs" in params:
            base.set_params(n_jobs=1)
        if hasattr(base, "get_booster"):
            base.get_booster().set_param({"nthread": 1})


def load_model(
    client: MlflowClient,
    name: str,
    alias: str = "champion",
    exact_shap: bool = True,
    single_thread: bool = False,
    pinned: tuple[str, str] | None = None,
) -> LoadedModel:
    """Resolve ``name@alias`` (or ``pinned``: a registered name and version, e.g. the segment
    model ``churn__tenant_a`` served as ``churn``) and load the native model with its explainer.

    XGBoost reasons are exact TreeSHAP (a few ms a row, what SHAP itself gives) or, without
    ``exact_shap``, Saabas (≈0.2 ms a row; feature ranks can differ). ``single_thread``: score on
    the calling thread (the online API's choice); else the logged threading (the batch uses every
    core)."""
    registered = pinned[0] if pinned else name
    if pinned:
        version = client.get_model_version(registered, str(pinned[1]))
    else:
        version = client.get_model_version_by_alias(name, alias)
    run = client.get_run(version.run_id)
    source = client.get_model_version_download_uri(registered, version.version)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source, tracking_uri=client.tracking_uri
    )
    meta = Model.load(local)
    input_types = _signature_types(meta)
    tag = run.data.tags.get("feature_names")
    feature_names = json.loads(tag) if tag else list(input_types)
    if "sklearn" in meta.flavors and name in CLASSIFIERS:
        model = mlflow.sklearn.load_model(local)
        flavor = "sklearn"
        if single_thread:
            single_threaded(model)
        try:
            explainer = build_explainer(model, feature_names, exact=exact_shap)
        except Exception:  # a model that scores but cannot explain still serves its scores
            explainer = None
    else:
        model = mlflow.pyfunc.load_model(local)
        flavor, explainer = "pyfunc", None
    return LoadedModel(
        name=name, version=str(version.version), alias=alias, run_id=version.run_id, model=model,
        flavor=flavor, feature_names=feature_names, input_types=input_types, explainer=explainer,
    )  # fmt: skip


def _signature_types(meta: Model) -> dict[str, str]:
    if meta.signature is None or not meta.signature.inputs.has_input_names():
        return {}
    return {
        spec.name: getattr(spec.type, "name", str(spec.type))
        for spec in meta.signature.inputs.inputs
    }


# --- explainers --------------------------------------------------------------------------------


def build_explainer(
    model: object, feature_names: list[str], exact: bool = True
) -> Explainer | None:
    """An explainer for a (Pipeline of) XGBoost, sklearn tree ensemble or linear classifier;
    ``None`` when the final estimator is of another kind."""
    prep, final = _split(model)
    bases = _base_estimators(final)
    parts = [_contribs_fn(b, exact) for b in bases]
    if not parts or any(p is None for p in parts):
        return None
    prepare = _prepare_fn(prep, feature_names)

    def transform(rows: pd.DataFrame) -> np.ndarray:
        return _dense(prepare(rows))

    def contribs(matrix: np.ndarray) -> np.ndarray:
        # A calibrated ensemble averages its base estimators; calibration is monotonic per base.
        return np.mean([fn(matrix) for fn, _ in parts], axis=0)

    groups = _feature_groups(model[:-1] if prep else None, feature_names)
    return Explainer(transform, contribs, groups, method=parts[0][1])


def _base_estimators(final: object) -> list[object]:
    calibrated = getattr(final, "calibrated_classifiers_", None)
    bases = [c.estimator for c in calibrated] if calibrated is not None else [final]
    return [_unfrozen(b) for b in bases]


def _unfrozen(estimator: object) -> object:
    """The fitted estimator inside sklearn's ``FrozenEstimator`` (calibration on a held-out split)."""
    while type(estimator).__name__ == "FrozenEstimator":
        estimator = estimator.estimator
    return estimator


def _contribs_fn(estimator: object, exact: bool) -> tuple[Callable, str] | None:
    inner_prep, estimator = _split(estimator)
    if inner_prep:
        # A base estimator that is itself a pipeline (a scaler before a logistic regression,
        # calibrated as one): its steps map columns one to one, so contributions of the
        # transformed columns still belong to the outer columns.
        found = _contribs_fn(estimator, exact)
        if found is None:
            return None
        fn, method = found

        def through_steps(matrix: np.ndarray) -> np.ndarray:
            for step in inner_prep:
                matrix = _dense(step.transform(matrix))
            return fn(matrix)

        return through_steps, method
    if hasattr(estimator, "get_booster"):
        import xgboost as xgb

        booster = estimator.get_booster()

        def xgb_contribs(matrix: np.ndarray) -> np.ndarray:
            dm = xgb.DMatrix(matrix, feature_names=booster.feature_names, nthread=1)
            out = booster.predict(dm, pred_contribs=True, approx_contribs=not exact)
            return out[:, :-1]  # last column is the bias

        return xgb_contribs, "xgboost_treeshap" if exact else "xgboost_saabas"
    if hasattr(estimator, "estimators_") or hasattr(estimator, "tree_"):
        import shap

        tree = shap.TreeExplainer(estimator)

        def tree_contribs(matrix: np.ndarray) -> np.ndarray:
            values = np.asarray(tree.shap_values(matrix, check_additivity=False))
            if values.ndim == 3:  # (rows, features, classes) for sklearn classifiers
                values = values[..., -1]
            return values

        return tree_contribs, "shap_tree"
    coef = getattr(estimator, "coef_", None)
    if coef is not None:
        weights = np.asarray(coef, dtype=float).reshape(-1)
        return (lambda matrix: np.asarray(matrix, dtype=float) * weights), "linear"
    return None


def _dense(matrix) -> np.ndarray:
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=float)


def _feature_groups(prep: object | None, feature_names: list[str]) -> list[str] | None:
    """Raw feature name for each transformed column ('cat__industry_software' → 'industry');
    ``None`` when the preprocessing cannot name its output columns."""
    if prep is None:
        return list(feature_names)
    try:
        out = [str(n) for n in prep.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):
        return None
    by_length = sorted(feature_names, key=len, reverse=True)
    return [_raw_name(name, by_length) for name in out]


def _raw_name(transformed: str, by_length: list[str]) -> str:
    candidates = [transformed]
    if "__" in transformed:
        candidates.append(transformed.split("__", 1)[1])
    for cand in candidates:
        for raw in by_length:
            if cand == raw or cand.startswith((raw + "_", raw + "=")):
                return raw
    return candidates[-1]
