"""One customer on one page: profile, current tags with where they came from, open tasks, recent
activities and messages (with their intent and sentiment), orders, tickets, open deals with their
health, and the churn, CLV and contact-slot predictions the batch wrote as tags.

``customer_view`` reads it from the CRM store: one query per list, each by an indexed column
(the contact's id, its account's), newest first and at most ``RECENT`` rows. ``GET
/customers/{ref}`` (``routes``) answers it as JSON; the review app renders it as a page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from crm_predict.crm_store.models import (
    Account,
    Activity,
    Contact,
    Deal,
    Message,
    Order,
    Tag,
    Task,
    Ticket,
)
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_predict.core import rules as R
from crm_predict.core.errors import UserError
from crm_predict.core.messages import TAG_COMPLAINT, TAG_LATEST_INTENT, TAG_NEED_PRIORITY
from crm_predict.core.settings import Settings

RECENT = 20  # rows per list: what a reviewer reads, not an export
PROFILE = (
    "id", "external_id", "first_name", "last_name", "email", "phone", "role", "is_decision_maker",
    "region", "age_band", "membership_level", "points", "signup_at", "owner_id", "source",
    "created_at",
)  # fmt: skip
# Each list's columns, as the answer gives them.
COLUMNS = {
    "tasks": ("id", "type", "entity_type", "entity_id", "owner_id", "due_at", "sla_hours",
              "escalation_level", "reason"),
    "activities": ("id", "type", "category", "channel", "occurred_at", "responded", "deal_id"),
    "messages": ("id", "channel", "direction", "sent_at", "language", "text", "intent",
                 "sentiment", "deal_id", "ticket_id"),
    "orders": ("id", "ordered_at", "amount", "items", "channel"),
    "tickets": ("id", "opened_at", "closed_at", "priority", "sentiment", "subject"),
    "deals": ("id", "external_id", "name", "stage", "amount", "expected_close_at", "owner_id"),
}  # fmt: skip
# The contact's predictions: the tags the batch writes for it.
PREDICTION_TAGS = (
    R.TAG_CHURN_RISK, R.TAG_CHURN_WARNING, R.TAG_CLV, R.TAG_CLV_TIER, R.TAG_RFM_SEGMENT,
    R.TAG_BEST_SLOT, TAG_LATEST_INTENT, TAG_COMPLAINT, TAG_NEED_PRIORITY,
)  # fmt: skip
Live = Callable[[Session, Contact], dict[str, Any]]
T = TypeVar("T")


class UnknownCustomer(UserError):
    """No contact has this id or external id."""


def find_contact(session: Session, ref: str | int) -> Contact:
    """The contact with this external id or, failing that, this internal id (digits); an
    ``int`` is an internal id."""
    text = str(ref).strip()
    found = None
    if not isinstance(ref, int):
        found = session.scalars(select(Contact).where(Contact.external_id == text)).first()
    # A source's id wins over an internal id of the same digits.
    if found is None and text.isdigit() and len(text) < 19:
        found = session.get(Contact, int(text))
    if found is None:
        raise UnknownCustomer(f"no customer with id or external id {text!r}")
    return found


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _row(obj: Any, columns: Sequence[str]) -> dict[str, Any]:
    return {c: _plain(getattr(obj, c)) for c in columns}


def _recent(session: Session, model, where: ColumnElement[bool], *order) -> list:
    """At most ``RECENT`` rows of ``model`` matching ``where``, in ``order`` (then id, newest
    first: equal times keep one order)."""
    stmt = select(model).where(where).order_by(*order, model.id.desc()).limit(RECENT)
    return list(session.scalars(stmt))


def _tags(session: Session, entity_type: str, ids: list[int]) -> dict[int, dict[str, dict]]:
    """Current tags of the entities, with provenance: id → tag name → value and source."""
    if not ids:
        return {}
    rows = session.scalars(
        select(Tag).where(Tag.entity_type == entity_type, Tag.entity_id.in_(ids))
    )
    out: dict[int, dict[str, dict]] = {}
    for t in rows:
        out.setdefault(t.entity_id, {})[t.name] = {
            "value": t.value, "model": t.model_name, "version": t.model_version,
            "run_id": t.run_id, "scored_at": _plain(t.scored_at),
        }  # fmt: skip
    return out


def customer_view(session: Session, ref: str | int, live: Live | None = None) -> dict[str, Any]:
    """Everything the store knows and the models wrote about one customer (module docstring).
    ``live``: scores the caller computes now (say, from online features), shown beside the
    batch's tags under ``predictions.live``."""
    contact = find_contact(session, ref)
    cid = contact.id
    account = session.get(Account, contact.account_id) if contact.account_id else None
    mine = Deal.contact_id == cid
    if account is not None:
        mine = or_(mine, Deal.account_id == account.id)
    deals = _recent(session, Deal, and_(mine, Deal.outcome.is_(None)), Deal.created_at.desc())
    deal_ids = [d.id for d in deals]
    on_me = and_(Task.entity_type == "contact", Task.entity_id == cid)
    if deal_ids:
        on_me = or_(on_me, and_(Task.entity_type == "deal", Task.entity_id.in_(deal_ids)))
    lists = {
        "tasks": _recent(session, Task, and_(Task.status == "open", on_me), Task.due_at),
        "activities": _recent(
            session, Activity, Activity.contact_id == cid, Activity.occurred_at.desc()
        ),  # fmt: skip
        "messages": _recent(session, Message, Message.contact_id == cid, Message.sent_at.desc()),
        "orders": _recent(session, Order, Order.contact_id == cid, Order.ordered_at.desc()),
        "tickets": _recent(session, Ticket, Ticket.contact_id == cid, Ticket.opened_at.desc()),
    }
    count, total = session.execute(
        select(func.count(Order.id), func.coalesce(func.sum(Order.amount), 0.0)).where(
            Order.contact_id == cid
        )
    ).one()
    tags = _tags(session, "contact", [cid]).get(cid, {})
    deal_tags = _tags(session, "deal", deal_ids)
    message_tags = _tags(session, "message", [m.id for m in lists["messages"]])
    view = {name: [_row(r, COLUMNS[name]) for r in rows] for name, rows in lists.items()}
    for message in view["messages"]:
        message["tags"] = message_tags.get(message["id"], {})
    return {
        "customer": {
            **_row(contact, PROFILE),
            "account": None
            if account is None
            else _row(account, ("id", "external_id", "name", "industry")),  # fmt: skip
        },
        "predictions": {
            **{name: tags.get(name, {}).get("value") for name in PREDICTION_TAGS},
            "live": live(session, contact) if live is not None else None,
        },
        "tags": tags,
        "open_tasks": view["tasks"],
        "activities": view["activities"],
        "messages": view["messages"],
        "orders": {"count": int(count), "total": float(total), "recent": view["orders"]},
        "tickets": view["tickets"],
        "open_deals": [
            {
                **_row(d, COLUMNS["deals"]),
                "health": deal_tags.get(d.id, {}).get(R.TAG_DEAL_HEALTH, {}).get("value"),
                "colour": deal_tags.get(d.id, {}).get(R.TAG_DEAL_COLOUR, {}).get("value"),
            }
            for d in deals
        ],
    }


def customer_routes(
    sessions: Callable[[], sessionmaker[Session]] | None = None,
    live: Live | None = None,
    guard: Callable[[Request], object] | None = None,
) -> list[Route]:
    """``GET /customers/{ref}``: the view as JSON, 404 naming an unknown id. ``sessions`` runs
    once, on the first request (default: the settings' CRM store); ``guard`` sees each request
    first (a host's token check raises its own error)."""
    factory = once(sessions or (lambda: settings_sessions(Settings())))

    def customer(request: Request) -> JSONResponse:  # sync: Starlette runs it in a thread
        if guard is not None:
            guard(request)
        with factory()() as session:
            try:
                return JSONResponse(customer_view(session, request.path_params["ref"], live))
            except UnknownCustomer as exc:
                return JSONResponse({"detail": str(exc), "field": "ref"}, status_code=404)

    return [Route("/customers/{ref}", customer, methods=["GET"], name="customer_json")]


def once(make: Callable[[], T]) -> Callable[[], T]:
    """``make()`` on the first call (under a lock: concurrent first requests build one), then the
    same value on every call."""
    lock, made = threading.Lock(), []

    def get() -> T:
        with lock:
            if not made:
                made.append(make())
            return made[0]

    return get


def settings_sessions(settings: Settings) -> sessionmaker[Session]:
    """Sessions of the settings' CRM store."""
    from crm_predict.crm_store.db import make_engine, session_factory

    return session_factory(make_engine(settings.crm_url))


# For a host app (the BentoML service); building them reads nothing.
routes = customer_routes()
