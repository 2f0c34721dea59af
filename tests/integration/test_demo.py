"""The demo generator's promises: seeded, consistent with its ground truth, learnable but not trivial."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from crm_predict.crm_store.bulk import clear_store
from crm_predict.crm_store.demo import AS_OF, BULK_TABLES, generate_demo
from crm_predict.crm_store.importer import normalise_email
from crm_predict.crm_store.models import ENTITY_MODELS
from crm_predict.crm_store.repository import read_table
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sqlalchemy import inspect as sa_inspect

from crm_predict.core.errors import UserError
from crm_predict.core.messages import INTENTS, LANGUAGES, SENTIMENTS

TABLES = list(ENTITY_MODELS)


def _tables(session) -> dict[str, pd.DataFrame]:
    return {t: read_table(session, t).sort_values("id", ignore_index=True) for t in TABLES}


def _truth(settings, model: str) -> pd.DataFrame:
    return pd.read_parquet(settings.demo_truth_dir / f"{model}.parquet")


@pytest.fixture
def demo(session, settings):
    """A small demo store (both backends) and its truth files."""
    counts = generate_demo(session, settings, 300, seed=11)
    session.commit()
    return counts


def test_same_seed_gives_identical_tables(session, settings):
    generate_demo(session, settings, 120, seed=3)
    session.commit()
    first = _tables(session)
    first_truth = _truth(settings, "churn")
    clear_store(session)
    session.commit()
    generate_demo(session, settings, 120, seed=3)
    session.commit()
    second = _tables(session)
    for name in TABLES:
        pd.testing.assert_frame_equal(first[name], second[name], obj=name)
    pd.testing.assert_frame_equal(first_truth, _truth(settings, "churn"))

    clear_store(session)
    session.commit()
    generate_demo(session, settings, 120, seed=4)
    session.commit()
    assert not first["orders"].equals(_tables(session)["orders"])


def test_counts_match_the_rows_written(session, settings, demo):
    assert demo["contacts"] > 300 and demo["leads"] == 90 and demo["orders"] > 300
    stored = {t: len(frame) for t, frame in _tables(session).items()}
    assert stored == demo


def test_refuses_to_write_into_a_non_empty_store(session, settings, demo):
    with pytest.raises(UserError, match="not empty"):
        generate_demo(session, settings, 50, seed=1)


def test_lead_truth_labels_are_the_stored_conversions(session, settings, demo):
    truth = _truth(settings, "lead_scoring")
    leads = read_table(session, "leads").set_index("id").loc[truth["entity_id"]]
    t = truth["event_timestamp"].to_numpy()
    created = leads["created_at"].to_numpy()
    converted = leads["converted_at"].to_numpy()
    assert (t == created + np.timedelta64(7, "D")).all()
    assert (created + np.timedelta64(90, "D") <= np.datetime64(AS_OF)).all()
    in_window = (converted > t) & (converted <= created + np.timedelta64(90, "D"))
    assert (truth["label"].to_numpy() == in_window).all()
    assert not (converted <= t).any(), "leads converted before the prediction time are dropped"
    assert 0.1 < truth["label"].mean() < 0.6


def test_deal_truth_labels_are_the_stored_outcomes(session, settings, demo):
    truth = _truth(settings, "deal_health")
    deals = read_table(session, "deals").set_index("id").loc[truth["entity_id"]]
    t = truth["event_timestamp"].to_numpy()
    assert (t == deals["created_at"].to_numpy() + np.timedelta64(21, "D")).all()
    assert (deals["closed_at"].to_numpy() > t).all(), "deals in the truth were open at t"
    assert (truth["label"].to_numpy() == (deals["outcome"] == "won").to_numpy()).all()
    history = read_table(session, "deal_stage_history")
    last = history.sort_values(["deal_id", "entered_at"]).groupby("deal_id")["stage"].last()
    closed = deals[deals["outcome"].notna()]
    assert (last.loc[closed.index] == "closed_" + closed["outcome"]).all()


def test_churn_truth_labels_are_the_stored_orders(session, settings, demo):
    truth = _truth(settings, "churn")
    orders = read_table(session, "orders").merge(truth, left_on="contact_id", right_on="entity_id")
    t = orders["event_timestamp"]
    after = orders[(orders["ordered_at"] > t) & (orders["ordered_at"] <= t + timedelta(days=90))]
    bought = truth["entity_id"].isin(after["contact_id"])
    assert (truth["label"].to_numpy() == ~bought.to_numpy()).all()
    before = orders[orders["ordered_at"] <= t]
    assert truth["entity_id"].isin(before["contact_id"]).all(), "every customer has history at t"
    lo, hi = AS_OF - timedelta(days=360), AS_OF - timedelta(days=90)
    assert truth["event_timestamp"].between(lo, hi).all()


def test_clv_truth_counts_the_last_90_days_of_orders(session, settings, demo):
    truth = _truth(settings, "clv").set_index("entity_id")
    orders = read_table(session, "orders")
    recent = orders[orders["ordered_at"] > AS_OF - timedelta(days=90)]
    counted = recent.groupby("contact_id").size().reindex(truth.index, fill_value=0)
    assert (counted == truth["purchases_last_90d"]).all()
    assert (truth[["purchase_rate_per_week", "dropout_p", "expected_order_value"]] > 0).all().all()


def test_next_best_time_truth_ranks_every_slot(session, settings, demo):
    truth = _truth(settings, "next_best_time")
    contacts = read_table(session, "contacts")
    customers_and_b2b = contacts[contacts["source"] != "newsletter_import"]
    assert set(truth["entity_id"]) == set(customers_and_b2b["id"])
    probs = np.stack(truth["p_slots"].to_numpy())
    assert probs.shape[1] == 168 and ((probs >= 0) & (probs <= 0.95)).all()
    best = np.stack(truth["best_slots"].to_numpy())
    assert (best[:, 0] == probs.argmax(axis=1)).all()
    calls = read_table(session, "activities")
    outbound = calls[calls["type"].isin(["email", "call"])]
    assert outbound["responded"].notna().all() and 0.02 < outbound["responded"].mean() < 0.6


def test_demo_data_carries_noise(session, settings, demo):
    contacts = read_table(session, "contacts")
    emails = contacts["email"].map(normalise_email).dropna()
    assert emails.duplicated().any(), "some contacts arrive twice from different sources"
    assert contacts["phone"].isna().any() and contacts["age_band"].isna().any()
    activities = read_table(session, "activities")
    assert (activities["created_at"] - activities["occurred_at"] > timedelta(days=1)).any()
    span = activities["occurred_at"].max() - activities["occurred_at"].min()
    assert span >= timedelta(days=730) and activities["occurred_at"].max() <= AS_OF


def test_messages_carry_ground_truth_and_link_to_their_deals_and_tickets(session, demo):
    messages = read_table(session, "messages")
    assert demo["messages"] == len(messages) > 300
    assert set(messages["language"]) == set(LANGUAGES)
    assert set(messages["intent"]) == set(INTENTS) and set(messages["sentiment"]) == set(SENTIMENTS)
    assert messages["contact_id"].notna().all() and (messages["direction"] == "inbound").all()
    chinese = messages.loc[messages["language"] == "zh", "text"]
    assert chinese.str.contains(r"[\u4e00-\u9fff]").all()
    deals = read_table(session, "deals", ["id", "contact_id", "created_at", "closed_at"])
    on_deal = messages.merge(deals, left_on="deal_id", right_on="id", suffixes=("", "_deal"))
    assert len(on_deal) and (on_deal["contact_id"] == on_deal["contact_id_deal"]).all()
    assert (on_deal["created_at_deal"] <= on_deal["sent_at"]).all()
    assert not (on_deal["closed_at"] < on_deal["sent_at"]).any()  # open when written
    tickets = read_table(session, "tickets", ["id", "contact_id", "opened_at"])
    bodies = messages.merge(tickets, left_on="ticket_id", right_on="id", suffixes=("", "_ticket"))
    assert len(bodies) and (bodies["channel"] == "ticket").all()
    assert (bodies["sent_at"] == bodies["opened_at"]).all()
    assert (bodies["contact_id"] == bodies["contact_id_ticket"]).all()


def test_oracle_auc_is_informative_but_not_perfect(sqlite_session, settings):
    generate_demo(sqlite_session, settings, 3000, seed=5)
    for model in ("lead_scoring", "deal_health", "churn"):
        truth = _truth(settings, model)
        auc = roc_auc_score(truth["label"], truth["p"])
        assert 0.7 < auc < 0.93, (model, auc)


def _churn_features(session, truth: pd.DataFrame) -> pd.DataFrame:
    """Churn observables rebuilt from the CRM tables as of each customer's cutoff."""
    t = truth.set_index("entity_id")["event_timestamp"]
    orders = read_table(session, "orders")
    orders = orders[orders["ordered_at"] <= orders["contact_id"].map(t)]
    age = (orders["contact_id"].map(t) - orders["ordered_at"]).dt.days
    by = orders.groupby("contact_id")
    contacts = read_table(session, "contacts").set_index("id").loc[t.index]
    events = read_table(session, "activities")
    events = events[events["type"].isin(["email_open", "email_click", "app_visit", "site_visit", "coupon_use", "referral"])]  # fmt: skip
    lag = events["contact_id"].map(t) - events["occurred_at"]
    recent = events[(lag >= timedelta(0)) & (lag < timedelta(days=30))]
    tickets = read_table(session, "tickets")
    tlag = tickets["contact_id"].map(t) - tickets["opened_at"]
    tickets = tickets[(tlag >= timedelta(0)) & (tlag < timedelta(days=90))]
    frame = pd.DataFrame(
        {
            "recency": np.log1p(by["ordered_at"].max().reindex(t.index).rsub(t).dt.days / 30),
            "freq": np.log1p(age[age < 365].groupby(orders["contact_id"]).size().reindex(t.index, fill_value=0)),
            "monetary": np.log(by["amount"].mean().reindex(t.index)),
            "tenure": np.minimum((t - contacts["signup_at"]).dt.days / 365, 3),
            "eng": np.log1p(recent.groupby("contact_id").size().reindex(t.index, fill_value=0)),
            "sentiment": tickets.groupby("contact_id")["sentiment"].mean().reindex(t.index, fill_value=0),
            "tickets": tickets.groupby("contact_id").size().reindex(t.index, fill_value=0),
        }
    )  # fmt: skip
    frame["quiet"] = (frame["eng"] == 0) & (frame["recency"] > np.log1p(2))
    return frame.join(pd.get_dummies(contacts["membership_level"], dtype=float)).astype(float)


def test_churn_signal_is_learnable_from_the_stored_tables(sqlite_session, settings):
    generate_demo(sqlite_session, settings, 4000, seed=8)
    truth = _truth(settings, "churn").sort_values("event_timestamp", ignore_index=True)
    features = _churn_features(sqlite_session, truth).loc[truth["entity_id"]].to_numpy()
    train, test = slice(0, 3000), slice(3000, None)  # out of time: newest quarter held out
    model = LogisticRegression(max_iter=2000).fit(features[train], truth["label"][train])
    auc = roc_auc_score(truth["label"][test], model.predict_proba(features[test])[:, 1])
    oracle = roc_auc_score(truth["label"][test], truth["p"][test])
    assert auc >= 0.95 * oracle, (auc, oracle)


def test_bulk_load_leaves_every_index_in_place(session, settings):
    """Secondary indexes are dropped for the load and rebuilt after, on both backends."""

    def indexes():
        inspector = sa_inspect(session.connection())
        return {t: sorted(i["name"] for i in inspector.get_indexes(t)) for t in BULK_TABLES}

    before = indexes()
    assert before["activities"], "the schema indexes activities"
    generate_demo(session, settings, 20, seed=5)
    session.commit()
    assert indexes() == before


def test_messages_lean_on_the_outcomes_they_precede(sqlite_session, settings):
    """Churners complain more in the 90 days before their cutoff; lost deals' messages compare
    with competitors more and won deals' ask for quotes more; a ticket's body reads its ticket."""
    generate_demo(sqlite_session, settings, 1500, seed=5)
    messages = read_table(sqlite_session, "messages")
    churn = _truth(settings, "churn").rename(columns={"entity_id": "contact_id"})
    before = messages.merge(churn, on="contact_id")
    cutoff = before["event_timestamp"].astype("datetime64[ns]")
    before = before[
        (before["sent_at"] <= cutoff) & (before["sent_at"] > cutoff - timedelta(days=90))
    ]
    complaining = (before["sentiment"] == "complaining").groupby(before["label"]).mean()
    assert complaining[1] > complaining[0] + 0.15, complaining

    deals = read_table(sqlite_session, "deals", ["id", "outcome"])
    on_deal = messages.merge(deals, left_on="deal_id", right_on="id")
    shares = pd.crosstab(on_deal["outcome"], on_deal["intent"], normalize="index")
    assert shares.loc["lost", "competitor_comparison"] > shares.loc["won", "competitor_comparison"] + 0.1, shares  # fmt: skip
    assert shares.loc["won", "quote_request"] > shares.loc["lost", "quote_request"] + 0.1, shares

    tickets = read_table(sqlite_session, "tickets", ["id", "sentiment"])
    bodies = messages.merge(tickets, left_on="ticket_id", right_on="id", suffixes=("", "_ticket"))
    mood = bodies.groupby("sentiment")["sentiment_ticket"].mean()
    assert mood["complaining"] < mood["satisfied"] - 0.1, mood
