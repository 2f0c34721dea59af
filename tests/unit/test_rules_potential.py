"""``potential`` needs spend in the 3 months before (growth from nothing is not growth), or at least
the rules file's ``value.potential_min_prior_spend``."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest
from crm_predict.serving.writeback import ModelVersionRef, tag_frame

from crm_predict.core import rules as R
from crm_predict.core.errors import UserError
from crm_predict.core.rules import RULES, load_rules

CLV_MODEL = ModelVersionRef("clv", "1", "run-1")
NOW = datetime(2026, 6, 30, 2, 0)


def test_zero_prior_spend_is_not_potential():
    potential = R.is_potential([5_000.0, 300.0, 0.0], [0.0, 100.0, 0.0])
    assert potential.tolist() == [False, True, False]


def test_a_configured_minimum_prior_spend_is_required(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("value:\n  potential_min_prior_spend: 500\n")
    rules = load_rules(path)
    assert rules.value.potential_min_prior_spend == 500
    # Both tripled; only the one with 500 spent before counts.
    assert R.is_potential([1_200.0, 1_500.0], [400.0, 500.0], rules.value).tolist() == [False, True]
    assert RULES.value.potential_min_prior_spend == 0


def test_a_negative_minimum_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("value:\n  potential_min_prior_spend: -1\n")
    with pytest.raises(UserError, match=r"value\.potential_min_prior_spend"):
        load_rules(path)


def test_a_customer_buying_after_nothing_gets_no_potential_tag():
    scored = pd.DataFrame(
        {
            "entity_id": [1, 2],
            "score": [10.0, 10.0],
            "spend_last_3m": [2_000.0, 300.0],
            "spend_prior_3m": [0.0, 100.0],
        }
    )
    tags = tag_frame(CLV_MODEL, scored, NOW)
    potential = tags[tags["name"] == R.TAG_POTENTIAL].set_index("entity_id")["value"]
    assert potential.get(1) is None and potential[2] == "true"
