"""The CRM store's promises: migrations, tag upsert with history, task dedup, changed-since reads."""

import sqlite3
from datetime import datetime, timedelta

import pandas as pd
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from crm_predict.crm_store.db import (
    background_checkpoints,
    downgrade,
    make_engine,
    session_factory,
    upgrade,
)
from crm_predict.crm_store.models import (
    Base,
    Contact,
    Message,
    PredictionLog,
    Tag,
    TagHistory,
    Task,
)
from crm_predict.crm_store.repository import (
    changed_since,
    create_tasks,
    current_tags,
    log_predictions,
    tag_history,
    upsert_tags,
)
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from crm_predict.core.rules import TaskSpec, first_contact_task

NOW = datetime(2026, 1, 15, 3, 0)


def _tags(values, version="1", when=NOW):
    return pd.DataFrame(
        {
            "entity_type": "contact",
            "entity_id": list(range(1, len(values) + 1)),
            "name": "churn_risk",
            "value": values,
            "model_name": "churn",
            "model_version": version,
            "run_id": "abc",
            "scored_at": when,
        }
    )


def test_migrations_go_up_and_down(engine):
    assert {"tags", "tasks", "deals", "prediction_log"} <= set(inspect(engine).get_table_names())
    downgrade(engine)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert "tag_history" in inspect(engine).get_table_names()
    if engine.dialect.name == "postgresql":  # room on each page for HOT re-stamps (0003)
        with engine.connect() as conn:
            options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'tags'"))
            assert options.scalar_one() == ["fillfactor=50"]


def test_messages_migration_builds_the_model_and_goes_down_to_0007(engine):
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # The external id's uniqueness is an index on every entity table (0007), not a constraint.
    assert [d for d in map(str, diffs) if "messages" in d and "external_id" not in d] == []
    indexes = {i["name"]: i for i in inspect(engine).get_indexes("messages")}
    assert indexes["uq_messages_external_id"]["unique"]
    assert {"ix_messages_contact_id", "ix_messages_sent_at"} <= set(indexes)
    downgrade(engine, "0007")
    assert "messages" not in inspect(engine).get_table_names()
    upgrade(engine)


def test_the_open_tasks_of_an_entity_are_read_by_an_index_that_goes_down_to_0008(engine):
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in map(str, diffs) if "tasks" in d] == []
    columns = {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("tasks")}
    assert columns["ix_tasks_entity"] == ["entity_type", "entity_id"]
    downgrade(engine, "0008")
    assert "ix_tasks_entity" not in {i["name"] for i in inspect(engine).get_indexes("tasks")}
    upgrade(engine)


def test_a_message_links_to_its_contact_and_its_external_id_is_unique(session):
    session.add(Contact(id=1, external_id="C-1", created_at=NOW, updated_at=NOW))
    session.flush()

    def message(external_id):
        return Message(
            external_id=external_id, contact_id=1, channel="wechat", direction="inbound",
            sent_at=NOW, language="zh", text="报价多少钱？", intent="quote_request",
            sentiment="hesitant", created_at=NOW,
        )  # fmt: skip

    session.add_all([message("M-1"), message(None), message(None)])  # NULLs are distinct
    session.commit()
    stored = session.scalars(select(Message).where(Message.contact_id == 1)).all()
    assert sorted(m.text for m in stored) == ["报价多少钱？"] * 3
    session.add(message("M-1"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_upgrade_removes_flags_stored_as_false(engine):
    downgrade(engine, "0005")
    flags = _tags(["false", "true", "false"]).assign(name=["mql", "churn_warning", "potential"])
    other = _tags(["false"]).assign(name="clv_tier")  # not a flag: a value like any other
    with session_factory(engine)() as session:
        upsert_tags(session, pd.concat([flags, other.assign(entity_id=9)]), NOW)
        session.commit()
    upgrade(engine)
    with session_factory(engine)() as session:
        left = {(t.entity_id, t.name, t.value) for t in session.query(Tag)}
        assert left == {(2, "churn_warning", "true"), (9, "clv_tier", "false")}
        assert session.query(TagHistory).count() == 0


def test_tag_upsert_keeps_one_current_value_and_history(session):
    upsert_tags(session, _tags(["low", "high", "medium"]), NOW)
    session.commit()
    later = NOW + timedelta(days=1)
    upsert_tags(session, _tags(["high", "high", "low"], version="2", when=later), later)
    session.commit()

    assert session.query(Tag).count() == 3
    tags = current_tags(session, "contact", 1)
    assert tags["churn_risk"].value == "high"
    assert tags["churn_risk"].model_version == "2"
    assert [h.value for h in tag_history(session, "contact", 1, "churn_risk")] == ["low"]
    # An unchanged value is re-stamped, not copied to history.
    assert tag_history(session, "contact", 2, "churn_risk") == []
    assert session.query(TagHistory).count() == 2


def test_rerun_of_the_same_tags_writes_nothing(session):
    tags = _tags(["low", "high"]).assign(model_version=[None, "1"])  # NULLs compare as equal
    upsert_tags(session, tags, NOW)
    session.commit()
    # xmin is the id of the transaction that last wrote a PostgreSQL row: unchanged means untouched.
    stamp = ", xmin::text" if session.get_bind().dialect.name == "postgresql" else ""
    rows = f"SELECT *{stamp} FROM tags ORDER BY entity_type, entity_id, name"
    before = session.execute(text(rows)).all()
    upsert_tags(session, tags, NOW + timedelta(days=1))
    session.commit()
    assert session.execute(text(rows)).all() == before  # scored_at too: not re-stamped
    assert session.query(TagHistory).count() == 0
    assert current_tags(session, "contact", 1)["churn_risk"].model_version is None


def test_changed_value_with_missing_model_fields_goes_to_history(session):
    tags = _tags(["low"]).assign(model_name=None, model_version=None, run_id=None)
    upsert_tags(session, tags, NOW)
    later = NOW + timedelta(days=1)
    upsert_tags(session, tags.assign(value="high", scored_at=later), later)
    session.commit()
    assert current_tags(session, "contact", 1)["churn_risk"].value == "high"
    assert [h.value for h in tag_history(session, "contact", 1, "churn_risk")] == ["low"]


def test_a_tag_without_value_is_removed_with_its_last_value_to_history(session):
    flags = _tags(["true", "true", "true"]).assign(name="churn_warning")
    upsert_tags(session, flags, NOW)
    session.commit()
    later = NOW + timedelta(days=1)
    # Entity 2 no longer flagged, 4 never was: its key is removed (not stored), not written.
    again = _tags(["true", None, "true", None], when=later).assign(name="churn_warning")
    assert upsert_tags(session, again, later) == 2
    session.commit()
    assert sorted(t.entity_id for t in session.query(Tag)) == [1, 3]
    [gone] = tag_history(session, "contact", 2, "churn_warning")
    assert (gone.value, gone.replaced_at) == ("true", later)
    assert session.query(TagHistory).count() == 1
    upsert_tags(session, again, later)  # a rerun removes nothing more
    session.commit()
    assert session.query(Tag).count() == 2 and session.query(TagHistory).count() == 1
    # Only the removed key's own tag goes: another tag of the same entity stays.
    upsert_tags(session, _tags(["low", "low"]), later)
    upsert_tags(session, _tags(["true", None]).assign(name="churn_warning"), later)
    session.commit()
    assert set(current_tags(session, "contact", 2)) == {"churn_risk"}


def test_duplicate_keys_in_one_upsert_keep_the_last(session):
    frame = pd.concat([_tags(["low"]), _tags(["high"])])
    assert upsert_tags(session, frame, NOW) == 1
    session.commit()
    assert current_tags(session, "contact", 1)["churn_risk"].value == "high"


def test_rerun_creates_no_duplicate_tasks(session):
    specs = [first_contact_task(i, 1, NOW) for i in range(1, 6)]
    assert create_tasks(session, specs, NOW) == 5
    session.commit()
    assert create_tasks(session, specs + [first_contact_task(6, 1, NOW)], NOW) == 1
    session.commit()
    assert session.query(Task).count() == 6
    task = session.query(Task).filter_by(entity_id=1).one()
    assert task.sla_hours == 2 and task.due_at == NOW + timedelta(hours=2)


def test_dedup_key_separates_periods_and_levels():
    a = TaskSpec("escalation", "deal", 1, 2, NOW, 24, "idle", escalation_level=1, period="proposal")
    b = TaskSpec(
        "escalation", "deal", 1, 2, NOW, 24, "idle", escalation_level=1, period="negotiation"
    )
    assert a.dedup_key != b.dedup_key
    assert a.dedup_key == TaskSpec("escalation", "deal", 1, 9, NOW, 1, "x", 1, "proposal").dedup_key


def _logged(session):
    rows = session.scalars(select(PredictionLog).order_by(PredictionLog.id))
    return [(r.entity_type, r.entity_id, r.model_name, r.model_version, r.score, r.source,
             r.request_id, r.predicted_at) for r in rows]  # fmt: skip


def test_prediction_log_appends(session):
    frame = pd.DataFrame(
        {"entity_type": "lead", "entity_id": [1, 2], "model_name": "lead_scoring",
         "model_version": "3", "score": [0.2, 0.9], "source": "batch", "predicted_at": NOW}
    )  # fmt: skip
    assert log_predictions(session, frame) == 2
    session.commit()
    assert _logged(session) == [
        ("lead", 1, "lead_scoring", "3", 0.2, "batch", None, NOW),
        ("lead", 2, "lead_scoring", "3", 0.9, "batch", None, NOW),
    ]


def test_prediction_log_round_trips_shared_and_varying_columns(session):
    """A batch's shared columns are written once per statement, not per row: every value still
    reads back exactly, quotes and line breaks included, whether a column is shared or not."""
    later = NOW + timedelta(hours=1)
    shared = pd.DataFrame(
        {"entity_type": "deal", "entity_id": [5, 6, 7], "model_name": "o'brien\nmodel",
         "model_version": 'v"2', "score": [1 / 3, -0.0, 1e-300], "source": "api",
         "request_id": "r,1", "predicted_at": pd.Timestamp(later, tz="UTC")}
    )  # fmt: skip
    varying = pd.DataFrame(
        {"entity_type": ["lead", "deal"], "entity_id": [8, 9], "model_name": "m",
         "model_version": None, "score": [0.5, 0.25], "source": ["a\nb", "it's"],
         "request_id": ["x", None], "predicted_at": [NOW, later]}
    )  # fmt: skip
    one = shared.iloc[:1].assign(entity_id=10)
    assert log_predictions(session, shared) == 3
    assert log_predictions(session, varying) == 2
    assert log_predictions(session, one) == 1
    session.commit()
    assert _logged(session) == [
        ("deal", 5, "o'brien\nmodel", 'v"2', 1 / 3, "api", "r,1", later),
        ("deal", 6, "o'brien\nmodel", 'v"2', -0.0, "api", "r,1", later),
        ("deal", 7, "o'brien\nmodel", 'v"2', 1e-300, "api", "r,1", later),
        ("lead", 8, "m", None, 0.5, "a\nb", "x", NOW),
        ("deal", 9, "m", None, 0.25, "it's", None, later),
        ("deal", 10, "o'brien\nmodel", 'v"2', 1 / 3, "api", "r,1", later),
    ]


def test_prediction_log_survives_feasts_global_sqlite_datetime_adapter(sqlite_session):
    import feast.infra.online_stores.sqlite  # noqa: F401 - registers the adapter

    frame = pd.DataFrame({"entity_type": "lead", "entity_id": [1, 2], "model_name": "m",
                          "score": [0.1, 0.2], "source": "batch", "predicted_at": NOW})  # fmt: skip
    log_predictions(sqlite_session, frame)
    log_predictions(sqlite_session, frame.assign(predicted_at=[NOW, NOW + timedelta(days=1)]))
    sqlite_session.commit()
    assert [row[-1] for row in _logged(sqlite_session)] == [NOW, NOW, NOW, NOW + timedelta(days=1)]


def test_changed_since_reads_only_newer_rows(session):
    from crm_predict.crm_store.models import Account

    session.add_all(
        [
            Account(id=1, name="old", created_at=NOW, updated_at=NOW - timedelta(days=3)),
            Account(id=2, name="new", created_at=NOW, updated_at=NOW),
        ]
    )
    session.commit()
    assert changed_since(session, "accounts", NOW - timedelta(days=1)) == [2]


def test_tag_history_survives_feasts_global_sqlite_datetime_adapter(sqlite_session):
    """Feast registers a sqlite3 adapter turning every datetime into an epoch number at import;
    the store binds typed parameters, so its datetimes still read back as datetimes."""
    import feast.infra.online_stores.sqlite  # noqa: F401 - registers the adapter

    upsert_tags(sqlite_session, _tags(["low"]), NOW)
    later = NOW + timedelta(days=1)
    upsert_tags(sqlite_session, _tags(["high"], when=later), later)
    sqlite_session.commit()
    assert current_tags(sqlite_session, "contact", 1)["churn_risk"].scored_at == later
    assert [h.replaced_at for h in tag_history(sqlite_session, "contact", 1, "churn_risk")] == [
        later
    ]


def test_tasks_sharing_every_column_but_the_entity_read_back_whole(session):
    """A batch's shared task columns (type, SLA, level, reason, stamps) are bound once, not
    staged per row: each still reads back, ints as ints, and a rerun creates nothing."""
    specs = [TaskSpec("retention", "customer", i, None, NOW + timedelta(hours=i), 48, "it's")
             for i in (1, 2, 3)]  # fmt: skip
    assert create_tasks(session, iter(specs), NOW) == 3
    assert create_tasks(session, specs, NOW) == 0
    session.commit()
    rows = session.query(Task).order_by(Task.entity_id).all()
    assert [(t.type, t.entity_type, t.entity_id, t.owner_id, t.due_at, t.sla_hours, t.status,
             t.escalation_level, t.reason, t.created_at, t.updated_at) for t in rows] == [
        ("retention", "customer", i, None, NOW + timedelta(hours=i), 48, "open", 0, "it's", NOW, NOW)
        for i in (1, 2, 3)
    ]  # fmt: skip
    assert {t.dedup_key for t in rows} == {s.dedup_key for s in specs}


def test_tag_upsert_leaves_no_history_trigger_on_the_connection(session):
    """SQLite writes history with a temporary trigger: gone after the upsert, failed or not, so a
    later update of a tag on the same connection writes no history of its own."""
    upsert_tags(session, _tags(["low", "high"]), NOW)
    session.commit()
    broken = _tags(["high", "low"]).assign(entity_type=None)  # NOT NULL: the upsert fails
    try:
        upsert_tags(session, broken, NOW)
    except Exception:  # noqa: BLE001 - the driver's IntegrityError, either backend
        session.rollback()
    session.execute(text("UPDATE tags SET value = 'medium'"))
    session.commit()
    assert session.query(TagHistory).count() == 0
    assert {t.value for t in session.query(Tag)} == {"medium"}


def test_tag_upsert_of_many_entities_and_names_matches_row_by_row_semantics(session):
    """A chunk the size of the batch's statements (several tag names per entity, name-major as the
    write-back builds it, some keys repeated): current values, history and counts."""
    ids = list(range(1, 701))
    first = pd.concat(
        [_tags(["a"] * 700).assign(entity_id=ids, name=name) for name in ("x_tag", "a_tag")]
    )
    assert upsert_tags(session, first, NOW) == 1400
    session.commit()
    later = NOW + timedelta(days=1)
    changed = first.assign(scored_at=later, value=["b" if i % 3 == 0 else "a" for i in ids] * 2)
    repeated = changed.iloc[:5].assign(value="c")  # the last of a repeated key wins
    assert upsert_tags(session, pd.concat([changed, repeated]), later) == 1400
    session.commit()
    assert session.query(Tag).count() == 1400
    assert current_tags(session, "contact", 3)["x_tag"].value == "c"
    assert current_tags(session, "contact", 3)["a_tag"].value == "b"
    assert current_tags(session, "contact", 4)["a_tag"].scored_at == later
    assert [h.value for h in tag_history(session, "contact", 3, "x_tag")] == ["a"]
    assert tag_history(session, "contact", 6, "x_tag")[0].replaced_at == later
    changed_keys = 2 * (700 // 3) + sum(1 for i in range(1, 6) if i % 3 != 0)
    assert session.query(TagHistory).count() == changed_keys


def test_background_checkpoints_leave_commits_to_the_writer_and_the_log_checkpointed(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    upgrade(engine)
    with session_factory(engine)() as session:
        with background_checkpoints(session) as committed:
            for round_ in range(3):
                upsert_tags(session, _tags(["low"] * 500, when=NOW + timedelta(days=round_)), NOW)
                session.commit()
                pragma = session.connection().exec_driver_sql("PRAGMA wal_autocheckpoint")
                assert pragma.scalar_one() == 0  # commits no longer copy pages to the database
                committed()
        assert (
            session.connection().exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 1000
        )
        assert session.scalar(select(func.count()).select_from(Tag)) == 500
    # The thread checkpointed what was committed: a read-only open sees every row.
    with sqlite3.connect(f"file:{tmp_path / 'crm.db'}?mode=ro", uri=True) as conn:
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == done
        assert conn.execute("SELECT COUNT(*) FROM tags").fetchone()[0] == 500
    engine.dispose()
