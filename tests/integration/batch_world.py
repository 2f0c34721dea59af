"""A tiny seeded CRM, five tiny champions in MLflow and a stand-in feature reader for batch tests.

``python batch_world.py DATA_DIR CHUNK_SIZE`` runs ``crm_predict.serving.batch.run_batch`` on that world in a
process of its own (the SIGKILL test kills it between chunks). The feature reader has the signature
of ``crm_predict.features.scoring.scoring_frame`` and reads the same CRM store, so the job is tested end to end
without the Feast export.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
from crm_predict.crm_store.models import Account, Activity, Contact, Deal, Lead, Order, User
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy import text
from sqlalchemy.orm import Session

from crm_predict.core.settings import Settings

AT = datetime(2026, 6, 30, 2, 0)

FEATURES = {
    "lead_scoring": ["n_activities", "days_open"],
    "deal_health": ["amount", "n_activities"],
    "churn": ["n_orders", "days_since_order"],
    "clv": ["frequency", "recency", "T", "monetary_value"],
    "next_best_time": ["entity_id"],
}


def build_crm(session: Session, n_contacts: int = 60, seed: int = 3) -> None:
    """Owners with a manager, leads (new, unhandled, contacted, with whitepaper downloads), open and
    closed deals with and without recent activity, customers with small and very large orders."""
    rng = np.random.default_rng(seed)
    day = timedelta(days=1)
    session.add(User(id=1, name="Manager"))
    session.flush()
    session.add_all([User(id=2, name="Ann", manager_id=1), User(id=3, name="Bob", manager_id=1)])
    session.add_all(
        [
            Account(
                id=i,
                name=f"a{i}",
                industry=ind,
                region=reg,
                created_at=AT - 400 * day,
                updated_at=AT - 400 * day,
            )  # fmt: skip
            for i, (ind, reg) in enumerate(
                [("software", "north"), ("retail", "south"), ("finance", "east")], 1
            )  # fmt: skip
        ]
    )
    session.flush()
    session.add_all(
        [
            Contact(
                id=i, first_name=f"c{i}", owner_id=2 + i % 2, account_id=1 + i % 3,
                is_decision_maker=bool(i % 4 == 0), created_at=AT - 500 * day, updated_at=AT - 500 * day,
            )
            for i in range(1, n_contacts + 1)
        ]
    )  # fmt: skip
    session.flush()
    leads, deals, acts, orders = [], [], [], []
    n_leads = n_contacts // 3
    for i in range(1, n_leads + 1):
        created = AT - timedelta(hours=float(rng.choice([1, 5, 30, 24 * 10, 24 * 40])))
        contacted = None if i % 3 else created + timedelta(hours=1)
        leads.append(
            Lead(
                id=i, contact_id=i, account_id=1 + i % 3, owner_id=2 + i % 2, region=("north", "south")[i % 2],
                status="new", created_at=created, first_contacted_at=contacted, updated_at=created,
            )
        )  # fmt: skip
        for k in range(int(rng.integers(0, 6))):
            kind = ("site_visit", "pricing_view", "whitepaper_download", "trial_request")[k % 4]
            when = AT - timedelta(hours=float(rng.uniform(1, 24 * 60)))
            if when > created:
                acts.append(Activity(contact_id=i, lead_id=i, type=kind, occurred_at=when, created_at=when))  # fmt: skip
    n_deals = n_contacts // 3
    for i in range(1, n_deals + 1):
        created = AT - day * float(rng.integers(10, 200))
        closed = AT - 3 * day if i % 5 == 0 else None
        deals.append(
            Deal(
                id=i, contact_id=i, account_id=1 + i % 3, owner_id=2 + i % 2, name=f"d{i}",
                amount=float(rng.integers(1, 50)) * 1000, stage=("qualification", "proposal", "negotiation")[i % 3],
                stage_entered_at=created, created_at=created, closed_at=closed,
                outcome="won" if closed else None, updated_at=closed or created,
            )
        )  # fmt: skip
        for _ in range(int(rng.integers(0, 4))):
            when = AT - day * float(rng.uniform(0.5, 20))
            acts.append(Activity(contact_id=i, deal_id=i, type="call", occurred_at=when, created_at=when))  # fmt: skip
    for i in range(n_contacts // 4, n_contacts + 1):
        big = i % 7 == 0
        for _ in range(int(rng.integers(1, 8))):
            when = AT - day * float(rng.uniform(1, 400))
            amount = float(rng.uniform(200_000, 600_000)) if big else float(rng.uniform(5, 500))
            orders.append(Order(contact_id=i, ordered_at=when, amount=amount, items=1, created_at=when))  # fmt: skip
        for _ in range(int(rng.integers(0, 14))):
            when = AT - day * float(rng.uniform(0.1, 45))
            acts.append(Activity(contact_id=i, type="site_visit", occurred_at=when, created_at=when))  # fmt: skip
    session.add_all(leads)
    session.flush()
    session.add_all(deals)
    session.flush()
    session.add_all(acts + orders)
    session.commit()


def _read(url: str, sql: str, **params) -> pd.DataFrame:
    from crm_predict.crm_store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(text(sql), conn, params=params)
    finally:
        engine.dispose()


def tiny_scoring_frame(
    settings: Settings, model_name: str, at: datetime, entity_ids: list[int] | None = None
) -> pd.DataFrame:
    """Stand-in for ``crm_predict.features.scoring.scoring_frame``: a few features per active entity."""
    url = settings.crm_url
    at_s = at.strftime("%Y-%m-%d %H:%M:%S")
    if model_name == "lead_scoring":
        frame = _read(
            url, "SELECT id AS entity_id, created_at FROM leads WHERE converted_at IS NULL"
        )
        acts = _read(url, "SELECT lead_id AS entity_id, COUNT(*) AS n_activities FROM activities WHERE lead_id IS NOT NULL GROUP BY lead_id")  # fmt: skip
        frame = frame.merge(acts, on="entity_id", how="left").fillna({"n_activities": 0})
        frame["days_open"] = (
            pd.Timestamp(at) - pd.to_datetime(frame["created_at"], format="ISO8601")
        ).dt.days
    elif model_name == "deal_health":
        frame = _read(url, "SELECT id AS entity_id, amount FROM deals WHERE closed_at IS NULL")
        acts = _read(url, "SELECT deal_id AS entity_id, COUNT(*) AS n_activities FROM activities WHERE deal_id IS NOT NULL GROUP BY deal_id")  # fmt: skip
        frame = frame.merge(acts, on="entity_id", how="left").fillna({"n_activities": 0})
    else:
        frame = _read(
            url,
            "SELECT contact_id AS entity_id, COUNT(*) AS n_orders, MIN(ordered_at) AS first_at, "
            "MAX(ordered_at) AS last_at, AVG(amount) AS monetary_value FROM orders "
            "WHERE ordered_at <= :at GROUP BY contact_id",
            at=at_s,
        )
        week = pd.Timedelta(weeks=1)
        last, first = (
            pd.to_datetime(frame["last_at"], format="ISO8601"),
            pd.to_datetime(frame["first_at"], format="ISO8601"),
        )
        frame["days_since_order"] = (pd.Timestamp(at) - last).dt.days
        frame["frequency"] = frame["n_orders"] - 1
        frame["recency"] = (last - first) / week
        frame["T"] = (pd.Timestamp(at) - first) / week
    if entity_ids is not None:
        frame = frame[frame["entity_id"].isin(entity_ids)]
    frame["entity_id"] = frame["entity_id"].astype("int64")
    return frame[["entity_id"] + [c for c in FEATURES[model_name] if c != "entity_id"]]


class TinyClv(mlflow.pyfunc.PythonModel):
    """CLV stand-in with the contract's outputs."""

    def predict(self, context, model_input, params=None):
        f = model_input["frequency"].to_numpy(dtype=float)
        m = model_input["monetary_value"].to_numpy(dtype=float)
        return pd.DataFrame(
            {"clv_3y": (f + 1) * m * 3, "p_alive": 1 / (1 + f), "expected_purchases_90d": f / 10}
        )


class TinyNextBestTime(mlflow.pyfunc.PythonModel):
    """Next-best-time stand-in: slots and channel derived from the contact id."""

    def predict(self, context, model_input, params=None):
        ids = model_input["entity_id"].to_numpy(dtype=int)
        return pd.DataFrame(
            {
                "entity_id": ids,
                "best_slots": [
                    [int(i * 7 % 168), int(i * 11 % 168), int(i * 13 % 168)] for i in ids
                ],
                "best_channel": np.where(ids % 2 == 0, "email", "phone"),
                "p_best": 0.1 + (ids % 10) / 20,
            }
        )


LABELS = {  # what the tiny classifiers learn, so their scores spread over every band
    "lead_scoring": lambda f: f["n_activities"] >= 2,
    "deal_health": lambda f: f["n_activities"] >= 1,
    "churn": lambda f: f["days_since_order"] > 60,
}


def world_settings(engine, data_dir, client: MlflowClient, chunk_size: int = 7) -> Settings:
    """Settings on ``engine``'s store and ``client``'s MLflow, with the five champions registered."""
    settings = Settings(
        data_dir=data_dir,
        database_url=engine.url.render_as_string(hide_password=False),
        mlflow_tracking_uri=client.tracking_uri,
        batch_chunk_size=chunk_size,
    )
    settings.ensure_dirs()
    register_champions(client, settings)
    return settings


def register_champions(client: MlflowClient, settings: Settings) -> None:
    """Log and register one tiny version per model (fitted on the world's own features) and make
    it champion."""
    import cloudpickle

    # Pickle the tiny pyfuncs by value: Spark workers and subprocesses cannot import this module.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    mlflow.set_tracking_uri(client.tracking_uri)
    mlflow.set_registry_uri(client.tracking_uri)
    for name, columns in FEATURES.items():
        mlflow.set_experiment(name)
        with mlflow.start_run():
            mlflow.set_tag("feature_names", json.dumps(columns))
            if name in LABELS:
                x = tiny_scoring_frame(settings, name, AT)[columns].astype(float)
                pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.3))
                pipe.fit(x, LABELS[name](x).astype(int))
                info = mlflow.sklearn.log_model(pipe, name="model", pip_requirements=["scikit-learn"], pyfunc_predict_fn="predict_proba")  # fmt: skip
            else:
                model = TinyClv() if name == "clv" else TinyNextBestTime()
                info = mlflow.pyfunc.log_model(name="model", python_model=model, pip_requirements=["mlflow"])  # fmt: skip
        version = mlflow.register_model(info.model_uri, name)
        client.set_registered_model_alias(name, "champion", version.version)


def main(argv: list[str]) -> None:
    """Run the batch job on an existing world (used as a subprocess by the SIGKILL test)."""
    from crm_predict.crm_store.db import make_engine, session_factory
    from crm_predict.serving.batch import run_batch

    settings = Settings(data_dir=argv[0], batch_chunk_size=int(argv[1]), database_url=argv[2], mlflow_tracking_uri=argv[3])  # fmt: skip
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    engine = make_engine(settings.crm_url)
    with session_factory(engine)() as session:
        summary = run_batch(session, client, settings, at=AT, scoring_frame=tiny_scoring_frame)
    print(json.dumps(summary.as_dict()))


if __name__ == "__main__":
    main(sys.argv[1:])
