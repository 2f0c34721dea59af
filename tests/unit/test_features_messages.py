"""Message features on tiny frames: what a customer wrote before each time, read by the source's
labels or, without them, by the rules' words; nothing written after the time counts."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from crm_predict.features import transforms as tf
from crm_predict.features.definitions import MESSAGE_VIEWS

from crm_predict.core.messages import MessageRules

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
