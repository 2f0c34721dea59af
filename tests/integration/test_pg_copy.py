"""PostgreSQL COPY (psycopg's ``write_row``) reads back what the frame held: text (unicode, empty,
NULL, COPY and CSV metacharacters, categoricals, many distinct values), timestamps with NaT,
nullable integers of each width, floats with NaN and infinity, booleans, shared values."""

from datetime import datetime

import crm_predict.crm_store.bulk as bulk
import numpy as np
import pandas as pd
import pytest
from crm_predict.crm_store.bulk import insert_frame
from crm_predict.crm_store.db import make_engine, session_factory
from crm_predict.crm_store.models import Task
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    select,
)

NOW = datetime(2026, 3, 4, 5, 6, 7, 891011)


def _table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("seq", BigInteger),
        Column("label", String(50)),
        Column("note", Text),
        Column("kind", String(20)),
        Column("at", DateTime),
        Column("hours", Integer),
        Column("small", SmallInteger),
        Column("big", BigInteger),
        Column("flag", Boolean),
        Column("maybe", Boolean),
        Column("score", Float),
        Column("model_name", String(100)),
        Column("run_id", String(64)),
        Column("scored_at", DateTime),
        Column("level", Integer),
        Column("done", Boolean),
    )


@pytest.fixture
def pg(pg_url):
    """A table of every column kind on PostgreSQL."""
    engine = make_engine(pg_url)
    metadata = MetaData()
    table = _table(metadata, "copy_rows")
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with session_factory(engine)() as session:
        yield session, table
    metadata.drop_all(engine)
    engine.dispose()


def _frame(n: int = 12) -> pd.DataFrame:
    labels = ["plain", "ünïcødé ✓ 日本", "", None, 'a,b "quoted"', "line\nbreak\r\n", "tab\tx",
              "\\N", "back\\slash", "emoji 🎉", np.nan, "NULL"]  # fmt: skip
    stamps = [NOW, pd.NaT, datetime(1999, 12, 31, 23, 59, 59, 999999), datetime(2000, 1, 1),
              datetime(1969, 12, 31, 23, 59, 59, 500000), datetime(1900, 1, 1, 0, 0, 0, 1)]  # fmt: skip
    return pd.DataFrame(
        {
            "seq": np.arange(n, dtype=np.int64),
            "label": [labels[i % len(labels)] for i in range(n)],
            "note": pd.array([labels[(i + 3) % len(labels)] for i in range(n)], dtype="string"),
            "kind": pd.Categorical([["lead", None, "déal", ""][i % 4] for i in range(n)]),
            "at": pd.to_datetime([stamps[i % len(stamps)] for i in range(n)]),
            "hours": pd.array([[24, None, -(2**31), 2**31 - 1][i % 4] for i in range(n)], "Int64"),
            "small": np.array([[1, -2, 2**15 - 1][i % 3] for i in range(n)], dtype=np.int16),
            "big": pd.array([[2**62, None, -1][i % 3] for i in range(n)], dtype="Int64"),
            "flag": np.array([i % 2 == 0 for i in range(n)]),
            "maybe": pd.array([[True, None, False][i % 3] for i in range(n)], dtype="boolean"),
            "score": [[0.1 + 0.2, np.nan, -0.0, 1e-300, np.inf, 1 / 3][i % 6] for i in range(n)],
        }
    )


SHARED = {"model_name": 'clv, "v2"\nline', "run_id": None, "scored_at": NOW, "level": 3,
          "done": True}  # fmt: skip


def _rows(session, table):
    return [tuple(r) for r in session.execute(select(table).order_by(table.c.seq))]


def _write(session, table, frame, shared):
    assert insert_frame(session, table, frame, shared) == len(frame)
    session.commit()
    return _rows(session, table)


def test_copy_reads_back_every_kind_of_value(pg):
    session, table = pg
    frame = _frame()
    got = _write(session, table, frame, SHARED)
    assert [r[1] for r in got] == [None if pd.isna(v) else v for v in frame["label"]]
    assert [r[2] for r in got] == [None if pd.isna(v) else v for v in frame["note"]]
    assert {r[3] for r in got} == {"lead", None, "déal", ""}
    assert [r[4] for r in got[:6]] == [NOW, None, datetime(1999, 12, 31, 23, 59, 59, 999999),
        datetime(2000, 1, 1), datetime(1969, 12, 31, 23, 59, 59, 500000),
        datetime(1900, 1, 1, 0, 0, 0, 1)]  # fmt: skip
    assert [r[5] for r in got[:4]] == [24, None, -(2**31), 2**31 - 1]
    assert [r[6] for r in got[:3]] == [1, -2, 2**15 - 1]
    assert [r[7] for r in got[:3]] == [2**62, None, -1]
    assert [r[8] for r in got[:2]] == [True, False]
    assert [r[9] for r in got[:3]] == [True, None, False]
    assert [r[10] for r in got[:6]] == [0.1 + 0.2, None, -0.0, 1e-300, np.inf, 1 / 3]
    assert {r[11:] for r in got} == {('clv, "v2"\nline', None, NOW, 3, True)}


def test_many_chunks_and_many_distinct_values(pg, monkeypatch):
    """Every chunk's rows land once and in order when text has a distinct value per row (of
    varying length), NULLs and shared values fold into the rows."""
    session, table = pg
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 997)
    n = 5_000
    frame = _frame(n).assign(
        label=[None if i % 11 == 0 else f"name-{i}-" + "x" * (i % 37) for i in range(n)]
    )
    got = _write(session, table, frame, {"done": False})
    assert [r[0] for r in got] == list(range(n))
    assert [r[1] for r in got] == frame["label"].tolist()
    assert {r[15] for r in got} == {False}


def test_text_only_columns_and_all_missing_columns(pg):
    session, table = pg
    frame = pd.DataFrame(
        {"seq": [1, 2, 3], "label": ["a", "b", "a"], "note": [None, None, None],
         "score": [np.nan, np.nan, np.nan]}
    )  # fmt: skip
    got = _write(session, table, frame, {})
    assert [r[:3] for r in got] == [(1, "a", None), (2, "b", None), (3, "a", None)]
    assert [r[10] for r in got] == [None, None, None]


def test_values_of_another_type_are_written_as_postgresql_reads_their_text(pg):
    """A number in a text column, float32, 0/1 flags and ISO dates as text: PostgreSQL parses
    each value's text form into the column's type."""
    session, table = pg
    frame = pd.DataFrame(
        {
            "seq": [1, 2], "label": [1, "b"], "score": np.array([1.5, 2.5], dtype=np.float32),
            "flag": [1, 0], "at": ["2026-01-01", "2026-01-02 03:04:05"],
        }
    )  # fmt: skip
    got = _write(session, table, frame, {})
    assert [(r[1], r[4], r[8], r[10]) for r in got] == [
        ("1", datetime(2026, 1, 1), True, 1.5),
        ("b", datetime(2026, 1, 2, 3, 4, 5), False, 2.5),
    ]


def test_tasks_round_trip_with_int4_sla_hours(session):
    """Tasks (text, int4, nullable bigint, timestamps) read back the same on each backend."""
    frame = pd.DataFrame(
        {
            "dedup_key": ["k1", "k2", "k3"],
            "type": ["call", "email", "call"],
            "entity_type": "contact",
            "entity_id": np.array([1, 2, 3], dtype=np.int64),
            "owner_id": pd.array([7, None, 9], dtype="Int64"),
            "due_at": [NOW, NOW, NOW],
            "sla_hours": np.array([24, 48, 72], dtype=np.int64),
            "reason": ['churn risk high, "call"', "line\nbreak", ""],
        }
    )
    shared = {"status": "open", "escalation_level": 0, "created_at": NOW, "updated_at": NOW}
    assert insert_frame(session, Task.__table__, frame, shared) == 3
    session.commit()
    rows = session.scalars(select(Task).order_by(Task.dedup_key)).all()
    assert [(t.owner_id, t.sla_hours, t.reason, t.status, t.due_at) for t in rows] == [
        (7, 24, 'churn risk high, "call"', "open", NOW),
        (None, 48, "line\nbreak", "open", NOW),
        (9, 72, "", "open", NOW),
    ]
