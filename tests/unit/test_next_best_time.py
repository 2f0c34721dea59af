"""Next best time: the model recovers planted best slots and channels, shrinks thin histories
toward their segment, beats "everyone at the global best hour" on a time holdout, and is logged
and registered as a pyfunc that falls back to segment, then global, for unknown contacts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from clv_nbt_frames import (
    MON_10,
    OWN_BEST_CONTACT,
    SAT_15,
    SEGMENT_BEST,
    THIN_CONTACT,
    THU_20,
    TUE_09,
    WED_14,
    planted_events,
)
from crm_predict.training.next_best_time import (
    evaluate_holdout,
    events_frame,
    fit_slot_model,
    recommend,
    recommendation_table,
    run_training,
    train_next_best_time,
)

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings


def fitted_table():
    events = events_frame(planted_events(), "who", "at", "answered", "via", "seg")
    model = fit_slot_model(events)
    return model, recommendation_table(model)


def test_recovers_planted_best_slot_and_channel_per_segment():
    _, table = fitted_table()
    segments = table[table["level"] == "segment"].set_index("key")
    for segment, slot in SEGMENT_BEST.items():
        assert segments.loc[segment, "best_slots"][0] == slot
    assert segments.loc["evening", "best_channel"] == "phone"
    assert segments.loc["office", "best_channel"] == "email"
    assert "meeting" not in set(table["best_channel"])


def test_long_history_contact_gets_its_own_best_slot():
    _, table = fitted_table()
    out = recommend(table, pd.Series([OWN_BEST_CONTACT]))
    assert out["level"].iloc[0] == "contact"
    assert out["best_slots"].iloc[0][0] == WED_14
    assert out["p_best"].iloc[0] > 0.6


def test_shrinkage_moves_a_thin_history_contact_toward_its_segment():
    model, table = fitted_table()
    thin = model.contact_slots.loc[THIN_CONTACT]
    segment = model.segment_slots.loc["evening"]
    # One answered attempt at Monday 10:00 raises that slot, but far less than its raw rate of 1 …
    assert segment[MON_10] < thin[MON_10] < 0.5
    # … and the segment's planted slot stays in the contact's top 3.
    best = recommend(table, pd.Series([THIN_CONTACT]))["best_slots"].iloc[0]
    assert THU_20 in best


def test_unknown_contacts_fall_back_to_segment_then_global():
    _, table = fitted_table()
    out = recommend(table, pd.Series([5555, 5556, 5557]), pd.Series(["weekend", "nope", None]))
    assert list(out["level"]) == ["segment", "global", "global"]
    assert out["best_slots"].iloc[0][0] == SAT_15
    assert out["best_slots"].iloc[1][0] == TUE_09  # the largest segment's slot wins globally


def test_lookup_matches_contacts_by_their_id_text_whatever_the_id_type():
    """Integer ids are matched without formatting them as text, with the same answer: a key
    "12" is the contact 12, a key "012" is nobody's integer id."""
    _, table = fitted_table()
    rows = table[table["level"] == "contact"].iloc[:2]
    odd = rows.iloc[[0]].assign(key="0" + rows["key"].iloc[0], best_channel="odd")
    table = pd.concat([table, odd], ignore_index=True)
    ids = [int(rows["key"].iloc[0]), int(rows["key"].iloc[1]), 987654]
    as_int = recommend(table, pd.Series(ids), pd.Series(["weekend", None, "weekend"]))
    as_text = recommend(table, pd.Series([str(i) for i in ids]), pd.Series(["weekend", None, "weekend"]))  # fmt: skip
    pd.testing.assert_frame_equal(as_int, as_text)
    assert list(as_int["level"]) == ["contact", "contact", "segment"]
    assert "odd" not in set(as_int["best_channel"])
    assert recommend(table, pd.Series([odd["key"].iloc[0]]))["best_channel"].iloc[0] == "odd"
    assert recommend(table, pd.Series([ids[0]]), pd.Series(["nope"]))["level"].iloc[0] == "contact"
    assert recommend(table, pd.Series([], dtype="int64")).empty


def test_beats_the_global_best_hour_on_a_time_holdout():
    events = events_frame(planted_events(), "who", "at", "answered", "via", "seg")
    metrics, holdout = evaluate_holdout(events)
    assert metrics["hit_rate_top1"] > 1.2 * metrics["baseline_hit_rate_top1"]
    assert metrics["hit_rate_top3"] >= metrics["hit_rate_top1"]
    assert holdout["event_timestamp"].min() >= events["timestamp"].quantile(0.7)
    assert set(holdout["label"]) == {0, 1}


def test_train_registers_a_pyfunc_with_fallbacks(mlflow_client):
    import mlflow

    events = events_frame(planted_events(), "who", "at", "answered", "via", "seg")
    result = train_next_best_time(mlflow_client, events)

    run = mlflow_client.get_run(result.run_id)
    for metric in ("hit_rate_top1", "hit_rate_top3", "baseline_hit_rate_top1", "lift_top1_pct"):
        assert np.isfinite(run.data.metrics[metric])
    assert run.data.tags["entity"] == "contact"
    challenger = mlflow_client.get_model_version_by_alias("next_best_time", "challenger")
    assert str(challenger.version) == result.model_version
    model = mlflow.pyfunc.load_model(f"models:/next_best_time/{result.model_version}")
    out = model.predict(
        pd.DataFrame({"entity_id": [OWN_BEST_CONTACT, 9999], "segment": ["office", "weekend"]})
    )
    assert list(out.columns[:3]) == ["best_slots", "best_channel", "p_best"]
    assert out["best_slots"].iloc[0][0] == WED_14
    assert out["best_slots"].iloc[1][0] == SAT_15
    assert len(out["best_slots"].iloc[0]) == 3
    no_segment = model.predict(pd.DataFrame({"entity_id": [9999]}))
    assert no_segment["level"].iloc[0] == "global"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("who,at\n1,2025-01-01 10:00\n", "no column.*'answered'"),
        ("who,at,answered\n1,someday,yes\n2,2025-01-01 10:00,no\n", "'at'.*not a valid timestamp"),
        ("who,at,answered\n1,2025-01-01 10:00,maybe\n2,2025-01-01 11:00,perhaps\n", "yes/no"),
        ("who,at,answered\n1,2025-01-01 10:00,yes\n2,2025-01-01 11:00,yes\n", "always True"),
        ("who,at,answered\n1,2025-01-01 10:00,\n2,2025-01-01 11:00,\n", "no event has an outcome"),
        ("", "cannot read"),
    ],
)
def test_bad_event_csv_is_a_user_error_and_logs_nothing(tmp_path, mlflow_client, content, message):
    path = tmp_path / "events.csv"
    if content is not None:
        path.write_text(content)
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(UserError, match=message):
        run_training(settings, mlflow_client, path, "who", "at", "answered")
    assert mlflow_client.search_registered_models() == []
