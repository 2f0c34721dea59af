"""A tiny, hand-written CRM for the features tests: every expected value can be worked out by hand."""

from __future__ import annotations

from datetime import datetime, timedelta

from crm_predict.crm_store.models import (
    Account,
    Activity,
    Contact,
    Deal,
    DealStageHistory,
    Lead,
    Order,
    Ticket,
    User,
)
from sqlalchemy.orm import Session

AS_OF = datetime(2026, 6, 30)
D = datetime


def build_crm(session: Session) -> None:
    """Accounts, contacts, leads, deals, activities, orders and tickets ending at ``AS_OF``."""
    session.add(User(id=1, name="Owner", region="north"))
    session.add_all(
        [
            Account(
                id=1,
                name="Acme",
                industry="software",
                size_band="51-200",
                region="north",
                created_at=D(2024, 1, 1),
                updated_at=D(2024, 1, 1),
            ),  # fmt: skip
            Account(
                id=2,
                name="Shop",
                industry="retail",
                size_band="1-10",
                region="south",
                created_at=D(2024, 1, 1),
                updated_at=D(2024, 1, 1),
            ),  # fmt: skip
        ]
    )
    contact = dict(created_at=D(2024, 6, 1), updated_at=D(2024, 6, 1))
    session.add_all(
        [
            Contact(
                id=1,
                account_id=1,
                role="cto",
                is_decision_maker=True,
                gender="female",
                region="north",
                **contact,
            ),  # fmt: skip
            Contact(
                id=2,
                account_id=2,
                role="buyer",
                is_decision_maker=False,
                gender="male",
                region="south",
                **contact,
            ),  # fmt: skip
            Contact(
                id=3, gender="female", age_band="25-34", region="east", source="web", **contact
            ),  # fmt: skip
            Contact(id=4, gender="male", age_band="35-44", region="west", source="app", **contact),
            Contact(id=5, region="north", **contact),
        ]
    )
    session.flush()
    lead = dict(owner_id=1, updated_at=AS_OF)
    session.add_all(
        [
            # t = Jan 8; converted within 90 days: label 1.
            Lead(
                id=1,
                contact_id=1,
                account_id=1,
                source="web_form",
                region="north",
                status="converted",
                created_at=D(2026, 1, 1),
                converted_at=D(2026, 2, 1),
                **lead,
            ),  # fmt: skip
            # t = Jan 17; never converted, window complete: label 0.
            Lead(
                id=2,
                contact_id=2,
                account_id=2,
                source="event",
                region="south",
                status="open",
                created_at=D(2026, 1, 10),
                **lead,
            ),  # fmt: skip
            # t = Jun 27; window still open at AS_OF: no label, but active now.
            Lead(
                id=3,
                contact_id=5,
                source="web_form",
                region="north",
                status="new",
                created_at=D(2026, 6, 20),
                **lead,
            ),  # fmt: skip
            # converted before its prediction time (Mar 8): dropped.
            Lead(
                id=4,
                contact_id=1,
                account_id=1,
                source="referral",
                region="north",
                status="converted",
                created_at=D(2026, 3, 1),
                converted_at=D(2026, 3, 5),
                **lead,
            ),  # fmt: skip
        ]
    )
    session.flush()
    deal = dict(owner_id=1, updated_at=AS_OF)
    session.add_all(
        [
            Deal(
                id=1,
                account_id=1,
                contact_id=1,
                lead_id=1,
                amount=1000.0,
                stage="closed_won",
                stage_entered_at=D(2026, 4, 1),
                close_date_slips=1,
                created_at=D(2026, 2, 1),
                closed_at=D(2026, 4, 1),
                outcome="won",
                **deal,
            ),  # fmt: skip
            Deal(
                id=2,
                account_id=1,
                contact_id=1,
                amount=3000.0,
                stage="proposal",
                stage_entered_at=D(2026, 6, 1),
                created_at=D(2026, 3, 1),
                **deal,
            ),  # fmt: skip
            Deal(
                id=3,
                account_id=1,
                contact_id=1,
                amount=500.0,
                stage="closed_lost",
                stage_entered_at=D(2025, 12, 1),
                created_at=D(2025, 10, 1),
                closed_at=D(2025, 12, 1),
                outcome="lost",
                **deal,
            ),  # fmt: skip
        ]
    )
    session.flush()
    acts = [
        # Lead 1 before its prediction time (Jan 8) ...
        Activity(lead_id=1, contact_id=1, type="site_visit", occurred_at=D(2026, 1, 5, 9)),
        Activity(lead_id=1, contact_id=1, type="pricing_page_view", occurred_at=D(2026, 1, 7, 9)),
        # ... and a burst after it, which must never reach lead 1's training row.
        *(
            Activity(lead_id=1, contact_id=1, type="site_visit", occurred_at=D(2026, 1, 20 + i, 9))
            for i in range(5)
        ),  # fmt: skip
        # Contact-level activity without a lead: counts for the contact's leads (lead 2).
        Activity(contact_id=2, type="whitepaper_download", occurred_at=D(2026, 1, 15, 14)),
        # Deal activity.
        Activity(deal_id=1, contact_id=1, type="call", occurred_at=D(2026, 2, 18, 10)),
        Activity(deal_id=2, contact_id=1, type="meeting", occurred_at=D(2026, 6, 25, 10)),
        # Customer 3 responds on Tuesdays 10:00 (three times) and once on a Friday 15:00.
        *(
            Activity(
                contact_id=3,
                type="email_open",
                channel="email",
                responded=True,
                occurred_at=D(2026, 5, 5, 10) + timedelta(weeks=i),
            )
            for i in range(3)
        ),  # fmt: skip
        Activity(
            contact_id=3,
            type="call",
            channel="phone",
            responded=True,
            occurred_at=D(2026, 5, 8, 15),
        ),  # fmt: skip
        Activity(
            contact_id=3,
            type="email_open",
            channel="email",
            responded=False,
            occurred_at=D(2026, 5, 9, 3),
        ),  # fmt: skip
    ]
    for a in acts:
        a.created_at = a.occurred_at
    session.add_all(acts)
    session.add_all(
        [
            DealStageHistory(
                deal_id=1,
                stage="qualification",
                entered_at=D(2026, 2, 1),
                expected_close_at=D(2026, 3, 15),
            ),  # fmt: skip
            DealStageHistory(
                deal_id=1,
                stage="proposal",
                entered_at=D(2026, 2, 15),
                expected_close_at=D(2026, 4, 1),
            ),  # fmt: skip
            DealStageHistory(
                deal_id=1,
                stage="closed_won",
                entered_at=D(2026, 4, 1),
                expected_close_at=D(2026, 4, 1),
            ),  # fmt: skip
            Ticket(deal_id=1, account_id=1, contact_id=1, opened_at=D(2026, 2, 10), sentiment=-0.5),
            Ticket(account_id=1, contact_id=1, opened_at=D(2026, 2, 12), sentiment=0.5),
        ]
    )
    orders = [(3, D(2025, 1, 5), 100.0), (3, D(2025, 3, 10), 50.0), (3, D(2025, 6, 1), 70.0), (3, D(2026, 1, 15), 200.0), (3, D(2026, 5, 1), 80.0), (4, D(2025, 2, 1), 40.0)]  # fmt: skip
    session.add_all(Order(contact_id=c, ordered_at=t, amount=a, items=1, created_at=t) for c, t, a in orders)  # fmt: skip
    session.commit()
