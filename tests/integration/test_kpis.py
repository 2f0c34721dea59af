"""KPIs over a hand-built store have exactly the values worked out by hand (SQLite and PostgreSQL)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from crm_predict.crm_store import kpis
from crm_predict.crm_store.models import Tag
from crm_predict.crm_store.repository import log_predictions
from tiny_crm import AS_OF, build_tiny_crm

from crm_predict.core.errors import UserError

# Flat costs: 1000 unattributed marketing + 500 sales + web 100 + referral 50 per month.
COSTS = kpis.flat_costs(
    kpis.window_months(AS_OF, 12), 1000.0, 500.0, {"web": 100.0, "referral": 50.0}
)


@pytest.fixture
def tables(session) -> kpis.KpiTables:
    build_tiny_crm(session)
    return kpis.load_kpi_tables(session)


def test_lead_funnel_counts_each_stage_and_never_widens(tables):
    funnel = kpis.lead_funnel(tables.leads, tables.deals)
    assert funnel["stage"].tolist() == ["leads", "qualified", "deal", "won"]
    assert funnel["count"].tolist() == [5, 3, 2, 1]
    assert math.isnan(funnel["conversion_from_previous"][0])
    assert funnel["conversion_from_previous"][1:].tolist() == pytest.approx([0.6, 2 / 3, 0.5])
    assert funnel["conversion_from_first"].tolist() == pytest.approx([1.0, 0.6, 0.4, 0.2])


def test_an_mql_tag_qualifies_a_lead(tables):
    tags = pd.DataFrame(
        {
            "entity_type": ["lead", "lead"],
            "entity_id": [4, 5],
            "name": "mql",
            "value": ["true", "false"],
        }
    )
    funnel = kpis.lead_funnel(tables.leads, tables.deals, tags)
    assert funnel["count"].tolist() == [5, 4, 2, 1]


def test_deal_stage_conversion_follows_history_order(tables):
    stages = kpis.deal_stage_conversion(tables.stage_history, tables.deals)
    assert stages["stage"].tolist() == ["qualification", "proposal", "negotiation", "won"]
    assert stages["count"].tolist() == [7, 6, 1, 1]
    assert stages["conversion_from_previous"][1:].tolist() == pytest.approx([6 / 7, 1 / 6, 1.0])


def test_sales_cycle_is_created_to_closed_won(tables):
    cycle = kpis.sales_cycle(tables.deals)
    assert cycle == kpis.SalesCycle(won_deals=3, median_days=40.0, mean_days=pytest.approx(110 / 3))


def test_owner_leaderboard_ranks_by_won_amount(tables):
    board = kpis.owner_leaderboard(tables.deals, tables.users)
    assert board["owner"].tolist() == ["Ann", "Bob"]
    assert board["won_amount"].tolist() == [4000.0, 600.0]
    assert board["won"].tolist() == [2, 1]
    assert board["lost"].tolist() == [0, 1]
    assert board["win_rate"].tolist() == [1.0, 0.5]
    assert board["median_cycle_days"].tolist() == [25.0, 60.0]
    assert board["open_pipeline"].tolist() == [10999.0, 2000.0]


def test_cac_is_window_cost_over_new_customers_and_ltv_falls_back_to_history(tables):
    result = kpis.acquisition(tables, COSTS, AS_OF, months=12, lifetime_years=3.0)
    assert result.months[0] == "2025-07" and result.months[-1] == "2026-06"
    assert result.cost == 12 * 1650.0
    # Contacts 2, 1, 4 first paid in Feb, Mar, Apr 2026; contact 5 in June 2025 (outside).
    assert result.new_customers == 3
    assert result.cac == 6600.0
    per_month = result.per_month.set_index("month")
    assert per_month.loc[["2026-02", "2026-03", "2026-04"], "new_customers"].tolist() == [1, 1, 1]
    assert math.isnan(per_month.loc["2026-05", "cac"])
    # 5000 of revenue over 121 + 139 + 76 + 380 customer-days, times a 3-year lifetime.
    expected_ltv = 5000.0 / (716 / 365.25) * 3
    assert result.ltv_source == "historical"
    assert result.ltv == pytest.approx(expected_ltv)
    assert result.ltv_to_cac == pytest.approx(expected_ltv / 6600.0)


def test_ltv_uses_clv_tags_when_the_model_wrote_them(session, tables):
    for contact, value in ((1, "1200"), (2, "800")):
        session.add(
            Tag(entity_type="contact", entity_id=contact, name="clv_3y", value=value,
                model_name="clv", model_version="1", run_id="r", scored_at=AS_OF)
        )  # fmt: skip
    session.commit()
    result = kpis.acquisition(kpis.load_kpi_tables(session), COSTS, AS_OF)
    assert (result.ltv, result.ltv_source) == (1000.0, "clv_tags")
    assert result.ltv_to_cac == pytest.approx(1000.0 / 6600.0)


def test_ltv_uses_the_latest_clv_batch_without_tags(session, tables):
    def batch(when, scores):
        return pd.DataFrame(
            {"entity_type": "contact", "entity_id": list(scores), "model_name": "clv",
             "model_version": "1", "score": list(scores.values()), "source": "batch",
             "request_id": None, "predicted_at": when}
        )  # fmt: skip

    log_predictions(session, batch(AS_OF - pd.Timedelta(days=1), {1: 5000.0, 2: 7000.0}))
    log_predictions(session, batch(AS_OF, {1: 300.0, 2: 500.0, 4: 100.0}))
    session.commit()
    result = kpis.acquisition(kpis.load_kpi_tables(session), COSTS, AS_OF)
    assert (result.ltv, result.ltv_source) == (300.0, "clv_predictions")


def test_channel_roi_attributes_deals_and_orders_to_leads(tables):
    roi = kpis.channel_roi(tables, COSTS, AS_OF).set_index("channel")
    assert roi.index.tolist() == ["web", "referral", "ads"]
    assert roi["leads"].tolist() == [2, 2, 1]
    # web: deal 1 (1000) + contact 1's orders after lead 1 (500); referral: contact 4's order.
    assert roi["revenue"].tolist() == [1500.0, 100.0, 0.0]
    assert roi.loc["web", "cost"] == 1200.0 and roi.loc["referral", "cost"] == 600.0
    assert roi.loc["web", "roi"] == pytest.approx(0.25)
    assert roi.loc["referral", "roi"] == pytest.approx(-5 / 6)
    assert math.isnan(roi.loc["ads", "roi"])


def test_forecast_uses_health_tags_then_stage_win_rates(tables):
    forecast = kpis.sales_forecast(tables, AS_OF, horizon_days=90)
    deals = forecast.deals.set_index("deal_id")
    assert deals.index.tolist() == [4, 5]  # deal 6 closes after the horizon
    assert deals.loc[4, "p_win"] == 0.75 and deals.loc[4, "source"] == "deal_health"
    # Three of the four closed deals that passed "qualification" were won.
    assert deals.loc[5, "p_win"] == 0.75 and deals.loc[5, "source"] == "stage_win_rate"
    assert forecast.expected_revenue == pytest.approx(0.75 * 2000 + 0.75 * 1000)
    assert forecast.pipeline_amount == 3000.0


def test_store_as_of_is_the_newest_timestamp(session, tables):
    assert kpis.store_as_of(session) == AS_OF.replace(month=6, day=1)


def test_cost_csv_overrides_flat_settings(tmp_path, settings):
    path = tmp_path / "costs.csv"
    path.write_text("month,channel,marketing_cost,sales_cost\n2026-05,web,300,0\n2026-05,,100,50\n")
    costs = kpis.cost_inputs(settings.model_copy(update={"kpi_cost_csv": path}), ["2026-05"])
    assert costs["channel"].tolist() == ["web", ""]
    assert (costs["marketing_cost"] + costs["sales_cost"]).sum() == 450.0
    flat = kpis.cost_inputs(settings, ["2026-05", "2026-06"])
    channels = settings.kpi_channel_cost_per_month
    assert flat["marketing_cost"].sum() == 2 * (
        settings.kpi_marketing_cost_per_month + sum(channels.values())
    )
    assert set(flat["channel"]) == {""} | set(channels)


def test_bad_cost_csv_is_a_user_error(tmp_path, settings):
    path = tmp_path / "costs.csv"
    path.write_text("month,marketing_cost\n2026-05,300\n")
    with pytest.raises(UserError, match="channel"):
        kpis.load_cost_csv(path)
    path.write_text("month,channel,marketing_cost,sales_cost\nMay,web,1,1\n")
    with pytest.raises(UserError, match="YYYY-MM"):
        kpis.load_cost_csv(path)
    path.write_text("month,channel,marketing_cost,sales_cost\n2026-05,web,lots,1\n")
    with pytest.raises(UserError, match="marketing_cost must be numbers"):
        kpis.load_cost_csv(path)


def test_empty_store_gives_empty_kpis_not_errors(session):
    tables = kpis.load_kpi_tables(session)
    report = kpis.kpi_report(tables, COSTS, AS_OF)
    assert report.funnel["count"].tolist() == [0, 0, 0, 0]
    assert report.stage_conversion.empty and report.owners.empty
    # Money spent on channels that brought nothing is a return of -100 %.
    assert report.channels["revenue"].tolist() == [0.0, 0.0]
    assert report.channels["roi"].tolist() == [-1.0, -1.0]
    assert report.forecast.expected_revenue == 0.0
    assert math.isnan(report.acquisition.cac)
    with pytest.raises(UserError, match="empty"):
        kpis.store_as_of(session)


def test_months_window_ends_at_as_of():
    assert kpis.window_months(pd.Timestamp("2026-02-15").to_pydatetime(), 3) == [
        "2025-12",
        "2026-01",
        "2026-02",
    ]
