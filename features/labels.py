"""Prediction times and labels per model, from the CRM snapshot at the export's cut-off ``as_of``.

One row per entity and prediction time (``entity_id, event_timestamp, label``), following the
contract table in docs/architecture.md. A label needs its whole window before ``as_of``; rows whose
window is still open get a missing label (they are stamped for features but not trained on).
Functions are pure: frames in, frames out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
from crm_predict.features.transforms import as_flag
from crm_predict.training.specs import SPECS

from crm_predict.core.rules import RULES

TS = "event_timestamp"
LEAD_PREDICTION_DELAY = pd.Timedelta(days=7)
DEAL_PREDICTION_DELAY = pd.Timedelta(days=21)
CHURN_CUTOFF_MONTHS = 6  # generic monthly churn cutoffs when no demo truth file exists
CLOSED_LEAD_STATUSES = ("converted", "disqualified", "lost", "closed", "unqualified")

Tables = dict[str, pd.DataFrame]
Cutoffs = pd.DataFrame | Sequence[datetime] | None


def _rows(ids, times, label) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": pd.Series(ids, dtype="int64").to_numpy(),
            TS: pd.to_datetime(times).to_numpy(),
            "label": label,
        }  # fmt: skip
    )


def lead_rows(leads: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Leads at created_at + 7 d; label = converted in (t, created_at + 90 d]; leads converted by t
    are dropped; the label is missing while the 90-day window is still open at ``as_of``."""
    window = pd.Timedelta(days=RULES.lead.conversion_window_days)
    t = leads["created_at"] + LEAD_PREDICTION_DELAY
    converted = leads["converted_at"]
    keep = (t <= as_of) & ~(converted.notna() & (converted <= t))
    leads, t, converted = leads[keep], t[keep], converted[keep]
    label = (converted.notna() & (converted <= leads["created_at"] + window)).astype("Int64")
    label = label.where(leads["created_at"] + window <= as_of, pd.NA)
    return _rows(leads["id"], t, label.to_numpy())


def deal_rows(deals: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Deals still open at created_at + 21 d; label = won, known once the deal has closed."""
    t = deals["created_at"] + DEAL_PREDICTION_DELAY
    closed = deals["closed_at"]
    keep = (t <= as_of) & ~(closed.notna() & (closed <= t))
    deals, t = deals[keep], t[keep]
    done = deals["closed_at"].notna() & (deals["closed_at"] <= as_of) & deals["outcome"].notna()
    label = (deals["outcome"] == "won").astype("Int64").where(done, pd.NA)
    return _rows(deals["id"], t, label.to_numpy())


def monthly_cutoffs(
    as_of: datetime, months: int = CHURN_CUTOFF_MONTHS, window_days: int = RULES.churn.window_days
) -> list[pd.Timestamp]:
    """The last ``months`` month starts whose churn window (t, t + 90 d] ends by ``as_of``."""
    last = pd.Timestamp(as_of) - pd.Timedelta(days=window_days)
    newest = last.to_period("M").to_timestamp()
    return [newest - pd.DateOffset(months=i) for i in range(months)][::-1]


def churn_rows(
    orders: pd.DataFrame,
    as_of: datetime,
    cutoffs: Cutoffs = None,
) -> pd.DataFrame:
    """Customers (contacts with an order at or before t) at their churn cutoffs; label = no order in
    (t, t + 90 d]. ``cutoffs`` is a frame of per-customer cutoffs (``entity_id, event_timestamp``,
    e.g. the demo truth file) or a list of times applied to every customer."""
    window = pd.Timedelta(days=RULES.churn.window_days)
    if cutoffs is None:
        cutoffs = monthly_cutoffs(as_of)
    if isinstance(cutoffs, pd.DataFrame):
        rows = cutoffs[["entity_id", TS]].copy()
    else:
        times = pd.DataFrame({TS: pd.to_datetime(list(cutoffs))})
        ids = pd.DataFrame({"entity_id": orders["contact_id"].dropna().unique()})
        rows = ids.merge(times, how="cross")
    rows["entity_id"] = rows["entity_id"].astype("int64")
    rows[TS] = pd.to_datetime(rows[TS])
    pairs = rows.merge(
        orders[["contact_id", "ordered_at"]].rename(columns={"contact_id": "entity_id"}),
        on="entity_id",
    )
    before = pairs[pairs["ordered_at"] <= pairs[TS]].groupby(["entity_id", TS]).size()
    after = pairs[(pairs["ordered_at"] > pairs[TS]) & (pairs["ordered_at"] <= pairs[TS] + window)]
    bought = after.groupby(["entity_id", TS]).size()
    rows = rows.set_index(["entity_id", TS])
    rows = rows[rows.index.isin(before.index)]
    label = (~rows.index.isin(bought.index)).astype("int64")
    out = rows.assign(label=pd.array(label, dtype="Int64")).reset_index()
    out.loc[out[TS] + window > pd.Timestamp(as_of), "label"] = pd.NA
    return out[["entity_id", TS, "label"]]


def clv_rows(orders: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Customers at as_of - 90 d; label = number of purchases in the next 90 days (for
    ``mae_purchases``; CLV's label is a count, not a class)."""
    window = pd.Timedelta(days=RULES.churn.window_days)
    t = pd.Timestamp(as_of) - window
    known = orders[orders["ordered_at"] <= t]["contact_id"].dropna().unique()
    later = orders[(orders["ordered_at"] > t) & (orders["ordered_at"] <= t + window)]
    counts = later.groupby("contact_id").size()
    label = pd.Series(known).map(counts).fillna(0).astype("Int64")
    return _rows(known, [t] * len(known), label.to_numpy())


def next_best_time_rows(activities: pd.DataFrame, as_of: datetime) -> pd.DataFrame:
    """Contacts at as_of - 90 d; label = hour-of-week slot (0 = Mon 00:00) of their first response
    after t within 90 days; contacts without one get no row."""
    t = pd.Timestamp(as_of) - pd.Timedelta(days=90)
    acts = activities[as_flag(activities["responded"])]
    later = acts[(acts["occurred_at"] > t) & (acts["occurred_at"] <= as_of)].dropna(subset=["contact_id"])  # fmt: skip
    first = later.sort_values("occurred_at").drop_duplicates("contact_id")
    slot = first["occurred_at"].dt.weekday * 24 + first["occurred_at"].dt.hour
    return _rows(first["contact_id"], [t] * len(first), slot.astype("Int64").to_numpy())


def read_truth_cutoffs(truth_dir: Path) -> pd.DataFrame | None:
    """Per-customer churn cutoffs from the demo truth file, when the generator wrote one."""
    path = truth_dir / "churn.parquet"
    if not path.exists():
        return None
    return pd.read_parquet(path, columns=["entity_id", TS])


# Each model spec's ``label``: (tables, as_of, churn cutoffs) → its prediction rows and labels.
LABELS: dict[str, Callable[[Tables, datetime, Cutoffs], pd.DataFrame]] = {
    "converted_90d": lambda tables, as_of, _: lead_rows(tables["leads"], as_of),
    "won": lambda tables, as_of, _: deal_rows(tables["deals"], as_of),
    "churned_90d": lambda tables, as_of, cutoffs: churn_rows(tables["orders"], as_of, cutoffs),
    "purchases_90d": lambda tables, as_of, _: clv_rows(tables["orders"], as_of),
    "response_slot": lambda tables, as_of, _: next_best_time_rows(tables["activities"], as_of),
}


def prediction_rows(
    model_name: str, tables: Tables, as_of: datetime, churn_cutoffs: Cutoffs = None
) -> pd.DataFrame:
    """Entity rows with labels for one model (the label snapshot times features are stamped at)."""
    return LABELS[SPECS[model_name].label](tables, as_of, churn_cutoffs)


def active_rows(entity: str, tables: Tables, at: datetime) -> pd.DataFrame:
    """Entities to score at ``at``: open leads, open deals, customers with orders, contacts."""
    at = pd.Timestamp(at)
    if entity == "lead":
        leads = tables["leads"]
        closed_status = leads["status"].astype(str).str.lower().isin(CLOSED_LEAD_STATUSES) & (
            leads["updated_at"] <= at
        )
        converted = leads["converted_at"].notna() & (leads["converted_at"] <= at)
        ids = leads.loc[(leads["created_at"] <= at) & ~converted & ~closed_status, "id"]
    elif entity == "deal":
        deals = tables["deals"]
        closed = deals["closed_at"].notna() & (deals["closed_at"] <= at)
        ids = deals.loc[(deals["created_at"] <= at) & ~closed, "id"]
    elif entity == "customer":
        orders = tables["orders"]
        ids = pd.Series(orders.loc[orders["ordered_at"] <= at, "contact_id"].dropna().unique())
    elif entity == "contact":
        contacts = tables["contacts"]
        ids = contacts.loc[contacts["created_at"] <= at, "id"]
    else:
        raise KeyError(entity)
    ids = pd.Series(ids, dtype="int64").sort_values()
    return pd.DataFrame({"entity_id": ids.to_numpy(), TS: at})
