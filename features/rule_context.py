"""The rule context: what the write-back rules read beside a model's score (owners and managers,
lead rule points, days idle and inactive, yearly spend, RFM inputs, visits, spend windows), per
entity as of ``at``, from the CRM tables and the business rules.

Pure functions over the snapshot frames (or the store's tables): the nightly batch calls them on
the run's CRM snapshot; the values a model's features also carry (lead rule points, deal days idle,
customer days inactive and yearly spend) come from the features' own transforms and rule
functions, and ``rule_values`` derives them from a feature row the same way for the online API, so
the two paths write the same tags for the same entity and time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from crm_predict.features.transforms import (
    ACTIVITY_GROUPS,
    NAT,
    RULE_SCORE_INPUTS,
    TS,
    activity_groups,
    as_flag,
    as_text,
    days_between,
    events_at,
    ids,
    latest_per_row,
    lead_behaviour,
    nanoseconds,
    positions,
    totals_per_row,
)
from crm_predict.training.specs import SPECS

from crm_predict.core.errors import UserError
from crm_predict.core.rules import (
    RULES,
    ChurnRules,
    LeadRules,
    Rules,
    rule_based_lead_score,
)

# The CRM columns the rules read, per table: what ``crm_tables`` loads when no snapshot is given.
CONTEXT_COLUMNS = {
    "users": ["id", "external_id", "manager_id"],
    "accounts": ["id", "industry", "created_at"],
    "contacts": ["id", "owner_id", "is_decision_maker", "account_id"],
    "leads": [
        "id",
        "contact_id",
        "account_id",
        "owner_id",
        "region",
        "created_at",
        "first_contacted_at",
        "converted_at",
    ],  # fmt: skip
    "deals": [
        "id",
        "account_id",
        "owner_id",
        "stage",
        "amount",
        "outcome",
        "created_at",
        "closed_at",
    ],
    "activities": ["contact_id", "lead_id", "deal_id", "type", "category", "occurred_at"],
    "orders": ["contact_id", "ordered_at", "amount"],
}
# Per feature entity, the CRM tables its context reads (deals' accounts: ``account_tier``).
CONTEXT_TABLES = {
    "lead": ("users", "accounts", "contacts", "leads", "activities"),
    "deal": ("users", "accounts", "deals", "activities"),
    "customer": ("contacts", "activities", "orders"),
    "contact": ("contacts", "activities", "orders"),
}
Tables = dict[str, pd.DataFrame]


def _stamp(series: pd.Series) -> pd.Series:
    return series if pd.api.types.is_datetime64_any_dtype(series) else pd.to_datetime(series, format="ISO8601")  # fmt: skip


def _activities_of(
    activities: pd.DataFrame, key: str, entities: pd.Series, at: datetime
) -> tuple[np.ndarray, np.ndarray]:
    """Activities on the given entities (by ``key``) at or before ``at``: (position of the entity,
    position of the activity), found by integer lookups rather than copies of the table."""
    times = pd.DataFrame({"entity_id": ids(entities)[0], TS: pd.Timestamp(at)})
    return events_at(times, activities, "entity_id", "occurred_at", event_key=key)


GROUP_INDEX = {group: i for i, group in enumerate(ACTIVITY_GROUPS)}


def _groups(activities: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """The behaviour group (``GROUP_INDEX``) of the activities at ``rows``, -1 for none."""
    columns = [c for c in ("type", "category") if c in activities]
    return activity_groups(activities[columns].iloc[rows])


def _ns(at: datetime) -> int:
    return pd.Timestamp(at).value


def _datetimes(stamps: np.ndarray) -> np.ndarray:
    return stamps.view("datetime64[ns]")


def _managers(tables: Tables, owners: pd.Series) -> np.ndarray:
    users = tables["users"].set_index("id")["manager_id"]
    return owners.map(users).to_numpy()


def lead_rule_points(columns: Mapping[str, Sequence], rules: LeadRules = RULES.lead) -> np.ndarray:
    """The lead's rule points under ``rules`` from the rule-score feature's inputs
    (``RULE_SCORE_INPUTS``, the lead features' columns): with the built-in rules this is the
    ``rule_score`` feature (``crm_predict.features.transforms.rule_score_values``), with a rules file the
    file's points over the same inputs."""
    values = rule_based_lead_score(*(columns[name] for name in RULE_SCORE_INPUTS), rules)
    return np.asarray(values, dtype=float)


def lead_rule_inputs(tables: Tables, leads: pd.DataFrame, at: datetime) -> dict[str, np.ndarray]:
    """``RULE_SCORE_INPUTS`` of ``leads`` (rows of the leads table) as of ``at``, as the lead
    features compute them: the profile's text and flag, and ``lead_behaviour``'s 90-day counts
    and last interaction (the lead's own activities and its contact's untargeted ones)."""
    frame = leads[["id", "contact_id", "account_id", "region"]].reset_index(drop=True)
    contacts = tables["contacts"]
    contact = [c for c in ("id", "is_decision_maker", "account_id") if c in contacts]
    frame = frame.merge(
        contacts[contact].rename(columns={"id": "contact_id", "account_id": "contact_account_id"}),
        on="contact_id", how="left",
    )  # fmt: skip
    if "contact_account_id" in frame:  # as the profile: the contact's account for a lead without
        frame["account_id"] = frame["account_id"].fillna(frame["contact_account_id"])
    frame = frame.merge(
        tables["accounts"][["id", "industry"]].rename(columns={"id": "account_id"}),
        on="account_id", how="left",
    )  # fmt: skip
    times = pd.DataFrame({"lead_id": ids(frame["id"])[0], TS: pd.Timestamp(at)})
    behaviour = lead_behaviour(tables["activities"], frame[["id", "contact_id"]], times)
    out = {name: behaviour[name].to_numpy() for name in RULE_SCORE_INPUTS if name in behaviour}
    out["industry"] = as_text(frame["industry"]).to_numpy()
    out["is_decision_maker"] = as_flag(frame["is_decision_maker"]).to_numpy(dtype=np.int64)
    out["lead_region"] = as_text(frame["region"]).to_numpy()
    return out


def lead_context(tables: Tables, at: datetime, rules: Rules = RULES) -> pd.DataFrame:
    """Per open lead: owner/manager, region, creation and first contact, rule points (the lead
    features' inputs, ``lead_rule_points``) and the last whitepaper download of the lead."""
    stamp = pd.Timestamp(at)
    leads = tables["leads"]
    created, converted = _stamp(leads["created_at"]), _stamp(leads["converted_at"])
    open_leads = leads[(created <= stamp) & ~(converted <= stamp)]
    frame = open_leads.rename(columns={"id": "entity_id"}).reset_index(drop=True)
    frame["manager_id"] = _managers(tables, frame["owner_id"])

    acts = tables["activities"]
    row, take = _activities_of(acts, "lead_id", frame["entity_id"], at)
    n = len(frame)
    when = nanoseconds(acts["occurred_at"])[take]
    whitepaper = _groups(acts, take) == GROUP_INDEX["whitepapers"]
    frame["last_whitepaper_at"] = _datetimes(latest_per_row(row[whitepaper], n, when[whitepaper]))
    for column in ("created_at", "first_contacted_at"):
        frame[column] = _stamp(frame[column])
    # As of ``at``: a first contact after it has not happened yet.
    frame.loc[frame["first_contacted_at"] > stamp, "first_contacted_at"] = pd.NaT
    frame["rule_points"] = lead_rule_points(lead_rule_inputs(tables, open_leads, at), rules.lead)
    region = frame["region"].astype(object)  # default owners of ownerless tasks
    frame["region"] = region.where(region.notna(), None)
    keep = ["entity_id", "contact_id", "owner_id", "manager_id", "region", "created_at"]
    return frame[keep + ["first_contacted_at", "last_whitepaper_at", "rule_points"]]


def deal_context(tables: Tables, at: datetime, rules: Rules = RULES) -> pd.DataFrame:
    """Per open deal: owner/manager, stage and days since its last activity (or its creation)."""
    stamp = pd.Timestamp(at)
    deals = tables["deals"]
    created, closed = _stamp(deals["created_at"]), _stamp(deals["closed_at"])
    frame = deals[(created <= stamp) & ~(closed <= stamp)].rename(columns={"id": "entity_id"})
    frame = frame.assign(created_at=_stamp(frame["created_at"]))
    frame["manager_id"] = _managers(tables, frame["owner_id"])
    acts = tables["activities"]
    row, take = _activities_of(acts, "deal_id", frame["entity_id"], at)
    last = latest_per_row(row, len(frame), nanoseconds(acts["occurred_at"])[take])
    last = np.where(last == NAT, nanoseconds(frame["created_at"]), last)
    frame["days_idle"] = days_between(np.full(len(frame), _ns(at)), last)
    # Text with None for a blank, whether the snapshot held objects or categoricals (NaN).
    stage = frame["stage"].astype(object)
    frame["stage"] = stage.where(stage.notna(), None)
    return frame[["entity_id", "owner_id", "manager_id", "stage", "days_idle"]]


def inactive_window(rules: ChurnRules = RULES.churn) -> int:
    """Days of activity the churn context looks at: the warning threshold, at least 30 (visits)."""
    return max(rules.inactive_warning_days, 30)


def days_inactive(
    recency_days: np.ndarray, days_since_activity: np.ndarray, rules: ChurnRules = RULES.churn
) -> np.ndarray:
    """Days since a customer's last order or activity: exact below ``inactive_window`` (an
    activity older than that is not read, so above it the value is at least the window), NaN
    when neither happened."""
    since = np.asarray(days_since_activity, dtype=float)
    recent = np.where(since < inactive_window(rules), since, np.nan)
    return np.fmin(np.asarray(recency_days, dtype=float), recent)


def customer_context(tables: Tables, at: datetime, rules: Rules = RULES) -> pd.DataFrame:
    """Per customer (contact with orders by ``at``): owner, spend windows, RFM inputs, site visits in
    30 days and days inactive (exact below the warning threshold, at least it above)."""
    stamp, now = pd.Timestamp(at), _ns(at)
    orders = tables["orders"]
    contact, present = ids(orders["contact_id"])
    when = nanoseconds(orders["ordered_at"])
    take = np.flatnonzero(present & (when != NAT) & (when <= now))
    customers = np.sort(pd.unique(contact[take]))
    n = len(customers)
    row, when = positions(customers, contact[take]), when[take]
    amount = orders["amount"].astype(float).to_numpy()[take]
    after = {days: when > _ns(stamp - timedelta(days=days)) for days in (90, 180, 365)}
    spend = totals_per_row(  # one group-by for every sum
        row,
        n,
        {
            "monetary": amount,
            "yearly_spend": np.where(after[365], amount, 0.0),
            "spend_last_3m": np.where(after[90], amount, 0.0),
            "spend_prior_3m": np.where(after[180] & ~after[90], amount, 0.0),
        },
    )
    recency_days = days_between(np.full(n, now), latest_per_row(row, n, when))

    acts = tables["activities"]
    occurred = nanoseconds(acts["occurred_at"])
    # Only the recent activities are looked up (a window of days among years of history).
    recent = np.flatnonzero(
        (occurred > _ns(stamp - timedelta(days=inactive_window(rules.churn)))) & (occurred <= now)
    )
    act_row = positions(customers, acts["contact_id"].iloc[recent])
    found = act_row >= 0
    act_row, recent = act_row[found], recent[found]
    last_activity = latest_per_row(act_row, n, occurred[recent])
    # Visits of the last 30 days exactly (the window above may be longer).
    visit = (_groups(acts, recent) == GROUP_INDEX["site_visits"]) & (
        occurred[recent] > _ns(stamp - timedelta(days=30))
    )
    owners = tables["contacts"].set_index("id")["owner_id"]

    frame = pd.DataFrame({"entity_id": customers})
    frame["owner_id"] = frame["entity_id"].map(owners).to_numpy()
    since_activity = days_between(np.full(n, now), last_activity)
    frame["days_inactive"] = days_inactive(recency_days, since_activity, rules.churn)
    frame["yearly_spend"] = spend["yearly_spend"].to_numpy()
    frame["recency_days"] = recency_days
    frame["frequency"] = np.bincount(row, minlength=n)
    frame["monetary"] = spend["monetary"].to_numpy()
    frame["visits_30d"] = np.bincount(act_row[visit], minlength=n)
    frame["spend_last_3m"] = spend["spend_last_3m"].to_numpy()
    frame["spend_prior_3m"] = spend["spend_prior_3m"].to_numpy()
    return frame


def contact_context(tables: Tables, at: datetime, rules: Rules = RULES) -> pd.DataFrame:
    """Per contact: owner and site visits in the 30 days up to ``at`` (``high_activity``), blank
    for customers (an order by ``at``), whose flag CLV writes from ``customer_context``."""
    frame = tables["contacts"][["id", "owner_id"]].rename(columns={"id": "entity_id"})
    acts = tables["activities"]
    occurred = nanoseconds(acts["occurred_at"])
    recent = np.flatnonzero(
        (occurred > _ns(pd.Timestamp(at) - timedelta(days=30))) & (occurred <= _ns(at))
    )
    recent = recent[_groups(acts, recent) == GROUP_INDEX["site_visits"]]
    row = positions(frame["entity_id"], acts["contact_id"].iloc[recent])
    visits = np.bincount(row[row >= 0], minlength=len(frame)).astype(float)
    orders = tables["orders"]
    ordered = nanoseconds(orders["ordered_at"])
    buyer = positions(
        frame["entity_id"], orders["contact_id"][(ordered != NAT) & (ordered <= _ns(at))]
    )
    visits[buyer[buyer >= 0]] = np.nan
    frame["visits_30d"] = visits
    return frame


def account_context(tables: Tables, at: datetime) -> pd.DataFrame:
    """Per account created by ``at``: ``won_12m``, the amounts of its deals won in the trailing 12
    months (closed in (at - 365 days, at]), summed; the input of ``account_tier``."""
    stamp = pd.Timestamp(at)
    accounts = tables["accounts"]
    frame = pd.DataFrame({"entity_id": accounts["id"][_stamp(accounts["created_at"]) <= stamp]})
    deals = tables["deals"]
    closed = _stamp(deals["closed_at"])
    won = (
        (deals["outcome"].astype(object) == "won")
        & (closed <= stamp)
        & (closed > stamp - timedelta(days=365))
    )
    row = positions(frame["entity_id"], deals["account_id"][won])
    amount = pd.to_numeric(deals["amount"][won], errors="coerce").fillna(0.0).to_numpy(dtype=float)
    frame["won_12m"] = np.bincount(row[row >= 0], weights=amount[row >= 0], minlength=len(frame))
    return frame.reset_index(drop=True)


# Per feature entity: its context (tables, at, rules) and the columns it gives beside entity_id,
# for checking tag rules before a run.
CONTEXTS: dict[str, tuple[Callable[..., pd.DataFrame], tuple[str, ...]]] = {
    "lead": (lead_context, (
        "contact_id", "owner_id", "manager_id", "region", "created_at", "first_contacted_at",
        "last_whitepaper_at", "rule_points",
    )),
    "deal": (deal_context, ("owner_id", "manager_id", "stage", "days_idle")),
    "customer": (customer_context, (
        "owner_id", "days_inactive", "yearly_spend", "recency_days", "frequency", "monetary",
        "visits_30d", "spend_last_3m", "spend_prior_3m",
    )),
    "contact": (contact_context, ("owner_id", "visits_30d")),
}  # fmt: skip


def rule_context(
    tables: Tables, model_name: str, at: datetime, rules: Rules = RULES
) -> pd.DataFrame:
    """The columns ``crm_predict.serving.writeback`` rules need for one model's entities, as of ``at``, from
    the CRM tables of ``crm_tables``."""
    if model_name not in SPECS:
        raise UserError(f"unknown model {model_name!r}; known: {', '.join(SPECS)}")
    return CONTEXTS[SPECS[model_name].entity][0](tables, at, rules)


def rule_values(entity: str, features: pd.DataFrame, rules: Rules = RULES) -> dict[str, np.ndarray]:  # fmt: skip
    """The rule context the feature rows of an ``entity`` determine (the online API's write-back
    reads these): the same functions over the same values as the batch's context, so the two
    agree. Columns whose inputs ``features`` lacks are left out."""
    has = set(features.columns).issuperset
    out: dict[str, np.ndarray] = {}
    if entity == "lead" and has(RULE_SCORE_INPUTS):
        out["rule_points"] = lead_rule_points(features, rules.lead)
    elif entity == "deal":
        for column in ("stage", "days_idle"):
            if column in features:
                out[column] = features[column].to_numpy()
    elif entity == "customer":
        if has(("rfm_recency_days", "days_since_last_interaction")):
            out["days_inactive"] = days_inactive(
                pd.to_numeric(features["rfm_recency_days"]).to_numpy(dtype=float),
                pd.to_numeric(features["days_since_last_interaction"]).to_numpy(dtype=float),
                rules.churn,
            )
        if "spend_12m" in features:
            out["yearly_spend"] = features["spend_12m"].to_numpy()
        for column, feature in (("recency_days", "rfm_recency_days"), ("frequency", "rfm_frequency"), ("monetary", "rfm_monetary")):  # fmt: skip
            if feature in features:
                out[column] = features[feature].to_numpy()
    return out
