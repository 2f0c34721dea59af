"""Feature functions on tiny frames: only events at or before each row's time count."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from crm_predict.features import transforms as tf
from crm_predict.features.definitions import VIEWS

from crm_predict.core.rules import rule_based_lead_score

T = datetime(2026, 3, 1)


def _times(key: str, *rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[key, "event_timestamp"])


def test_behaviour_windows_count_only_past_events_per_window():
    acts = pd.DataFrame(
        {
            "contact_id": [1, 1, 1, 1, 1, 2],
            "type": [
                "site_visit",
                "Site_Visit",
                "pricing_page_view",
                "site_visit",
                "call",
                "email_open",
            ],  # fmt: skip
            "occurred_at": pd.to_datetime(
                ["2026-02-28", "2026-02-10", "2025-12-15", "2026-03-02", "2026-02-27", "2026-01-01"]
            ),  # fmt: skip
        }
    )
    out = tf.behaviour_windows(acts, _times("contact_id", (1, T), (3, T)), "contact_id")
    one = out.set_index("contact_id").loc[1]
    assert (one["site_visits_7d"], one["site_visits_30d"], one["site_visits_90d"]) == (1, 2, 2)
    assert one["pricing_views_90d"] == 1 and one["pricing_views_30d"] == 0
    assert one["days_since_last_interaction"] == pytest.approx(1.0)  # the call counts too
    none = out.set_index("contact_id").loc[3]
    assert none["site_visits_90d"] == 0 and pd.isna(none["days_since_last_interaction"])
    assert list(out.columns) == [
        "contact_id",
        "event_timestamp",
        *VIEWS["customer_behaviour"].feature_names,
    ]


def test_transactions_rfm_and_spend_trend():
    orders = pd.DataFrame(
        {
            "contact_id": [1, 1, 1, 1],
            "ordered_at": pd.to_datetime(["2025-06-01", "2025-11-01", "2026-02-01", "2026-04-01"]),
            "amount": [100.0, 50.0, 30.0, 999.0],
        }
    )
    out = tf.transactions(orders, _times("customer_id", (1, T), (2, T))).set_index("customer_id")
    assert list(out.index) == [1]  # customer 2 has no order: not a customer
    row = out.loc[1]
    assert row["rfm_frequency"] == 3 and row["rfm_monetary"] == 180.0
    assert row["rfm_recency_days"] == 28 and row["orders_90d"] == 1
    assert row["spend_last_3m"] == 30.0 and row["spend_prior_3m"] == 50.0
    assert row["spend_12m"] == 180.0 and row["avg_order_value"] == 60.0


def test_lifetimes_summary_matches_the_lifetimes_package():
    from lifetimes.utils import summary_data_from_transaction_data

    orders = pd.DataFrame(
        {
            "contact_id": [1, 1, 1, 1, 2, 3, 3],
            "ordered_at": pd.to_datetime(
                [
                    "2025-01-06",
                    "2025-01-08",
                    "2025-03-03",
                    "2025-09-17",
                    "2025-05-05",
                    "2025-02-01",
                    "2025-12-31",
                ]
            ),  # fmt: skip
            "amount": [10.0, 5.0, 20.0, 40.0, 7.0, 3.0, 9.0],
        }
    )
    end = datetime(2026, 1, 14)
    ours = tf.transactions(orders, _times("customer_id", (1, end), (2, end), (3, end))).set_index("customer_id")  # fmt: skip
    theirs = summary_data_from_transaction_data(
        orders, "contact_id", "ordered_at", monetary_value_col="amount", observation_period_end=end, freq="W"
    )  # fmt: skip
    for col in ("frequency", "recency", "T", "monetary_value"):
        assert ours[col].tolist() == pytest.approx(theirs[col].tolist()), col


def test_contact_time_profile_finds_the_best_slot():
    acts = pd.DataFrame(
        {
            "contact_id": [1, 1, 1, 1, 1],
            "occurred_at": pd.to_datetime(
                [
                    "2026-02-03 10:05",
                    "2026-02-10 10:30",
                    "2026-02-06 15:00",
                    "2026-02-07 03:00",
                    "2026-03-03 10:00",
                ]
            ),  # fmt: skip
            "channel": ["email", "email", "phone", "sms", "email"],
            "responded": [True, True, True, False, True],
        }
    )
    row = tf.contact_time_profile(acts, _times("contact_id", (1, T), (2, T))).set_index(
        "contact_id"
    )
    one, none = row.loc[1], row.loc[2]
    assert one["responses_total"] == 3 and one["responses_tue"] == 2 and one["responses_fri"] == 1
    assert one["responses_morning"] == 2 and one["responses_afternoon"] == 1
    assert one["best_slot"] == 24 + 10 and one["best_slot_share"] == pytest.approx(2 / 3)
    assert one["best_channel"] == "email"
    assert none["best_slot"] == -1 and none["responses_total"] == 0


def test_deal_stage_comes_from_history_at_the_time():
    deals = pd.DataFrame(
        {
            "id": [1], "account_id": [9], "amount": [100.0], "created_at": [datetime(2026, 1, 1)],
            "stage": ["closed_won"], "stage_entered_at": [datetime(2026, 4, 1)],
            "closed_at": [datetime(2026, 4, 1)], "outcome": ["won"],
        }
    )  # fmt: skip
    history = pd.DataFrame(
        {
            "deal_id": [1, 1, 1], "stage": ["qualification", "proposal", "closed_won"],
            "entered_at": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-04-01"]),
            "expected_close_at": pd.to_datetime(["2026-02-15", "2026-03-15", "2026-04-01"]),
        }
    )  # fmt: skip
    empty_acts = pd.DataFrame({"deal_id": pd.Series(dtype="float"), "occurred_at": pd.Series(dtype="datetime64[ns]")})  # fmt: skip
    tickets = pd.DataFrame(
        {
            "deal_id": pd.Series(dtype="float"),
            "account_id": pd.Series(dtype="float"),
            "opened_at": pd.Series(dtype="datetime64[ns]"),
            "sentiment": pd.Series(dtype="float"),
        }  # fmt: skip
    )
    out = tf.deal_activity(deals, history, empty_acts, tickets, _times("deal_id", (1, T)))
    row = out.iloc[0]
    assert row["stage"] == "proposal" and row["stage_age_days"] == 28
    assert row["close_date_slips"] == 1 and row["days_idle"] == row["deal_age_days"] == 59


def test_rule_score_is_the_design_notes_points():
    inputs = pd.DataFrame(
        {
            "industry": ["Software", "retail"], "is_decision_maker": [1, 0],
            "lead_region": ["north", "south"], "site_visits_90d": [2, 0], "pricing_views_90d": [1, 0],
            "whitepapers_90d": [0, 1], "trials_90d": [1, 0], "days_since_last_interaction": [3.0, 45.0],
        }
    )  # fmt: skip
    expected = rule_based_lead_score(*(inputs[c] for c in tf.RULE_SCORE_INPUTS))
    assert tf.rule_score(inputs)["rule_score"].tolist() == expected.tolist() == [130.0, 5.0]


def test_latest_per_entity_keeps_the_newest_row():
    frame = pd.DataFrame(
        {
            "k": [1, 1, 2],
            "event_timestamp": pd.to_datetime(["2026-01-02", "2026-01-01", "2026-01-01"]),
            "v": [2, 1, 3],
        }  # fmt: skip
    )
    assert tf.latest_per_entity(frame, "k").sort_values("k")["v"].tolist() == [2, 3]


@pytest.mark.parametrize("spread", [1, 10**9], ids=["lookup table", "hash index"])
def test_positions_finds_each_id_among_the_keys(spread):
    keys = pd.Series([5, 7, 9, 12]) * spread
    # In the keys, below and above their range, missing, in the range but not a key.
    values = pd.Series([7 * spread, 4, 12 * spread, None, 13 * spread, 5 * spread, 10**15, -3, 8])
    assert tf.positions(keys, values).tolist() == [1, -1, 3, -1, -1, 0, -1, -1, -1]
    assert tf.positions(keys, pd.Series([], dtype="int64")).tolist() == []
    assert tf.positions(pd.Series([], dtype="int64"), values).tolist() == [-1] * len(values)
