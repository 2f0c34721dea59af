"""Bulk writes of whole DataFrames into CRM tables (demo generator, imports) and store resets.

PostgreSQL gets ``COPY … FROM STDIN`` (CSV), SQLite a DBAPI ``executemany`` of plain tuples with
datetimes pre-formatted exactly as SQLAlchemy stores them, so millions of rows take seconds and
rows read back through the ORM look the same as rows written by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, DateTime, Float, String, Table, TableClause, inspect, text
from sqlalchemy.orm import Session

from crm_store.models import ENTITY_MODELS

# Children before parents, so deletes never trip a foreign key.
_WRITE_BACK_TABLES = ("tags", "tag_history", "tasks", "prediction_log")
_ENTITY_TABLES_CHILD_FIRST = (
    "tickets",
    "orders",
    "activities",
    "deal_stage_history",
    "deals",
    "leads",
    "contacts",
    "accounts",
    "users",
)
CHUNK_ROWS = 200_000
# SQLite: a statement inserts many rows (``VALUES (…), (…), …``), so executemany's per-row cost
# (a step, a reset and a Python tuple per row: most of the time at a few columns) is paid once per
# this many rows; bound values stay within the smallest SQLITE_MAX_VARIABLE_NUMBER (999).
SQLITE_ROWS_PER_STATEMENT = 256
SQLITE_MAX_PARAMS = 999


_US_PER_DAY = 86_400_000_000


def _digits(out: np.ndarray, col: int, values: np.ndarray, width: int) -> None:
    """Write ``values`` as zero-padded decimal ASCII into ``out[:, col:col + width]``."""
    values = values.astype(np.int32)  # every field fits; 32-bit division is cheaper
    for k in range(width):
        out[:, col + width - 1 - k] = 48 + (values // 10**k) % 10


def sqlite_datetimes(values: pd.Series) -> list:
    """naive datetimes → 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's SQLite storage format, and
    what PostgreSQL's COPY reads). Built as an ASCII byte matrix column by column: a third faster
    than numpy's datetime_as_string, and this runs once per timestamp the generator writes."""
    arr = values.to_numpy(dtype="datetime64[us]")
    micros = arr.view(np.int64)
    days = np.floor_divide(micros, _US_PER_DAY)
    day = days.astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    seconds, fraction = np.divmod(micros - days * _US_PER_DAY, 1_000_000)
    hours, rest = np.divmod(seconds, 3600)
    out = np.empty((len(arr), 26), dtype=np.uint8)
    out[:, [4, 7, 10, 13, 16, 19]] = np.frombuffer(b"-- ::.", dtype=np.uint8)
    _digits(out, 0, day.astype("datetime64[Y]").astype(np.int64) + 1970, 4)
    _digits(out, 5, month.astype(np.int64) % 12 + 1, 2)
    _digits(out, 8, (day - month.astype("datetime64[D]")).astype(np.int64) + 1, 2)
    _digits(out, 11, hours, 2)
    _digits(out, 14, rest // 60, 2)
    _digits(out, 17, rest % 60, 2)
    _digits(out, 20, fraction, 6)
    text = out.view("S26").ravel().astype("U26").astype(object)
    text[np.isnat(arr)] = None
    return text.tolist()


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
    if values.dtype.kind == "f" and missing.any():
        arr = values.to_numpy().astype(object)
        arr[missing] = None
        return arr.tolist()
    if values.dtype == object and missing.any():
        return values.where(~missing, None).tolist()
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


# Characters a batch's shared values use; no quote, backslash or control character.
_LITERAL_SAFE = re.compile(r"[\w .:+\-/@]*", re.ASCII)


def _sql_literal(value: Any) -> str:
    """A value from ``_sqlite_column`` (None, int, float or str) as an SQLite literal. Only text
    that cannot end or escape a literal (names, versions, ISO timestamps) qualifies; anything else
    raises TypeError and is bound per row like every other value."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        if not _LITERAL_SAFE.fullmatch(value):
            raise TypeError(f"text {value!r} is bound, not inlined")
        return f"'{value}'"
    if isinstance(value, int | float) and np.isfinite(value):
        return repr(value)
    raise TypeError(f"no SQL literal for {value!r}")


def insert_frame(
    session: Session,
    table: TableClause,
    frame: pd.DataFrame,
    constants: Mapping[str, Any] | None = None,
    on_conflict: str = "",
) -> int:
    """Append ``frame`` (columns named as in ``table``) to ``table`` in the session's transaction.
    ``constants`` are further columns with one value for every row: they are written once into
    the statement (SQLite) or the end of each COPY line (PostgreSQL) instead of once per row;
    ``frame`` keeps at least one column, which gives the row count. ``on_conflict`` (SQLite only:
    COPY has none) ends each row's INSERT, e.g. an upsert's ``ON CONFLICT … DO UPDATE``."""
    if frame.empty:
        return 0
    if on_conflict and session.get_bind().dialect.name != "sqlite":
        raise ValueError("on_conflict is for SQLite; COPY appends only")
    frame = _naive_datetimes(frame)
    conn = session.connection()
    dialect = conn.dialect.name
    shared = _naive_datetimes(pd.DataFrame({c: [v] for c, v in (constants or {}).items()}))
    literals = {}
    try:
        literals = {c: _sql_literal(_sqlite_column(shared[c])[0]) for c in shared.columns}
    except TypeError:
        fold = True
    else:
        fold = dialect not in ("sqlite", "postgresql")
    if constants and fold:  # every value goes through the rows after all
        frame = _naive_datetimes(frame.assign(**dict(constants)))
        shared, literals = pd.DataFrame(), {}
    cols = list(frame.columns)
    all_cols = ", ".join(cols + list(shared.columns))
    dbapi = conn.connection.driver_connection
    binary = _copy_binary_rows(table, frame, shared) if dialect == "postgresql" else None
    if binary is not None:
        sql = f"COPY {table.name} ({all_cols}) FROM STDIN (FORMAT binary)"
        with dbapi.cursor() as cur, cur.copy(sql) as copy:
            copy.write(_PGCOPY_HEADER)
            for start in range(0, len(binary), CHUNK_ROWS):
                copy.write(binary[start : start + CHUNK_ROWS].tobytes())
            copy.write(_PGCOPY_TRAILER)
    elif dialect == "postgresql":
        null = _csv_null(frame, shared)
        sql = f"COPY {table.name} ({all_cols}) FROM STDIN (FORMAT csv, NULL '{null}')"
        csv = {"index": False, "header": False, "lineterminator": "\n", "na_rep": null}
        suffix = ""
        line = shared.assign(**{c: sqlite_datetimes(shared[c]) for c in _datetime_columns(shared)})
        if len(shared.columns):
            suffix = "," + line.to_csv(**csv)[:-1]
        with dbapi.cursor() as cur, cur.copy(sql) as copy:
            for start in range(0, len(frame), CHUNK_ROWS):
                chunk = frame.iloc[start : start + CHUNK_ROWS]
                # numpy formats datetimes far faster than to_csv's per-value strftime.
                stamps = _datetime_columns(chunk)
                chunk = chunk.assign(**{c: sqlite_datetimes(chunk[c]) for c in stamps})
                body = chunk.to_csv(**csv)
                if not suffix:
                    copy.write(body)
                elif body.count("\n") == len(chunk):  # every line break ends a row
                    copy.write(body.replace("\n", suffix + "\n"))
                else:  # a quoted text value holds one: the shared values go into each row
                    copy.write(
                        chunk.assign(**{c: line[c].iloc[0] for c in line.columns}).to_csv(**csv)
                    )
    elif dialect == "sqlite":
        row = f"({', '.join(['?'] * len(cols) + list(literals.values()))})"
        per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, SQLITE_MAX_PARAMS // len(cols)))
        insert = f"INSERT INTO {table.name} ({all_cols}) VALUES "
        many_rows = insert + ", ".join([row] * per_statement) + f" {on_conflict}"
        cur = dbapi.cursor()
        try:
            for start in range(0, len(frame), CHUNK_ROWS):
                chunk = frame.iloc[start : start + CHUNK_ROWS]
                rows = np.empty((len(chunk), len(cols)), dtype=object)
                for i, c in enumerate(cols):
                    rows[:, i] = np.array(_sqlite_column(chunk[c]), dtype=object)
                whole = len(rows) - len(rows) % per_statement
                if whole:
                    cur.executemany(many_rows, rows[:whole].reshape(-1, len(cols) * per_statement).tolist())  # fmt: skip
                if whole < len(rows):
                    cur.executemany(f"{insert}{row} {on_conflict}", rows[whole:].tolist())
        finally:
            cur.close()
    else:  # any other backend: SQLAlchemy Core executemany in big chunks
        for start in range(0, len(frame), CHUNK_ROWS):
            chunk = frame.iloc[start : start + CHUNK_ROWS].astype(object)
            chunk = chunk.where(chunk.notna(), None)
            conn.execute(table.insert(), chunk.to_dict("records"))
    return len(frame)


_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_PGCOPY_TRAILER = b"\xff\xff"
_PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")


def _double(kind: Any) -> bool:
    """A float column stored as double precision (FLOAT(p ≤ 24) would be a 4-byte real)."""
    return isinstance(kind, Float) and (kind.precision is None or kind.precision > 24)


def _binary_field(kind: Any, value: Any) -> bytes | None:
    """One shared value as a binary COPY field (length + big-endian data), None if unsupported."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return (-1).to_bytes(4, "big", signed=True)
    if isinstance(kind, String) and isinstance(value, str):
        data = value.encode()
    elif isinstance(kind, DateTime) and not kind.timezone and isinstance(value, datetime):
        micros = (np.datetime64(value, "us") - _PG_EPOCH).astype(np.int64)
        data = int(micros).to_bytes(8, "big", signed=True)
    elif isinstance(kind, BigInteger) and isinstance(value, int | np.integer):
        data = int(value).to_bytes(8, "big", signed=True)
    elif _double(kind) and isinstance(value, float | np.floating):
        data = np.array([value], dtype=">f8").tobytes()
    else:
        return None
    return len(data).to_bytes(4, "big") + data


def _copy_binary_rows(
    table: TableClause, frame: pd.DataFrame, shared: pd.DataFrame
) -> np.ndarray | None:
    """PostgreSQL binary COPY rows built as one numpy record array: fixed-width columns (BIGINT
    from int64, double precision from float64 without NaN) then the shared values' constant bytes.
    No text to format on our side nor to parse on the server's; None when a column does not fit
    (the caller writes CSV)."""
    if not isinstance(table, Table):
        return None
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for name in frame.columns:
        kind, values = table.c[name].type, frame[name]
        if isinstance(kind, BigInteger) and values.dtype == np.int64:
            fields += [(f"{name}_len", ">i4"), (name, ">i8")]
        elif _double(kind) and values.dtype == np.float64 and not values.isna().any():
            fields += [(f"{name}_len", ">i4"), (name, ">f8")]
        else:
            return None
    suffix = b""
    for name in shared.columns:
        field = _binary_field(table.c[name].type, shared[name].iloc[0])
        if field is None:
            return None
        suffix += field
    if suffix:
        fields.append(("shared", f"V{len(suffix)}"))
    rows = np.empty(len(frame), dtype=np.dtype(fields))
    rows["count"] = len(frame.columns) + len(shared.columns)
    for name in frame.columns:
        rows[f"{name}_len"] = 8
        rows[name] = frame[name].to_numpy()
    if suffix:
        rows["shared"] = np.frombuffer(suffix, dtype=f"V{len(suffix)}")[0]
    return rows


def _csv_null(frame: pd.DataFrame, shared: pd.DataFrame) -> str:
    """What a CSV COPY reads as NULL: an unquoted empty field (pandas writes missing values so),
    unless a text value is the empty string, which pandas does not quote either; then a marker
    no text value equals."""
    texts = [
        values for f in (frame, shared) for _, values in f.items()
        if values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype | pd.StringDtype)
    ]  # fmt: skip
    if not any((values == "").any() for values in texts):
        return ""
    marker = r"\N"
    while any((values == marker).any() for values in texts):
        marker += "N"
    return marker


def _datetime_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])]


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
    names = _WRITE_BACK_TABLES + _ENTITY_TABLES_CHILD_FIRST
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        return
    for name in names:
        conn.execute(text(f"DELETE FROM {name}"))
