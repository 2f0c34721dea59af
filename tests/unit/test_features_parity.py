"""Train/serve parity of the feature tables and the batch's rule context on a seeded random CRM:
the batch's one-time lookup equals the training sources' join, categorical text equals object
text, the columns a batch loads are all it reads, and plain per-entity loops agree."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from crm_predict.crm_store.mapping import DEFAULT_CATEGORY_OF
from crm_predict.features import rule_context as rc
from crm_predict.features import transforms as tf
from crm_predict.features.definitions import ENTITIES
from crm_predict.features.export import compute_views
from crm_predict.features.labels import active_rows
from crm_predict.features.scoring import scoring_frame
from crm_predict.serving import batch

from crm_predict.core.rules import MODEL_NAMES, rule_based_lead_score
from crm_predict.core.settings import Settings

AT = datetime(2026, 6, 30, 2)
TYPES = ["site_visit", "Site_Visit", "pricing_page_view", "whitepaper_download", "trial_request",
         "email_open", "email_click", "call", "ebook_portal", None]  # fmt: skip


def random_crm(seed: int = 7) -> dict[str, pd.DataFrame]:
    """A small CRM with the snapshot's dtypes: float ids with NaN, object text with None, flags
    as Python bools and None, and events after ``AT`` that no feature may see."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-01")

    def stamps(n: int, days: int = 600) -> pd.Series:
        return start + pd.to_timedelta(rng.integers(0, days * 24 * 3600, n), unit="s")

    def some(values, n: int, blank: float = 0.1) -> list:
        picked = rng.choice(np.array(values, dtype=object), n)
        return [None if rng.random() < blank else v for v in picked]

    n_contacts, n_accounts, n_leads, n_deals = 60, 8, 30, 20
    accounts = pd.DataFrame(
        {
            "id": np.arange(1, n_accounts + 1),
            "industry": some(["software", "retail", "finance"], n_accounts),
            "size_band": some(["1-10", "11-50"], n_accounts),
            "annual_revenue_band": some(["<1M", "1-10M"], n_accounts),
            "created_at": pd.Timestamp("2025-01-01"),
        }
    )
    contacts = pd.DataFrame(
        {
            "id": np.arange(1, n_contacts + 1),
            "account_id": [
                float(a) if rng.random() < 0.6 else np.nan
                for a in rng.integers(1, n_accounts + 1, n_contacts)
            ],  # fmt: skip
            "role": some(["cto", "buyer"], n_contacts),
            "is_decision_maker": some([True, False], n_contacts),
            "age_band": some(["18-34", "35-54"], n_contacts),
            "gender": some(["female", "male"], n_contacts),
            "region": some(["north", "south"], n_contacts),
            "owner_id": rng.integers(1, 4, n_contacts).astype(float),
            "source": some(["web", "event"], n_contacts),
            "created_at": stamps(n_contacts, 400),
        }
    )
    lead_created = stamps(n_leads, 560)
    leads = pd.DataFrame(
        {
            "id": np.arange(1, n_leads + 1),
            "contact_id": rng.integers(1, n_contacts + 1, n_leads),
            "account_id": rng.integers(1, n_accounts + 1, n_leads),
            "source": some(["web", "ads"], n_leads),
            "region": some(["north", "emea"], n_leads),
            "owner_id": rng.integers(1, 4, n_leads),
            "status": some(["open", "Converted", "working"], n_leads, 0.0),
            "created_at": lead_created,
            "first_contacted_at": lead_created
            + pd.to_timedelta(rng.integers(1, 40, n_leads), unit="D"),  # fmt: skip
            "converted_at": [
                t + timedelta(days=30) if rng.random() < 0.3 else pd.NaT for t in lead_created
            ],  # fmt: skip
            "updated_at": lead_created + timedelta(days=5),
        }
    )
    deal_created = stamps(n_deals, 560)
    deals = pd.DataFrame(
        {
            "id": np.arange(1, n_deals + 1),
            "account_id": rng.integers(1, n_accounts + 1, n_deals),
            "owner_id": rng.integers(1, 4, n_deals),
            "amount": rng.uniform(100, 5000, n_deals).round(2),
            "stage": some(["proposal", "negotiation"], n_deals),
            "stage_entered_at": deal_created + timedelta(days=3),
            "created_at": deal_created,
            "closed_at": [
                t + timedelta(days=60) if rng.random() < 0.5 else pd.NaT for t in deal_created
            ],  # fmt: skip
            "outcome": some(["won", "lost"], n_deals),
        }
    )
    history = pd.DataFrame(
        {
            "deal_id": rng.integers(1, n_deals + 1, 50),
            "stage": some(["qualify", "proposal"], 50),
            "entered_at": stamps(50),
            "expected_close_at": stamps(50, 700),
        }
    )
    n_acts = 1500
    activities = pd.DataFrame(
        {
            "contact_id": [
                float(c) if rng.random() < 0.95 else np.nan
                for c in rng.integers(1, n_contacts + 1, n_acts)
            ],  # fmt: skip
            "lead_id": [
                float(v) if rng.random() < 0.3 else np.nan
                for v in rng.integers(1, n_leads + 1, n_acts)
            ],  # fmt: skip
            "deal_id": [
                float(v) if rng.random() < 0.2 else np.nan
                for v in rng.integers(1, n_deals + 1, n_acts)
            ],  # fmt: skip
            "type": some(TYPES, n_acts, 0.0),
            "channel": some(["email", "phone", "sms"], n_acts),
            "occurred_at": stamps(n_acts, 640),
            "responded": some([True, False], n_acts),
        }
    )
    # A CRM's own type filed under a category by its import mapping; other rows made by the
    # store itself (no category: the default vocabulary's category of their type counts).
    activities["category"] = np.where(activities["type"] == "ebook_portal", "content", None)
    orders = pd.DataFrame(
        {
            "contact_id": rng.integers(1, n_contacts + 1, 400),
            "ordered_at": stamps(400, 620),
            "amount": rng.uniform(5, 300, 400).round(2),
        }
    )
    tickets = pd.DataFrame(
        {
            "deal_id": [
                float(v) if rng.random() < 0.4 else np.nan for v in rng.integers(1, n_deals + 1, 80)
            ],  # fmt: skip
            "account_id": rng.integers(1, n_accounts + 1, 80).astype(float),
            "opened_at": stamps(80),
            "sentiment": rng.uniform(-1, 1, 80),
        }
    )
    users = pd.DataFrame({"id": [1, 2, 3], "manager_id": [np.nan, 1.0, 1.0]})
    return {
        "accounts": accounts, "contacts": contacts, "leads": leads, "deals": deals,
        "deal_stage_history": history, "activities": activities, "orders": orders,
        "tickets": tickets, "users": users,
    }  # fmt: skip


def categorical(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The same tables with text as categoricals (how the batch loads a snapshot)."""
    out = {}
    for name, frame in tables.items():
        text = [c for c in frame.columns if pd.api.types.infer_dtype(frame[c]) == "string"]
        out[name] = frame.astype(dict.fromkeys(text, "category"))
    return out


def one_time(tables) -> dict[str, pd.DataFrame]:
    return {e: active_rows(e, tables, AT).rename(columns={"entity_id": ENTITIES[e]}) for e in ENTITIES}  # fmt: skip


@pytest.fixture(scope="module")
def crm() -> dict[str, pd.DataFrame]:
    return random_crm()


def test_batch_lookup_at_one_time_equals_the_training_join(crm):
    """The batch pairs events by an id lookup, training sources by a join over many times: the
    rows at the scoring time must be the same features, bit for bit."""
    now = one_time(crm)
    earlier = [AT - timedelta(days=d) for d in (200, 45, 3)]
    many = {
        e: pd.concat([rows.assign(event_timestamp=t) for t in earlier] + [rows], ignore_index=True)
        for e, rows in now.items()
    }
    lookup, joined = compute_views(crm, now), compute_views(crm, many)
    assert set(lookup) == set(joined) and len(lookup) == 7
    for view, frame in lookup.items():
        at_now = joined[view]
        if not view.endswith("_profile"):  # profiles are stamped at creation, not at the times
            at_now = at_now[at_now["event_timestamp"] == pd.Timestamp(AT)].reset_index(drop=True)
        pd.testing.assert_frame_equal(at_now, frame, obj=view)
    assert lookup["customer_behaviour"]["site_visits_90d"].sum() > 0
    assert (lookup["contact_time"]["best_slot"] >= 0).any()


@pytest.mark.filterwarnings("error::FutureWarning")  # None vs NaN is a difference
def test_categorical_text_gives_the_same_features_and_context(crm):
    cats = categorical(crm)
    assert isinstance(cats["activities"]["type"].dtype, pd.CategoricalDtype)
    times = one_time(crm)
    for view, frame in compute_views(cats, times).items():
        pd.testing.assert_frame_equal(frame, compute_views(crm, times)[view], obj=view)
    for model in MODEL_NAMES:
        pd.testing.assert_frame_equal(
            batch.rule_context(cats, model, AT), batch.rule_context(crm, model, AT), obj=model
        )


@pytest.mark.filterwarnings("error::FutureWarning")  # None vs NaN is a difference
def test_a_batch_loads_every_column_it_reads(crm, tmp_path):
    """Scoring and context on only ``batch.snapshot_columns`` (as categoricals) equal scoring on
    the whole tables: a column the code reads but the list misses fails here."""
    columns = batch.snapshot_columns(MODEL_NAMES)
    narrow = categorical({t: crm[t][list(c)] for t, c in columns.items()})
    narrow["users"] = crm["users"]
    settings = Settings(data_dir=tmp_path)
    cache_narrow, cache_full = {}, {}
    for model in MODEL_NAMES:
        got = scoring_frame(settings, model, AT, tables=narrow, cache=cache_narrow)
        want = scoring_frame(settings, model, AT, tables=crm, cache=cache_full)
        pd.testing.assert_frame_equal(got, want, obj=model)
        pd.testing.assert_frame_equal(
            batch.rule_context(narrow, model, AT), batch.rule_context(crm, model, AT), obj=model
        )


def test_an_entity_missing_from_a_view_gets_its_empty_values(crm, tmp_path):
    """A customer whose profile is stamped after the scoring time has no profile row then: its
    text features are "unknown" and its counts 0; every other customer is as before."""
    settings = Settings(data_dir=tmp_path)
    before = scoring_frame(settings, "churn", AT, tables=crm)
    late = int(before["entity_id"].iloc[1])
    contacts = crm["contacts"].copy()
    contacts.loc[contacts["id"] == late, "created_at"] = pd.Timestamp(AT) + pd.Timedelta(days=1)
    after = scoring_frame(settings, "churn", AT, tables={**crm, "contacts": contacts})
    row = after[after["entity_id"] == late].iloc[0]
    assert row["region"] == row["acquisition_source"] == "unknown"
    assert row["has_account"] == 0
    assert after["has_account"].dtype == np.int64
    others = after["entity_id"] != late
    pd.testing.assert_frame_equal(after[others], before[others])


def _days(later, earlier) -> float:
    return (pd.Timestamp(later) - pd.Timestamp(earlier)) / pd.Timedelta(days=1)


def test_customer_features_and_context_match_plain_loops(crm):
    """Per customer, by hand: behaviour windows, RFM and spend windows, and the churn context."""
    times = one_time(crm)
    views = compute_views(crm, times, only=["customer_behaviour", "customer_transactions"])
    behaviour = views["customer_behaviour"].set_index("customer_id")
    spend = views["customer_transactions"].set_index("customer_id")
    context = rc.customer_context(crm, AT).set_index("entity_id")
    acts, orders = crm["activities"], crm["orders"]
    assert len(spend) == len(context) > 20
    for customer in spend.index:
        mine = acts[(acts["contact_id"] == customer) & (acts["occurred_at"] <= AT)]
        age = (pd.Timestamp(AT) - mine["occurred_at"]) / pd.Timedelta(days=1)
        visit = _category(mine) == "visit"
        for w in tf.WINDOWS:
            assert behaviour.loc[customer, f"site_visits_{w}d"] == (visit & (age < w)).sum()
        last = behaviour.loc[customer, "days_since_last_interaction"]
        assert last == age.min() or (np.isnan(last) and mine.empty)

        bought = orders[(orders["contact_id"] == customer) & (orders["ordered_at"] <= AT)]
        age = (pd.Timestamp(AT) - bought["ordered_at"]) / pd.Timedelta(days=1)
        row = spend.loc[customer]
        assert row["rfm_frequency"] == len(bought) == context.loc[customer, "frequency"]
        assert row["rfm_monetary"] == pytest.approx(bought["amount"].sum())
        assert row["spend_last_3m"] == pytest.approx(bought["amount"][age < 90].sum())
        assert row["tenure_days"] == age.max() and row["rfm_recency_days"] == age.min()
        year = bought["ordered_at"] > pd.Timestamp(AT) - timedelta(days=365)
        assert context.loc[customer, "yearly_spend"] == pytest.approx(bought["amount"][year].sum())
        recent = mine[mine["occurred_at"] > pd.Timestamp(AT) - timedelta(days=30)]
        visits = (_category(recent) == "visit").sum()
        assert context.loc[customer, "visits_30d"] == visits
        inactive = min([age.min(), *(_days(AT, t) for t in recent["occurred_at"])])
        assert context.loc[customer, "days_inactive"] == inactive


def _category(activities: pd.DataFrame) -> pd.Series:
    """Each activity's category: stored, else the default vocabulary's for its type."""
    by_type = activities["type"].str.lower().map(DEFAULT_CATEGORY_OF)
    if "category" not in activities:
        return by_type
    return activities["category"].astype(object).where(activities["category"].notna(), by_type)


def test_contact_time_and_deal_and_lead_context_match_plain_loops(crm):
    times = one_time(crm)
    profile = compute_views(crm, times, only=["contact_time"])["contact_time"]
    profile = profile.set_index("contact_id")
    acts = crm["activities"]
    responses = acts[(acts["responded"] == True) & (acts["occurred_at"] <= AT)]  # noqa: E712
    for contact, mine in responses.groupby("contact_id"):
        slots = (mine["occurred_at"].dt.weekday * 24 + mine["occurred_at"].dt.hour).value_counts()
        best = min(s for s, n in slots.items() if n == slots.max())
        channels = mine["channel"].fillna("unknown").value_counts()
        assert profile.loc[contact, "best_slot"] == best
        assert profile.loc[contact, "best_slot_share"] == slots.max() / len(mine)
        assert profile.loc[contact, "best_channel"] == min(c for c, n in channels.items() if n == channels.max())  # fmt: skip
    assert (
        profile.drop(index=responses["contact_id"].dropna().unique())["best_channel"] == "none"
    ).all()

    deals = rc.deal_context(crm, AT).set_index("entity_id")
    for deal, row in deals.iterrows():
        on_deal = acts[(acts["deal_id"] == deal) & (acts["occurred_at"] <= AT)]["occurred_at"]
        since = on_deal.max() if len(on_deal) else crm["deals"].set_index("id").loc[deal, "created_at"]  # fmt: skip
        assert row["days_idle"] == _days(AT, since)

    leads = rc.lead_context(crm, AT).set_index("entity_id")
    lead_rows = crm["leads"].set_index("id")
    for lead, row in leads.iterrows():
        own = acts[(acts["lead_id"] == lead) & (acts["occurred_at"] <= AT)]
        # The lead's points count its contact's activities that name no lead, as its features do.
        contact_id = lead_rows.loc[lead, "contact_id"]
        untagged = (acts["contact_id"] == contact_id) & acts["lead_id"].isna() & (acts["occurred_at"] <= AT)  # fmt: skip
        mine = pd.concat([own, acts[untagged]]) if pd.notna(contact_id) else own
        recent = mine[mine["occurred_at"] > pd.Timestamp(AT) - timedelta(days=90)]
        counts = [
            float((_category(recent) == category).sum())
            for category in ("visit", "pricing", "content", "trial")
        ]
        contact = crm["contacts"].set_index("id").loc[lead_rows.loc[lead, "contact_id"]]
        industry = crm["accounts"].set_index("id").loc[lead_rows.loc[lead, "account_id"], "industry"]  # fmt: skip
        idle = _days(AT, mine["occurred_at"].max()) if len(mine) else np.nan
        points = rule_based_lead_score(
            pd.Series([industry], dtype=object), pd.Series([bool(contact["is_decision_maker"])]),
            pd.Series([lead_rows.loc[lead, "region"]], dtype=object),
            *(pd.Series([c]) for c in counts), pd.Series([idle]),
        )  # fmt: skip
        assert row["rule_points"] == points.iloc[0]
        papers = own[_category(own) == "content"]["occurred_at"]
        assert row["last_whitepaper_at"] == papers.max() or (pd.isna(row["last_whitepaper_at"]) and papers.empty)  # fmt: skip
