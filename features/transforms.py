"""Feature tables as ordinary pandas functions: CRM snapshot frames in, one row per (entity, time) out.

``times`` holds ``<key>, event_timestamp`` rows (label snapshot times, or the scoring time); each
row sees only events at or before its timestamp, which, with Feast's as-of join, keeps training sets
point-in-time correct. Events are paired with rows by integer positions (``events_at``: a join for
training sources, an id lookup for the batch's single time) and reduced with numpy, or with one
pandas group-by where a float sum must keep pandas' compensated summation; never a Python loop
over entities.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from crm_predict.crm_store.mapping import DEFAULT_CATEGORY_OF

from crm_predict.core.messages import MessageRules
from crm_predict.core.rules import rule_based_lead_score

TS = "event_timestamp"
DAY = pd.Timedelta(days=1)
WINDOWS = (7, 30, 90)
NAT = np.iinfo(np.int64).min  # NaT as int64 nanoseconds
DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9

# Behaviour group → the activity category it counts (``crm_predict.crm_store.mapping``'s vocabulary: the
# import files each CRM's own activity types under these categories).
ACTIVITY_GROUPS: dict[str, str] = {
    "site_visits": "visit",
    "pricing_views": "pricing",
    "whitepapers": "content",
    "trials": "trial",
    "email_opens": "email_open",
    "email_clicks": "email_click",
}
DAY_PARTS = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- Events paired with entity rows by integer positions -------------------------------------


def nanoseconds(stamps: pd.Series | np.ndarray) -> np.ndarray:
    """Timestamps as int64 nanoseconds (``NAT`` where missing); text is read as ISO 8601 (CRM
    tables read from the store rather than a snapshot may hold strings)."""
    values = stamps if isinstance(stamps, pd.Series) else pd.Series(stamps)
    if not pd.api.types.is_datetime64_any_dtype(values.dtype):
        values = pd.to_datetime(values, format="ISO8601")
    return np.asarray(values.to_numpy(dtype="datetime64[ns]")).view(np.int64)


def ids(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An id column (int, nullable int or float with NaN) as int64 ids and where they are set."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if series.dtype.kind in "iu":
        return series.to_numpy(dtype=np.int64), np.ones(len(series), dtype=bool)
    present = series.notna().to_numpy()
    return series.to_numpy(dtype=np.int64, na_value=0), present


def positions(keys: pd.Series | np.ndarray, values: pd.Series | np.ndarray) -> np.ndarray:
    """Position of each of ``values`` among the unique integer ``keys``, -1 where absent or
    missing: a lookup table when the ids are compact (CRM ids usually are), else a hash index."""
    keys = ids(keys)[0]
    found, present = ids(values)
    if not len(keys) or not len(found):
        return np.full(len(found), -1, dtype=np.int64)
    low, high = int(keys.min()), int(keys.max())
    if high - low < 8 * len(keys) + (1 << 20):
        # A -1 at either end: ``take``'s clip mode sends every id outside the keys' range to one
        # of them, with no mask of the ids in range (7× faster on 20M activities).
        table = np.full(high - low + 3, -1, dtype=np.int64)
        table[keys - low + 1] = np.arange(len(keys))
        out = table.take(found - (low - 1), mode="clip")
        if not present.all():
            out[~present] = -1
        return out
    hit = pd.Index(keys).get_indexer(found)
    return np.where(present, hit, -1)


def events_at(
    times: pd.DataFrame,
    events: pd.DataFrame,
    key: str,
    at: str,
    event_key: str | None = None,
    where: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each event paired with every row of ``times`` for its entity (``events[event_key or key]``
    equal to ``times[key]``) stamped at or after the event's ``at``: (positions in ``times``,
    positions in ``events``). ``where`` (a bool per event) limits the events considered."""
    column = events[event_key or key]
    stamps = nanoseconds(events[at])
    usable = stamps != NAT
    if where is not None:
        usable &= np.asarray(where, dtype=bool)
    ts = nanoseconds(times[TS])
    if len(ts) and (ts == ts[0]).all() and times[key].is_unique:
        # One time for every entity (batch scoring at a date): a lookup and a filter, not a join.
        row = positions(times[key], column)
        take = np.flatnonzero(usable & (row >= 0) & (stamps <= ts[0]))
        return row[take], take
    found, present = ids(column)
    take = np.flatnonzero(usable & present)
    rows = pd.DataFrame({"key": ids(times[key])[0], "row": np.arange(len(times))})
    pairs = rows.merge(pd.DataFrame({"key": found[take], "take": take}), on="key")
    row, take = pairs["row"].to_numpy(), pairs["take"].to_numpy()
    keep = stamps[take] <= ts[row]
    return row[keep], take[keep]


def latest_per_row(row: np.ndarray, n: int, stamps: np.ndarray) -> np.ndarray:
    """The newest of each row's stamps (int64 ns; ``NAT`` for a row without events)."""
    out = np.full(n, NAT, dtype=np.int64)
    np.maximum.at(out, row, stamps)
    return out


def earliest_per_row(row: np.ndarray, n: int, stamps: np.ndarray) -> np.ndarray:
    """The oldest of each row's stamps (int64 ns; ``NAT`` for a row without events)."""
    never = np.iinfo(np.int64).max
    out = np.full(n, never, dtype=np.int64)
    np.minimum.at(out, row, stamps)
    out[out == never] = NAT
    return out


def totals_per_row(
    row: np.ndarray, n: int, columns: Mapping[str, np.ndarray], how: str = "sum"
) -> pd.DataFrame:
    """Per-row sums (or means) of float columns, NaN skipped, in event order with pandas'
    compensated summation: bit for bit what a group-by on the entity gives. Rows without events
    sum to 0 (mean NaN)."""
    groups = pd.Categorical.from_codes(row, categories=pd.RangeIndex(n))
    grouped = pd.DataFrame(dict(columns)).groupby(groups, observed=False)
    return getattr(grouped, how)().reset_index(drop=True)


def days_between(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """``later - earlier`` (int64 ns) in days as pandas divides a timedelta by a day; NaN where
    either is missing."""
    with np.errstate(over="ignore"):
        out = (later - earlier).astype(np.float64) / DAY_NS
    out[(later == NAT) | (earlier == NAT)] = np.nan
    return out


def most_frequent(
    row: np.ndarray, n: int, values: np.ndarray, n_values: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the value in ``0..n_values-1`` seen most often and its count; ties go to the
    smallest value (-1 and 0 for a row without events)."""
    cells, counts = np.unique(row.astype(np.int64) * n_values + values, return_counts=True)
    cell_row = cells // n_values
    best = np.zeros(n, dtype=np.int64)
    np.maximum.at(best, cell_row, counts)
    winners = counts == best[cell_row]
    win_row, win_value = cell_row[winners], cells[winners] % n_values
    first = np.ones(len(win_row), dtype=bool)
    first[1:] = win_row[1:] != win_row[:-1]  # cells are sorted: the smallest value comes first
    value = np.full(n, -1, dtype=np.int64)
    value[win_row[first]] = win_value[first]
    return value, best


def activity_groups(activities: pd.DataFrame, groups: Mapping[str, str] = ACTIVITY_GROUPS) -> np.ndarray:  # fmt: skip
    """Index into ``groups`` of each activity, -1 for none: by its stored ``category``, else
    (rows the store made itself, data from before categories) by the default vocabulary's
    category of its type, case-insensitive."""
    index = {category: i for i, category in enumerate(groups.values())}
    # Each distinct value mapped once (a CRM has a handful of types and millions of activities).
    codes, kinds = pd.factorize(activities["type"])
    by_type = [index.get(DEFAULT_CATEGORY_OF.get(str(kind).lower(), ""), -1) for kind in kinds]
    group = np.array([*by_type, -1], dtype=np.int64)[codes]  # code -1 (missing) → the last
    if "category" in activities:
        codes, kinds = pd.factorize(activities["category"])
        stored = np.array([*(index.get(str(k), -1) for k in kinds), -2], dtype=np.int64)[codes]
        group = np.where(stored == -2, group, stored)
    return group


def text_codes(values: pd.Series, missing: str = "unknown") -> tuple[np.ndarray, np.ndarray]:
    """Codes of a text column in the sorted order of its values (``missing`` standing for blanks),
    and those values: ties broken by code are broken alphabetically."""
    codes, uniques = pd.factorize(values)
    labels = np.array([*uniques, missing], dtype=object)
    names, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(-1)[codes], names


def _with_times(times: pd.DataFrame, events: pd.DataFrame, key: str, at: str) -> pd.DataFrame:
    """Each (entity, time) row paired with that entity's events at or before the time, as a frame
    (for the small tables whose reductions stay pandas group-bys)."""
    row, take = events_at(times, events, key, at)
    pairs = events.iloc[take].reset_index(drop=True)
    pairs[key] = times[key].to_numpy()[row]
    pairs.insert(1, TS, times[TS].to_numpy()[row])
    return pairs[[key, TS, *(c for c in events.columns if c != key)]]


def behaviour_windows(
    activities: pd.DataFrame,
    times: pd.DataFrame,
    key: str,
    windows: Sequence[int] = WINDOWS,
    groups: Mapping[str, str] = ACTIVITY_GROUPS,
    event_key: str | None = None,
) -> pd.DataFrame:
    """Counts of site visits, pricing views, whitepapers, trials, email opens/clicks over each
    window, and days since the last interaction of any type (NaN when there was none).
    ``event_key`` names the activities' entity column when it is not ``key``."""
    row, take = events_at(times, activities, key, "occurred_at", event_key)
    n, n_groups = len(times), len(groups)
    ts = nanoseconds(times[TS])
    stamps = nanoseconds(activities["occurred_at"])[take]
    group = activity_groups(activities, groups)[take]
    age_days = days_between(ts[row], stamps)
    grouped = group >= 0
    counts = {}
    for w in windows:  # per window, one count per (row, group)
        within = grouped & (age_days < w)
        cells = row[within] * n_groups + group[within]
        counts[w] = np.bincount(cells, minlength=n * n_groups).reshape(n, n_groups)
    columns = {
        f"{name}_{w}d": np.ascontiguousarray(counts[w][:, j])
        for j, name in enumerate(groups)
        for w in windows
    }  # in the views' declaration order
    columns["days_since_last_interaction"] = days_between(ts, latest_per_row(row, n, stamps))
    return times[[key, TS]].reset_index(drop=True).assign(**columns)


def transactions(
    orders: pd.DataFrame, times: pd.DataFrame, key: str = "customer_id"
) -> pd.DataFrame:
    """RFM, tenure, spend trends and lifetimes-style (frequency, recency, T, monetary_value) in
    weeks for each (customer, time); rows without any order by then are dropped (not a customer)."""
    row, take = events_at(times, orders, key, "ordered_at", event_key="contact_id")
    n = len(times)
    ts = nanoseconds(times[TS])
    stamps = nanoseconds(orders["ordered_at"])[take]
    amount = orders["amount"].astype(float).to_numpy()[take]
    age_days = days_between(ts[row], stamps)
    spends = {
        "rfm_monetary": amount,
        "spend_last_3m": np.where(age_days < 90, amount, 0.0),
        "spend_prior_3m": np.where((age_days >= 90) & (age_days < 180), amount, 0.0),
        "spend_12m": np.where(age_days < 365, amount, 0.0),
    }
    sums = totals_per_row(row, n, spends)  # one group-by for every sum
    agg = pd.DataFrame(
        {
            "rfm_recency_days": days_between(ts, latest_per_row(row, n, stamps)),
            "rfm_frequency": np.bincount(row, minlength=n),
            "rfm_monetary": sums["rfm_monetary"].to_numpy(),
            "tenure_days": days_between(ts, earliest_per_row(row, n, stamps)),
            "orders_90d": np.bincount(row[age_days < 90], minlength=n),
            "spend_last_3m": sums["spend_last_3m"].to_numpy(),
            "spend_prior_3m": sums["spend_prior_3m"].to_numpy(),
            "spend_12m": sums["spend_12m"].to_numpy(),
        }
    )
    customers = agg["rfm_frequency"].to_numpy() > 0
    agg = agg[customers].reset_index(drop=True)
    agg["avg_order_value"] = agg["rfm_monetary"] / agg["rfm_frequency"]
    lifetimes = _lifetimes_summary(row, n, stamps, ts, amount)[customers].reset_index(drop=True)
    out = times[[key, TS]][customers].reset_index(drop=True)
    return pd.concat([out, agg, lifetimes], axis=1)


def _lifetimes_summary(
    row: np.ndarray, n: int, stamps: np.ndarray, ts: np.ndarray, amount: np.ndarray
) -> pd.DataFrame:
    """lifetimes' ``summary_data_from_transaction_data(freq="W")`` at each row's own end time:
    purchases bucketed into calendar weeks; frequency = repeat weeks, recency = weeks from first to
    last, T = weeks from first to the end time, monetary_value = mean spend of the repeat weeks."""
    week, end = _week(stamps), _week(ts)
    low = int(week.min()) if len(week) else 0
    span = (int(week.max()) - low + 1) if len(week) else 1
    # One cell per (row, week) with a purchase, sorted by row then week.
    cells, inverse = np.unique(row.astype(np.int64) * span + (week - low), return_inverse=True)
    weekly = totals_per_row(inverse.reshape(-1), len(cells), {"amount": amount})["amount"]
    cell_row, cell_week = cells // span, cells % span + low
    first_cell = np.ones(len(cells), dtype=bool)
    first_cell[1:] = cell_row[1:] != cell_row[:-1]
    last_cell = np.ones(len(cells), dtype=bool)
    last_cell[:-1] = first_cell[1:]
    first = np.zeros(n, dtype=np.int64)
    first[cell_row[first_cell]] = cell_week[first_cell]
    last = np.zeros(n, dtype=np.int64)
    last[cell_row[last_cell]] = cell_week[last_cell]
    repeat = ~first_cell
    spend = {"amount": weekly.to_numpy()[repeat]}
    monetary = totals_per_row(cell_row[repeat], n, spend, how="mean")["amount"].fillna(0.0)
    return pd.DataFrame(
        {
            "frequency": (np.bincount(cell_row, minlength=n) - 1).astype(float),
            "recency": (last - first).astype(float),
            "T": (end - first).astype(float),
            "monetary_value": monetary.to_numpy(),
        }
    )


def _week(stamps: np.ndarray) -> np.ndarray:
    """Calendar week number (Monday to Sunday, pandas' "W" periods) of int64-ns stamps."""
    return (np.floor_divide(stamps, DAY_NS) + 3) // 7  # 1970-01-01 was a Thursday


def deal_activity(
    deals: pd.DataFrame,
    stage_history: pd.DataFrame,
    activities: pd.DataFrame,
    tickets: pd.DataFrame,
    times: pd.DataFrame,
    key: str = "deal_id",
) -> pd.DataFrame:
    """Stage and its age, deal age, days idle, recent activity, close-date slips, amount against
    the account's earlier deals, and the sentiment of recent tickets, per (deal, time)."""
    deal = deals.rename(columns={"id": key})
    base = times[[key, TS]].merge(
        deal[[key, "account_id", "amount", "created_at", "stage", "stage_entered_at"]],
        on=key,
        how="inner",
    )
    base = base[base["created_at"] <= base[TS]]

    # Stage at the time: the last history entry entered by then, else the deal's own stage when
    # it was entered by then (a history-less CRM), else unknown.
    history = stage_history.rename(columns={"deal_id": key})
    hist = _with_times(base, history[[key, "stage", "entered_at"]], key, "entered_at")
    hist = hist.sort_values("entered_at").groupby([key, TS]).last()
    hist = hist.rename(columns={"stage": "hist_stage", "entered_at": "hist_entered"})
    base = base.merge(hist[["hist_stage", "hist_entered"]].reset_index(), on=[key, TS], how="left")
    own = base["stage_entered_at"] <= base[TS]
    # As plain objects: categorical stages of the two tables need not share their categories.
    hist_stage, own_stage = base["hist_stage"].astype(object), base["stage"].astype(object)
    stage = hist_stage.where(hist_stage.notna(), own_stage.where(own))
    entered = base["hist_entered"].where(base["hist_entered"].notna(), base["stage_entered_at"])
    entered = entered.where(stage.notna(), base["created_at"])
    base["stage"] = stage.fillna("unknown").astype(str)
    base["stage_age_days"] = (base[TS] - entered) / DAY
    base["deal_age_days"] = (base[TS] - base["created_at"]) / DAY

    base = base.merge(_close_date_slips(history, base[[key, TS]], key), on=[key, TS], how="left")
    base["close_date_slips"] = base["close_date_slips"].fillna(0).astype("int64")

    row, take = events_at(base, activities, key, "occurred_at", event_key="deal_id")
    ts = nanoseconds(base[TS])
    stamps = nanoseconds(activities["occurred_at"])[take]
    idle = days_between(ts, latest_per_row(row, len(base), stamps))
    # Idle since creation when nothing has happened on the deal yet.
    base["days_idle"] = np.where(np.isnan(idle), base["deal_age_days"].to_numpy(), idle)
    recent = days_between(ts[row], stamps) < 30
    base["activities_30d"] = np.bincount(row[recent], minlength=len(base))

    base = base.merge(_account_history(deal, base[[key, TS, "account_id"]], key), on=[key, TS], how="left")  # fmt: skip
    base["account_prior_deals"] = base["account_prior_deals"].fillna(0).astype("int64")
    base["amount"] = base["amount"].astype(float)
    base["amount_vs_account_median"] = base["amount"] / base["account_median_amount"]

    base = base.merge(_ticket_sentiment(tickets, base[[key, TS, "account_id"]], key), on=[key, TS], how="left")  # fmt: skip
    base["tickets_90d"] = base["tickets_90d"].fillna(0).astype("int64")
    return base  # with its working columns: the export's ``conform`` keeps the view's


def _close_date_slips(history: pd.DataFrame, times: pd.DataFrame, key: str) -> pd.DataFrame:
    """How often the expected close date moved later, counting history entries entered by then."""
    hist = history[[key, "entered_at", "expected_close_at"]].dropna()
    hist = hist.sort_values([key, "entered_at"])
    slipped = hist["expected_close_at"] > hist.groupby(key)["expected_close_at"].shift()
    hist = hist.assign(slip=slipped.astype(int))
    pairs = _with_times(times, hist, key, "entered_at")
    return pairs.groupby([key, TS])["slip"].sum().rename("close_date_slips").reset_index()


def _account_history(deals: pd.DataFrame, times: pd.DataFrame, key: str) -> pd.DataFrame:
    """The account's deals closed before the time: count, median amount and win rate."""
    closed = deals.loc[
        deals["closed_at"].notna(), ["account_id", key, "amount", "closed_at", "outcome"]
    ]
    closed = closed.rename(columns={key: "other"})
    pairs = times.dropna(subset=["account_id"]).merge(closed, on="account_id", how="inner")
    pairs = pairs[(pairs["closed_at"] <= pairs[TS]) & (pairs["other"] != pairs[key])]
    grp = [pairs[key], pairs[TS]]
    return pd.DataFrame(
        {
            "account_prior_deals": pairs["amount"].groupby(grp).size(),
            "account_median_amount": pairs["amount"].astype(float).groupby(grp).median(),
            "account_win_rate": (pairs["outcome"] == "won").groupby(grp).mean(),
        }
    ).reset_index()


def _ticket_sentiment(tickets: pd.DataFrame, times: pd.DataFrame, key: str) -> pd.DataFrame:
    """Tickets opened in the last 90 days on the deal or its account, and their mean sentiment."""
    by_deal = tickets.rename(columns={"deal_id": key})[[key, "opened_at", "sentiment"]]
    on_deal = _with_times(times, by_deal, key, "opened_at")
    by_account = tickets.loc[tickets["deal_id"].isna(), ["account_id", "opened_at", "sentiment"]]
    on_account = times.dropna(subset=["account_id"]).merge(by_account.dropna(subset=["account_id"]), on="account_id")  # fmt: skip
    on_account = on_account[on_account["opened_at"] <= on_account[TS]]
    pairs = pd.concat([on_deal, on_account], ignore_index=True)
    pairs = pairs[(pairs[TS] - pairs["opened_at"]) / DAY < 90]
    grp = [pairs[key], pairs[TS]]
    return pd.DataFrame(
        {
            "tickets_90d": pairs["opened_at"].groupby(grp).size(),
            "ticket_sentiment_90d": pairs["sentiment"].astype(float).groupby(grp).mean(),
        }
    ).reset_index()


def contact_time_profile(
    activities: pd.DataFrame, times: pd.DataFrame, key: str = "contact_id"
) -> pd.DataFrame:
    """A compact encoding of when a contact responds: counts per day-part and weekday, the best
    historical hour-of-week slot (0 = Monday 00:00, -1 without history), its share, best channel."""
    responded = as_flag(activities["responded"]).to_numpy()
    row, take = events_at(times, activities, key, "occurred_at", where=responded)
    n = len(times)
    stamps = nanoseconds(activities["occurred_at"])[take]
    hour = np.floor_divide(stamps, HOUR_NS) % 24
    weekday = (np.floor_divide(stamps, DAY_NS) + 3) % 7  # Monday = 0; 1970-01-01 was a Thursday
    total = np.bincount(row, minlength=n)
    columns = {"responses_total": total}
    for name, (lo, hi) in DAY_PARTS.items():
        columns[f"responses_{name}"] = np.bincount(row[(hour >= lo) & (hour < hi)], minlength=n)
    per_day = np.bincount(row * 7 + weekday, minlength=7 * n).reshape(n, 7)
    for i, day in enumerate(WEEKDAYS):
        columns[f"responses_{day}"] = np.ascontiguousarray(per_day[:, i])
    # Most responses wins; ties go to the earliest slot of the week (deterministic).
    slot, slot_count = most_frequent(row, n, weekday * 24 + hour, 7 * 24)
    columns["best_slot"] = slot
    with np.errstate(invalid="ignore", divide="ignore"):
        columns["best_slot_share"] = np.where(total > 0, slot_count / total, 0.0)
    # The most used channel; ties go to the first name alphabetically.
    codes, names = text_codes(activities["channel"].iloc[take])
    channel, _ = most_frequent(row, n, codes, len(names))
    columns["best_channel"] = np.append(names, "none").astype(object)[channel]  # -1 → "none"
    return times[[key, TS]].reset_index(drop=True).assign(**columns)


def message_readings(messages: pd.DataFrame, rules: MessageRules | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """How each message is read: ``complaining`` (1.0 / 0.0, NaN when the message has no
    sentiment label), ``quote`` and ``competitor`` (bool). The source's own labels (``intent``,
    ``sentiment``) when it has them; for a message without an intent, the rules' words: a price
    topic word (``rules.topics["price"]``) reads as a quote request, a competitor's name
    (``rules.competitors``) as a comparison. Sentiment has no text rule: unlabelled, it is unread."""
    rules = rules or MessageRules()
    n = len(messages)

    def column(name: str) -> pd.Series:
        return messages[name] if name in messages else pd.Series([None] * n, index=messages.index, dtype=object)  # fmt: skip

    intent, sentiment = column("intent"), column("sentiment")
    labelled = intent.notna().to_numpy()
    text = column("text").iloc[np.flatnonzero(~labelled)].fillna("").astype(str)
    quote, competitor = _is(intent, "quote_request"), _is(intent, "competitor_comparison")
    quote[~labelled] = _mentions(text, rules.topics.get("price", ()))
    competitor[~labelled] = _mentions(text, rules.competitors)
    complaining = np.where(sentiment.notna(), _is(sentiment, "complaining"), np.nan)
    return {"complaining": complaining.astype(float), "quote": quote, "competitor": competitor}


def _is(values: pd.Series, value: str) -> np.ndarray:
    """``values == value`` as plain bool, missing = False (object, category or Arrow text)."""
    return (values == value).fillna(False).to_numpy(dtype=bool)


def _mentions(text: pd.Series, words: Sequence[str]) -> np.ndarray:
    """Whether each text holds any of ``words`` (any case, inside longer words too)."""
    if not len(words) or not len(text):
        return np.zeros(len(text), dtype=bool)
    pattern = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return text.str.contains(pattern, case=False, regex=True).to_numpy(dtype=bool)


def message_signals(
    messages: pd.DataFrame,
    times: pd.DataFrame,
    key: str,
    event_key: str | None = None,
    rules: MessageRules | None = None,
) -> pd.DataFrame:
    """What the entity's customer wrote before each time: inbound messages in the last 90 days,
    the share of them read as complaining, its trend (the last 30 days' share minus that of the
    60 days before), quote requests in the last 30 days, competitor comparisons in the last 90,
    days since the last message. Each message is read by ``message_readings`` (the source's
    labels, else the rules' words). ``event_key`` names the messages' entity column when it is
    not ``key`` (``contact_id`` for a customer, ``deal_id`` for a deal). A CRM without messages
    gets zeros and NaN."""
    n = len(times)
    if "sent_at" not in messages:  # no messages table at all (an older snapshot)
        messages = pd.DataFrame({event_key or key: pd.Series(dtype="Int64"), "sent_at": pd.Series(dtype="datetime64[ns]")})  # fmt: skip
    inbound = (messages["direction"] == "inbound").to_numpy() if "direction" in messages else None
    row, take = events_at(times, messages, key, "sent_at", event_key, where=inbound)
    ts = nanoseconds(times[TS])
    stamps = nanoseconds(messages["sent_at"])[take]
    age = days_between(ts[row], stamps)
    # Each message read once, however many rows it is paired with.
    unique, back = np.unique(take, return_inverse=True)
    read = {k: v[back.reshape(-1)] for k, v in message_readings(messages.iloc[unique], rules).items()}  # fmt: skip
    complaining = read["complaining"]
    known = ~np.isnan(complaining)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(row[mask], minlength=n)

    def share(mask: np.ndarray) -> np.ndarray:
        mask = mask & known
        total = count(mask)
        hits = np.bincount(row[mask], weights=complaining[mask], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, hits / np.maximum(total, 1), np.nan)

    last_90, last_30 = age < 90, age < 30
    columns = {
        "messages_90d": count(last_90),
        "negative_share_90d": share(last_90),
        "sentiment_trend": share(last_30) - share(last_90 & ~last_30),
        "quote_requests_30d": count(last_30 & read["quote"]),
        "competitor_mentions_90d": count(last_90 & read["competitor"]),
        "days_since_last_message": days_between(ts, latest_per_row(row, n, stamps)),
    }
    return times[[key, TS]].reset_index(drop=True).assign(**columns)


def as_flag(series: pd.Series) -> pd.Series:
    """A yes/no column (bool, nullable boolean or object with None) as plain bool, missing = False."""
    if series.dtype == object and set(pd.unique(series.to_numpy())) <= {True, False, None}:
        # Python bools and None (a nullable column read from the store): no per-value coercion.
        return pd.Series(series.to_numpy() == True, index=series.index, name=series.name)  # noqa: E712
    return series.astype("boolean").fillna(False).astype(bool)


def as_text(series: pd.Series, missing: str = "unknown") -> pd.Series:
    """A text column as Python strings with ``missing`` for blanks (clean text is returned as it
    is: no per-value conversion of a million names)."""
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=False) == "string":
        return series
    if isinstance(series.dtype, pd.CategoricalDtype):  # each category converted once
        names = [str(c) for c in series.cat.categories]
        values = np.array([*names, missing], dtype=object)[series.cat.codes.to_numpy()]
        return pd.Series(values, index=series.index, name=series.name)
    return series.astype(object).where(series.notna(), missing).astype(str)


def lead_profile(
    leads: pd.DataFrame, contacts: pd.DataFrame, accounts: pd.DataFrame
) -> pd.DataFrame:
    """Firmographics and demographics of each lead, stamped when the lead was created (attributes
    treated as known from then on)."""
    frame = leads[["id", "contact_id", "account_id", "created_at", "source", "region"]].rename(
        columns={"id": "lead_id", "source": "lead_source", "region": "lead_region"}
    )
    contact = contacts[["id", "role", "is_decision_maker", "gender", "age_band", "account_id"]]
    contact = contact.rename(columns={"id": "contact_id", "account_id": "contact_account_id"})
    account = accounts[["id", "industry", "size_band", "annual_revenue_band"]]
    account = account.rename(columns={"id": "account_id"})
    frame = frame.merge(contact, on="contact_id", how="left")
    frame["account_id"] = frame["account_id"].fillna(frame["contact_account_id"])
    frame = frame.merge(account, on="account_id", how="left")
    out = pd.DataFrame({"lead_id": frame["lead_id"], TS: frame["created_at"]})
    text = ["lead_source", "lead_region", "industry", "size_band", "annual_revenue_band", "role"]
    for col in [*text, "gender", "age_band"]:  # the export's ``conform`` orders them
        out[col] = as_text(frame[col])
    out["is_decision_maker"] = as_flag(frame["is_decision_maker"]).astype("int64")
    return out


def customer_profile(contacts: pd.DataFrame, key: str = "customer_id") -> pd.DataFrame:
    """Demographics of each contact as a customer, stamped at creation."""
    columns = ["id", "created_at", "region", "source", "gender", "age_band", "account_id"]
    frame = contacts[columns].rename(columns={"id": key, "source": "acquisition_source"})
    out = pd.DataFrame({key: frame[key], TS: frame["created_at"]})
    for col in ("region", "acquisition_source", "gender", "age_band"):
        out[col] = as_text(frame[col])
    out["has_account"] = frame["account_id"].notna().astype("int64")
    return out


def lead_behaviour(
    activities: pd.DataFrame, leads: pd.DataFrame, times: pd.DataFrame
) -> pd.DataFrame:
    """Behaviour windows of each lead: its own activities plus its contact's untargeted ones."""
    # Only the leads asked about (the batch scores a few open leads among many closed ones).
    leads = leads[leads["id"].isin(times["lead_id"])]
    own = np.flatnonzero(positions(leads["id"], activities["lead_id"]) >= 0)
    contacts = leads[["id", "contact_id"]].dropna()
    contact_ids = np.unique(ids(contacts["contact_id"])[0])
    untargeted = activities["lead_id"].isna().to_numpy()
    via = np.flatnonzero(untargeted & (positions(contact_ids, activities["contact_id"]) >= 0))
    via_lead = pd.DataFrame({"contact_id": ids(activities["contact_id"])[0][via], "at": via}).merge(
        pd.DataFrame({"contact_id": ids(contacts["contact_id"])[0], "lead_id": ids(contacts["id"])[0]}),
        on="contact_id",
    )  # fmt: skip
    at = np.concatenate([own, via_lead["at"].to_numpy()])
    read = [c for c in ("type", "category", "occurred_at") if c in activities]
    events = activities[read].iloc[at].reset_index(drop=True)
    lead_ids = np.concatenate([ids(activities["lead_id"])[0][own], via_lead["lead_id"]])
    events.insert(0, "lead_id", lead_ids)
    return behaviour_windows(events, times, "lead_id")


RULE_SCORE_INPUTS = (
    "industry", "is_decision_maker", "lead_region", "site_visits_90d", "pricing_views_90d",
    "whitepapers_90d", "trials_90d", "days_since_last_interaction",
)  # fmt: skip


def rule_score_values(columns: Mapping[str, Sequence]) -> np.ndarray:
    """The design notes' points score over the 90-day behaviour window, from each of
    ``RULE_SCORE_INPUTS`` as a column (Series, array or list): the on-demand view's body."""
    # Columns go in as given (no Series per column): the online API runs this per request.
    return np.asarray(
        rule_based_lead_score(*(columns[name] for name in RULE_SCORE_INPUTS)), dtype=float
    )


def rule_score(inputs: pd.DataFrame) -> pd.DataFrame:
    """``rule_score_values`` as a frame (kept: registries applied before the view's python mode
    re-execute a transformation that calls it)."""
    return pd.DataFrame({"rule_score": rule_score_values(inputs)}, index=inputs.index)


def latest_per_entity(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """The last row per entity by event timestamp (what an online store holds)."""
    keys = frame[key].to_numpy()
    if (keys[1:] > keys[:-1]).all():
        return frame  # one row per entity, in key order already (a view computed at one time)
    order = np.lexsort((frame[TS].to_numpy(), frame[key].to_numpy()))
    ordered = frame.iloc[order]
    return ordered[~ordered[key].duplicated(keep="last")]
