"""PostgreSQL binary COPY writes the rows the CSV COPY writes: text (unicode, empty, NULL, CSV
metacharacters, categoricals, many distinct values), timestamps with NaT, nullable integers of each
width, floats with NaN, booleans, shared values; frames it does not handle go as CSV."""

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
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

import crm_store.bulk as bulk
from crm_store.bulk import _copy_binary_rows, insert_frame
from crm_store.db import make_engine, session_factory
from crm_store.models import Task

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
    """Two tables of the same shape on PostgreSQL: one written by binary COPY, one by CSV."""
    engine = make_engine(pg_url)
    metadata = MetaData()
    tables = _table(metadata, "copy_binary"), _table(metadata, "copy_csv")
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with session_factory(engine)() as session:
        yield session, tables
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


def _write_both(session, tables, frame, shared, monkeypatch):
    binary, csv = tables
    shared_frame = pd.DataFrame({c: [v] for c, v in shared.items()})
    assert _copy_binary_rows(binary, frame, bulk._naive_datetimes(shared_frame)) is not None
    assert insert_frame(session, binary, frame, shared) == len(frame)
    with monkeypatch.context() as m:
        m.setattr(bulk, "_copy_binary_rows", lambda *args: None)
        assert insert_frame(session, csv, frame, shared) == len(frame)
    session.commit()
    return _rows(session, binary), _rows(session, csv)


def test_binary_copy_reads_back_like_csv_copy(pg, monkeypatch):
    session, tables = pg
    frame = _frame()
    got, expected = _write_both(session, tables, frame, SHARED, monkeypatch)
    assert got == expected
    assert [r[1] for r in got] == [None if pd.isna(v) else v for v in frame["label"]]
    assert {r[3] for r in got} == {"lead", None, "déal", ""}
    assert [r[4] for r in got[:6]] == [NOW, None, datetime(1999, 12, 31, 23, 59, 59, 999999),
        datetime(2000, 1, 1), datetime(1969, 12, 31, 23, 59, 59, 500000),
        datetime(1900, 1, 1, 0, 0, 0, 1)]  # fmt: skip
    assert [r[5] for r in got[:4]] == [24, None, -(2**31), 2**31 - 1]
    assert [r[7] for r in got[:3]] == [2**62, None, -1]
    assert [r[9] for r in got[:3]] == [True, None, False]
    assert [r[10] for r in got[:6]] == [0.1 + 0.2, None, -0.0, 1e-300, np.inf, 1 / 3]
    assert {r[11:] for r in got} == {('clv, "v2"\nline', None, NOW, 3, True)}


def test_many_chunks_and_many_distinct_values(pg, monkeypatch):
    """Every chunk's rows land once and in order when text has a distinct value per row (of
    varying length), NULLs and shared values fold into the rows."""
    session, tables = pg
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 997)
    n = 5_000
    frame = _frame(n).assign(
        label=[None if i % 11 == 0 else f"name-{i}-" + "x" * (i % 37) for i in range(n)]
    )
    got, expected = _write_both(session, tables, frame, {"done": False}, monkeypatch)
    assert got == expected
    assert [r[0] for r in got] == list(range(n))
    assert [r[1] for r in got] == frame["label"].tolist()


def test_text_only_columns_and_all_missing_columns(pg, monkeypatch):
    session, tables = pg
    frame = pd.DataFrame(
        {"seq": [1, 2, 3], "label": ["a", "b", "a"], "note": [None, None, None],
         "score": [np.nan, np.nan, np.nan]}
    )  # fmt: skip
    got, expected = _write_both(session, tables, frame, {}, monkeypatch)
    assert got == expected
    assert [r[:3] for r in got] == [(1, "a", None), (2, "b", None), (3, "a", None)]


def test_frames_the_binary_copy_does_not_handle_go_as_csv(pg):
    session, (binary, _) = pg
    none = pd.DataFrame()
    base = pd.DataFrame({"seq": [1, 2], "label": ["a", "b"]})
    assert _copy_binary_rows(binary, base, none) is not None
    assert _copy_binary_rows(binary, base, none, utf8=False) is None  # text only as UTF-8
    for column, values in {
        "label": [1, "b"],  # a number in a text column: PostgreSQL parses its text form
        "score": np.array([1.5, 2.5], dtype=np.float32),  # its decimal reads back differently
        "hours": [2**31, 1],  # out of int4's range: PostgreSQL's own error
        "flag": [1, 0],
        "at": ["2026-01-01", "2026-01-02"],
    }.items():
        assert _copy_binary_rows(binary, base.assign(**{column: values}), none) is None, column
    # A rejected frame is still written, as CSV.
    assert insert_frame(session, binary, base.assign(label=[1, "b"])) == 2
    session.commit()
    assert [r[1] for r in _rows(session, binary)] == ["1", "b"]


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


def test_a_few_long_values_among_short_ones_go_as_csv(pg, monkeypatch):
    """Text is padded to its longest value before compaction: when that would take far more memory
    than the text itself, the frame is written as CSV, whole."""
    session, (binary, _) = pg
    monkeypatch.setattr(bulk, "_PADDED_SLACK", 10_000)
    frame = pd.DataFrame({"seq": range(100), "note": ["short"] * 99 + ["long " * 2_000]})
    assert _copy_binary_rows(binary, frame, pd.DataFrame()) is None
    assert _copy_binary_rows(binary, frame.iloc[:99], pd.DataFrame()) is not None
    assert insert_frame(session, binary, frame) == 100
    session.commit()
    assert [r[2] for r in _rows(session, binary)] == frame["note"].tolist()
