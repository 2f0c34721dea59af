"""Export, labels and point-in-time training sets on a tiny hand-written CRM (one Feast apply)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.features.definitions import feature_names
from crm_predict.features.export import export, export_as_of, labels_dir
from crm_predict.features.scoring import scoring_frame
from crm_predict.features.store import apply
from crm_predict.features.training import training_set
from feature_sample import AS_OF, build_crm

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("features") / "data")
    settings.ensure_dirs()
    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        build_crm(session)
        counts = export(session, settings)
    engine.dispose()
    store = apply(settings)
    return settings, store, counts


def test_export_cut_off_is_the_latest_crm_event(exported):
    settings, _, counts = exported
    assert export_as_of(settings) == datetime(2026, 6, 25, 10)  # deal 2's meeting
    assert counts["lead_profile"] == 4


def test_training_set_has_the_contract_columns(exported):
    settings, store, _ = exported
    frame = training_set(settings, "lead_scoring", store)
    assert list(frame.columns) == [
        "entity_id", "event_timestamp", "label", *feature_names("lead_scoring"), "gender",
    ]  # fmt: skip
    assert not set(settings.excluded_features) & set(feature_names("lead_scoring"))


def test_lead_labels_follow_the_contract(exported):
    settings, store, _ = exported
    frame = training_set(settings, "lead_scoring", store).set_index("entity_id")
    # Lead 3's window is still open and lead 4 converted before its prediction time.
    assert sorted(frame.index) == [1, 2]
    assert frame.loc[1, "label"] == 1 and frame.loc[2, "label"] == 0
    assert frame.loc[1, "event_timestamp"] == datetime(2026, 1, 8)
    assert frame.loc[1, "gender"] == "female"


def test_feature_after_label_time_never_leaks(exported):
    settings, store, _ = exported
    row = training_set(settings, "lead_scoring", store).set_index("entity_id").loc[1]
    # Lead 1 had one visit and one pricing view before Jan 8, five visits after.
    assert row["site_visits_90d"] == 1 and row["pricing_views_90d"] == 1
    assert row["rule_score"] == 20 + 30 + 5 + 20  # industry, decision maker, visit, pricing view

    # A feature row stamped one second after the label time, with an impossible value, exists in
    # the offline source; the point-in-time join must still pick the row stamped at t.
    path = settings.feature_dir / "lead_behaviour.parquet"
    source = pd.read_parquet(path)
    leak = source[source["lead_id"] == 1].iloc[[0]].copy()
    leak["event_timestamp"] = datetime(2026, 1, 8) + timedelta(seconds=1)
    leak["site_visits_90d"] = 999
    pd.concat([source, leak], ignore_index=True).to_parquet(path, index=False)
    try:
        again = training_set(settings, "lead_scoring", store).set_index("entity_id").loc[1]
        assert again["site_visits_90d"] == 1
    finally:
        source.to_parquet(path, index=False)


def test_behaviour_of_a_contact_counts_for_its_leads(exported):
    settings, store, _ = exported
    row = training_set(settings, "lead_scoring", store).set_index("entity_id").loc[2]
    assert row["whitepapers_7d"] == 1 and row["industry"] == "retail"


def test_deal_training_row_sees_history_up_to_its_prediction_time(exported):
    settings, store, _ = exported
    frame = training_set(settings, "deal_health", store).set_index("entity_id")
    assert sorted(frame.index) == [1, 3]  # deal 2 is still open: no label yet
    assert frame.loc[3, "label"] == 0
    row = frame.loc[1]
    assert row["label"] == 1 and row["stage"] == "proposal"
    assert row["close_date_slips"] == 1
    assert row["account_prior_deals"] == 1 and row["account_win_rate"] == 0.0
    assert row["amount_vs_account_median"] == pytest.approx(1000 / 500)
    assert row["days_idle"] == pytest.approx((datetime(2026, 2, 22) - datetime(2026, 2, 18, 10)) / timedelta(days=1))  # fmt: skip
    assert row["tickets_90d"] == 2 and row["ticket_sentiment_90d"] == pytest.approx(0.0)


def test_churn_uses_monthly_cutoffs_without_a_truth_file(exported):
    settings, store, _ = exported
    frame = training_set(settings, "churn", store)
    assert set(frame["entity_id"]) == {3, 4}
    assert frame["event_timestamp"].nunique() == 6
    assert (frame.loc[frame["entity_id"] == 4, "label"] == 1).all()
    # The export's cut-off is Jun 25 10:00, so the newest complete window starts Mar 1; customer 3
    # orders on 2026-01-15, so only the Oct 1 cutoff (106 days before it) is a churn.
    assert frame.loc[frame["entity_id"] == 3, "label"].tolist() == [1, 0, 0, 0, 0, 0]
    first = frame[(frame["entity_id"] == 3) & (frame["event_timestamp"] == datetime(2025, 12, 1))]
    assert first["rfm_frequency"].item() == 3 and first["rfm_monetary"].item() == 220.0


def test_scoring_frame_holds_active_entities_with_the_service_columns(exported):
    settings, _, _ = exported
    as_of = export_as_of(settings)
    leads = scoring_frame(settings, "lead_scoring", as_of)
    assert leads["entity_id"].tolist() == [2, 3]  # open leads
    assert list(leads.columns) == ["entity_id", *feature_names("lead_scoring")]
    deals = scoring_frame(settings, "deal_health", as_of)
    assert deals["entity_id"].tolist() == [2]
    customers = scoring_frame(settings, "churn", as_of, entity_ids=[3])
    assert customers["rfm_frequency"].tolist() == [5]


def test_scoring_an_inactive_entity_names_it(exported):
    settings, _, _ = exported
    with pytest.raises(UserError, match="1"):
        scoring_frame(settings, "lead_scoring", AS_OF, entity_ids=[1, 2])


def test_training_set_without_export_is_a_clear_error(tmp_path):
    settings = Settings(data_dir=tmp_path / "empty")
    with pytest.raises(UserError, match="features export"):
        training_set(settings, "churn")
    with pytest.raises(UserError, match="unknown model"):
        training_set(settings, "nope")


def test_labels_files_hold_every_model(exported):
    settings, _, _ = exported
    for model in ("lead_scoring", "deal_health", "churn", "clv", "next_best_time"):
        frame = pd.read_parquet(labels_dir(settings) / f"{model}.parquet")
        assert list(frame.columns) == ["entity_id", "event_timestamp", "label"]
