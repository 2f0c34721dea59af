"""Bulk writes read back exactly like ORM writes; store reset and emptiness checks."""

from datetime import datetime

import pandas as pd
import pytest
from crm_predict.crm_store.bulk import (
    SQLITE_ROWS_PER_STATEMENT,
    clear_store,
    insert_frame,
    store_is_empty,
)
from crm_predict.crm_store.models import Activity, Contact, PredictionLog, Tag
from crm_predict.crm_store.repository import current_tags, upsert_tags
from sqlalchemy import select

NOW = datetime(2026, 3, 4, 5, 6, 7, 891011)


def test_bulk_rows_read_back_like_orm_rows(session):
    frame = pd.DataFrame(
        {
            "id": [1, 2],
            "email": ["a@x.example", None],
            "phone": [None, "+1 555"],
            "is_decision_maker": pd.array([True, None], dtype="boolean"),
            "points": pd.array([5, None], dtype="Int64"),
            "signup_at": [NOW, pd.NaT],
            "created_at": [NOW, NOW],
            "updated_at": [NOW, NOW],
        }
    )
    assert insert_frame(session, Contact.__table__, frame) == 2
    session.add(Contact(id=3, email="orm@x.example", created_at=NOW, updated_at=NOW))
    session.commit()
    first, second = session.get(Contact, 1), session.get(Contact, 2)
    assert (first.signup_at, first.is_decision_maker, first.points) == (NOW, True, 5)
    assert (second.email, second.signup_at, second.is_decision_maker, second.points) == (
        None, None, None, None,
    )  # fmt: skip
    # Bulk and ORM timestamps compare equal inside SQL too (same storage format on SQLite).
    same = session.scalars(select(Contact.id).where(Contact.created_at == NOW)).all()
    assert sorted(same) == [1, 2, 3]


def test_tag_timestamps_survive_the_staged_upsert(session):
    tags = pd.DataFrame(
        {"entity_type": "contact", "entity_id": [1], "name": "churn_risk", "value": "high",
         "model_name": "churn", "model_version": "1", "run_id": "r", "scored_at": [NOW]}
    )  # fmt: skip
    upsert_tags(session, tags, NOW)
    session.commit()
    assert current_tags(session, "contact", 1)["churn_risk"].scored_at == NOW
    assert session.scalars(select(Tag.entity_id).where(Tag.scored_at == NOW)).all() == [1]


def test_many_rows_per_statement_keep_every_row_in_order(session):
    """More rows than one SQLite statement carries, and not a multiple of it: each row once, in
    order, shared columns and missing values included."""
    n = 3 * SQLITE_ROWS_PER_STATEMENT + 7
    frame = pd.DataFrame(
        {"entity_id": range(n), "score": [i / 7 for i in range(n)],
         "request_id": [f"r{i}" if i % 5 else None for i in range(n)]}
    )  # fmt: skip
    shared = {"entity_type": "contact", "model_name": "churn", "model_version": "1",
              "source": "api", "predicted_at": NOW}  # fmt: skip
    assert insert_frame(session, PredictionLog.__table__, frame, shared) == n
    session.commit()
    rows = session.execute(
        select(PredictionLog.entity_id, PredictionLog.score, PredictionLog.request_id,
               PredictionLog.predicted_at).order_by(PredictionLog.id)
    ).all()  # fmt: skip
    assert [tuple(r[:3]) for r in rows] == list(
        zip(frame["entity_id"], frame["score"], frame["request_id"], strict=True)
    )
    assert {r.predicted_at for r in rows} == {NOW}


def test_on_conflict_is_sqlite_only(session):
    tags = pd.DataFrame(
        {"entity_type": "contact", "entity_id": [1], "name": "churn_risk", "value": "high",
         "model_name": "churn", "model_version": "1", "run_id": "r", "scored_at": [NOW]}
    )  # fmt: skip
    update = "ON CONFLICT (entity_type, entity_id, name) DO UPDATE SET value = excluded.value"
    if session.get_bind().dialect.name != "sqlite":
        with pytest.raises(ValueError, match="SQLite"):
            insert_frame(session, Tag.__table__, tags, on_conflict=update)
        return
    insert_frame(session, Tag.__table__, tags)
    insert_frame(session, Tag.__table__, tags.assign(value="low"), on_conflict=update)
    session.commit()
    assert current_tags(session, "contact", 1)["churn_risk"].value == "low"


def test_clear_store_empties_everything_and_restarts_ids(session):
    assert store_is_empty(session)
    session.add(Contact(email="a@x.example", created_at=NOW, updated_at=NOW))
    session.flush()
    session.add(Activity(contact_id=1, type="call", occurred_at=NOW, created_at=NOW))
    session.commit()
    assert not store_is_empty(session)
    clear_store(session)
    session.commit()
    assert store_is_empty(session)
    session.add(Contact(email="b@x.example", created_at=NOW, updated_at=NOW))
    session.commit()
    assert session.scalar(select(Contact.id)) == 1


def test_batch_prediction_log_rows_round_trip_with_shared_values_bound(session):
    """A batch's log (ids and scores varying, the rest shared) reads back exactly on both
    backends, extreme floats and ids included; shared text that would end an SQL literal is a
    bound value like any other."""
    scores = [0.1 + 0.2, 1e-300, 123456789.123456789, -0.0, 1 / 3]
    frame = pd.DataFrame({"entity_id": [1, 2**40, 3, 4, 5], "score": scores})
    shared = {"entity_type": "contact", "model_name": "clv", "model_version": "7'); --\n",
              "source": "batch", "request_id": None, "predicted_at": NOW}  # fmt: skip
    assert insert_frame(session, PredictionLog.__table__, frame, shared) == 5
    session.commit()
    rows = session.scalars(select(PredictionLog).order_by(PredictionLog.id)).all()
    assert [(r.entity_id, r.score) for r in rows] == list(
        zip(frame["entity_id"], scores, strict=True)
    )
    assert {(r.entity_type, r.model_name, r.model_version, r.source, r.request_id, r.predicted_at)
            for r in rows} == {("contact", "clv", "7'); --\n", "batch", None, NOW)}  # fmt: skip
