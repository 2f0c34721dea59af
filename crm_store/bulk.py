"""Bulk writes of whole DataFrames into CRM tables (demo generator, imports) and store resets.

PostgreSQL gets ``COPY … FROM STDIN`` fed row by row through psycopg's ``copy.write_row``, SQLite a
DBAPI ``executemany`` of multi-row INSERTs with bound parameters; both take plain Python values with
datetimes pre-formatted exactly as SQLAlchemy stores them, so millions of rows take seconds and
rows read back through the ORM look the same as rows written by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from crm_predict.crm_store.models import ENTITY_MODELS
from sqlalchemy import TableClause, inspect, text
from sqlalchemy.orm import Session

# Children before parents (entities are listed parents first), so deletes never trip a foreign key.
_CHILDREN_FIRST = ("tags", "tag_history", "tasks", "prediction_log", *reversed(ENTITY_MODELS))
CHUNK_ROWS = 200_000
# SQLite: a statement inserts many rows (``VALUES (…), (…), …``), so executemany's per-row cost
# (a step, a reset and a Python tuple per row: most of the time at a few columns) is paid once per
# this many rows; bound values stay within the smallest SQLITE_MAX_VARIABLE_NUMBER (999).
SQLITE_ROWS_PER_STATEMENT = 256
SQLITE_MAX_PARAMS = 999


def sqlite_datetimes(values: pd.Series) -> list:
    """naive datetimes → 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's SQLite storage format, and
    what PostgreSQL's COPY reads), None for NaT."""
    arr = values.to_numpy(dtype="datetime64[us]")
    text = np.datetime_as_string(arr, unit="us").astype("S26")
    text.view(np.uint8).reshape(-1, 26)[:, 10] = ord(" ")  # ISO 8601's "T"
    out = text.astype("U26").astype(object)
    out[np.isnat(arr)] = None
    return out.tolist()


def _sqlite_column(values: pd.Series) -> list:
    """One column as Python values sqlite3 binds directly (None for missing)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return sqlite_datetimes(values)
    missing = values.isna().to_numpy()
    if missing.all():
        return [None] * len(values)
    if isinstance(values.dtype, pd.api.extensions.ExtensionDtype) and values.dtype.kind in "biu":
        # Nullable Int64/boolean: plain ints (sqlite3 refuses numpy scalars), None for NA.
        data = values.to_numpy(dtype="int64", na_value=0).astype(object)
        data[missing] = None
        return data.tolist()
    if values.dtype.kind == "b":
        return values.astype("int64").tolist()
    if missing.any():  # floats' NaN, pandas' NA, categoricals' missing: None
        arr = values.to_numpy(dtype=object)
        arr[missing] = None
        return arr.tolist()
    return values.tolist()


@contextmanager
def indexes_deferred(session: Session, tables: Iterable[str]) -> Iterator[None]:
    """Drop the secondary indexes of ``tables`` for a bulk load and rebuild them after: building
    an index once over the loaded rows beats updating it row by row (SQLite and PostgreSQL alike).
    Indexes that back a constraint stay. Runs in the caller's transaction: a failed load rolls the
    drops back too."""
    conn = session.connection()
    if conn.dialect.name not in ("sqlite", "postgresql"):
        yield
        return
    saved = []
    for name in tables:
        for index in inspect(conn).get_indexes(name):
            if index.get("duplicates_constraint") or not index.get("column_names"):
                continue
            saved.append((name, index))
            conn.exec_driver_sql(f'DROP INDEX "{index["name"]}"')
    yield
    if conn.dialect.name == "postgresql":
        # Index builds sort in memory (the default 64 MB spills to disk at a million rows).
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
    for name, index in saved:
        unique = "UNIQUE " if index.get("unique") else ""
        cols = ", ".join(f'"{c}"' for c in index["column_names"])
        conn.exec_driver_sql(f'CREATE {unique}INDEX "{index["name"]}" ON {name} ({cols})')


def _naive_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    """Datetime-like columns as naive UTC datetime64 (object columns of datetimes included)."""
    out = {}
    for name in frame.columns:
        values = frame[name]
        if values.dtype == object:
            sample = values.dropna()
            if sample.empty or not isinstance(sample.iloc[0], datetime):
                continue
            values = pd.to_datetime(values, utc=True)
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        if values is not frame[name]:
            out[name] = values
    return frame.assign(**out) if out else frame


def constant_columns(frame: pd.DataFrame, candidates: Sequence[str]) -> dict[str, Any]:
    """The columns of ``candidates`` holding one value in every row of a non-empty ``frame``
    (missing counts as a value), with that value: a batch's model, version, source, timestamp."""
    out = {}
    for name in candidates:
        values = frame[name]
        first = values.iloc[0]
        if pd.isna(first) and values.isna().all():
            out[name] = None
        elif not pd.isna(first) and (values == first).all():
            # Plain Python scalars: drivers bind them, not numpy's.
            out[name] = first.item() if isinstance(first, np.generic) else first
    return out


@dataclass
class EncodedRows:
    """A frame encoded for one backend's bulk write (``encode_rows``): the CPU part of
    ``insert_frame``, so a job can do it on another thread than the database writes."""

    table: TableClause
    frame: pd.DataFrame  # as given: re-encoded if the connection's text encoding is not UTF-8
    constants: Mapping[str, Any] | None
    dialect: str  # PostgreSQL: COPY rows; SQLite: executemany rows; else SQLAlchemy Core rows
    statements: list[tuple[str, Any]]  # (SQL, COPY rows or parameter rows)

    def __len__(self) -> int:
        return len(self.frame)


def encode_rows(
    dialect: str,
    table: TableClause,
    frame: pd.DataFrame,
    constants: Mapping[str, Any] | None = None,
    on_conflict: str = "",
) -> EncodedRows:
    """``frame`` (columns named as in ``table``) as the statements and rows that append it to
    ``table`` on ``dialect``: PostgreSQL COPY rows, SQLite multi-row INSERTs, SQLAlchemy Core
    rows elsewhere. ``constants`` are further columns with one value for every row (a batch's
    model, version, timestamp); ``frame`` keeps at least one column, which gives the row count.
    ``on_conflict`` (SQLite only: COPY has none) ends each row's INSERT, e.g. an upsert's
    ``ON CONFLICT … DO UPDATE``."""
    if on_conflict and dialect != "sqlite":
        raise ValueError("on_conflict is for SQLite; COPY appends only")
    encoded = EncodedRows(table, frame, constants, dialect, [])
    if frame.empty:
        return encoded
    frame = _naive_datetimes(frame)
    shared = _naive_datetimes(pd.DataFrame({c: [v] for c, v in (constants or {}).items()}))
    cols = list(frame.columns) + list(shared.columns)
    shared_values = [_sqlite_column(shared[c])[0] for c in shared.columns]
    out = encoded.statements
    if dialect not in ("sqlite", "postgresql"):
        frame = frame.assign(**dict(constants or {}))
        for start in range(0, len(frame), CHUNK_ROWS):
            chunk = frame.iloc[start : start + CHUNK_ROWS].astype(object)
            out.append(("", chunk.where(chunk.notna(), None).to_dict("records")))
        return encoded
    row = f"({', '.join(['?'] * len(cols))})"
    per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, SQLITE_MAX_PARAMS // len(cols)))
    insert = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES "
    many_rows = insert + ", ".join([row] * per_statement) + f" {on_conflict}"
    for start in range(0, len(frame), CHUNK_ROWS):
        chunk = frame.iloc[start : start + CHUNK_ROWS]
        rows = np.empty((len(chunk), len(cols)), dtype=object)
        for i, c in enumerate(frame.columns):
            rows[:, i] = np.array(_sqlite_column(chunk[c]), dtype=object)
        for i, value in enumerate(shared_values, start=len(frame.columns)):
            rows[:, i] = value
        if dialect == "postgresql":
            out.append((f"COPY {table.name} ({', '.join(cols)}) FROM STDIN", rows.tolist()))
            continue
        whole = len(rows) - len(rows) % per_statement
        if whole:
            out.append((many_rows, rows[:whole].reshape(-1, len(cols) * per_statement).tolist()))  # fmt: skip
        if whole < len(rows):
            out.append((f"{insert}{row} {on_conflict}", rows[whole:].tolist()))
    return encoded


def write_rows(session: Session, encoded: EncodedRows) -> int:
    """Send ``encode_rows``' statements in the session's transaction; returns the row count."""
    conn = session.connection()
    if conn.dialect.name != encoded.dialect:
        raise ValueError(f"rows encoded for {encoded.dialect}, written to {conn.dialect.name}")
    dbapi = conn.connection.driver_connection
    if encoded.dialect == "postgresql":
        for sql, rows in encoded.statements:
            with dbapi.cursor() as cur, cur.copy(sql) as copy:
                for values in rows:
                    copy.write_row(values)
    elif encoded.dialect == "sqlite":
        cur = dbapi.cursor()
        try:
            for sql, rows in encoded.statements:
                cur.executemany(sql, rows)
        finally:
            cur.close()
    else:
        for _, records in encoded.statements:
            conn.execute(encoded.table.insert(), records)
    return len(encoded)


def insert_frame(
    session: Session,
    table: TableClause,
    frame: pd.DataFrame,
    constants: Mapping[str, Any] | None = None,
    on_conflict: str = "",
) -> int:
    """Append ``frame`` to ``table`` in the session's transaction (``encode_rows`` says how),
    CHUNK_ROWS at a time, so a big frame is never encoded whole."""
    dialect = session.get_bind().dialect.name
    for start in range(0, len(frame), CHUNK_ROWS):
        part = frame.iloc[start : start + CHUNK_ROWS]
        write_rows(session, encode_rows(dialect, table, part, constants, on_conflict))
    return len(frame)


def reset_id_sequences(session: Session) -> None:
    """After writing explicit ids on PostgreSQL, move each id sequence past the largest id."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        return
    for name in ENTITY_MODELS:
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"
            )
        )


def store_is_empty(session: Session) -> bool:
    """True when no CRM entity table holds a row."""
    return not any(
        session.execute(text(f"SELECT 1 FROM {name} LIMIT 1")).first() for name in ENTITY_MODELS
    )


def clear_store(session: Session) -> None:
    """Delete every CRM row, write-backs included (``demo-data --replace``); ids restart at 1."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"TRUNCATE {', '.join(_CHILDREN_FIRST)} RESTART IDENTITY CASCADE"))
        return
    for name in _CHILDREN_FIRST:
        conn.execute(text(f"DELETE FROM {name}"))
