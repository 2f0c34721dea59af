"""The deal review pages: open deals worst first, one deal's live score with reasons, activities,
tasks and tags; they still render without a model, and work mounted under a prefix."""

from __future__ import annotations

import json
from datetime import timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import Activity, Deal, Tag
from crm_predict.crm_store.repository import create_tasks
from crm_predict.serving.review import ReviewContext, create_app
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from starlette.routing import Mount
from starlette.testclient import TestClient
from tiny_crm import AS_OF, build_tiny_crm

from crm_predict.core.rules import TaskSpec

FEATURES = ["stage", "amount", "days_idle"]


@pytest.fixture(scope="module")
def champion_client(tmp_path_factory) -> MlflowClient:
    """A registry whose deal_health@champion is a small random forest on stage/amount/idle days
    (module-scoped: logging a model takes a while)."""
    import skops.io

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    rng = np.random.default_rng(0)
    n = 200
    frame = pd.DataFrame(
        {
            "stage": rng.choice(["qualification", "proposal", "negotiation"], n),
            "amount": rng.lognormal(7, 1, n).round(2),
            "days_idle": rng.exponential(5, n).round(1),
        }
    )
    label = ((frame["stage"] != "qualification") & (frame["days_idle"] < 5)).astype(int)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("stage", OneHotEncoder(handle_unknown="ignore"), ["stage"])],
                    remainder="passthrough",
                    verbose_feature_names_out=False,
                ),
            ),
            ("model", RandomForestClassifier(n_estimators=20, max_depth=3, random_state=0)),
        ]
    ).fit(frame, label)
    experiment = client.create_experiment(
        "deal_health", artifact_location=(root / "artifacts").as_uri()
    )
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment):
            mlflow.set_tag("feature_names", json.dumps(FEATURES))
            mlflow.sklearn.log_model(
                model,
                name="deal_health",
                signature=infer_signature(frame.head(3), model.predict_proba(frame.head(3))[:, 1]),
                registered_model_name="deal_health",
                serialization_format="skops",
                skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
            )
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    client.set_registered_model_alias("deal_health", "champion", "1")
    return client


@pytest.fixture
def sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    factory = session_factory(engine)
    with factory() as session:
        build_tiny_crm(session)
        session.add_all(
            [
                Activity(deal_id=4, type="call", channel="phone", responded=True,
                         occurred_at=AS_OF - timedelta(days=d), created_at=AS_OF)
                for d in (3, 10)
            ]
        )  # fmt: skip
        session.add(
            Tag(entity_type="deal", entity_id=4, name="deal_health_colour", value="yellow",
                model_name="deal_health", model_version="3", run_id="r1", scored_at=AS_OF)
        )  # fmt: skip
        create_tasks(
            session,
            [TaskSpec("rescue_deal", "deal", 5, 1, AS_OF, 48, "Deal health is red", period="q")],
            AS_OF,
        )
        session.commit()
    yield factory
    engine.dispose()


def _features(sessions):
    """Stand-in for features.scoring.scoring_frame: open deals' features from the same store."""

    def read(deal_ids: list[int]) -> pd.DataFrame:
        with sessions() as session:
            deals = {d.id: d for d in session.query(Deal).filter(Deal.id.in_(deal_ids))}
        missing = [i for i in deal_ids if i not in deals or deals[i].outcome is not None]
        if missing:
            raise KeyError(f"not active deals: {missing}")
        return pd.DataFrame(
            {
                "entity_id": deal_ids,
                "stage": [deals[i].stage for i in deal_ids],
                "amount": [deals[i].amount for i in deal_ids],
                "days_idle": [3.0 for _ in deal_ids],
            }
        )

    return read


@pytest.fixture
def app(sessions, champion_client):
    return create_app(lambda: ReviewContext(sessions, champion_client, _features(sessions)))


def test_open_deals_are_listed_worst_health_first(app):
    page = TestClient(app).get("/")
    assert page.status_code == 200
    html = page.text
    # Deal 4 has health 75 (yellow); 5 and 6 have no tag yet; closed deals are not listed.
    positions = [html.index(f'href="http://testserver/deals/{i}"') for i in (4, 5, 6)]
    assert positions == sorted(positions)
    assert 'class="badge yellow">75<' in html
    assert "/deals/1" not in html and "/deals/7" not in html


def test_deal_page_shows_score_reasons_activities_tasks_and_tags(app):
    client = TestClient(app)
    html = client.get("/deals/4").text
    assert "live score from <code>deal_health</code> v1" in html
    assert 'src="http://testserver/deals/4/reasons.png"' in html
    assert html.count("<td>call</td>") == 2
    assert "Stored tag: 75 (yellow) from\nv3" in html
    assert "<td>deal_health_colour</td><td>yellow</td>" in html
    assert "No open tasks." in html
    assert "Deal health is red" in client.get("/deals/5").text
    png = client.get("/deals/4/reasons.png")
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")


def test_pages_render_without_a_model(sessions, tmp_path):
    empty = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'empty.db'}")
    app = create_app(lambda: ReviewContext(sessions, empty, _features(sessions)))
    client = TestClient(app)
    assert client.get("/").status_code == 200
    page = client.get("/deals/4")
    assert page.status_code == 200 and "Live score unavailable" in page.text
    assert client.get("/deals/4/reasons.png").status_code == 404


def test_unknown_deal_is_404(app):
    assert TestClient(app).get("/deals/999").status_code == 404


def test_links_keep_the_mount_prefix(app):
    from starlette.applications import Starlette

    outer = Starlette(routes=[Mount("/review", app=app)])
    html = TestClient(outer).get("/review/").text
    assert 'href="http://testserver/review/deals/4"' in html
