"""Write-back on a real store (SQLite and PostgreSQL): flags come and go with history, and a
second write-back of the same scores creates no duplicate tag or task."""

from datetime import datetime, timedelta

import pandas as pd
from crm_predict.crm_store.models import PredictionLog, Tag, TagHistory, Task
from crm_predict.crm_store.repository import current_tags, tag_history
from crm_predict.serving.writeback import ModelVersionRef, write_back

from crm_predict.core import rules as R

NOW = datetime(2026, 6, 30, 2, 0)


def _model(name: str, version: str = "3") -> ModelVersionRef:
    return ModelVersionRef(name=name, version=version, run_id=f"run-{name}")


def test_a_flag_is_a_tag_while_it_holds_and_removed_when_it_no_longer_does(session):
    scored = pd.DataFrame({"entity_id": [1, 2], "score": [0.2, 0.2], "days_inactive": [45, 3]})
    result = write_back(session, _model("churn"), scored, NOW)
    session.commit()
    assert result.tag_counts[f"{R.TAG_CHURN_WARNING}=true"] == 1
    assert not any(k.startswith(f"{R.TAG_CHURN_WARNING}=false") for k in result.tag_counts)
    assert R.TAG_CHURN_WARNING in current_tags(session, "contact", 1)
    assert R.TAG_CHURN_WARNING not in current_tags(session, "contact", 2)
    later = NOW + timedelta(days=1)
    write_back(session, _model("churn"), scored.assign(days_inactive=[0, 3]), later)
    session.commit()
    assert R.TAG_CHURN_WARNING not in current_tags(session, "contact", 1)
    [gone] = tag_history(session, "contact", 1, R.TAG_CHURN_WARNING)
    assert (gone.value, gone.replaced_at) == ("true", later)
    assert set(current_tags(session, "contact", 1)) == {R.TAG_CHURN_RISK}


def test_write_back_twice_creates_no_duplicate_tags_or_tasks(session):
    scored = pd.DataFrame(
        {
            "entity_id": [1, 2],
            "score": [0.3, 0.95],
            "owner_id": [10, 11],
            "manager_id": [100, 100],
            "stage": ["proposal", "proposal"],
            "days_idle": [10, 0],
        }
    )
    first = write_back(session, _model("deal_health"), scored, NOW)
    session.commit()
    later = NOW + timedelta(hours=1)
    second = write_back(session, _model("deal_health", "4"), scored, later)
    session.commit()

    assert first.tasks_created == 2 and second.tasks_created == 0
    assert first.tag_counts == {
        "deal_health=*": 2, "deal_health_colour=red": 1,
        "deal_health_colour=green": 1,
    }  # fmt: skip
    assert session.query(Tag).count() == 4
    assert session.query(Task).count() == 2
    assert session.query(TagHistory).count() == 0  # same values: re-stamped, no history
    assert {t.model_version for t in session.query(Tag)} == {"4"}
    assert session.query(PredictionLog).count() == 4
