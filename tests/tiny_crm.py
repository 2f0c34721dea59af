"""A hand-built CRM store small enough that every KPI over it is known exactly (see test_kpis.py).

Seven deals (three won, one lost, three open), five leads from three sources, four customers, two
owners; "now" is ``AS_OF``. Numbers each test relies on are spelled out beside the rows.
"""

from __future__ import annotations

from datetime import datetime

from crm_predict.crm_store.models import Contact, Deal, DealStageHistory, Lead, Order, Tag, User
from sqlalchemy.orm import Session

AS_OF = datetime(2026, 6, 30)


def d(month: int, day: int, year: int = 2026) -> datetime:
    return datetime(year, month, day)


def build_tiny_crm(session: Session) -> None:
    """Write the tiny store and commit."""
    session.add_all([User(id=1, name="Ann"), User(id=2, name="Bob")])
    session.flush()
    session.add_all(
        [
            Contact(id=i, first_name=f"c{i}", created_at=d(1, 1), updated_at=d(1, 1))
            for i in range(1, 6)
        ]
    )
    session.flush()
    leads = [
        # id, contact, source, status, created, converted
        (1, 1, "web", "new", d(1, 10), d(1, 20)),  # → deal 1, won
        (2, 2, "web", "qualified", d(2, 1), None),  # qualified, no deal
        (3, 3, "referral", "new", d(3, 1), d(3, 5)),  # → deal 2, lost
        (4, 4, "referral", "new", d(4, 1), None),  # contact 4 orders after it
        (5, None, "ads", "disqualified", d(5, 1), None),
    ]
    session.add_all(
        [
            Lead(
                id=i,
                contact_id=c,
                source=s,
                status=st,
                created_at=at,
                converted_at=conv,
                updated_at=at,
            )
            for i, c, s, st, at, conv in leads
        ]
    )
    session.flush()
    deals = [
        # id, lead, contact, owner, amount, stage, created, closed, outcome, expected close
        (1, 1, 1, 1, 1000.0, "closed_won", d(1, 20), d(3, 1), "won", None),  # 40 days
        (2, 3, 3, 2, 500.0, "closed_lost", d(3, 5), d(4, 4), "lost", None),
        (3, None, 2, 1, 3000.0, "closed_won", d(2, 1), d(2, 11), "won", None),  # 10 days
        (7, None, None, 2, 600.0, "closed_won", d(12, 1, 2025), d(1, 30), "won", None),  # 60 days
        (4, None, None, 2, 2000.0, "proposal", d(5, 1), None, None, d(7, 31)),  # health tag 75
        (5, None, None, 1, 1000.0, "qualification", d(6, 1), None, None, d(8, 15)),
        (6, None, None, 1, 9999.0, "proposal", d(5, 1), None, None, d(12, 31)),  # beyond 90 days
    ]
    session.add_all(
        [
            Deal(
                id=i, lead_id=lead, contact_id=c, owner_id=o, amount=a, stage=st, name=f"deal {i}",
                stage_entered_at=cr, created_at=cr, closed_at=cl, outcome=out,
                expected_close_at=exp, updated_at=cl or cr,
            )
            for i, lead, c, o, a, st, cr, cl, out, exp in deals
        ]
    )  # fmt: skip
    session.flush()
    history = {
        1: [("qualification", d(1, 20)), ("proposal", d(2, 1)), ("negotiation", d(2, 15)),
            ("closed_won", d(3, 1))],
        2: [("qualification", d(3, 5)), ("proposal", d(3, 20)), ("closed_lost", d(4, 4))],
        3: [("qualification", d(2, 1)), ("proposal", d(2, 5)), ("closed_won", d(2, 11))],
        7: [("qualification", d(12, 1, 2025)), ("proposal", d(1, 5)), ("closed_won", d(1, 30))],
        4: [("qualification", d(5, 1)), ("proposal", d(5, 20))],
        5: [("qualification", d(6, 1))],
        6: [("qualification", d(5, 1)), ("proposal", d(5, 10))],
    }  # fmt: skip
    session.add_all(
        [
            DealStageHistory(deal_id=deal_id, stage=stage, entered_at=at)
            for deal_id, rows in history.items()
            for stage, at in rows
        ]
    )
    orders = [
        (1, d(3, 10), 200.0),
        (1, d(5, 10), 300.0),
        (4, d(4, 15), 100.0),
        (5, d(6, 15, 2025), 400.0),
    ]
    session.add_all(
        [
            Order(contact_id=c, ordered_at=at, amount=a, items=1, created_at=at)
            for c, at, a in orders
        ]
    )
    session.add(
        Tag(
            entity_type="deal", entity_id=4, name="deal_health", value="75",
            model_name="deal_health", model_version="3", run_id="r1", scored_at=AS_OF,
        )
    )  # fmt: skip
    session.commit()
