"""The 360° view of one customer: found by internal or external id, every list newest first and
bounded, tags with their provenance, the deals' health, and ``GET /customers/{ref}`` answering
JSON or a 404 that names the id; the review app's customer page renders the same view."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import (
    Account,
    Activity,
    Contact,
    Deal,
    Message,
    Order,
    Tag,
    Ticket,
)
from crm_predict.crm_store.repository import create_tasks
from crm_predict.serving import customer360 as C
from crm_predict.serving.review import ReviewContext, create_app
from starlette.applications import Starlette
from starlette.testclient import TestClient

from crm_predict.core.rules import TaskSpec

NOW = datetime(2026, 6, 30, 12, 0)


def _tag(entity_type, entity_id, name, value, model="churn"):
    return Tag(
        entity_type=entity_type, entity_id=entity_id, name=name, value=value, model_name=model,
        model_version="4", run_id="run-1", scored_at=NOW,
    )  # fmt: skip


@pytest.fixture
def sessions(tmp_path):
    """Customer 1 (external id C-7) at account 10 with two deals, 25 messages, 3 orders, a
    ticket, tags and tasks; customer 2's external id is the text "1"."""
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    factory = session_factory(engine)
    with factory() as s:
        s.add(Account(id=10, name="Acme", created_at=NOW, updated_at=NOW))
        s.flush()
        s.add_all(
            [
                Contact(id=1, external_id="C-7", first_name="Wei", last_name="Li", account_id=10,
                        email="wei@acme.example", created_at=NOW, updated_at=NOW),
                Contact(id=2, external_id="1", first_name="Ana", created_at=NOW, updated_at=NOW),
            ]
        )  # fmt: skip
        s.flush()
        deal = dict(stage="proposal", stage_entered_at=NOW, created_at=NOW, updated_at=NOW)
        s.add_all(
            [
                Deal(id=5, name="Acme renewal", account_id=10, amount=900.0, **deal),
                Deal(id=6, name="Acme won", contact_id=1, outcome="won", closed_at=NOW, **deal),
                Deal(id=7, name="Ana's", contact_id=2, **deal),
            ]
        )
        s.flush()
        s.add_all(
            [
                Message(contact_id=1, deal_id=5 if i % 2 else None, channel="wechat",
                        direction="inbound", sent_at=NOW - timedelta(days=i), language="zh",
                        text=f"报价 {i}", intent="quote_request", sentiment="hesitant",
                        created_at=NOW)
                for i in range(25)
            ]
            + [Message(contact_id=2, channel="email", direction="inbound", sent_at=NOW,
                       text="not Wei's", created_at=NOW)]
            + [Order(contact_id=1, ordered_at=NOW - timedelta(days=i), amount=10.0 * (i + 1),
                     created_at=NOW) for i in range(3)]
            + [Activity(contact_id=1, type="call", channel="phone", occurred_at=NOW,
                        created_at=NOW, responded=True)]
            + [Ticket(contact_id=1, opened_at=NOW, priority="P1", subject="Login fails")]
            + [_tag("contact", 1, "churn_risk", "high"),
               _tag("contact", 1, "clv_3y", "1234.5", "clv"),
               _tag("contact", 1, "best_contact_slot", "Tue 10:00", "next_best_time"),
               _tag("contact", 2, "churn_risk", "low"),
               _tag("deal", 5, "deal_health", "42", "deal_health"),
               _tag("deal", 5, "deal_health_colour", "red", "deal_health")]
        )  # fmt: skip
        create_tasks(
            s,
            [
                TaskSpec("retention", "contact", 1, None, NOW, 24, "High churn risk", period="a"),
                TaskSpec("rescue_deal", "deal", 5, None, NOW, 48, "Deal health is red", period="b"),
                TaskSpec("retention", "contact", 2, None, NOW, 24, "Ana's task", period="c"),
            ],
            NOW,
        )
        s.commit()
    yield factory
    engine.dispose()


def test_find_contact_by_external_id_first_then_internal_id(sessions):
    with sessions() as s:
        assert C.find_contact(s, "C-7").id == 1
        assert C.find_contact(s, " 1 ").id == 2  # "1" is customer 2's source id
        assert C.find_contact(s, 1).id == 1  # an int is an internal id
        for ref in ("C-8", "99", "", "9" * 30):
            with pytest.raises(C.UnknownCustomer):
                C.find_contact(s, ref)


def test_view_lists_only_this_customer_newest_first_and_bounded(sessions):
    with sessions() as s:
        view = C.customer_view(s, "C-7")
    assert (
        view["customer"]["external_id"] == "C-7" and view["customer"]["account"]["name"] == "Acme"
    )
    messages = view["messages"]
    assert len(messages) == C.RECENT and {m["text"] for m in messages} == {f"报价 {i}" for i in range(20)}  # fmt: skip
    assert [m["sent_at"] for m in messages] == sorted((m["sent_at"] for m in messages), reverse=True)  # fmt: skip
    assert (messages[0]["intent"], messages[0]["sentiment"]) == ("quote_request", "hesitant")
    assert view["orders"]["count"] == 3 and view["orders"]["total"] == 60.0
    assert [o["amount"] for o in view["orders"]["recent"]] == [10.0, 20.0, 30.0]
    assert [t["subject"] for t in view["tickets"]] == ["Login fails"]
    assert [a["type"] for a in view["activities"]] == ["call"]
    # The account's open deal, not the closed one, with the batch's health.
    assert [(d["id"], d["health"], d["colour"]) for d in view["open_deals"]] == [(5, "42", "red")]
    assert sorted(t["reason"] for t in view["open_tasks"]) == ["Deal health is red", "High churn risk"]  # fmt: skip


def test_view_carries_the_batchs_predictions_with_provenance_and_live_scores(sessions):
    with sessions() as s:
        view = C.customer_view(s, 1, live=lambda session, contact: {"p_churn": 0.8 + contact.id})
    predictions = view["predictions"]
    assert (predictions["churn_risk"], predictions["clv_3y"]) == ("high", "1234.5")
    assert predictions["best_contact_slot"] == "Tue 10:00" and predictions["latest_intent"] is None
    assert predictions["live"] == {"p_churn": 1.8}
    assert view["tags"]["clv_3y"] == {
        "value": "1234.5", "model": "clv", "version": "4", "run_id": "run-1",
        "scored_at": NOW.isoformat(),
    }  # fmt: skip


def test_customer_route_answers_json_and_404_naming_the_id(sessions):
    app = Starlette(routes=C.customer_routes(lambda: sessions))
    client = TestClient(app)
    answer = client.get("/customers/C-7")
    assert answer.status_code == 200 and answer.json()["customer"]["id"] == 1
    assert client.get("/customers/2").json()["predictions"]["churn_risk"] == "low"
    missing = client.get("/customers/nobody")
    assert missing.status_code == 404
    assert missing.json() == {
        "detail": "no customer with id or external id 'nobody'",
        "field": "ref",
    }


def test_customer_route_asks_the_guard_first(sessions):
    def guard(request):
        if request.headers.get("authorization") != "Bearer t":
            raise PermissionError("no token")

    client = TestClient(Starlette(routes=C.customer_routes(lambda: sessions, guard=guard)))
    with pytest.raises(PermissionError):
        client.get("/customers/C-7")
    assert client.get("/customers/C-7", headers={"authorization": "Bearer t"}).status_code == 200


def test_review_customer_page_renders_the_view_and_404s_an_unknown_id(sessions, tmp_path):
    from mlflow import MlflowClient

    empty = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    app = create_app(lambda: ReviewContext(sessions, empty, lambda ids: None))
    client = TestClient(app)
    html = client.get("/customers/C-7").text
    assert "<h1>Wei Li</h1>" in html and "Acme" in html
    assert html.count("<td>wechat</td>") == C.RECENT and "<td>quote_request</td>" in html
    assert '<td>high</td><td class="num">1,234</td>' in html
    assert 'href="http://testserver/deals/5"' in html and 'class="badge red">42<' in html
    assert "<td>churn_risk</td><td>high</td><td>churn</td><td>4</td>" in html
    assert client.get("/customers/nobody").status_code == 404
