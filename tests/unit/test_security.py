"""Security promises: every write and admin route refuses a missing (401) or wrong (403) bearer
token and writes nothing; SQL-injection-looking values travel only as parameters (tables survive,
values round-trip verbatim); excluded sensitive fields never reach a model's feature list, from the
Feast FeatureServices or from a bring-your-own-data training table."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from crm_predict.crm_store.db import session_factory
from crm_predict.crm_store.importer import import_csv
from crm_predict.crm_store.models import Account, PredictionLog, Tag, Task, User
from crm_predict.crm_store.repository import create_tasks, current_tags, upsert_tags
from crm_predict.features import definitions
from crm_predict.training.classifier import prepare_data
from sqlalchemy import func, inspect, select
from test_serving_service import AUTH, TOKEN, env  # noqa: F401 - shared fixture (api and service: conftest)

from crm_predict.core.errors import UserError
from crm_predict.core.rules import TaskSpec
from crm_predict.core.settings import Settings

INJECTION = "'; DROP TABLE tags; --"
NOW = datetime(2026, 7, 1, 9, 0)
WRITE_ROUTES = [
    ("/lead_score", {"lead_id": 1}),
    ("/lead_score/batch", {"lead_ids": [1, 2]}),
    ("/deal_health", {"deal_id": 1}),
    ("/deal_health/batch", {"deal_ids": [1, 2]}),
    ("/churn", {"customer_id": 1}),
    ("/churn/batch", {"customer_ids": [1, 2]}),
    ("/clv", {"customer_id": 1}),
    ("/clv/batch", {"customer_ids": [1, 2]}),
    ("/next_best_time", {"contact_id": 1}),
    ("/next_best_time/batch", {"contact_ids": [1, 2]}),
]
BAD_AUTH = [
    (None, 401),
    ("Basic " + TOKEN, 401),  # not a bearer token
    ("Bearer", 401),
    ("Bearer wrong", 403),
    ("Bearer " + TOKEN.upper(), 403),
    ("Bearer " + TOKEN + "x", 403),
    ("Bearer " + TOKEN[:-1], 403),
]


def _written(crm) -> tuple[int, int, int]:
    with session_factory(crm)() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(m)) for m in (Tag, Task, PredictionLog)
        )


@pytest.mark.parametrize(("route", "body"), WRITE_ROUTES)
def test_every_write_back_route_refuses_missing_or_wrong_tokens_and_writes_nothing(
    api,  # noqa: F811
    env,  # noqa: F811
    route,
    body,
):
    before = _written(env["crm"])
    for header, status in BAD_AUTH:
        headers = {"Authorization": header} if header else {}
        r = api.post(route, json={**body, "write_back": True}, headers=headers)
        assert r.status_code == status, (route, header, r.text)
        assert r.json()["field"] == "Authorization"
        assert TOKEN not in r.text
    assert _written(env["crm"]) == before
    assert api.post(route, json={**body, "write_back": True}, headers=AUTH).status_code == 200


@pytest.mark.parametrize(("method", "path"), [("post", "/admin/reload")])
def test_admin_routes_refuse_missing_or_wrong_tokens(api, method, path):  # noqa: F811
    for header, status in BAD_AUTH:
        headers = {"Authorization": header} if header else {}
        r = getattr(api, method)(path, headers=headers)
        assert r.status_code == status, (path, header, r.text)


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/lead_score", {"lead_id": INJECTION}),
        ("/deal_health/batch", {"deal_ids": [1, INJECTION]}),
        ("/churn", {"customer_id": "1 OR 1=1"}),
        ("/clv", {"customer_id": 1, "write_back": INJECTION}),
    ],
)
def test_injection_looking_api_ids_are_400_and_tables_survive(api, env, route, body):  # noqa: F811
    r = api.post(route, json=body, headers=AUTH)
    assert r.status_code == 400, r.text
    assert {"tags", "tasks", "prediction_log"} <= set(inspect(env["crm"]).get_table_names())


def test_injection_looking_values_round_trip_verbatim_through_import_tags_and_tasks(
    session, tmp_path
):
    session.add(User(id=1, name=INJECTION))
    session.commit()
    path = tmp_path / "accounts.csv"
    path.write_text(f'id,name,industry\n1,"{INJECTION}",x\n2,"a""b\\",\'; SELECT 1; --\n')
    import_csv(session, "accounts", path, now=NOW)
    session.commit()
    names = dict(session.execute(select(Account.id, Account.name)).tuples().all())
    assert names == {1: INJECTION, 2: 'a"b\\'}

    tags = pd.DataFrame(
        {
            "entity_type": "deal", "entity_id": [1, 2], "name": [INJECTION, "deal_colour"],
            "value": [INJECTION, "red'); DELETE FROM tasks; --"], "model_name": INJECTION,
            "model_version": "1", "run_id": INJECTION, "scored_at": NOW,
        }
    )  # fmt: skip
    upsert_tags(session, tags, NOW)
    spec = TaskSpec(
        type="rescue_deal", entity_type="deal", entity_id=1, owner_id=1, due_at=NOW,
        sla_hours=24, reason=INJECTION, period=INJECTION,
    )  # fmt: skip
    assert create_tasks(session, [spec], NOW) == 1
    session.commit()

    assert {"tags", "tasks", "accounts", "users"} <= set(inspect(session.bind).get_table_names())
    assert current_tags(session, "deal", 1)[INJECTION].value == INJECTION
    assert current_tags(session, "deal", 1)[INJECTION].run_id == INJECTION
    assert current_tags(session, "deal", 2)["deal_colour"].value == "red'); DELETE FROM tasks; --"
    assert session.scalars(select(Task.reason)).all() == [INJECTION]
    assert session.scalar(select(User.name)) == INJECTION


# --- excluded sensitive fields --------------------------------------------------------------------


def test_no_feature_service_can_be_built_with_an_excluded_feature(tmp_path):
    """Whatever the operator excludes, every service that uses it refuses to build."""
    for model in definitions.SERVICES:
        names = definitions.feature_names(model)
        assert names, model
        settings = Settings(data_dir=tmp_path / "data", excluded_features=[names[0]])
        with pytest.raises(UserError, match=names[0]):
            definitions.feature_names(model, settings)


@pytest.mark.parametrize("column", ["gender", "age_band", "Gender", " AGE_BAND "])
def test_byod_training_table_never_uses_an_excluded_column_as_a_feature(tmp_path, column):
    settings = Settings(data_dir=tmp_path / "data")
    n = 120
    frame = pd.DataFrame(
        {
            "id": range(n),
            "signup": pd.date_range("2025-01-01", periods=n, freq="D"),
            "tenure": [i % 17 for i in range(n)],
            column: ["f", "m", "x"] * (n // 3),
            "churned": ["yes", "no"] * (n // 2),
        }
    )
    prepared = prepare_data(
        settings, frame, target="churned", id_column="id", time_column="signup",
        allow_small_data=True,
    )  # fmt: skip
    assert prepared.features == ["tenure"]
