"""The HTML report: CRM KPIs (``crm_predict.crm_store.kpis``) and model quality (``crm_predict.registry.quality``) rendered
with a Jinja2 template into one self-contained ``report.html``; the PNG charts are embedded and also
kept beside it in ``charts/``."""

from __future__ import annotations

import base64
import math
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from crm_predict.crm_store import kpis
from crm_predict.registry.quality import ModelQuality, download_plot, model_quality
from mlflow import MlflowClient
from sqlalchemy.orm import Session

from crm_predict.core.settings import Settings

TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Chart:
    title: str
    path: Path

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.path.read_bytes()).decode()


# --- Charts (matplotlib's object API with the Agg canvas: no global pyplot state) ------------


@contextmanager
def _axes(path: Path, *titles: str, size: tuple[float, float] = (7.0, 3.2)):
    """One axes per title, side by side (one title: the axes itself), saved as PNG to ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=96, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(titles)))
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
    yield axes if len(titles) > 1 else axes[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _paired_bars(ax, labels, first: pd.Series, second: pd.Series, names: tuple[str, str], **ticks):
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], first, width=0.4, label=names[0])
    ax.bar([i + 0.2 for i in x], second, width=0.4, label=names[1])
    ax.set_xticks(list(x), labels, fontsize=8, **ticks)
    ax.legend()


def funnel_chart(report: kpis.KpiReport, path: Path) -> Chart:
    with _axes(path, "Lead funnel", "Deal stages", size=(9, 3.4)) as axes:
        for ax, frame in zip(axes, (report.funnel, report.stage_conversion), strict=True):
            if frame.empty or frame["count"].max() == 0:
                _no_data(ax, "data")
                continue
            bars = ax.barh(frame["stage"][::-1], frame["count"][::-1], color="#4c72b0")
            labels = [
                f"{n:,}" if math.isnan(c) else f"{n:,} ({c:.0%})"
                for n, c in zip(frame["count"], frame["conversion_from_previous"], strict=True)
            ][::-1]
            ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
            ax.margins(x=0.3)
    return Chart("Conversion per funnel stage", path)


def cycle_chart(days: pd.Series, path: Path) -> Chart:
    with _axes(path, "Sales cycle of won deals (days)") as ax:
        if days.empty:
            _no_data(ax, "won deals")
        else:
            ax.hist(days, bins=min(30, max(5, len(days) // 5)), color="#55a868")
            ax.axvline(days.median(), color="black", linestyle="--", label="median")
            ax.legend()
    return Chart("Sales cycle length", path)


def cac_chart(acquisition: kpis.Acquisition, path: Path) -> Chart:
    frame = acquisition.per_month
    with _axes(path, "New customers and CAC per month") as ax:
        if frame["new_customers"].sum() == 0:
            _no_data(ax, "new customers")
        else:
            ax.bar(frame["month"], frame["new_customers"], color="#8172b2")
            ax.set_ylabel("new customers")
            ax.tick_params(axis="x", rotation=60, labelsize=8)
            cac_ax = ax.twinx()
            cac_ax.plot(frame["month"], frame["cac"], color="#c44e52", marker="o")
            cac_ax.set_ylabel("CAC")
    return Chart("CAC, LTV and LTV/CAC", path)


def channel_chart(channels: pd.DataFrame, path: Path) -> Chart:
    with _axes(path, "Revenue vs cost per channel") as ax:
        if channels.empty:
            _no_data(ax, "channels")
        else:
            revenue, cost = channels["revenue"], channels["cost"].fillna(0.0)
            _paired_bars(ax, channels["channel"], revenue, cost, ("revenue", "cost"), rotation=30)
    return Chart("Channel ROI", path)


def owner_chart(owners: pd.DataFrame, path: Path, top: int = 10) -> Chart:
    with _axes(path, f"Won amount, top {top} owners") as ax:
        if owners.empty:
            _no_data(ax, "owners")
        else:
            head = owners.head(top)[::-1]
            ax.barh(head["owner"], head["won_amount"], color="#dd8452")
    return Chart("Owner leaderboard", path)


def forecast_chart(forecast: kpis.Forecast, path: Path) -> Chart:
    deals = forecast.deals
    with _axes(path, f"Open pipeline vs expected revenue, next {forecast.horizon_days} days") as ax:
        if deals.empty:
            _no_data(ax, "open deals expected to close")
        else:
            month = pd.to_datetime(deals["expected_close_at"]).dt.strftime("%Y-%m")
            by_month = (
                deals.assign(month=month, expected=deals["p_win"] * deals["amount"])
                .groupby("month")[["amount", "expected"]]
                .sum()
            )
            amounts = by_month["amount"], by_month["expected"]
            _paired_bars(ax, by_month.index, *amounts, ("pipeline", "expected"))
    return Chart("90-day sales forecast", path)


def kpi_charts(report: kpis.KpiReport, cycle_days: pd.Series, chart_dir: Path) -> dict[str, Chart]:
    """Every KPI chart as a PNG in ``chart_dir``."""
    return {
        "funnel": funnel_chart(report, chart_dir / "funnel.png"),
        "cycle": cycle_chart(cycle_days, chart_dir / "sales_cycle.png"),
        "acquisition": cac_chart(report.acquisition, chart_dir / "cac.png"),
        "channels": channel_chart(report.channels, chart_dir / "channel_roi.png"),
        "owners": owner_chart(report.owners, chart_dir / "owners.png"),
        "forecast": forecast_chart(report.forecast, chart_dir / "forecast.png"),
    }


def model_plots(
    client: MlflowClient, models: list[ModelQuality], chart_dir: Path
) -> dict[tuple[str, str], list[Chart]]:
    """Download each version's logged calibration/lift plots: {(model, alias): charts}."""
    plots: dict[tuple[str, str], list[Chart]] = {}
    for model in models:
        for version in model.versions:
            dst = chart_dir / "models" / model.name / version.alias
            plots[model.name, version.alias] = [
                Chart(
                    Path(p).stem.replace("_", " "),
                    download_plot(client, version.run_id, p, dst / Path(p).parent),
                )
                for p in version.plots
            ]
    return plots


# --- HTML ------------------------------------------------------------------------------------


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _number(value, digits: int = 0) -> str:
    return "n/a" if _blank(value) else f"{value:,.{digits}f}"


def _percent(value) -> str:
    return "n/a" if _blank(value) else f"{value:.1%}"


def render_report(
    report: kpis.KpiReport,
    charts: dict[str, Chart],
    models: list[ModelQuality],
    plots: dict[tuple[str, str], list[Chart]],
    cost_source: str,
    generated_at: datetime,
) -> str:
    """The report as one HTML string (charts inlined as data URIs)."""
    from crm_predict.serving.review import records, template_env

    return template_env(number=_number, percent=_percent).get_template(TEMPLATE).render(
        report=report, charts=charts, models=models, plots=plots, cost_source=cost_source,
        generated_at=generated_at, records=records,
    )  # fmt: skip


def write_report(
    session: Session,
    client: MlflowClient,
    settings: Settings,
    out_dir: Path,
    as_of: datetime | None = None,
) -> Path:
    """Compute the KPIs and model quality, draw the charts and write ``out_dir/report.html``."""
    as_of = as_of or kpis.store_as_of(session)
    tables = kpis.load_kpi_tables(session)
    months = kpis.window_months(as_of, settings.kpi_window_months)
    costs = kpis.cost_inputs(settings, months)
    report = kpis.kpi_report(
        tables, costs, as_of, months=settings.kpi_window_months,
        lifetime_years=settings.kpi_customer_lifetime_years,
    )  # fmt: skip
    chart_dir = out_dir / "charts"
    charts = kpi_charts(report, kpis.won_cycle_days(tables.deals), chart_dir)
    models = model_quality(client)
    plots = model_plots(client, models, chart_dir)
    cost_source = (
        f"cost CSV {settings.kpi_cost_csv}"
        if settings.kpi_cost_csv
        else "flat monthly costs from settings (CRM_PREDICT_KPI_*_COST_PER_MONTH)"
    )
    html = render_report(
        report, charts, models, plots, cost_source, datetime.now(UTC).replace(tzinfo=None)
    )
    path = out_dir / "report.html"
    path.write_text(html, encoding="utf-8")
    return path
