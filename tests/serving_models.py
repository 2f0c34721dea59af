"""Tiny seeded models registered as champions in an MLflow sqlite store, and an in-memory online
store, for the serving tests and benchmark (the real trainers and Feast are tested elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import skops.io
from crm_predict.crm_store.db import make_engine, upgrade
from crm_predict.serving.hub import UnknownIdsError
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from crm_predict.core.settings import Settings

N_ROWS = 300
LEAD_FEATURES = ["industry", "lead_region", "is_decision_maker", "pricing_views_30d", "site_visits_30d", "days_since_last_interaction", "rule_score"]  # fmt: skip
DEAL_FEATURES = ["stage", "stage_age_days", "days_idle", "amount"]
CHURN_FEATURES = ["region", "rfm_recency_days", "orders_90d", "spend_12m", "days_since_last_interaction"]  # fmt: skip
CLV_FEATURES = ["frequency", "recency", "T", "monetary_value"]
CLV_ONLINE = [*CLV_FEATURES, "rfm_recency_days", "rfm_frequency", "rfm_monetary", "spend_12m"]


def lead_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "industry": rng.choice(["software", "finance", "retail"], n),
            "lead_region": rng.choice(["north", "south"], n),
            "is_decision_maker": rng.integers(0, 2, n),
            "pricing_views_30d": rng.poisson(1.0, n),
            "site_visits_30d": rng.poisson(3.0, n),
            "days_since_last_interaction": rng.exponential(20, n).round(1),
        }
    )
    frame["rule_score"] = (
        30 * frame["is_decision_maker"] + 20 * frame["pricing_views_30d"] + 5 * frame["site_visits_30d"]
    ).astype(float)  # fmt: skip
    return frame


def deal_frame(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "stage": rng.choice(["qualify", "propose", "negotiate"], n),
            "stage_age_days": rng.exponential(15, n).round(1),
            "days_idle": rng.exponential(5, n).round(1),
            "amount": rng.lognormal(9, 1, n).round(2),
        }
    )


def churn_frame(n: int, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.choice(["north", "south", "east"], n),
            "rfm_recency_days": rng.exponential(60, n).round(1),
            "orders_90d": rng.poisson(2, n),
            "spend_12m": rng.lognormal(10, 1.5, n).round(2),
            "days_since_last_interaction": rng.exponential(25, n).round(1),
        }
    )


def clv_frame(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = rng.uniform(20, 150, n).round(1)
    recency = (t * rng.uniform(0, 1, n)).round(1)
    frequency = rng.poisson(4, n).astype(float)
    return pd.DataFrame(
        {
            "frequency": frequency,
            "recency": recency,
            "T": t,
            "monetary_value": rng.lognormal(5, 1, n).round(2),
            "rfm_recency_days": ((t - recency) * 7).round(1),
            "rfm_frequency": frequency + 1,
            "rfm_monetary": rng.lognormal(7, 1, n).round(2),
            "spend_12m": rng.lognormal(11, 2, n).round(2),
        }
    )


def _classifier(frame: pd.DataFrame, label: np.ndarray, kind: str) -> Pipeline:
    categorical = [c for c in frame.columns if frame[c].dtype == object]
    numeric = [c for c in frame.columns if c not in categorical]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
        ]  # fmt: skip
    )
    base = {
        "xgboost": XGBClassifier(n_estimators=40, max_depth=3, random_state=0, n_jobs=1),
        "random_forest": RandomForestClassifier(
            n_estimators=20, max_depth=4, random_state=0, n_jobs=1
        ),  # fmt: skip
        "logistic": LogisticRegression(max_iter=500),
    }[kind]
    model = Pipeline([("prep", prep), ("clf", CalibratedClassifierCV(base, cv=3))])
    return model.fit(frame, label)


class ClvToy(mlflow.pyfunc.PythonModel):
    """CLV pyfunc with the contract's columns: a closed-form stand-in for BG/NBD + Gamma-Gamma."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        x = model_input[CLV_FEATURES].astype(float)
        p_alive = 1.0 / (1.0 + np.maximum(x["T"] - x["recency"], 0) / 52.0)
        rate = (x["frequency"] + 1) / (x["T"] + 1)
        return pd.DataFrame(
            {
                "clv_3y": (p_alive * rate * 156 * x["monetary_value"]).to_numpy() * 1000,
                "p_alive": p_alive.to_numpy(),
                "expected_purchases_90d": (p_alive * rate * 13).to_numpy(),
            }
        )


class NextBestTimeToy(mlflow.pyfunc.PythonModel):
    """NBT pyfunc with the contract's columns: slots derived from the contact id."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        ids = model_input["entity_id"].astype(int).to_numpy()
        return pd.DataFrame(
            {
                "best_slots": [
                    [(i * 7) % 168, (i * 7 + 24) % 168, (i * 7 + 48) % 168] for i in ids
                ],
                "best_channel": ["email" if i % 2 else "phone" for i in ids],
                "p_best": [0.2 + (i % 5) / 10 for i in ids],
            }
        )


def _log(client: MlflowClient, name: str, log, features: list[str]) -> str:
    """Run ``log(name)`` in a fluent run on ``client``'s store, register, set champion."""
    uri = client.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"feature_names": json.dumps(features), "feature_service": f"{name}_v1"})
        log(name)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/{name}", name)
    client.set_registered_model_alias(name, "champion", version.version)
    return version.version


def register_models(
    client: MlflowClient, kinds: dict[str, str] | None = None, only: tuple[str, ...] | None = None
) -> dict[str, str]:
    """Register the toy models (all five, or ``only`` these) as champions; name → version."""
    kinds = {"lead_scoring": "xgboost", "deal_health": "random_forest", "churn": "logistic"} | (kinds or {})  # fmt: skip
    versions = {}
    frames = {
        "lead_scoring": lead_frame(N_ROWS),
        "deal_health": deal_frame(N_ROWS),
        "churn": churn_frame(N_ROWS),
    }
    wanted = set(only or ("lead_scoring", "deal_health", "churn", "clv", "next_best_time"))
    rng = np.random.default_rng(5)
    for name, frame in frames.items():
        if name not in wanted:
            continue
        signal = frame.select_dtypes("number").rank(pct=True).mean(axis=1).to_numpy()
        label = (signal + rng.normal(0, 0.15, len(frame)) > 0.5).astype(int)
        model = _classifier(frame, label, kinds[name])

        def log(artifact, model=model, frame=frame):
            example = frame.head(3)
            signature = infer_signature(example, model.predict_proba(example)[:, 1])
            trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
            mlflow.sklearn.log_model(
                model, name=artifact, signature=signature, input_example=example,
                serialization_format="skops", skops_trusted_types=trusted, pip_requirements=[],
            )  # fmt: skip

        versions[name] = _log(client, name, log, list(frame.columns))
    if "clv" not in wanted:
        return versions
    clv_example = clv_frame(3)[CLV_FEATURES]
    versions["clv"] = _log(
        client,
        "clv",
        lambda a: mlflow.pyfunc.log_model(
            name=a,
            python_model=ClvToy(),
            input_example=clv_example,
            signature=infer_signature(clv_example, ClvToy().predict(None, clv_example)),
            pip_requirements=[],
            code_paths=[__file__],  # the pyfunc class must import in a server process
        ),  # fmt: skip
        CLV_FEATURES,
    )
    if "next_best_time" not in wanted:
        return versions
    nbt_example = pd.DataFrame({"entity_id": [1, 2]})
    versions["next_best_time"] = _log(
        client,
        "next_best_time",
        lambda a: mlflow.pyfunc.log_model(
            name=a,
            python_model=NextBestTimeToy(),
            input_example=nbt_example,
            pip_requirements=[],
            code_paths=[__file__],
        ),  # fmt: skip
        ["entity_id"],
    )
    return versions


def serving_world(root: Path, token: str) -> Settings:
    """The toy champions in an MLflow sqlite store, an empty migrated CRM and settings pointing at
    both under ``root``: what a real ``bentoml serve`` needs (API fuzz test and benchmark)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    register_models(MlflowClient(tracking_uri=uri, registry_uri=uri))
    crm = f"sqlite:///{root / 'crm.db'}"
    upgrade(make_engine(crm))
    settings = Settings(
        data_dir=root / "data", mlflow_tracking_uri=uri, database_url=crm, api_token=token
    )
    settings.ensure_dirs()
    return settings


class FakeOnline:
    """In-memory stand-in for the Feast online store: model name → rows keyed by entity id."""

    def __init__(self, settings=None, n: int = 50, reachable: bool = True):
        self.reachable = reachable
        self.reads = 0
        ids = np.arange(1, n + 1)
        self.tables = {
            "lead_scoring": lead_frame(n, seed=11),
            "deal_health": deal_frame(n, seed=12),
            "churn": churn_frame(n, seed=13),
            "clv": clv_frame(n, seed=14),
        }
        for frame in self.tables.values():
            frame.insert(0, "entity_id", ids)

    def read(self, model_name: str, ids: list[int]) -> pd.DataFrame:
        from crm_predict.serving.hub import UnavailableError

        if not self.reachable:
            raise UnavailableError("online store: connection refused")
        self.reads += 1
        table = self.tables[model_name]
        unknown = [i for i in ids if i not in set(table["entity_id"])]
        if unknown:
            raise UnknownIdsError(unknown)
        return table.set_index("entity_id").loc[ids].reset_index()

    def check(self) -> str | None:
        return None if self.reachable else "online store: connection refused"


_registered: list | None = None


def forget_bentoml_metrics() -> None:
    """BentoML registers its HTTP metrics on the process-wide Prometheus registry when an ASGI app
    starts; a second in-process app (another test module) would register them twice. The first call
    starts recording what the registry is given; each call unregisters the BentoML collectors so far."""
    global _registered
    from prometheus_client import REGISTRY

    if _registered is None:
        _registered = []
        register = REGISTRY.register

        def recording(collector) -> None:
            register(collector)
            _registered.append(collector)

        REGISTRY.register = recording
    for collector in list(_registered):
        metrics = getattr(collector, "describe", collector.collect)()
        if any(metric.name.startswith("bentoml_") for metric in metrics):
            REGISTRY.unregister(collector)
            _registered.remove(collector)
