"""The rule-score on-demand view runs in python mode (lists in, lists out, no DataFrames) and
scores what the frame form scores, blanks and Feast's prefixed names included."""

from __future__ import annotations

import pandas as pd
from crm_predict.features import transforms as tf
from crm_predict.features.definitions import rule_score_udf

ROWS = {
    "industry": ["Software", None, " retail", "HEALTHCARE"],
    "is_decision_maker": [1, None, 0, 1],
    "lead_region": ["north", "East", None, "south"],
    "site_visits_90d": [2, None, 0, 5],
    "pricing_views_90d": [1, 0, None, 2],
    "whitepapers_90d": [0, 1, 1, None],
    "trials_90d": [1, 0, None, 0],
    "days_since_last_interaction": [3.0, None, 45.0, 29.5],
}


def test_the_python_mode_udf_equals_the_frame_form():
    expected = tf.rule_score(pd.DataFrame(ROWS))["rule_score"].tolist()
    assert rule_score_udf(ROWS) == {"rule_score": expected}
    prefixed = {f"rule_view__{name}": values for name, values in ROWS.items()}
    assert rule_score_udf(prefixed) == {"rule_score": expected}
    one = {name: values[:1] for name, values in ROWS.items()}
    assert rule_score_udf(one) == {"rule_score": expected[:1]}
    assert all(isinstance(v, float) for v in expected)
