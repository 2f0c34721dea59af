"""The online API in process (BentoML's ASGI app under Starlette's TestClient): every endpoint,
every error path, auth, write-back, reload and readiness, on tiny champions in an MLflow sqlite
store and an in-memory online store."""

from __future__ import annotations

import time
from datetime import datetime

import mlflow
import numpy as np
import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import Contact, Deal, Lead, PredictionLog, Task, User
from crm_predict.crm_store.repository import current_tags
from mlflow import MlflowClient
from serving_models import FakeOnline, register_models

from crm_predict.core import rules
from crm_predict.core.settings import Settings

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = register_models(client)
    crm = make_engine(f"sqlite:///{root / 'crm.db'}")
    upgrade(crm)
    values = {
        "CRM_PREDICT_DATA_DIR": str(root / "data"),
        "CRM_PREDICT_MLFLOW_TRACKING_URI": uri,
        "CRM_PREDICT_DATABASE_URL": f"sqlite:///{root / 'crm.db'}",
        "CRM_PREDICT_API_TOKEN": TOKEN,
        "CRM_PREDICT_MAX_BATCH_SIZE": "20",
    }
    yield {"client": client, "versions": versions, "env": values, "crm": crm, "root": root}
    crm.dispose()
    mlflow.set_tracking_uri(None)


# --- product answers -------------------------------------------------------------------------------


def test_lead_score_by_id_gives_score_grade_mql_and_model_identity(api, env):
    r = api.post("/lead_score", json={"lead_id": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    p = body["prediction"]
    assert 1 <= p["score"] <= 99
    assert p["score"] == int(rules.lead_score_1_99([p["probability"]])[0])
    assert p["grade"] == str(rules.lead_grade([p["score"]])[0])
    assert p["mql"] == (p["rule_points"] >= rules.RULES.lead.mql_threshold)
    assert p["reasons"] is None
    assert body["model"]["name"] == "lead_scoring"
    assert body["model"]["alias"] == "champion"
    assert body["model"]["version"] == str(env["versions"]["lead_scoring"])
    assert len(body["request_id"]) >= 16
    # The bytes BentoML's JSON serde sends for the declared output model, in one sized body.
    from crm_predict.serving import schemas as S

    assert r.content == S.Single[S.LeadScore].model_validate(body).model_dump_json().encode()
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("route", "id_field", "check"),
    [
        (
            "/deal_health",
            "deal_id",
            lambda p: p["colour"] == str(rules.deal_colour([p["health"]])[0]),
        ),  # fmt: skip
        (
            "/churn",
            "customer_id",
            lambda p: p["risk"] == str(rules.churn_risk_level([p["p_churn"]])[0]),
        ),  # fmt: skip
        (
            "/clv",
            "customer_id",
            lambda p: p["tier"] == str(rules.value_tier([p["yearly_spend"]])[0]),
        ),  # fmt: skip
        (
            "/next_best_time",
            "contact_id",
            lambda p: p["best_slots"][0]["label"] == rules.slot_label(p["best_slots"][0]["slot"]),
        ),  # fmt: skip
    ],
)
def test_each_model_answers_single_and_batch_in_request_order(api, route, id_field, check):
    single = api.post(route, json={id_field: 4})
    assert single.status_code == 200, single.text
    assert single.json()["prediction"][id_field] == 4
    assert check(single.json()["prediction"])
    batch = api.post(f"{route}/batch", json={f"{id_field}s": [5, 4, 5]})
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert [p[id_field] for p in predictions] == [5, 4, 5]
    same = single.json()["prediction"]
    for key, value in predictions[
        1
    ].items():  # floats may differ in the last bit across batch sizes
        assert value == (pytest.approx(same[key]) if isinstance(value, float) else same[key])


def test_clv_rfm_segment_uses_population_medians(service, api):
    hub = service.hub
    online = hub.online.tables["clv"]
    hub.rfm_medians = rules.rfm_medians(online["rfm_recency_days"], online["rfm_frequency"], online["rfm_monetary"])  # fmt: skip
    try:
        r = api.post("/clv/batch", json={"customer_ids": [1, 2, 3]})
        segments = [p["rfm_segment"] for p in r.json()["predictions"]]
        rows = online.set_index("entity_id").loc[[1, 2, 3]]
        expected = rules.rfm_segment(rows["rfm_recency_days"], rows["rfm_frequency"], rows["rfm_monetary"], medians=hub.rfm_medians)  # fmt: skip
        assert segments == list(expected)
    finally:
        hub.rfm_medians = None


def test_explain_adds_top_positive_and_negative_reasons_in_feature_names(api, service):
    features = service.hub.models["lead_scoring"].feature_names
    for route, id_field in (("/lead_score", "lead_id"), ("/deal_health", "deal_id"), ("/churn", "customer_id")):  # fmt: skip
        r = api.post(route, json={id_field: 7, "explain": True})
        assert r.status_code == 200, r.text
        reasons = r.json()["prediction"]["reasons"]
        assert reasons["top_positive"] or reasons["top_negative"]
        assert all(x["contribution"] > 0 for x in reasons["top_positive"])
        assert all(x["contribution"] < 0 for x in reasons["top_negative"])
        assert len(reasons["top_positive"]) <= 3 and len(reasons["top_negative"]) <= 3
    lead = api.post("/lead_score", json={"lead_id": 7, "explain": True}).json()["prediction"]
    named = [
        x["feature"] for x in lead["reasons"]["top_positive"] + lead["reasons"]["top_negative"]
    ]
    assert set(named) <= set(features)
    row = service.hub.online.tables["lead_scoring"].set_index("entity_id").loc[7]
    for reason in lead["reasons"]["top_positive"]:
        assert reason["value"] == pytest.approx(row[reason["feature"]]) or reason["value"] == row[reason["feature"]]  # fmt: skip


# The raw inputs of the derived ``rule_score`` the test model does not read itself.
RAW_90D = {"site_visits_90d": 6, "pricing_views_90d": 2, "whitepapers_90d": 1, "trials_90d": 0}


def raw_lead_row(service, lead_id: int | None = None) -> dict:
    """A lead's online features as a raw payload: without the derived ``rule_score``, with the
    raw inputs it is computed from."""
    table = service.hub.online.tables["lead_scoring"].set_index("entity_id")
    row = (table.loc[lead_id] if lead_id is not None else table.iloc[0]).to_dict()
    row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
    return {**{k: v for k, v in row.items() if k != "rule_score"}, **RAW_90D}


def test_raw_feature_payload_scores_like_the_id_path(api, service, monkeypatch):
    from crm_predict.features.transforms import RULE_SCORE_INPUTS, rule_score_values

    row = raw_lead_row(service, 9)
    points = float(rule_score_values({k: [row[k]] for k in RULE_SCORE_INPUTS})[0])
    # The store holds the rule_score the feature pipeline computes from the same inputs.
    table = service.hub.online.tables["lead_scoring"].copy()
    table.loc[table["entity_id"] == 9, "rule_score"] = points
    monkeypatch.setitem(service.hub.online.tables, "lead_scoring", table)
    by_id = api.post("/lead_score", json={"lead_id": 9}).json()["prediction"]
    raw = api.post("/lead_score", json={"features": row}).json()["prediction"]
    assert raw["probability"] == pytest.approx(by_id["probability"])
    assert raw["rule_points"] == by_id["rule_points"] == points
    assert raw["lead_id"] is None
    batch = api.post("/lead_score/batch", json={"rows": [row, {**row, "entity_id": 9}]})
    assert [p["lead_id"] for p in batch.json()["predictions"]] == [None, 9]


# --- bad input is 4xx naming the field ------------------------------------------------------------


def test_unknown_ids_are_404_naming_the_ids_and_field(api):
    r = api.post("/lead_score/batch", json={"lead_ids": [1, 999, 998]})
    assert r.status_code == 404
    assert r.json()["field"] == "lead_ids"
    assert "999" in r.json()["error"] and "998" in r.json()["error"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"lead_id": "abc"}, "lead_id"),
        ({"lead_idd": 1}, "lead_idd"),
        ({"lead_id": 1, "explain": "maybe"}, "explain"),
        ({"lead_id": [1, 2]}, "lead_id"),
    ],
)
def test_wrong_types_and_unknown_fields_are_400_naming_the_field(api, payload, field):
    r = api.post("/lead_score", json=payload)
    assert r.status_code == 400, r.text
    assert [field] in [e["loc"] for e in r.json()["detail"]]


def test_neither_or_both_sources_are_400(api):
    for payload in ({}, {"lead_id": 1, "features": {"industry": "x"}}):
        r = api.post("/lead_score", json=payload)
        assert r.status_code == 400
        assert "lead_id" in r.text and "features" in r.text


def test_raw_features_missing_unknown_or_mistyped_are_422_naming_the_feature(api, service):
    row = raw_lead_row(service)
    missing = {k: v for k, v in row.items() if k != "site_visits_30d"}
    r = api.post("/lead_score", json={"features": missing})
    assert r.status_code == 422 and r.json()["field"] == "features[0]"
    assert "site_visits_30d" in r.json()["error"]
    r = api.post("/lead_score", json={"features": {**row, "shoe_size": 42}})
    assert r.status_code == 422 and r.json()["field"] == "features[0].shoe_size"
    r = api.post("/lead_score/batch", json={"rows": [row, {**row, "pricing_views_30d": "lots"}]})
    assert r.status_code == 422 and r.json()["field"] == "rows[1].pricing_views_30d"
    r = api.post("/lead_score", json={"features": {**row, "industry": ["a", "b"]}})
    assert r.status_code == 400


def test_a_client_sent_rule_score_is_refused_naming_it_and_the_raw_inputs(api, service):
    """#20: a raw payload with rule_score=500 was MQL and grade A on the client's word."""
    row = raw_lead_row(service)
    r = api.post("/lead_score", json={"features": {**row, "rule_score": 500}})
    assert r.status_code == 422 and r.json()["field"] == "features[0].rule_score"
    assert "derived" in r.json()["error"] and "trials_90d" in r.json()["error"]
    r = api.post("/lead_score/batch", json={"rows": [row, {**row, "rule_score": 500}]})
    assert r.status_code == 422 and r.json()["field"] == "rows[1].rule_score"
    r = api.post("/lead_score", json={"features": {**row, "rule_score": 500}, "write_back": True}, headers=AUTH)  # fmt: skip
    assert r.status_code == 422


def test_raw_rule_score_is_computed_from_its_inputs_as_the_feature_pipeline_does(api, service):
    from crm_predict.features.transforms import RULE_SCORE_INPUTS, rule_score_values

    quiet = {**raw_lead_row(service), "industry": "retail", "is_decision_maker": 0}
    quiet |= {"lead_region": "south", "days_since_last_interaction": 3.0}
    hot = {**quiet, "industry": "Software", "is_decision_maker": 1, "trials_90d": 2}
    body = api.post("/lead_score/batch", json={"rows": [quiet, hot]}).json()["predictions"]
    expected = rule_score_values({k: [r[k] for r in (quiet, hot)] for k in RULE_SCORE_INPUTS})
    assert [p["rule_points"] for p in body] == expected.tolist()
    # retail, south: -10 + 6 visits * 5 + 2 pricing * 20 + 1 whitepaper * 30 = 90, not an MQL;
    # software decision maker with two trials: 90 + 20 + 30 + 100 = 240.
    assert expected.tolist() == [90.0, 240.0]
    assert [p["mql"] for p in body] == [False, True]


def test_raw_inputs_of_rule_score_missing_or_mistyped_are_422_naming_them(api, service):
    row = raw_lead_row(service)
    r = api.post("/lead_score", json={"features": {k: v for k, v in row.items() if k != "trials_90d"}})  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "features[0]"
    assert "trials_90d" in r.json()["error"]
    r = api.post("/lead_score", json={"features": {**row, "site_visits_90d": "lots"}})
    assert r.status_code == 422 and r.json()["field"] == "features[0].site_visits_90d"


def test_explain_is_refused_where_no_model_explains(api):
    r = api.post("/clv", json={"customer_id": 1, "explain": True})
    assert r.status_code == 400 and ["explain"] in [e["loc"] for e in r.json()["detail"]]


def test_batch_over_max_batch_size_is_413_naming_the_field(api):
    r = api.post("/churn/batch", json={"customer_ids": list(range(1, 22))})
    assert r.status_code == 413
    assert r.json()["field"] == "customer_ids"
    assert api.post("/churn/batch", json={"customer_ids": list(range(1, 21))}).status_code == 200


def test_no_endpoint_answers_bad_input_with_5xx(api):
    bad = [b"not json", b"[]", b'{"lead_ids": null, "rows": null}', b'{"rows": [{}]}', b'{"lead_ids": []}']  # fmt: skip
    for body in bad:
        r = api.post(
            "/lead_score/batch", content=body, headers={"Content-Type": "application/json"}
        )
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)


# --- auth and write-back ---------------------------------------------------------------------------


def test_write_back_needs_a_bearer_token(api):
    r = api.post("/deal_health", json={"deal_id": 1, "write_back": True})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = api.post("/deal_health", json={"deal_id": 1, "write_back": True}, headers={"Authorization": "Bearer nope"})  # fmt: skip
    assert r.status_code == 403


def test_write_back_writes_tags_tasks_and_prediction_log(api, env, service):
    batch = api.post("/deal_health/batch", json={"deal_ids": list(range(1, 21))}).json()
    red = next(p for p in batch["predictions"] if p["colour"] == "red")
    now = datetime(2026, 6, 30)
    with session_factory(env["crm"])() as session:
        session.add(User(id=1, name="owner"))
        session.flush()
        session.add(Deal(id=red["deal_id"], owner_id=1, stage="propose", stage_entered_at=now, created_at=now, updated_at=now))  # fmt: skip
        session.commit()
    r = api.post("/deal_health", json={"deal_id": red["deal_id"], "write_back": True}, headers=AUTH)  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["written_back"]["requested"] is True
    assert body["written_back"]["tags"] == 2 and body["written_back"]["predictions_logged"] == 1
    with session_factory(env["crm"])() as session:
        tags = current_tags(session, "deal", red["deal_id"])
        assert tags[rules.TAG_DEAL_COLOUR].value == "red"
        assert tags[rules.TAG_DEAL_HEALTH].value == str(red["health"])
        assert tags[rules.TAG_DEAL_HEALTH].model_version == body["model"]["version"]
        rescue = session.query(Task).filter_by(entity_id=red["deal_id"], type=rules.TASK_RESCUE_DEAL).one()  # fmt: skip
        assert rescue.owner_id == 1
        log = session.query(PredictionLog).filter_by(request_id=body["request_id"]).one()
        assert log.source == "api" and log.score == pytest.approx(red["p_win"])
    again = api.post("/deal_health", json={"deal_id": red["deal_id"], "write_back": True}, headers=AUTH)  # fmt: skip
    assert again.json()["written_back"]["tasks"] == 0  # dedup key: no second rescue task


def test_write_back_of_raw_rows_without_ids_is_422(api, service):
    row = service.hub.online.tables["churn"].drop(columns="entity_id").iloc[0].to_dict()
    row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
    r = api.post("/churn", json={"features": row, "write_back": True}, headers=AUTH)
    assert r.status_code == 422 and r.json()["field"] == "customer_id"


def test_protect_reads_puts_scores_and_models_behind_the_token(api, service):
    service.settings.protect_reads = True
    try:
        assert api.post("/churn", json={"customer_id": 1}).status_code == 401
        assert api.get("/models").status_code == 401
        assert api.post("/churn", json={"customer_id": 1}, headers=AUTH).status_code == 200
        assert api.get("/models", headers=AUTH).status_code == 200
        assert api.get("/readyz").status_code == 200  # probes stay open
    finally:
        service.settings.protect_reads = False
    assert api.post("/churn", json={"customer_id": 1}).status_code == 200


# --- external ids (*_ref) --------------------------------------------------------------------------

REF_ROUTES = [  # route, id field, ref field, the CRM row the ref names
    ("/lead_score", "lead_id", "lead_ref", 11),
    ("/deal_health", "deal_id", "deal_ref", 31),
    ("/churn", "customer_id", "customer_ref", 41),
    ("/clv", "customer_id", "customer_ref", 42),
    ("/next_best_time", "contact_id", "contact_ref", 41),
]


@pytest.fixture(scope="module")
def refs(env):
    """CRM rows with external ids (ids the fake online store knows, plus lead 99 it does not)."""
    t = datetime(2026, 6, 1)
    stamps = {"created_at": t, "updated_at": t}
    with session_factory(env["crm"])() as session:
        session.add_all(
            [
                Contact(id=41, external_id="cust_000041", **stamps),
                Contact(id=42, external_id="cust 42/ä", **stamps),
                Lead(id=11, external_id="lead_000011", **stamps),
                Lead(id=12, external_id="lead_000012", **stamps),
                Lead(id=13, **stamps),
                Lead(id=99, external_id="lead_offline", **stamps),
                Deal(id=31, external_id="deal_000031", stage="propose", stage_entered_at=t, **stamps),
            ]
        )  # fmt: skip
        session.commit()
    return {11: "lead_000011", 12: "lead_000012", 31: "deal_000031", 41: "cust_000041", 42: "cust 42/ä"}  # fmt: skip


@pytest.mark.parametrize(("route", "id_field", "ref_field", "entity_id"), REF_ROUTES)
def test_every_endpoint_scores_by_external_id_as_by_id_and_answers_with_both(
    api, refs, route, id_field, ref_field, entity_id
):
    by_id = api.post(route, json={id_field: entity_id})
    by_ref = api.post(route, json={ref_field: refs[entity_id]})
    assert by_ref.status_code == 200, by_ref.text
    p = by_ref.json()["prediction"]
    assert p[id_field] == entity_id and p["external_id"] == refs[entity_id]
    assert {**p, "external_id": None} == by_id.json()["prediction"]
    other = {11: 12, 31: 31, 41: 42, 42: 41}[entity_id]
    batch = api.post(
        f"{route}/batch", json={f"{ref_field}s": [refs[other], refs[entity_id], refs[other]]}
    )
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert [x[id_field] for x in predictions] == [other, entity_id, other]
    assert [x["external_id"] for x in predictions] == [refs[other], refs[entity_id], refs[other]]


def test_unknown_refs_are_404_naming_the_refs_and_field(api, refs):
    r = api.post("/lead_score/batch", json={"lead_refs": ["lead_000011", "nope", "lead_000012", "nope"]})  # fmt: skip
    assert r.status_code == 404
    assert r.json() == {"error": "unknown lead_ref(s): nope", "field": "lead_refs", "status": 404}
    # a lead's id is not a deal's ref, nor a contact's
    r = api.post("/deal_health", json={"deal_ref": "lead_000011"})
    assert r.status_code == 404 and r.json()["field"] == "deal_ref"
    # in the CRM but without online features: still named by the ref the caller gave
    r = api.post("/lead_score", json={"lead_ref": "lead_offline"})
    assert r.status_code == 404
    assert r.json()["field"] == "lead_ref" and "lead_offline" in r.json()["error"]


@pytest.mark.parametrize(
    "payload",
    [
        {"lead_id": 11, "lead_ref": "lead_000011"},
        {"lead_ref": "lead_000011", "features": {"industry": "x"}},
    ],
)
def test_a_ref_beside_an_id_or_features_is_400_naming_both(api, refs, payload):
    r = api.post("/lead_score", json=payload)
    assert r.status_code == 400
    assert all(field in r.text for field in payload)


@pytest.mark.parametrize(
    ("route", "payload", "field"),
    [
        ("/lead_score", {"lead_ref": ""}, "lead_ref"),
        ("/lead_score", {"lead_ref": 11}, "lead_ref"),
        ("/lead_score", {"lead_ref": "x" * 101}, "lead_ref"),
        ("/lead_score", {"lead_ref": "lead\x00"}, "lead_ref"),
        ("/churn/batch", {"customer_refs": []}, "customer_refs"),
    ],
)
def test_malformed_refs_are_400_naming_the_field(api, route, payload, field):
    r = api.post(route, json=payload)
    assert r.status_code == 400, r.text
    assert field in str([e["loc"] for e in r.json()["detail"]])


def test_refs_over_max_batch_size_are_413_before_any_query(api, service, monkeypatch):
    monkeypatch.setattr(service.hub, "crm_engine", lambda: pytest.fail("queried the store"))
    r = api.post("/churn/batch", json={"customer_refs": [f"c{i}" for i in range(21)]})
    assert r.status_code == 413 and r.json()["field"] == "customer_refs"


def test_a_score_by_internal_id_makes_no_crm_store_query(api, service, refs, monkeypatch):
    """The hot path stays one online read: external_id is left null, not looked up."""
    monkeypatch.setattr(service.hub, "crm_engine", lambda: pytest.fail("queried the store"))
    r = api.post("/lead_score", json={"lead_id": 11})
    assert r.status_code == 200 and r.json()["prediction"]["external_id"] is None
    r = api.post("/lead_score/batch", json={"lead_ids": [11, 12]})
    assert [p["external_id"] for p in r.json()["predictions"]] == [None, None]


def test_write_back_by_id_answers_with_the_external_id_it_reads_anyway(api, refs):
    r = api.post("/lead_score/batch", json={"lead_ids": [12, 13, 11], "write_back": True}, headers=AUTH)  # fmt: skip
    assert r.status_code == 200, r.text
    assert [p["external_id"] for p in r.json()["predictions"]] == ["lead_000012", None, "lead_000011"]  # fmt: skip
    assert r.json()["written_back"]["predictions_logged"] == 3


def test_the_crm_store_down_makes_a_ref_request_503(api, service, refs, monkeypatch):
    from sqlalchemy import create_engine

    monkeypatch.setattr(service.hub, "crm_engine", lambda: create_engine("sqlite:////nonexistent/dir/crm.db"))  # fmt: skip
    r = api.post("/lead_score", json={"lead_ref": "lead_000011"})
    assert r.status_code == 503 and "CRM store" in r.json()["error"]


# --- operations ------------------------------------------------------------------------------------


def test_healthz_models_and_openapi(api, env):
    assert api.get("/healthz").json() == {"status": "ok"}
    models = api.get("/models").json()["models"]
    assert {m: s["version"] for m, s in models.items()} == {k: str(v) for k, v in env["versions"].items()}  # fmt: skip
    paths = api.get("/docs.json").json()["paths"]
    for route in ("/lead_score", "/deal_health", "/churn", "/clv", "/next_best_time"):
        assert route in paths and f"{route}/batch" in paths


def test_readyz_says_the_online_store_is_unreachable(api, service):
    service.hub.online.reachable = False
    try:
        r = api.get("/readyz")
        assert r.status_code == 503
        assert r.json()["online_store"]["status"] == "unreachable"
        assert all(m["status"] == "ready" for m in r.json()["models"].values())
        by_id = api.post("/lead_score", json={"lead_id": 1})
        assert by_id.status_code == 503 and "online store" in by_id.json()["error"]
    finally:
        service.hub.online.reachable = True
    assert api.get("/readyz").status_code == 200


def test_admin_reload_picks_up_a_new_champion_without_restart(api, env):
    assert api.post("/admin/reload").status_code == 401
    assert api.post("/admin/reload", headers={"Authorization": "Bearer x"}).status_code == 403
    register_models(env["client"], {"lead_scoring": "logistic"}, only=("lead_scoring",))
    before = api.post("/lead_score", json={"lead_id": 2}).json()["model"]["version"]
    r = api.post("/admin/reload", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["reloaded"]["lead_scoring"].startswith("loaded version")
    assert r.json()["reloaded"]["churn"].startswith("unchanged")
    after = api.post("/lead_score", json={"lead_id": 2, "explain": True}).json()
    assert int(after["model"]["version"]) == int(before) + 1
    assert after["prediction"]["reasons"]["method"] == "linear"


def test_service_starts_and_reports_when_mlflow_is_unreachable(api, service, env, tmp_path):
    """What ``CrmPredict.__init__`` does (build the hub, load) with MLflow and the store down."""
    from crm_predict.serving.hub import ModelHub

    broken = service.settings.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path}/missing/dir/mlflow.db"}
    )
    healthy = service.hub
    service.hub = ModelHub(broken, online=FakeOnline(reachable=False))
    try:
        service.hub.reload(force=True)  # never raises
        assert api.get("/healthz").status_code == 200
        r = api.get("/readyz")
        assert r.status_code == 503
        state = r.json()
        assert {m["status"] for m in state["models"].values()} == {"not_loaded"}
        assert all(m["error"] for m in state["models"].values())
        assert state["online_store"]["status"] == "unreachable"
        scored = api.post("/deal_health", json={"deal_id": 1})
        assert scored.status_code == 503 and "deal_health is not loaded" in scored.json()["error"]
        service.hub.settings = service.settings  # MLflow is back: the next reload recovers
        service.hub.online.reachable = True
        assert api.post("/admin/reload", headers=AUTH).status_code == 200
        assert api.get("/readyz").status_code == 200
    finally:
        service.hub.close()
        service.hub = healthy


def test_polling_picks_up_a_new_champion(env):
    from crm_predict.serving.hub import ModelHub

    settings = Settings(data_dir=env["root"] / "data", mlflow_tracking_uri=env["env"]["CRM_PREDICT_MLFLOW_TRACKING_URI"])  # fmt: skip
    hub = ModelHub(settings, online=FakeOnline())
    try:
        hub.reload(force=True)
        before = hub.models["churn"].version
        register_models(env["client"], {"churn": "xgboost"}, only=("churn",))
        hub.start_polling(0.2)
        for _ in range(200):  # ≤ 20 s
            if hub.models["churn"].version != before:
                break
            time.sleep(0.1)
        assert int(hub.models["churn"].version) == int(before) + 1
        assert hub.models["churn"].explainer.method == "xgboost_treeshap"
    finally:
        hub.close()


def test_review_pages_are_mounted_in_the_service(api):
    """The deal review UI is served by the same process as the API, at /review."""
    response = api.get("/review/")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


def test_the_service_keeps_its_loaded_heap_out_of_full_collections(api, env):
    """After start and after a reload the loaded objects sit in the permanent generation."""
    import gc

    assert gc.get_freeze_count() > 10_000
    before = gc.get_freeze_count()
    r = api.post("/admin/reload?force=true", headers=AUTH)
    assert r.status_code == 200, r.text
    assert gc.get_freeze_count() >= before


def test_warm_reads_each_loaded_models_features_once_and_never_raises(env):
    """The service opens the online store before freezing its heap (``ModelHub.warm``): one
    probe read per model that reads features; an unreachable store is left to readiness."""
    from crm_predict.serving.hub import ModelHub

    settings = Settings(data_dir=env["root"] / "data", mlflow_tracking_uri=env["env"]["CRM_PREDICT_MLFLOW_TRACKING_URI"])  # fmt: skip
    online = FakeOnline()
    hub = ModelHub(settings, online=online)
    try:
        hub.reload(force=True)
        hub.warm()
        assert online.reads == len([n for n in hub.models if n != "next_best_time"]) > 0
        online.reachable = False
        hub.warm()
    finally:
        hub.close()


def test_admin_reload_rereads_the_rules_file_and_refuses_a_bad_one(api, env):
    from pathlib import Path

    rules_file = Path(env["env"]["CRM_PREDICT_DATA_DIR"]) / "rules.yaml"
    rules_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        rules_file.write_text("lead:\n  mql_threshold: 5\n")
        r = api.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["rules"] == {"file": str(rules_file), "changed": True}
        rules_file.write_text("lead:\n  mql_threshold: many\n")
        bad = api.post("/admin/reload", headers=AUTH)
        assert bad.status_code == 422 and "lead.mql_threshold" in bad.text
    finally:
        rules_file.unlink(missing_ok=True)
    back = api.post("/admin/reload", headers=AUTH)
    assert back.status_code == 200 and back.json()["rules"]["changed"] is True  # the defaults again


def test_a_rules_file_with_other_lead_points_scores_them_in_the_response(api, service, env):
    """The response's rule points and MQL follow the loaded rules, as the write-back's tags do."""
    from pathlib import Path

    quiet = {**raw_lead_row(service), "industry": "retail", "is_decision_maker": 0}
    quiet |= {"lead_region": "south", "days_since_last_interaction": 3.0}
    rules_file = Path(env["env"]["CRM_PREDICT_DATA_DIR"]) / "rules.yaml"
    rules_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        rules_file.write_text("lead:\n  points_per_activity: {visit: 10}\n")
        assert api.post("/admin/reload", headers=AUTH).status_code == 200
        body = api.post("/lead_score", json={"features": quiet}).json()["prediction"]
        # 90 with the built-in 5 points a visit; the file's 10 a visit adds 6 × 5.
        assert (body["rule_points"], body["mql"]) == (120.0, True)
    finally:
        rules_file.unlink(missing_ok=True)
        api.post("/admin/reload", headers=AUTH)
    body = api.post("/lead_score", json={"features": quiet}).json()["prediction"]
    assert (body["rule_points"], body["mql"]) == (90.0, False)


def test_the_service_answers_one_customers_360_view_by_external_id(api, refs):
    found = api.get("/customers/cust_000041", headers=AUTH)
    assert found.status_code == 200, found.text
    assert found.json()["customer"]["id"] == 41
    missing = api.get("/customers/nobody-here", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["field"] == "ref"
