"""A CRM that is not the demo goes through the whole loop: import with a mapping → features export,
apply, materialize → train lead_scoring and deal_health → batch score → tags and tasks with owners
→ the API answers by external id → ``export tags`` gives the source CRM's ids back.

Three exports of one foreign world (tests/foreign_crm.py): its own format with its own mapping
(string ids, other stage and activity names, contacts without email, reps in a users file,
German timestamps in Berlin time), and HubSpot- and Salesforce-shaped files read by the presets.
"""

from __future__ import annotations

import pandas as pd
import pytest
from crm_predict.crm_store.db import make_engine, session_factory
from crm_predict.crm_store.models import (
    Activity,
    Contact,
    Deal,
    DealStageHistory,
    Lead,
    Tag,
    Task,
    User,
)
from foreign_crm import AS_OF, world, write_acme, write_hubspot, write_salesforce
from sqlalchemy import func, select
from typer.testing import CliRunner

from crm_predict.cli import app

AT = f"{AS_OF.date()}T23:00:00"
TOKEN = "foreign-crm-token"


@pytest.fixture(scope="module")
def foreign_world():
    return world()


def _invoke(runner: CliRunner, data_dir, *args: str) -> str:
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("shape", ["acme", "hubspot", "salesforce"])
def test_a_foreign_crm_goes_through_the_whole_loop(tmp_path, monkeypatch, foreign_world, shape):
    files = tmp_path / shape
    if shape == "acme":
        mapping = str(write_acme(foreign_world, files))
    else:
        (write_hubspot if shape == "hubspot" else write_salesforce)(foreign_world, files)
        mapping = shape
    data = tmp_path / "data"
    monkeypatch.setenv("CRM_PREDICT_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CRM_PREDICT_OPTUNA_TRIALS", "1")
    monkeypatch.setenv("CRM_PREDICT_MIN_CLASS_COUNT", "15")
    monkeypatch.setenv("CRM_PREDICT_PREDICT_LATENCY_BUDGET_MS", "0")
    monkeypatch.delenv("CRM_PREDICT_DATABASE_URL", raising=False)
    runner = CliRunner()

    out = _invoke(runner, data, "import", "--mapping", mapping, str(files))
    assert "leads: 500 rows read, 500 inserted" in " ".join(out.split())
    engine = make_engine(f"sqlite:///{(data / 'crm.db').resolve()}")
    with session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 9
        lead = s.scalars(select(Lead).where(Lead.external_id == "lead_000017")).one()
        assert isinstance(lead.id, int) and lead.owner_id is not None  # assigned by region
        managers = s.scalars(select(User).where(User.manager_id.is_not(None))).all()
        assert len(managers) == 6
        assert s.scalar(select(func.count()).select_from(Contact).where(Contact.email.is_(None))) > 100  # fmt: skip
        assert s.scalar(select(func.count()).select_from(DealStageHistory)) >= 260
        categories = dict(s.execute(select(Activity.type, Activity.category)).all())
        webinar = next(v for k, v in categories.items() if k.lower() == "webinar")
        assert webinar == "event"
        content = next(v for k, v in categories.items() if k.lower() == "content_download")
        assert content == "content"
        outcomes = dict(s.execute(select(Deal.outcome, func.count()).group_by(Deal.outcome)).all())
        assert outcomes.get("won", 0) > 20 and outcomes.get("lost", 0) > 20

    # Re-importing the same export changes nothing.
    again = " ".join(_invoke(runner, data, "import", "--mapping", mapping, str(files)).split())
    assert "leads: 500 rows read, 0 inserted, 0 updated" in again

    for step in (["features", "export"], ["features", "apply"], ["features", "materialize"]):
        _invoke(runner, data, *step)
    for model in ("lead_scoring", "deal_health"):
        _invoke(runner, data, "train", model)
        _invoke(runner, data, "registry", "card", model, "1")
        _invoke(runner, data, "registry", "promote", model, "1", "--force", "--reason", "test")
    _invoke(runner, data, "batch", "score", "--models", "lead_scoring,deal_health", "--at", AT)

    with session_factory(engine)() as s:
        grades = s.scalar(select(func.count()).select_from(Tag).where(Tag.name == "lead_grade"))
        assert grades > 0
        assert s.scalar(select(func.count()).select_from(Tag).where(Tag.name == "deal_health")) > 0
        tasks = s.scalars(select(Task)).all()
        assert tasks and all(t.owner_id is not None for t in tasks), "every task has an owner"
        lead = s.scalars(select(Lead).where(Lead.external_id == "lead_000017")).one()
        lead_id = lead.id

    exported = tmp_path / "tags.csv"
    _invoke(runner, data, "export", "tags", "--out", str(exported))
    tags = pd.read_csv(exported, dtype=str)
    lead_tags = tags[tags["entity_type"] == "lead"]
    assert len(lead_tags) and lead_tags["entity_external_id"].str.startswith("lead_").all()
    assert set(lead_tags.loc[lead_tags["entity_id"] == str(lead_id), "entity_external_id"]) == {"lead_000017"}  # fmt: skip

    _answers_by_external_id(monkeypatch, tmp_path, data, lead_id)


def _answers_by_external_id(monkeypatch, tmp_path, data, lead_id: int) -> None:
    """The service, on this store's champions and Feast online store, scores by source id."""
    from crm_predict.serving.service import CrmPredict
    from serving_models import forget_bentoml_metrics
    from starlette.testclient import TestClient

    monkeypatch.setenv("CRM_PREDICT_DATA_DIR", str(data))
    monkeypatch.setenv("CRM_PREDICT_API_TOKEN", TOKEN)
    forget_bentoml_metrics()
    with TestClient(CrmPredict.to_asgi()) as api:
        by_ref = api.post("/lead_score", json={"lead_ref": "lead_000017"})
        assert by_ref.status_code == 200, by_ref.text
        by_id = api.post("/lead_score", json={"lead_id": lead_id})
        assert by_id.status_code == 200, by_id.text
        assert by_ref.json()["prediction"]["score"] == by_id.json()["prediction"]["score"]
        assert by_ref.json()["prediction"]["external_id"] == "lead_000017"
        unknown = api.post("/lead_score", json={"lead_ref": "lead_999999"})
        assert unknown.status_code == 404 and "lead_ref" in unknown.text
