"""Message features on tiny frames: what a customer wrote before each time, read by the source's
labels or, without them, by the rules' words; nothing written after the time counts. Then on the
features tests' tiny CRM: training, the batch's frame and the online store read them alike, and a
CRM without messages gets zeros and NaN."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import Message
from crm_predict.features import transforms as tf
from crm_predict.features.definitions import MESSAGE_VIEWS
from crm_predict.features.export import export, export_as_of, load_snapshots
from crm_predict.features.materialize import materialize
from crm_predict.features.online import online_features
from crm_predict.features.scoring import scoring_frame
from crm_predict.features.store import apply
from crm_predict.features.training import training_set
from feature_sample import build_crm

from crm_predict.core.messages import MessageRules
from crm_predict.core.settings import Settings

T = datetime(2026, 3, 1)
DAY = pd.Timedelta(days=1)


def _messages(*rows) -> pd.DataFrame:
    """(contact_id, days before T, intent, sentiment, text, direction) rows."""
    frame = pd.DataFrame(
        rows, columns=["contact_id", "days_before", "intent", "sentiment", "text", "direction"]
    )
    frame["sent_at"] = pd.Timestamp(T) - frame.pop("days_before") * DAY
    frame["deal_id"] = pd.array([7] * len(frame), dtype="Int64")
    return frame


def _times(key: str, *ids: int, at: datetime = T) -> pd.DataFrame:
    return pd.DataFrame({key: list(ids), "event_timestamp": [pd.Timestamp(at)] * len(ids)})


WRITTEN = _messages(
    (1, 5, "quote_request", "complaining", "price for 20 seats?", "inbound"),
    (1, 20, "after_sales_support", "satisfied", "the quote does not match", "inbound"),
    (1, 45, "competitor_comparison", "complaining", "vs HubSpot?", "inbound"),
    (1, 60, "technical_consultation", "complaining", "API docs?", "inbound"),
    (1, 120, "competitor_comparison", "complaining", "why not Zoho?", "inbound"),  # too old
    (1, 3, None, None, "we sent you the price list", "outbound"),  # not the customer's words
    (2, 10, None, None, "能给个报价吗？和钉钉比呢", "inbound"),  # unlabelled: the rules' words
    (2, 40, None, None, "still broken", "inbound"),
)


def test_windows_shares_and_trend_per_customer():
    out = tf.message_signals(WRITTEN, _times("customer_id", 1, 2, 3), "customer_id", "contact_id")
    one, two, none = (out.set_index("customer_id").loc[i] for i in (1, 2, 3))
    assert one["messages_90d"] == 4 and one["quote_requests_30d"] == 1
    assert one["competitor_mentions_90d"] == 1  # the one of 120 days ago is out of the window
    assert one["negative_share_90d"] == pytest.approx(3 / 4)
    assert one["sentiment_trend"] == pytest.approx(1 / 2 - 2 / 2)  # last 30 d vs the 60 before
    assert one["days_since_last_message"] == pytest.approx(5.0)  # the outbound one is not theirs
    assert two["messages_90d"] == 2
    assert (two["quote_requests_30d"], two["competitor_mentions_90d"]) == (1, 1)
    # Without sentiment labels there is no reading: no share, no trend.
    assert np.isnan(two["negative_share_90d"]) and np.isnan(two["sentiment_trend"])
    assert none["messages_90d"] == 0 and np.isnan(none["days_since_last_message"])
    assert list(out.columns) == [
        "customer_id",
        "event_timestamp",
        *MESSAGE_VIEWS["customer_messages"].feature_names,
    ]


def test_a_message_after_the_time_never_counts():
    later = pd.concat(
        [WRITTEN, _messages((1, -1 / 86_400, "quote_request", "complaining", "quote?", "inbound"))],
        ignore_index=True,
    )  # one second after T
    at_t = _messages((1, 0, "quote_request", "satisfied", "quote?", "inbound"))
    times = pd.DataFrame(
        {
            "customer_id": [1, 1],
            "event_timestamp": [pd.Timestamp(T), pd.Timestamp(T) - 30 * DAY],
        }
    )
    for frame in (later, WRITTEN):
        # Both paths of the pairing: one time per customer (the batch) and many (training).
        batch = tf.message_signals(frame, _times("customer_id", 1), "customer_id", "contact_id")
        training = tf.message_signals(frame, times, "customer_id", "contact_id")
        assert batch["messages_90d"].item() == training["messages_90d"][0] == 4
        assert batch["quote_requests_30d"].item() == training["quote_requests_30d"][0] == 1
    month_ago = training.iloc[1]  # 30 days earlier: only what had been written by then
    assert month_ago["messages_90d"] == 2 and month_ago["quote_requests_30d"] == 0
    assert month_ago["days_since_last_message"] == pytest.approx(15.0)
    exactly = tf.message_signals(at_t, _times("customer_id", 1), "customer_id", "contact_id")
    assert exactly["messages_90d"].item() == 1  # at the time counts, after it never


def test_readings_take_the_labels_and_the_rules_words_without_them():
    frame = pd.DataFrame(
        {
            "intent": ["technical_consultation", None, None, None],
            "sentiment": ["satisfied", None, "complaining", None],
            "text": ["What is the price of the API plan?", "Send a QUOTE", "vs 纷享销客?", "hello"],
        }
    )
    read = tf.message_readings(frame)
    # A label wins over the words in the text (the price question is a technical one).
    assert read["quote"].tolist() == [False, True, False, False]
    assert read["competitor"].tolist() == [False, False, True, False]
    assert np.array_equal(read["complaining"], [0.0, np.nan, 1.0, np.nan], equal_nan=True)
    rules = MessageRules(competitors=("Acme CRM",), topics={"price": ("tarif",)})
    custom = pd.DataFrame({"text": ["quote for acme crm", "le tarif?"]})
    read = tf.message_readings(custom, rules)  # no label columns at all
    assert read["quote"].tolist() == [False, True]
    assert read["competitor"].tolist() == [True, False]


def test_deal_messages_are_the_deals_own():
    out = tf.message_signals(WRITTEN, _times("deal_id", 7, 8), "deal_id").set_index("deal_id")
    assert out.loc[7, "messages_90d"] == 6 and out.loc[8, "messages_90d"] == 0


@pytest.mark.parametrize(
    "messages",
    [
        WRITTEN.iloc[:0],
        pd.DataFrame(),
        WRITTEN.astype({"intent": "category", "sentiment": "category"}).iloc[:0],
    ],
    ids=["no rows", "no columns", "categorical, no rows"],
)
def test_a_crm_without_messages_still_gets_its_features(messages):
    out = tf.message_signals(messages, _times("customer_id", 1, 2), "customer_id", "contact_id")
    assert len(out) == 2
    counts = ["messages_90d", "quote_requests_30d", "competitor_mentions_90d"]
    assert (out[counts] == 0).all().all()
    assert out[["negative_share_90d", "sentiment_trend", "days_since_last_message"]].isna().all().all()  # fmt: skip


def test_text_stored_as_arrow_or_category_reads_the_same():
    plain = tf.message_signals(WRITTEN, _times("customer_id", 1, 2), "customer_id", "contact_id")
    arrow = WRITTEN.astype({c: pd.ArrowDtype(pa.string()) for c in ("intent", "sentiment", "text")})
    category = WRITTEN.astype({c: "category" for c in ("intent", "sentiment", "direction")})
    for frame in (arrow, category):
        out = tf.message_signals(frame, _times("customer_id", 1, 2), "customer_id", "contact_id")
        pd.testing.assert_frame_equal(out, plain)


# --- Through the export, Feast's offline join, the batch's frame and the online store ----------

MESSAGE_FEATURES = MESSAGE_VIEWS["customer_messages"].feature_names
COUNTS = ["messages_90d", "quote_requests_30d", "competitor_mentions_90d"]


def _exported(root, messages: list[dict]) -> Settings:
    """The features tests' tiny CRM with ``messages`` added, exported and applied."""
    settings = Settings(data_dir=root / "data")
    settings.ensure_dirs()
    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        build_crm(session)
        session.add_all(Message(channel="email", created_at=m["sent_at"], **m) for m in messages)
        session.commit()
        export(session, settings)
    engine.dispose()
    return settings


def test_a_store_without_messages_trains_and_scores_with_empty_message_features(tmp_path):
    """An imported CRM with no messages: the views are written, every count 0, every share,
    trend and age NaN, in training (Feast's join) and in the batch's frame alike."""
    settings = _exported(tmp_path, [])
    store = apply(settings)
    assert len(pd.read_parquet(settings.feature_dir / "customer_messages.parquet")) > 0
    for model, entities in (("churn", {3, 4}), ("deal_health", {1, 3})):
        frame = training_set(settings, model, store)
        assert set(frame["entity_id"]) == entities
        scored = scoring_frame(settings, model, export_as_of(settings))
        for rows in (frame, scored):
            assert (rows[COUNTS] == 0).all().all(), model
            assert rows[["negative_share_90d", "sentiment_trend", "days_since_last_message"]].isna().all().all()  # fmt: skip


def _message(day: datetime, text: str, intent=None, sentiment=None, direction="inbound", **ids):
    return dict(sent_at=day, text=text, intent=intent, sentiment=sentiment, direction=direction, **ids)  # fmt: skip


WRITTEN_IN_CRM = [
    # Customer 3: a complaining quote request 11 days before the Oct 1 churn cutoff.
    _message(datetime(2025, 9, 20), "quote?", "quote_request", "complaining", contact_id=3),
    _message(datetime(2026, 6, 1), "vs HubSpot?", contact_id=3),  # unlabelled: the rules' words
    _message(datetime(2026, 6, 2), "our price list", direction="outbound", contact_id=3),
    # Deal 1 (scored Feb 22): a comparison before, another after its prediction time.
    _message(
        datetime(2026, 2, 20),
        "和纷享销客比呢",
        "competitor_comparison",
        "hesitant",
        contact_id=1,
        deal_id=1,
    ),  # fmt: skip
    _message(
        datetime(2026, 2, 25),
        "vs Zoho",
        "competitor_comparison",
        "complaining",
        contact_id=1,
        deal_id=1,
    ),  # fmt: skip
    _message(
        datetime(2026, 6, 20), "报价多少钱", "quote_request", "satisfied", contact_id=1, deal_id=2
    ),  # fmt: skip
]


def test_message_features_agree_in_training_batch_and_online(tmp_path):
    settings = _exported(tmp_path, WRITTEN_IN_CRM)
    as_of = export_as_of(settings)
    store = apply(settings)
    churn = training_set(settings, "churn", store).set_index(["entity_id", "event_timestamp"])
    october = churn.loc[(3, datetime(2025, 10, 1))]
    assert (october["messages_90d"], october["quote_requests_30d"]) == (1, 1)
    assert october["negative_share_90d"] == 1.0
    assert october["days_since_last_message"] == pytest.approx(11.0)
    assert churn.loc[(3, datetime(2025, 11, 1)), "quote_requests_30d"] == 0  # 42 days old then
    deals = training_set(settings, "deal_health", store).set_index("entity_id")
    # The comparison written after deal 1's prediction time never counts.
    assert deals.loc[1, "competitor_mentions_90d"] == 1 and deals.loc[1, "negative_share_90d"] == 0
    assert deals.loc[3, "messages_90d"] == 0

    scored = scoring_frame(settings, "churn", as_of).set_index("entity_id")
    assert scored.loc[3, "competitor_mentions_90d"] == 1 and scored.loc[3, "messages_90d"] == 1
    # A batch range hands over the tables it read for the other views, not the messages: the
    # frame reads the range's messages from the snapshot itself, to the same features.
    tables = load_snapshots(settings)
    for model in ("churn", "deal_health"):
        whole = scoring_frame(settings, model, as_of, tables=tables)
        without = {name: frame for name, frame in tables.items() if name != "messages"}
        pd.testing.assert_frame_equal(scoring_frame(settings, model, as_of, tables=without), whole)
    open_deal = scoring_frame(settings, "deal_health", as_of)
    assert open_deal[["entity_id", "quote_requests_30d"]].values.tolist() == [[2, 1]]

    materialize(store, as_of)
    for model in ("churn", "deal_health"):
        expected = scoring_frame(settings, model, as_of)
        got = online_features(store, model, expected["entity_id"].tolist())
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, obj=model)
