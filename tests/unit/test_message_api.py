"""``POST /message_intent`` in process (BentoML's ASGI app under Starlette's TestClient): single
and batch readings with keywords and reasons, every bad text a 4xx naming its field with nothing
scored, and a service that starts and stays ready without a message_intent champion."""

from __future__ import annotations

import json
from datetime import datetime

import mlflow
import pandas as pd
import pytest
from crm_predict.crm_store.demo_messages import generate_messages
from crm_predict.training import message_intent as mi
from mlflow import MlflowClient
from serving_models import FakeOnline, register_models

from crm_predict.core.tracking import CHAMPION

QUOTE = "Could you send a quote for 100 seats? Thanks, great team."
BROKEN = "系统升级之后就打不开了，太让人失望了。"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The five toy champions and a small trained message_intent champion in one sqlite store."""
    root = tmp_path_factory.mktemp("message_api")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    register_models(client)
    frame = generate_messages(1200, 5, datetime(2025, 1, 1), datetime(2025, 7, 1))
    trained = mi.train(client, mi.prepare(frame), n_trials=1, lexicons=False)
    client.set_registered_model_alias("message_intent", CHAMPION, trained.version)
    values = {
        "CRM_PREDICT_DATA_DIR": str(root / "data"),
        "CRM_PREDICT_MLFLOW_TRACKING_URI": uri,
        "CRM_PREDICT_DATABASE_URL": f"sqlite:///{root / 'crm.db'}",
        "CRM_PREDICT_API_TOKEN": "token",
        "CRM_PREDICT_MAX_BATCH_SIZE": "20",
    }
    yield {"client": client, "version": trained.version, "env": values, "uri": uri}
    mlflow.set_tracking_uri(None)


def test_one_message_gets_intent_sentiment_language_keywords_and_reasons(api, env):
    r = api.post("/message_intent", json={"text": QUOTE, "id": "msg-7"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {**body["model"], "name": "message_intent", "alias": "champion", "version": env["version"]}  # fmt: skip
    p = body["prediction"]
    assert (p["id"], p["language"], p["intent"], p["sentiment"]) == ("msg-7", "en", "quote_request", "satisfied")  # fmt: skip
    assert 0.25 < p["intent_p"] <= 1 and 0.33 < p["sentiment_p"] <= 1
    assert "price" in p["topics"]
    assert {"term": "quote", "topic": "price"} in p["keywords"]
    for head in ("intent", "sentiment"):
        terms = p["reasons"][head]
        assert terms and all(t["weight"] > 0 for t in terms)
        assert [t["weight"] for t in terms] == sorted((t["weight"] for t in terms), reverse=True)
        assert all(t["term"] in QUOTE.lower() for t in terms)
    model_terms = [k["term"] for k in p["keywords"] if k["topic"] is None]
    assert model_terms and set(model_terms) <= {t["term"] for t in p["reasons"]["intent"]}
    # need priority: the quote weight (0.9) × the intent's probability, not raised (satisfied)
    assert p["need_priority"] == round(100 * 0.9 * p["intent_p"])
    from crm_predict.serving import schemas as S

    assert r.content == S.Single[S.MessageIntent].model_validate(body).model_dump_json().encode()


def test_a_batch_answers_in_request_order_as_single_requests_do(api):
    messages = [{"text": BROKEN, "id": 3}, {"text": QUOTE}, {"text": BROKEN, "id": 1}]
    r = api.post("/message_intent/batch", json={"messages": messages})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [p["id"] for p in predictions] == [3, None, 1]
    assert [p["language"] for p in predictions] == ["zh", "en", "zh"]
    assert predictions[0]["intent"] == "after_sales_support"
    assert predictions[0]["sentiment"] == "complaining"
    single = api.post("/message_intent", json={"text": BROKEN, "id": 3}).json()["prediction"]
    assert predictions[0] == {**single, "intent_p": pytest.approx(single["intent_p"])}
    assert all(t["term"] in BROKEN for t in predictions[0]["reasons"]["intent"])


def test_the_api_reads_a_message_as_the_registered_model_does(api, env):
    model = mlflow.pyfunc.load_model(f"models:/message_intent/{env['version']}")
    texts = [QUOTE, BROKEN, "Does SalesBox support single sign-on with our ERP?"]
    expected = model.predict(pd.DataFrame({"text": texts}))
    r = api.post("/message_intent/batch", json={"messages": [{"text": t} for t in texts]})
    got = pd.DataFrame(r.json()["predictions"])
    assert got["intent"].tolist() == expected["intent"].tolist()
    assert got["sentiment"].tolist() == expected["sentiment"].tolist()
    assert got["intent_p"].tolist() == pytest.approx(expected["intent_p"].tolist())


BAD_TEXTS = [
    ("", "empty"),
    ("   \n ", "empty"),
    ("quote " * 200_000, "at most 20,000"),  # 1.2 MB
    ("price?\x00\x01\x02", "control characters"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00".decode("latin-1") * 20, "control characters"),
    (b"\xff\xfe\xfa\xfb".decode("utf-8", errors="replace") * 30, "undecodable"),
    ("Привет, сколько стоит лицензия?", "no language the model reads"),
    ("1234 5678 !!!", "no language the model reads"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TEXTS, ids=[m for _, m in BAD_TEXTS])
def test_a_bad_text_is_422_naming_the_field_and_nothing_is_scored(api, service, text, message):
    batcher = service.hub.batchers["message_intent"]
    scored_before = len(batcher.batch_sizes)
    r = api.post("/message_intent", json={"text": text})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "text" and message in r.json()["error"]
    r = api.post("/message_intent/batch", json={"messages": [{"text": QUOTE}, {"text": text}]})
    assert r.status_code == 422
    assert r.json()["field"] == "messages[1].text" and message in r.json()["error"]
    assert len(batcher.batch_sizes) == scored_before


@pytest.mark.parametrize(
    ("route", "payload", "field"),
    [
        ("/message_intent", {"text": 42}, "text"),
        ("/message_intent", {"text": ["a", "b"]}, "text"),
        ("/message_intent", {"txt": "price?"}, "txt"),
        ("/message_intent", {"text": "price?", "write_back": True}, "write_back"),
        ("/message_intent", {"text": "price?", "id": 2**70}, "id"),
        ("/message_intent/batch", {"messages": []}, "messages"),
        ("/message_intent/batch", {"messages": [{"text": "price?", "lang": "en"}]}, "lang"),
        ("/message_intent/batch", {"text": "price?"}, "messages"),
    ],
)
def test_wrong_shapes_are_400_naming_the_field(api, route, payload, field):
    r = api.post(route, json=payload)
    assert r.status_code == 400, r.text
    assert field in str([e["loc"] for e in r.json()["detail"]])


def test_bytes_that_are_not_utf8_json_are_4xx(api):
    for body in (b'{"text": "\xff\xfe\x00 binary"}', b"\x89PNG\r\n\x1a\n", b"not json"):
        r = api.post("/message_intent", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (body, r.status_code)


def test_a_batch_over_max_batch_size_is_413_naming_the_field(api):
    r = api.post("/message_intent/batch", json={"messages": [{"text": QUOTE}] * 21})
    assert r.status_code == 413 and r.json()["field"] == "messages"


def test_models_readyz_and_openapi_show_the_message_model(api, env):
    models = api.get("/models").json()
    assert models["text_models"]["message_intent"]["version"] == env["version"]
    assert "message_intent" not in models["models"]  # the five tabular models, as before
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["text_models"]["message_intent"]["status"] == "ready"
    paths = api.get("/docs.json").json()["paths"]
    assert "/message_intent" in paths and "/message_intent/batch" in paths


def test_without_a_message_champion_the_service_is_ready_and_the_route_is_503(api, service, env):
    """What ``CrmPredict.__init__`` does (build the hub, load) when message_intent has no
    champion: the five serve, readiness says why the message model is absent."""
    from crm_predict.serving.hub import ModelHub

    client = env["client"]
    client.delete_registered_model_alias("message_intent", CHAMPION)
    healthy = service.hub
    service.hub = ModelHub(service.settings, online=FakeOnline())
    try:
        service.hub.reload(force=True)  # never raises
        r = api.get("/readyz")
        assert r.status_code == 200, r.text
        absent = r.json()["text_models"]["message_intent"]
        assert absent["status"] == "not_loaded" and "champion" in absent["error"]
        assert api.post("/lead_score", json={"lead_id": 1}).status_code == 200
        r = api.post("/message_intent", json={"text": QUOTE})
        assert r.status_code == 503 and "message_intent is not loaded" in r.json()["error"]
        # a champion appears: the next reload serves it without a restart
        client.set_registered_model_alias("message_intent", CHAMPION, env["version"])
        assert service.hub.reload()["message_intent"].startswith("loaded version")
        assert api.post("/message_intent", json={"text": QUOTE}).status_code == 200
    finally:
        client.set_registered_model_alias("message_intent", CHAMPION, env["version"])
        service.hub.close()
        service.hub = healthy


def test_a_lone_surrogate_is_never_a_server_error(api):
    """JSON may carry ``\\ud800`` escaped; the text checks and the answer's encoding hold."""
    for payload in ({"text": QUOTE, "id": "\ud800"}, {"text": "quote \ud800 price please"}):
        body = json.dumps(payload).encode()
        r = api.post("/message_intent", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code < 500, (payload, r.status_code, r.text)
