"""Sales and marketing KPIs over the CRM store, as pure functions of its tables.

``load_kpi_tables(session)`` reads what the KPIs need once; every KPI below is a pure function of those
DataFrames, so a test can hand-build a store and know each number exactly.

Definitions (the design notes' KPIs):

- **Funnel**: leads → qualified (status/stage ``qualified``/``sql``/``mql``, an ``mql`` tag ``true``
  from lead scoring, or reached a deal) →
  deal (``converted_at`` set or a deal with its ``lead_id``) → won (a won deal with its ``lead_id``).
  Each stage includes every lead that reached a later one, so the funnel never widens.
- **Deal stage conversion**: from ``deal_stage_history``; the share of deals that reached a stage
  which also reached the next one, then the share of the last stage's deals that were won.
- **Customer**: a contact with revenue — an order, or a won deal whose ``contact_id`` is the contact.
  A new customer of a month is one whose first revenue falls in that month.
- **CAC** = (marketing + sales cost in the window) / new customers in the window. The CRM store has
  no cost table: costs come from a CSV (``Settings.kpi_cost_csv``, columns
  ``month,channel,marketing_cost,sales_cost``; ``month`` is ``YYYY-MM``, an empty ``channel`` is
  cost not attributable to a channel) or, without one, from flat monthly settings
  (``kpi_marketing_cost_per_month`` unattributed marketing, ``kpi_channel_cost_per_month`` marketing
  per lead source, ``kpi_sales_cost_per_month``) — see :func:`cost_inputs`.
- **LTV**: the CLV model's mean 3-year value per customer — its ``clv_3y`` tags on contacts, else
  its latest batch in the prediction log — and without either the historical revenue per
  customer-year × ``kpi_customer_lifetime_years``.
- **Channel ROI** = (revenue − cost) / cost per lead source, revenue attributed last-touch: a won
  deal to its ``lead_id``, an order to its contact's latest lead created at or before the order;
  only leads created in the window count.
- **Sales forecast** over the next ``horizon_days`` = Σ p(win) × amount over open deals expected to
  close by then (overdue expected dates included); p(win) = ``deal_health`` tag / 100, or for an
  untagged deal the historical win rate of closed deals that passed through its current stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from crm_predict.crm_store.models import CLV_BATCH, Activity, Deal, Lead, Order, PredictionLog, Tag
from crm_predict.crm_store.repository import read_table
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from crm_predict.core.errors import UserError
from crm_predict.core.rules import TAG_CLV, TAG_DEAL_HEALTH, TAG_MQL
from crm_predict.core.settings import Settings

QUALIFIED_MARKERS = ("qualified", "sql", "mql", "converted")
COST_COLUMNS = ("month", "channel", "marketing_cost", "sales_cost")
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class KpiTables:
    """The CRM tables the KPIs read (plain DataFrames, so tests can build them by hand)."""

    leads: pd.DataFrame
    deals: pd.DataFrame
    stage_history: pd.DataFrame
    orders: pd.DataFrame
    users: pd.DataFrame
    tags: pd.DataFrame
    clv_predictions: pd.DataFrame | None = None  # entity_id, score: the CLV model's latest batch


def load_kpi_tables(session: Session) -> KpiTables:
    """Read the tables the KPIs need from the CRM store."""
    tags = pd.read_sql(
        select(Tag.entity_type, Tag.entity_id, Tag.name, Tag.value, Tag.model_version).where(
            Tag.name.in_([TAG_CLV, TAG_DEAL_HEALTH, TAG_MQL])
        ),
        session.connection(),
    )
    return KpiTables(
        leads=read_table(session, "leads"),
        deals=read_table(session, "deals"),
        stage_history=read_table(session, "deal_stage_history"),
        orders=read_table(session, "orders"),
        users=read_table(session, "users", ["id", "name"]),
        tags=tags,
        clv_predictions=latest_clv_batch(session),
    )


def latest_clv_batch(session: Session) -> pd.DataFrame:
    """``entity_id, score`` (= clv_3y) of the CLV model's most recent batch in the prediction log."""
    clv_batch = text(CLV_BATCH)  # literals, so the partial index on these rows serves the query
    latest = select(func.max(PredictionLog.predicted_at)).where(clv_batch).scalar_subquery()
    return pd.read_sql(
        select(PredictionLog.entity_id, PredictionLog.score).where(
            clv_batch, PredictionLog.predicted_at == latest
        ),
        session.connection(),
    )


def store_as_of(session: Session) -> datetime:
    """The newest timestamp in the store: "now" for a demo store, about now for a live one."""
    columns = (Lead.created_at, Deal.updated_at, Activity.occurred_at, Order.ordered_at)
    stamps = [s for c in columns if (s := session.scalar(select(func.max(c)))) is not None]
    if not stamps:
        raise UserError("the CRM store is empty: run `crm-predict quickstart` or import data first")
    return max(stamps)


def _tags(tags: pd.DataFrame, name: str, entity_type: str) -> pd.DataFrame:
    return tags[(tags["name"] == name) & (tags["entity_type"] == entity_type)]


# --- Funnel ----------------------------------------------------------------------------------


def lead_funnel(
    leads: pd.DataFrame, deals: pd.DataFrame, tags: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Leads → qualified → deal → won: count, conversion from the previous stage and from leads."""
    deal_leads = set(deals["lead_id"].dropna().astype(int))
    won_leads = set(deals.loc[deals["outcome"] == "won", "lead_id"].dropna().astype(int))
    ids = leads["id"].astype(int)
    won = ids.isin(won_leads)
    has_deal = won | ids.isin(deal_leads) | leads["converted_at"].notna()
    status = leads["status"].fillna("").str.lower()
    stage = leads["stage"].fillna("").str.lower()
    marked = status.isin(QUALIFIED_MARKERS) | stage.isin(QUALIFIED_MARKERS)
    if tags is not None:
        mql = _tags(tags, TAG_MQL, "lead")
        marked |= ids.isin(set(mql.loc[mql["value"] == "true", "entity_id"].astype(int)))
    qualified = has_deal | marked
    counts = [len(leads), int(qualified.sum()), int(has_deal.sum()), int(won.sum())]
    return _funnel_frame(["leads", "qualified", "deal", "won"], counts)


def deal_stage_conversion(
    stage_history: pd.DataFrame, deals: pd.DataFrame, stage_order: Sequence[str] | None = None
) -> pd.DataFrame:
    """Share of deals reaching each pipeline stage that reached the next one, ending with ``won``.

    Stage names containing "won" or "lost" are outcomes, not pipeline stages; the final row counts
    deals with ``outcome == "won"`` among those that reached the last stage. Without ``stage_order``
    stages are ordered by their mean position in each deal's history.
    """
    history = stage_history[~stage_history["stage"].str.lower().str.contains("won|lost")]
    if history.empty:
        return _funnel_frame([], [])
    if stage_order is None:
        ranked = history.sort_values(["deal_id", "entered_at", "id"]).drop_duplicates(
            ["deal_id", "stage"]
        )
        ranked = ranked.assign(rank=ranked.groupby("deal_id").cumcount())
        mean_rank = ranked.groupby("stage")["rank"].mean().reset_index()
        stage_order = list(mean_rank.sort_values(["rank", "stage"])["stage"])
    won_ids = set(deals.loc[deals["outcome"] == "won", "id"])
    # A stage's row counts deals that reached it and every stage before it.
    cohort: set = set(history["deal_id"])
    counts = []
    for stage in stage_order:
        cohort &= set(history.loc[history["stage"] == stage, "deal_id"])
        counts.append(len(cohort))
    return _funnel_frame([*stage_order, "won"], [*counts, len(cohort & won_ids)])


def _funnel_frame(stages: list[str], counts: list[int]) -> pd.DataFrame:
    counts_arr = np.asarray(counts, dtype=float)
    previous = np.concatenate([[np.nan], counts_arr[:-1]]) if len(counts) else counts_arr
    first = counts_arr[0] if len(counts) else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                "stage": stages,
                "count": np.asarray(counts, dtype=int),
                "conversion_from_previous": np.where(previous > 0, counts_arr / previous, np.nan),
                "conversion_from_first": counts_arr / first if first else np.nan,
            }
        )


# --- Cycle, owners ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SalesCycle:
    """Days from deal creation to closed-won."""

    won_deals: int
    median_days: float
    mean_days: float


def _cycle_days(deals: pd.DataFrame) -> pd.Series:
    return (pd.to_datetime(deals["closed_at"]) - pd.to_datetime(deals["created_at"])) / DAY


def won_cycle_days(deals: pd.DataFrame) -> pd.Series:
    """Days from creation to close of each won deal."""
    return _cycle_days(deals[(deals["outcome"] == "won") & deals["closed_at"].notna()])


def sales_cycle(deals: pd.DataFrame) -> SalesCycle:
    """Median and mean sales cycle of won deals."""
    days = won_cycle_days(deals)
    if days.empty:
        return SalesCycle(0, float("nan"), float("nan"))
    return SalesCycle(len(days), float(days.median()), float(days.mean()))


def owner_leaderboard(deals: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """Per owner: won amount, won/lost deals, win rate, median cycle of won deals, open pipeline."""
    frame = deals.assign(
        is_won=deals["outcome"] == "won",
        is_lost=deals["outcome"] == "lost",
        won_amount=np.where(deals["outcome"] == "won", deals["amount"].fillna(0.0), 0.0),
        open_amount=np.where(deals["outcome"].isna(), deals["amount"].fillna(0.0), 0.0),
        cycle_days=np.where(deals["outcome"] == "won", _cycle_days(deals), np.nan),
    )
    board = (
        frame.dropna(subset=["owner_id"])
        .groupby("owner_id")
        .agg(
            won_amount=("won_amount", "sum"),
            won=("is_won", "sum"),
            lost=("is_lost", "sum"),
            median_cycle_days=("cycle_days", "median"),
            open_pipeline=("open_amount", "sum"),
        )
        .reset_index()
    )
    closed = board["won"] + board["lost"]
    board["win_rate"] = np.where(closed > 0, board["won"] / closed.where(closed > 0, 1), np.nan)
    names = users.rename(columns={"id": "owner_id", "name": "owner"})
    board["owner_id"] = board["owner_id"].astype(int)
    board = board.merge(names, on="owner_id", how="left")
    board["owner"] = board["owner"].fillna(board["owner_id"].map(lambda i: f"user {i}"))
    columns = ["owner_id", "owner", "won_amount", "won", "lost", "win_rate", "median_cycle_days"]
    return board[columns + ["open_pipeline"]].sort_values(
        ["won_amount", "owner_id"], ascending=[False, True], ignore_index=True
    )


# --- Customers, costs, CAC, LTV, ROI --------------------------------------------------------


def customer_revenue(orders: pd.DataFrame, deals: pd.DataFrame) -> pd.DataFrame:
    """Every revenue event per contact: orders, and won deals with a contact (contact_id, at, amount)."""
    won = deals[(deals["outcome"] == "won") & deals["contact_id"].notna()]
    frames = [
        events[["contact_id", at, "amount"]].rename(columns={at: "at"})
        for events, at in ((orders, "ordered_at"), (won, "closed_at"))
    ]
    non_empty = [f for f in frames if not f.empty]
    revenue = pd.concat(non_empty, ignore_index=True) if non_empty else frames[0]
    revenue = revenue.dropna(subset=["contact_id", "at"])
    return revenue.astype({"contact_id": int, "amount": float}).assign(
        at=lambda f: pd.to_datetime(f["at"])
    )


def _month(stamps: pd.Series) -> pd.Series:
    return pd.to_datetime(stamps).dt.strftime("%Y-%m")


def window_months(as_of: datetime, months: int) -> list[str]:
    """The ``months`` calendar months ending with the one that contains ``as_of``, oldest first."""
    last = pd.Period(as_of, freq="M")
    return [str(last - k) for k in range(months - 1, -1, -1)]


def new_customers_per_month(revenue: pd.DataFrame) -> pd.Series:
    """New customers per month ``YYYY-MM`` (month of each contact's first revenue)."""
    first = revenue.groupby("contact_id")["at"].min()
    return _month(first).value_counts().sort_index()


def load_cost_csv(path: Path) -> pd.DataFrame:
    """Costs from a CSV with columns ``month,channel,marketing_cost,sales_cost``."""
    try:
        costs = pd.read_csv(path, dtype={"month": str, "channel": str})
    except FileNotFoundError:
        raise UserError(f"cost CSV not found: {path}") from None
    missing = [c for c in COST_COLUMNS if c not in costs.columns]
    if missing:
        raise UserError(f"cost CSV {path} lacks column(s) {', '.join(missing)}")
    costs = costs[list(COST_COLUMNS)].copy()
    costs["channel"] = costs["channel"].fillna("")
    for column in ("marketing_cost", "sales_cost"):
        values = pd.to_numeric(costs[column], errors="coerce")
        if values[costs[column].notna()].isna().any():
            raise UserError(f"cost CSV {path}: {column} must be numbers")
        costs[column] = values.fillna(0.0)
    bad = ~costs["month"].astype(str).str.fullmatch(r"\d{4}-\d{2}")
    if bad.any():
        raise UserError(
            f"cost CSV {path}: month must be YYYY-MM, got {costs.loc[bad, 'month'].iloc[0]!r}"
        )
    return costs


def flat_costs(
    months: Sequence[str],
    marketing_per_month: float,
    sales_per_month: float,
    channel_per_month: dict[str, float],
) -> pd.DataFrame:
    """Costs for ``months`` from flat monthly amounts (unattributed marketing, sales, per channel)."""
    rows = []
    for month in months:
        rows.append((month, "", marketing_per_month, sales_per_month))
        rows.extend((month, channel, cost, 0.0) for channel, cost in channel_per_month.items())
    return pd.DataFrame(rows, columns=list(COST_COLUMNS))


def cost_inputs(settings: Settings, months: Sequence[str]) -> pd.DataFrame:
    """Costs per month and channel: the CSV ``settings.kpi_cost_csv`` when set, else flat settings."""
    if settings.kpi_cost_csv is not None:
        return load_cost_csv(Path(settings.kpi_cost_csv))
    return flat_costs(
        months,
        settings.kpi_marketing_cost_per_month,
        settings.kpi_sales_cost_per_month,
        dict(settings.kpi_channel_cost_per_month),
    )


@dataclass(frozen=True)
class Acquisition:
    """CAC over a window of months, LTV and their ratio."""

    months: list[str]
    cost: float
    new_customers: int
    cac: float
    ltv: float
    ltv_source: str  # "clv_tags", "clv_predictions" or "historical"
    ltv_to_cac: float
    per_month: pd.DataFrame  # month, cost, new_customers, cac


def cac_per_month(
    costs: pd.DataFrame, revenue: pd.DataFrame, months: Sequence[str]
) -> pd.DataFrame:
    """Cost, new customers and CAC for each month of ``months``."""
    cost = (
        costs.assign(cost=costs["marketing_cost"] + costs["sales_cost"])
        .groupby("month")["cost"]
        .sum()
        .reindex(months, fill_value=0.0)
    )
    new = new_customers_per_month(revenue).reindex(months, fill_value=0)
    frame = pd.DataFrame(
        {"month": list(months), "cost": cost.to_numpy(), "new_customers": new.to_numpy()}
    )
    frame["cac"] = np.where(
        frame["new_customers"] > 0, frame["cost"] / frame["new_customers"].clip(lower=1), np.nan
    )
    return frame


def ltv(
    tags: pd.DataFrame,
    revenue: pd.DataFrame,
    as_of: datetime,
    lifetime_years: float,
    clv_predictions: pd.DataFrame | None = None,
) -> tuple[float, str]:
    """LTV: mean ``clv_3y`` tag on contacts, else mean of the CLV model's latest batch predictions,
    else historical revenue per customer-year (tenure from first revenue to ``as_of``, at least 30
    days) × lifetime. Returns (value, source)."""
    values = pd.to_numeric(_tags(tags, TAG_CLV, "contact")["value"], errors="coerce").dropna()
    if not values.empty:
        return float(values.mean()), "clv_tags"
    if clv_predictions is not None and not clv_predictions["score"].dropna().empty:
        return float(clv_predictions["score"].dropna().mean()), "clv_predictions"
    past = revenue[revenue["at"] <= pd.Timestamp(as_of)]
    if past.empty:
        return float("nan"), "historical"
    first = past.groupby("contact_id")["at"].min()
    tenure_years = ((pd.Timestamp(as_of) - first) / DAY).clip(lower=30.0) / 365.25
    per_year = past["amount"].sum() / tenure_years.sum()
    return float(per_year * lifetime_years), "historical"


def acquisition(
    tables: KpiTables,
    costs: pd.DataFrame,
    as_of: datetime,
    months: int = 12,
    lifetime_years: float = 3.0,
) -> Acquisition:
    """CAC over the ``months`` ending at ``as_of``, LTV and LTV/CAC."""
    window = window_months(as_of, months)
    revenue = customer_revenue(tables.orders, tables.deals)
    per_month = cac_per_month(costs, revenue, window)
    total_cost = float(per_month["cost"].sum())
    new = int(per_month["new_customers"].sum())
    cac = total_cost / new if new else float("nan")
    value, source = ltv(tables.tags, revenue, as_of, lifetime_years, tables.clv_predictions)
    ratio = value / cac if cac and not np.isnan(cac) and cac > 0 else float("nan")
    return Acquisition(window, total_cost, new, cac, value, source, ratio, per_month)


def lead_revenue(leads: pd.DataFrame, deals: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """Revenue per lead (lead_id, source, revenue), last touch: won deals by ``lead_id``, each order
    to its contact's latest lead created at or before it."""
    won = deals[(deals["outcome"] == "won") & deals["lead_id"].notna()]
    by_deal = won.groupby(won["lead_id"].astype(int))["amount"].sum()
    touches = leads.dropna(subset=["contact_id"])[["id", "contact_id", "created_at"]]
    touches = touches.astype({"contact_id": int}).assign(
        created_at=lambda f: pd.to_datetime(f["created_at"])
    )
    sales = orders[["contact_id", "ordered_at", "amount"]].astype({"contact_id": int})
    sales = sales.assign(ordered_at=pd.to_datetime(sales["ordered_at"]))
    by_order = pd.Series(dtype=float)
    if not touches.empty and not sales.empty:
        matched = pd.merge_asof(
            sales.sort_values("ordered_at"),
            touches.sort_values("created_at"),
            left_on="ordered_at",
            right_on="created_at",
            by="contact_id",
            direction="backward",
        ).dropna(subset=["id"])
        by_order = matched.groupby(matched["id"].astype(int))["amount"].sum()
    revenue = by_deal.add(by_order, fill_value=0.0)
    out = leads[["id", "source"]].rename(columns={"id": "lead_id"})
    out = out.assign(revenue=out["lead_id"].astype(int).map(revenue).fillna(0.0).to_numpy())
    return out


def channel_roi(
    tables: KpiTables, costs: pd.DataFrame, as_of: datetime, months: int = 12
) -> pd.DataFrame:
    """Per lead source: leads created in the window, revenue attributed to them, cost, ROI."""
    window = window_months(as_of, months)
    leads = tables.leads[_month(tables.leads["created_at"]).isin(window)]
    revenue = lead_revenue(leads, tables.deals, tables.orders)
    revenue["source"] = revenue["source"].fillna("unknown")
    by_source = revenue.groupby("source").agg(
        leads=("lead_id", "count"), revenue=("revenue", "sum")
    )
    in_window = costs[costs["month"].isin(window) & (costs["channel"] != "")]
    cost = in_window.groupby("channel")["marketing_cost"].sum().rename("cost")
    frame = by_source.join(cost, how="outer").fillna({"leads": 0, "revenue": 0.0})
    frame["leads"] = frame["leads"].astype(int)
    frame["roi"] = np.where(
        frame["cost"] > 0, (frame["revenue"] - frame["cost"]) / frame["cost"], np.nan
    )
    frame.index.name = "channel"
    return frame.reset_index().sort_values(
        ["revenue", "channel"], ascending=[False, True], ignore_index=True
    )


# --- Forecast --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forecast:
    """Expected revenue from open deals expected to close within ``horizon_days`` of ``as_of``."""

    as_of: datetime
    horizon_days: int
    expected_revenue: float
    pipeline_amount: float
    deals: pd.DataFrame  # deal_id, name, owner_id, stage, amount, expected_close_at, p_win, source

    @property
    def horizon_end(self) -> datetime:
        return self.as_of + timedelta(days=self.horizon_days)


def stage_win_rates(stage_history: pd.DataFrame, deals: pd.DataFrame) -> pd.Series:
    """Per stage: share of closed deals that passed through it and were won."""
    closed = deals.loc[deals["outcome"].isin(["won", "lost"]), ["id", "outcome"]]
    passed = (
        stage_history[["deal_id", "stage"]]
        .drop_duplicates()
        .merge(closed, left_on="deal_id", right_on="id")
    )
    return passed.assign(won=passed["outcome"] == "won").groupby("stage")["won"].mean()


def sales_forecast(tables: KpiTables, as_of: datetime, horizon_days: int = 90) -> Forecast:
    """Σ p(win) × amount over open deals with an expected close date by ``as_of + horizon_days``."""
    deals = tables.deals
    end = pd.Timestamp(as_of + timedelta(days=horizon_days))
    open_deals = deals[
        deals["outcome"].isna()
        & deals["expected_close_at"].notna()
        & (pd.to_datetime(deals["expected_close_at"]) <= end)
    ].copy()
    health = _tags(tables.tags, TAG_DEAL_HEALTH, "deal")
    tagged = pd.Series(
        pd.to_numeric(health["value"], errors="coerce").to_numpy() / 100.0,
        index=health["entity_id"].astype(int).to_numpy(),
    ).dropna()
    rates = stage_win_rates(tables.stage_history, deals)
    closed = deals["outcome"].isin(["won", "lost"])
    overall = float((deals.loc[closed, "outcome"] == "won").mean()) if closed.any() else 0.0
    ids = open_deals["id"].astype(int)
    from_tag = ids.map(tagged)
    from_stage = open_deals["stage"].map(rates).fillna(overall)
    open_deals["p_win"] = from_tag.fillna(from_stage).astype(float)
    open_deals["source"] = np.where(from_tag.notna(), "deal_health", "stage_win_rate")
    open_deals["amount"] = open_deals["amount"].fillna(0.0)
    columns = ["id", "name", "owner_id", "stage", "amount", "expected_close_at", "p_win", "source"]
    table = (
        open_deals[columns]
        .rename(columns={"id": "deal_id"})
        .sort_values(["expected_close_at", "deal_id"], ignore_index=True)
    )
    expected = float((table["p_win"] * table["amount"]).sum())
    return Forecast(as_of, horizon_days, expected, float(table["amount"].sum()), table)


# --- Everything at once ----------------------------------------------------------------------


@dataclass(frozen=True)
class KpiReport:
    as_of: datetime
    funnel: pd.DataFrame
    stage_conversion: pd.DataFrame
    cycle: SalesCycle
    acquisition: Acquisition
    channels: pd.DataFrame
    owners: pd.DataFrame
    forecast: Forecast


def kpi_report(
    tables: KpiTables,
    costs: pd.DataFrame,
    as_of: datetime,
    months: int = 12,
    lifetime_years: float = 3.0,
    horizon_days: int = 90,
) -> KpiReport:
    """Every KPI of the report from one read of the store."""
    return KpiReport(
        as_of=as_of,
        funnel=lead_funnel(tables.leads, tables.deals, tables.tags),
        stage_conversion=deal_stage_conversion(tables.stage_history, tables.deals),
        cycle=sales_cycle(tables.deals),
        acquisition=acquisition(tables, costs, as_of, months, lifetime_years),
        channels=channel_roi(tables, costs, as_of, months),
        owners=owner_leaderboard(tables.deals, tables.users),
        forecast=sales_forecast(tables, as_of, horizon_days),
    )
