"""Registered model versions that follow the MLflow contract (docs/architecture.md), built on tiny
seeded synthetic data — for registry, serving and any test that needs a champion without running
the real training jobs.

    frame = synthetic_frame(seed=1)
    version = log_classifier_version(mlflow_client, "churn", frame)

The global tracking URI must be the client's (the ``mlflow_client`` fixture sets both), because
``mlflow.sklearn.log_model`` logs through the active run.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import skops.io
from crm_predict.registry.evaluation import HOLDOUT_ARTIFACT
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from crm_predict.core.metrics import classification_metrics
from crm_predict.core.tracking import experiment_id

FEATURES = ["activity", "recency", "region"]


PROTECTED = "gender"


def synthetic_frame(
    n: int = 10_000,
    seed: int = 0,
    *,
    gender_effect: float = 0.0,
    proxy: bool = False,
    shift: float = 0.0,
    start: str = "2025-01-01",
) -> pd.DataFrame:
    """Training-set-shaped rows: ``entity_id, event_timestamp, label``, features and ``gender``.

    ``gender_effect`` moves ``activity`` up for one group (a disparate outcome without a strong
    proxy); ``proxy`` adds a feature ``loyalty_band`` that almost encodes gender; ``shift`` moves
    the ``activity`` distribution (drift). The default size keeps the holdout's per-group
    positive rates within a few points of each other, so the four-fifths gate is not noise.
    """
    rng = np.random.default_rng(seed)
    gender = rng.choice(["F", "M"], size=n)
    is_f = (gender == "F").astype(float)
    activity = rng.normal(0, 1, n) + gender_effect * is_f + shift
    recency = rng.normal(0, 1, n)
    region = rng.choice(["north", "south", "east"], size=n)
    logit = 2.0 * activity - 1.0 * recency + 0.3 * (region == "north")
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "entity_id": np.arange(1, n + 1),
            "event_timestamp": pd.Timestamp(start) + pd.to_timedelta(np.arange(n), unit="h"),
            "activity": activity,
            "recency": recency,
            "region": region,
            "x_noise": rng.normal(0, 1, n),
            PROTECTED: gender,
            "label": label,
        }
    )
    if proxy:
        frame["loyalty_band"] = is_f * 2 + rng.normal(0, 0.3, n)
    return frame


def classifier_pipeline(features: list[str], frame: pd.DataFrame, seed: int = 0) -> Pipeline:
    """Raw table in, probability out — the shape training logs."""
    categorical = [f for f in features if not pd.api.types.is_numeric_dtype(frame[f])]
    numeric = [f for f in features if f not in categorical]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]
    )
    return Pipeline([("prep", prep), ("model", LogisticRegression(random_state=seed))])


def _log_holdout_and_register(
    client: MlflowClient, name: str, run_id: str, holdout: pd.DataFrame, source: str, card: bool
) -> str:
    """The holdout artifact, a new version of ``name`` from ``source`` and (``card``) its card."""
    tmp = Path(client.tracking_uri.removeprefix("sqlite:///")).parent / f"holdout-{run_id}"
    tmp.mkdir()
    holdout.to_parquet(tmp / "holdout.parquet", index=False)
    client.log_artifact(run_id, str(tmp / "holdout.parquet"), str(Path(HOLDOUT_ARTIFACT).parent))
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = str(client.create_model_version(name, source=source, run_id=run_id).version)
    if card:
        from crm_predict.registry.card import write_model_card

        write_model_card(client, name, version)
    return version


def log_classifier_version(
    client: MlflowClient,
    name: str,
    train: pd.DataFrame,
    holdout: pd.DataFrame | None = None,
    *,
    features: list[str] | None = None,
    model: Pipeline | None = None,
    params: dict | None = None,
    extra_metrics: dict | None = None,
    log_train_counts: bool = True,
    card: bool = False,
) -> str:
    """Fit (unless ``model`` is given), log and register one classifier version; returns it.

    With no ``holdout`` the newest 20 % of ``train`` (by ``event_timestamp``) is held out, as
    training does. ``card=True`` also writes the model card.
    """
    assert mlflow.get_tracking_uri() == client.tracking_uri, "use the mlflow_client fixture"
    features = features or FEATURES
    if holdout is None:
        ordered = train.sort_values("event_timestamp")
        cut = int(len(ordered) * 0.8)
        train, holdout = ordered.iloc[:cut], ordered.iloc[cut:]
    if model is None:
        model = classifier_pipeline(features, train).fit(train[features], train["label"])
    p = model.predict_proba(holdout[features])[:, 1]
    metrics = classification_metrics(holdout["label"].to_numpy(), p)
    metrics["baseline_auc"] = 0.5
    metrics["oracle_auc"] = min(1.0, metrics["auc"] + 0.05)
    if log_train_counts:  # what training.classifier logs, from which the class counts follow
        metrics |= {
            "n_rows": len(train) + len(holdout),
            "n_holdout": len(holdout),
            "n_train": len(train),
            "train_positive_rate": float(train["label"].mean()),
        }
    metrics.update(extra_metrics or {})

    with mlflow.start_run(experiment_id=experiment_id(client, name)) as run:
        run_id = run.info.run_id
        mlflow.log_params({"estimator": "logistic_regression", **(params or {})})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        start, end = train["event_timestamp"].min(), holdout["event_timestamp"].max()
        mlflow.set_tags(
            {
                "feature_service": f"{name}_features",
                "feature_names": json.dumps(features),
                "data_window": f"{start:%Y-%m-%d}..{end:%Y-%m-%d}",
                "entity": "customer",
            }
        )
        signature = infer_signature(holdout[features], p)
        # Tree models hold types skops loads only when listed, as training lists them.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        info = mlflow.sklearn.log_model(
            model, name="model", signature=signature, pip_requirements=["scikit-learn"],
            serialization_format="skops", skops_trusted_types=trusted,
        )  # fmt: skip
    return _log_holdout_and_register(client, name, run_id, holdout, info.model_uri, card)


def log_metrics_version(
    client: MlflowClient,
    name: str,
    metrics: dict[str, float],
    holdout: pd.DataFrame,
    features: list[str],
    *,
    card: bool = True,
) -> str:
    """A pyfunc-style version (CLV, next-best-time) as the registry sees it: logged metrics,
    contract tags and a holdout; the registry never loads these models, so no model is logged."""
    run_id = client.create_run(experiment_id(client, name)).info.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.set_tag(run_id, "feature_names", json.dumps(features))
    client.set_tag(run_id, "feature_service", f"{name}_features")
    client.set_terminated(run_id)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    return _log_holdout_and_register(client, name, run_id, holdout, source, card)
