"""Feature tables as ordinary pandas functions: CRM snapshot frames in, one row per (entity, time) out.

Every function takes ``times``, a frame of ``<key>, event_timestamp`` rows (the label snapshot times
and the scoring time), and uses only events at or before each row's timestamp, so the row is what
was observable then. Point-in-time correctness of training sets rests on this, and on Feast's join
picking the latest row stamped at or before the prediction time. All work is vectorised (merges and
group-bys), never a Python loop over entities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from crm_predict.rules import rule_based_lead_score

TS = "event_timestamp"
DAY = pd.Timedelta(days=1)
WEEK = pd.Timedelta(weeks=1)
WINDOWS = (7, 30, 90)

# Activity types per behaviour group; lower-case, several spellings so any CRM's export fits.
ACTIVITY_GROUPS: dict[str, tuple[str, ...]] = {
    "site_visits": ("site_visit", "app_visit", "web_visit", "visit"),
    "pricing_views": ("pricing_view", "pricing_page_view", "pricing_visit"),
    "whitepapers": ("whitepaper_download", "whitepaper", "content_download"),
    "trials": ("trial_request", "trial", "trial_signup"),
    "email_opens": ("email_open", "email_opened", "open"),
    "email_clicks": ("email_click", "email_clicked", "click"),
}
DAY_PARTS = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def behaviour_columns(windows: Sequence[int] = WINDOWS) -> list[str]:
    """Names of the behaviour-window features, in declaration order."""
    cols = [f"{group}_{w}d" for group in ACTIVITY_GROUPS for w in windows]
    return [*cols, "days_since_last_interaction"]


def _with_times(times: pd.DataFrame, events: pd.DataFrame, key: str, at: str) -> pd.DataFrame:
    """Each (entity, time) row paired with that entity's events at or before the time."""
    events = events.dropna(subset=[key, at])
    stamps = times[TS].to_numpy()
    if len(stamps) and (stamps == stamps[0]).all() and times[key].is_unique:
        # One time for every entity (batch scoring at a date): a filter, not a join.
        picked = events[events[key].isin(times[key]) & (events[at] <= stamps[0])]
        picked = picked[[key, *(c for c in picked.columns if c != key)]]
        picked[key] = picked[key].astype(times[key].dtype)
        picked.insert(1, TS, np.repeat(stamps[:1], len(picked)))
        return picked
    pairs = times[[key, TS]].merge(events, on=key, how="inner")
    return pairs[pairs[at] <= pairs[TS]]


def _attach(times: pd.DataFrame, key: str, values: pd.DataFrame | pd.Series) -> pd.DataFrame:
    """Left-join per-(key, time) aggregates back onto ``times``."""
    return times[[key, TS]].merge(values.reset_index(), on=[key, TS], how="left")


def behaviour_windows(
    activities: pd.DataFrame,
    times: pd.DataFrame,
    key: str,
    windows: Sequence[int] = WINDOWS,
    groups: Mapping[str, Sequence[str]] = ACTIVITY_GROUPS,
) -> pd.DataFrame:
    """Counts of site visits, pricing views, whitepapers, trials, email opens/clicks over each
    window, and days since the last interaction of any type (NaN when there was none)."""
    type_to_group = {t: g for g, types in groups.items() for t in types}
    # Map each distinct type once (a CRM has a handful of types and millions of activities).
    codes, kinds = pd.factorize(activities["type"])
    group_of = pd.Index(kinds).astype(str).str.lower().map(type_to_group).to_numpy(dtype=object)
    events = activities[[key, "type", "occurred_at"]].assign(
        group=np.append(group_of, np.nan)[codes]  # code -1 (missing type) → the NaN at the end
    )
    pairs = _with_times(times, events, key, "occurred_at")
    age_days = (pairs[TS] - pairs["occurred_at"]) / DAY
    out = times[[key, TS]].copy()
    grouped = pairs["group"].notna()
    # One group-by for every window: per (entity, time, group) the events younger than each.
    within = pd.DataFrame(
        {w: (age_days[grouped] < w).to_numpy() for w in windows}, index=pairs.index[grouped]
    )
    keys = [pairs.loc[grouped, key], pairs.loc[grouped, TS], pairs.loc[grouped, "group"]]
    per_group = within.groupby(keys).sum()
    for w in windows:
        counts = per_group[w].unstack("group")
        counts = counts.reindex(columns=list(groups), fill_value=0)
        counts.columns = [f"{g}_{w}d" for g in counts.columns]
        out = out.merge(counts.reset_index(), on=[key, TS], how="left")
    out = out.merge(
        age_days.groupby([pairs[key], pairs[TS]]).min().rename("days_since_last_interaction"),
        left_on=[key, TS],
        right_index=True,
        how="left",
    )
    counts_cols = [c for c in behaviour_columns(windows) if c != "days_since_last_interaction"]
    out[counts_cols] = out[counts_cols].fillna(0).astype("int64")
    out["days_since_last_interaction"] = out["days_since_last_interaction"].astype(float)
    return out[[key, TS, *behaviour_columns(windows)]]


def transactions(
    orders: pd.DataFrame, times: pd.DataFrame, key: str = "customer_id"
) -> pd.DataFrame:
    """RFM, tenure, spend trends and lifetimes-style (frequency, recency, T, monetary_value) in
    weeks for each (customer, time); rows without any order by then are dropped (not a customer)."""
    events = orders.rename(columns={"contact_id": key})[[key, "ordered_at", "amount"]]
    pairs = _with_times(times, events, key, "ordered_at")
    age_days = (pairs[TS] - pairs["ordered_at"]) / DAY
    group = [pairs[key], pairs[TS]]
    amount = pairs["amount"].astype(float)

    columns = pd.DataFrame(
        {
            "age": age_days,
            "amount": amount,
            "recent": (age_days < 90),
            "last_3m": amount.where(age_days < 90, 0.0),
            "prior_3m": amount.where((age_days >= 90) & (age_days < 180), 0.0),
            "last_12m": amount.where(age_days < 365, 0.0),
        }
    )
    agg = columns.groupby(group).agg(  # one group-by for every aggregate
        rfm_recency_days=("age", "min"),
        rfm_frequency=("amount", "size"),
        rfm_monetary=("amount", "sum"),
        tenure_days=("age", "max"),
        orders_90d=("recent", "sum"),
        spend_last_3m=("last_3m", "sum"),
        spend_prior_3m=("prior_3m", "sum"),
        spend_12m=("last_12m", "sum"),
    )
    agg["avg_order_value"] = agg["rfm_monetary"] / agg["rfm_frequency"]
    agg = agg.join(_lifetimes_summary(pairs, key))
    out = times[[key, TS]].merge(agg.reset_index(), on=[key, TS], how="inner")
    out["rfm_frequency"] = out["rfm_frequency"].astype("int64")
    out["orders_90d"] = out["orders_90d"].astype("int64")
    return out


def _lifetimes_summary(pairs: pd.DataFrame, key: str) -> pd.DataFrame:
    """lifetimes' ``summary_data_from_transaction_data(freq="W")`` at each row's own end time:
    purchases bucketed into calendar weeks; frequency = repeat weeks, recency = weeks from first to
    last, T = weeks from first to the end time, monetary_value = mean spend of the repeat weeks."""
    week = pairs["ordered_at"].dt.to_period("W").array.asi8
    end_week = pairs[TS].dt.to_period("W").array.asi8
    per_week = (
        pd.DataFrame(
            {key: pairs[key].to_numpy(), TS: pairs[TS].to_numpy(), "week": week, "end": end_week}
        )
        .assign(amount=pairs["amount"].astype(float).to_numpy())
        .groupby([key, TS, "week"], sort=True)
        .agg(amount=("amount", "sum"), end=("end", "first"))
        .reset_index()
    )
    first = per_week.groupby([key, TS])["week"].transform("min")
    repeat = per_week[per_week["week"] > first]
    summary = per_week.groupby([key, TS]).agg(
        first=("week", "min"), last=("week", "max"), n=("week", "size"), end=("end", "first")
    )
    return pd.DataFrame(
        {
            "frequency": (summary["n"] - 1).astype(float),
            "recency": (summary["last"] - summary["first"]).astype(float),
            "T": (summary["end"] - summary["first"]).astype(float),
            "monetary_value": repeat.groupby([key, TS])["amount"]
            .mean()
            .reindex(summary.index)
            .fillna(0.0),
        }
    )


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
    stage = base["hist_stage"].where(base["hist_stage"].notna(), base["stage"].where(own))
    entered = base["hist_entered"].where(base["hist_entered"].notna(), base["stage_entered_at"])
    entered = entered.where(stage.notna(), base["created_at"])
    base["stage"] = stage.fillna("unknown").astype(str)
    base["stage_age_days"] = (base[TS] - entered) / DAY
    base["deal_age_days"] = (base[TS] - base["created_at"]) / DAY

    base = base.merge(_close_date_slips(history, base[[key, TS]], key), on=[key, TS], how="left")
    base["close_date_slips"] = base["close_date_slips"].fillna(0).astype("int64")

    acts = activities.rename(columns={"deal_id": key})[[key, "occurred_at"]]
    pairs = _with_times(base, acts, key, "occurred_at")
    age = (pairs[TS] - pairs["occurred_at"]) / DAY
    grp = [pairs[key], pairs[TS]]
    recent = pd.DataFrame(
        {"days_idle": age.groupby(grp).min(), "activities_30d": (age < 30).groupby(grp).sum()}
    )
    base = base.merge(recent.reset_index(), on=[key, TS], how="left")
    # Idle since creation when nothing has happened on the deal yet.
    base["days_idle"] = base["days_idle"].fillna(base["deal_age_days"])
    base["activities_30d"] = base["activities_30d"].fillna(0).astype("int64")

    base = base.merge(_account_history(deal, base[[key, TS, "account_id"]], key), on=[key, TS], how="left")  # fmt: skip
    base["account_prior_deals"] = base["account_prior_deals"].fillna(0).astype("int64")
    base["amount"] = base["amount"].astype(float)
    base["amount_vs_account_median"] = base["amount"] / base["account_median_amount"]

    base = base.merge(_ticket_sentiment(tickets, base[[key, TS, "account_id"]], key), on=[key, TS], how="left")  # fmt: skip
    base["tickets_90d"] = base["tickets_90d"].fillna(0).astype("int64")
    return base[[key, TS, *DEAL_ACTIVITY_COLUMNS]]


DEAL_ACTIVITY_COLUMNS = [
    "stage", "stage_age_days", "deal_age_days", "days_idle", "activities_30d", "close_date_slips",
    "amount", "amount_vs_account_median", "account_prior_deals", "account_win_rate",
    "tickets_90d", "ticket_sentiment_90d",
]  # fmt: skip


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
    responses = activities[as_flag(activities["responded"])]
    pairs = _with_times(times, responses[[key, "occurred_at", "channel"]], key, "occurred_at")
    hour = pairs["occurred_at"].dt.hour
    weekday = pairs["occurred_at"].dt.weekday
    grp = [pairs[key], pairs[TS]]
    # Every count in one group-by: an indicator column per day part and weekday, summed.
    parts = {"responses_total": np.ones(len(pairs), dtype="int64")}
    for name, (lo, hi) in DAY_PARTS.items():
        parts[f"responses_{name}"] = ((hour >= lo) & (hour < hi)).to_numpy(dtype="int64")
    for i, day in enumerate(WEEKDAYS):
        parts[f"responses_{day}"] = (weekday == i).to_numpy(dtype="int64")
    agg = pd.DataFrame(parts, index=pairs.index).groupby(grp).sum()

    slots = pairs[[key, TS]].assign(slot=(weekday * 24 + hour).to_numpy())
    slot_counts = slots.groupby([key, TS, "slot"]).size().rename("n").reset_index()
    # Most responses wins; ties go to the earliest slot of the week (deterministic).
    best = slot_counts.sort_values([key, TS, "n", "slot"], ascending=[True, True, False, True])
    best = best.drop_duplicates([key, TS]).set_index([key, TS])
    agg["best_slot"] = best["slot"]
    agg["best_slot_share"] = best["n"] / agg["responses_total"]
    channels = pairs.assign(channel=pairs["channel"].fillna("unknown"))
    channel_counts = channels.groupby([key, TS, "channel"]).size().rename("n").reset_index()
    top = channel_counts.sort_values([key, TS, "n", "channel"], ascending=[True, True, False, True])
    agg["best_channel"] = top.drop_duplicates([key, TS]).set_index([key, TS])["channel"]

    out = _attach(times, key, agg)
    counts = [c for c in CONTACT_TIME_COLUMNS if c.startswith("responses_")]
    out[counts] = out[counts].fillna(0).astype("int64")
    out["best_slot"] = out["best_slot"].fillna(-1).astype("int64")
    out["best_slot_share"] = out["best_slot_share"].fillna(0.0).astype(float)
    out["best_channel"] = out["best_channel"].fillna("none").astype(str)
    return out[[key, TS, *CONTACT_TIME_COLUMNS]]


CONTACT_TIME_COLUMNS = [
    "responses_total",
    *(f"responses_{p}" for p in DAY_PARTS),
    *(f"responses_{d}" for d in WEEKDAYS),
    "best_slot",
    "best_slot_share",
    "best_channel",
]

LEAD_PROFILE_COLUMNS = [
    "lead_source", "lead_region", "industry", "size_band", "annual_revenue_band", "role",
    "is_decision_maker", "gender", "age_band",
]  # fmt: skip
CUSTOMER_PROFILE_COLUMNS = ["region", "acquisition_source", "has_account", "gender", "age_band"]


def as_flag(series: pd.Series) -> pd.Series:
    """A yes/no column (bool, nullable boolean or object with None) as plain bool, missing = False."""
    if series.dtype == object and set(pd.unique(series.to_numpy())) <= {True, False, None}:
        # Python bools and None (a nullable column read from the store): no per-value coercion.
        return pd.Series(series.to_numpy() == True, index=series.index, name=series.name)  # noqa: E712
    return series.astype("boolean").fillna(False).astype(bool)


def _text(series: pd.Series) -> pd.Series:
    return series.astype(object).where(series.notna(), "unknown").astype(str)


def lead_profile(
    leads: pd.DataFrame, contacts: pd.DataFrame, accounts: pd.DataFrame
) -> pd.DataFrame:
    """Firmographics and demographics of each lead, stamped when the lead was created (attributes
    treated as known from then on)."""
    frame = leads.rename(
        columns={"id": "lead_id", "source": "lead_source", "region": "lead_region"}
    )
    contact = contacts.rename(columns={"id": "contact_id"})[
        ["contact_id", "role", "is_decision_maker", "gender", "age_band", "account_id"]
    ].rename(columns={"account_id": "contact_account_id"})
    account = accounts.rename(columns={"id": "account_id"})[
        ["account_id", "industry", "size_band", "annual_revenue_band"]
    ]
    frame = frame.merge(contact, on="contact_id", how="left")
    frame["account_id"] = frame["account_id"].fillna(frame["contact_account_id"])
    frame = frame.merge(account, on="account_id", how="left")
    out = pd.DataFrame({"lead_id": frame["lead_id"], TS: frame["created_at"]})
    for col in LEAD_PROFILE_COLUMNS:
        out[col] = _text(frame[col]) if col != "is_decision_maker" else None
    out["is_decision_maker"] = as_flag(frame["is_decision_maker"]).astype("int64")
    return out


def customer_profile(contacts: pd.DataFrame, key: str = "customer_id") -> pd.DataFrame:
    """Demographics of each contact as a customer, stamped at creation."""
    frame = contacts.rename(columns={"id": key, "source": "acquisition_source"})
    out = pd.DataFrame({key: frame[key], TS: frame["created_at"]})
    for col in ("region", "acquisition_source", "gender", "age_band"):
        out[col] = _text(frame[col])
    out["has_account"] = frame["account_id"].notna().astype("int64")
    return out[[key, TS, *CUSTOMER_PROFILE_COLUMNS]]


def lead_behaviour(
    activities: pd.DataFrame, leads: pd.DataFrame, times: pd.DataFrame
) -> pd.DataFrame:
    """Behaviour windows of each lead: its own activities plus its contact's untargeted ones."""
    # Only the leads asked about (the batch scores a few open leads among many closed ones).
    leads = leads[leads["id"].isin(times["lead_id"])]
    acts = activities[["lead_id", "contact_id", "type", "occurred_at"]]
    own = acts[acts["lead_id"].isin(leads["id"])]
    via_contact = acts[acts["lead_id"].isna() & acts["contact_id"].isin(leads["contact_id"])]
    via_contact = via_contact.drop(columns="lead_id").merge(
        leads.rename(columns={"id": "lead_id"})[["lead_id", "contact_id"]].dropna(),
        on="contact_id",
    )  # fmt: skip
    events = pd.concat([own, via_contact], ignore_index=True)
    events["lead_id"] = events["lead_id"].astype("int64")
    return behaviour_windows(events, times, "lead_id")


RULE_SCORE_INPUTS = (
    "industry", "is_decision_maker", "lead_region", "site_visits_90d", "pricing_views_90d",
    "whitepapers_90d", "trials_90d", "days_since_last_interaction",
)  # fmt: skip


def rule_score_values(columns: Mapping[str, Sequence]) -> np.ndarray:
    """The design notes' points score over the 90-day behaviour window, from each of
    ``RULE_SCORE_INPUTS`` as a column (Series, array or list): the on-demand view's body."""
    return rule_based_lead_score(
        *(pd.Series(columns[name]) for name in RULE_SCORE_INPUTS)
    ).to_numpy()


def rule_score(inputs: pd.DataFrame) -> pd.DataFrame:
    """``rule_score_values`` as a frame (kept: registries applied before the view's python mode
    re-execute a transformation that calls it)."""
    return pd.DataFrame({"rule_score": rule_score_values(inputs)}, index=inputs.index)


def as_float(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Columns as float64 (NaN for missing): the dtype the Float64 feature fields expect."""
    frame = frame.copy()
    for col in columns:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame


def latest_per_entity(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """The last row per entity by event timestamp (what an online store holds)."""
    order = np.lexsort((frame[TS].to_numpy(), frame[key].to_numpy()))
    ordered = frame.iloc[order]
    return ordered[~ordered[key].duplicated(keep="last")]
