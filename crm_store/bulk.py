"""Bulk writes of whole DataFrames into CRM tables (demo generator, imports) and store resets.

PostgreSQL gets ``COPY … FROM STDIN``, binary when every column's type and dtype is one it encodes
(else CSV), SQLite a DBAPI ``executemany`` of plain tuples with
datetimes pre-formatted exactly as SQLAlchemy stores them, so millions of rows take seconds and
rows read back through the ORM look the same as rows written by it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    Integer,
    SmallInteger,
    String,
    TableClause,
    inspect,
    text,
)
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


@dataclass
class EncodedRows:
    """A frame encoded for one backend's bulk write (``encode_rows``): the CPU part of
    ``insert_frame``, so a job can do it on another thread than the database writes."""

    table: TableClause
    frame: pd.DataFrame  # as given: re-encoded if the connection's text encoding is not UTF-8
    constants: Mapping[str, Any] | None
    dialect: str  # PostgreSQL: COPY data; SQLite: executemany rows; else SQLAlchemy Core rows
    statements: list[tuple[str, Any]]  # (SQL, COPY data chunks or parameter rows)
    utf8: bool = False  # holds text as UTF-8 bytes (PostgreSQL binary COPY)

    def __len__(self) -> int:
        return len(self.frame)


def encode_rows(
    dialect: str,
    table: TableClause,
    frame: pd.DataFrame,
    constants: Mapping[str, Any] | None = None,
    on_conflict: str = "",
    utf8: bool = True,
) -> EncodedRows:
    """``frame`` (columns named as in ``table``) as the statements and data that append it to
    ``table`` on ``dialect``: PostgreSQL binary COPY (CSV for what it does not encode), SQLite
    multi-row INSERTs, SQLAlchemy Core rows elsewhere. ``constants`` are further columns with one
    value for every row: they are written once into the statement (SQLite) or each COPY row's
    end (PostgreSQL) instead of once per row; ``frame`` keeps at least one column, which gives
    the row count. ``on_conflict`` (SQLite only: COPY has none) ends each row's INSERT, e.g. an
    upsert's ``ON CONFLICT … DO UPDATE``. ``utf8``: the connection's text encoding is UTF-8."""
    if on_conflict and dialect != "sqlite":
        raise ValueError("on_conflict is for SQLite; COPY appends only")
    encoded = EncodedRows(table, frame, constants, dialect, [])
    if frame.empty:
        return encoded
    frame = _naive_datetimes(frame)
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
    binary = _copy_binary_rows(table, frame, shared, utf8) if dialect == "postgresql" else None
    out = encoded.statements
    if binary is not None:
        encoded.utf8 = utf8
        data = [_PGCOPY_HEADER, *(memoryview(chunk) for chunk in binary), _PGCOPY_TRAILER]
        out.append((f"COPY {table.name} ({all_cols}) FROM STDIN (FORMAT binary)", data))
    elif dialect == "postgresql":
        null = _csv_null(frame, shared)
        csv = {"index": False, "header": False, "lineterminator": "\n", "na_rep": null}
        suffix = ""
        line = shared.assign(**{c: sqlite_datetimes(shared[c]) for c in _datetime_columns(shared)})
        if len(shared.columns):
            suffix = "," + line.to_csv(**csv)[:-1]
        data = []
        for start in range(0, len(frame), CHUNK_ROWS):
            chunk = frame.iloc[start : start + CHUNK_ROWS]
            # numpy formats datetimes far faster than to_csv's per-value strftime.
            stamps = _datetime_columns(chunk)
            chunk = chunk.assign(**{c: sqlite_datetimes(chunk[c]) for c in stamps})
            body = chunk.to_csv(**csv)
            if not suffix:
                data.append(body)
            elif body.count("\n") == len(chunk):  # every line break ends a row
                data.append(body.replace("\n", suffix + "\n"))
            else:  # a quoted text value holds one: the shared values go into each row
                data.append(
                    chunk.assign(**{c: line[c].iloc[0] for c in line.columns}).to_csv(**csv)
                )
        out.append((f"COPY {table.name} ({all_cols}) FROM STDIN (FORMAT csv, NULL '{null}')", data))
    elif dialect == "sqlite":
        row = f"({', '.join(['?'] * len(cols) + list(literals.values()))})"
        per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, SQLITE_MAX_PARAMS // len(cols)))
        insert = f"INSERT INTO {table.name} ({all_cols}) VALUES "
        many_rows = insert + ", ".join([row] * per_statement) + f" {on_conflict}"
        for start in range(0, len(frame), CHUNK_ROWS):
            chunk = frame.iloc[start : start + CHUNK_ROWS]
            rows = np.empty((len(chunk), len(cols)), dtype=object)
            for i, c in enumerate(cols):
                rows[:, i] = np.array(_sqlite_column(chunk[c]), dtype=object)
            whole = len(rows) - len(rows) % per_statement
            if whole:
                out.append((many_rows, rows[:whole].reshape(-1, len(cols) * per_statement).tolist()))  # fmt: skip
            if whole < len(rows):
                out.append((f"{insert}{row} {on_conflict}", rows[whole:].tolist()))
    else:
        for start in range(0, len(frame), CHUNK_ROWS):
            chunk = frame.iloc[start : start + CHUNK_ROWS].astype(object)
            out.append(("", chunk.where(chunk.notna(), None).to_dict("records")))
    return encoded


def write_rows(session: Session, encoded: EncodedRows) -> int:
    """Send ``encode_rows``' statements in the session's transaction; returns the row count."""
    conn = session.connection()
    if conn.dialect.name != encoded.dialect:
        raise ValueError(f"rows encoded for {encoded.dialect}, written to {conn.dialect.name}")
    dbapi = conn.connection.driver_connection
    if encoded.utf8 and dbapi.info.encoding != "utf-8":
        encoded = encode_rows(
            encoded.dialect, encoded.table, encoded.frame, encoded.constants, utf8=False
        )
    if encoded.dialect == "postgresql":
        for sql, data in encoded.statements:
            with dbapi.cursor() as cur, cur.copy(sql) as copy:
                for part in data:
                    copy.write(part)
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


_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_PGCOPY_TRAILER = b"\xff\xff"
_PG_EPOCH_US = int(np.datetime64("2000-01-01T00:00:00", "us").astype(np.int64))
# A text column's fields are laid out padded to its longest value, then compacted. Padding costs
# memory: a column whose longest field is over 4× its mean may pad a chunk to this many bytes
# (200k rows × 335 bytes); beyond that (a few long free-text values) the frame goes as CSV.
_PADDED_SLACK = 1 << 26

# A chunk's fields of one column: (bytes, which of them to send) as (rows, width) arrays; the
# mask is None when every byte goes (a fixed-width column without NULL).
_Fields = tuple[np.ndarray, np.ndarray | None]


def _double(kind: Any) -> bool:
    """A float column stored as double precision (FLOAT(p ≤ 24) would be a 4-byte real)."""
    return isinstance(kind, Float) and (kind.precision is None or kind.precision > 24)


def _fixed(data: np.ndarray, null: np.ndarray | None) -> Callable[[slice], _Fields]:
    """Fixed-width fields (4-byte length, then ``data`` already in its big-endian wire type); a
    NULL is length -1 and no data."""
    width = data.dtype.itemsize
    record = np.dtype([("len", ">i4"), ("data", data.dtype)])
    if null is not None and not null.any():
        null = None

    def fields(rows: slice) -> _Fields:
        part = np.empty(len(data[rows]), record)
        part["len"] = width
        part["data"] = data[rows]
        mask = None
        if null is not None and (gaps := null[rows]).any():
            part["len"][gaps] = -1
            mask = np.ones((len(part), 4 + width), bool)
            mask[:, 4:] = ~gaps[:, None]
        return part.view(np.uint8).reshape(len(part), 4 + width), mask

    return fields


def _text(values: pd.Series) -> Callable[[slice], _Fields] | None:
    """Text fields: each distinct value encoded once (length + UTF-8) into a row of a padded
    matrix, rows gathered by code and the padding masked off. None unless every value is a str
    or missing, or when the padding would outweigh the text."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, uniques = values.cat.codes.to_numpy(), values.cat.categories
    else:
        codes, uniques = pd.factorize(values)
    uniques = np.asarray(uniques, dtype=object)
    if len(uniques) and pd.api.types.infer_dtype(uniques, skipna=False) != "string":
        return None
    encoded = [value.encode() for value in uniques]
    # Code -1 (missing) picks the last row: the NULL field.
    lengths = np.append(np.fromiter(map(len, encoded), np.int64, len(encoded)), -1)
    sent = 4 + np.maximum(lengths, 0)
    width = int(sent.max())
    codes = codes.astype(np.intp)
    mean = sent[codes].mean() if len(codes) else width
    if width > 4 * mean and width * min(len(codes), CHUNK_ROWS) > _PADDED_SLACK:
        return None
    if len(lengths) * width > max(4 * int(sent.sum()), _PADDED_SLACK):
        return None
    padded = np.zeros((len(lengths), width), np.uint8)
    padded[:, :4] = lengths.astype(">i4").view(np.uint8).reshape(-1, 4)
    data = np.arange(width - 4) < lengths[:-1, None]
    padded[:-1, 4:][data] = np.frombuffer(b"".join(encoded), np.uint8)
    present = np.arange(width) < sent[:, None]
    uniform = bool(present[:-1].all()) and not (codes < 0).any()

    def fields(rows: slice) -> _Fields:
        at = codes[rows]
        return padded[at], None if uniform else present[at]

    return fields


def _column_fields(kind: Any, values: pd.Series) -> Callable[[slice], _Fields] | None:
    """How one column's values become binary COPY fields for a column of type ``kind``; None when
    the pair is not handled (the frame then goes as CSV, which PostgreSQL parses by type)."""
    dtype = values.dtype
    texts = dtype.kind == "O" or isinstance(dtype, pd.CategoricalDtype | pd.StringDtype)
    if isinstance(kind, String) and not isinstance(kind, Enum) and texts:
        return _text(values)  # finds missing values itself
    null = values.isna().to_numpy()
    if null.all():  # NULL is NULL whatever the type
        return _fixed(np.zeros(len(values), ">i8"), null)
    if isinstance(kind, String):
        return None
    if isinstance(kind, DateTime) and not kind.timezone:
        if dtype.kind != "M" or isinstance(dtype, pd.DatetimeTZDtype):
            return None
        micros = values.to_numpy(dtype="datetime64[us]").view(np.int64)
        return _fixed(np.where(null, 0, micros - _PG_EPOCH_US).astype(">i8"), null)
    if isinstance(kind, Boolean):
        if dtype.kind == "O" and pd.api.types.infer_dtype(values, skipna=True) == "boolean":
            values = values.astype("boolean")
        elif dtype.kind != "b":
            return None
        return _fixed(values.to_numpy(dtype=bool, na_value=False).astype("?"), null)
    if isinstance(kind, Integer):
        if dtype.kind not in "iu":
            return None
        wire = ">i4"
        if isinstance(kind, BigInteger | SmallInteger):
            wire = ">i8" if isinstance(kind, BigInteger) else ">i2"
        ints = values.to_numpy(dtype=np.int64 if dtype.kind == "i" else np.uint64, na_value=0)
        limits = np.iinfo(wire)
        if len(ints) and (ints.min() < limits.min or ints.max() > limits.max):
            return None  # out of the column's range: CSV, and PostgreSQL's own error
        return _fixed(ints.astype(wire), null)
    if _double(kind):
        # float32 stays CSV: its shortest decimal reads back as a different double.
        if dtype.kind != "f" or dtype.itemsize != 8:
            return None
        return _fixed(values.to_numpy(dtype=np.float64, na_value=np.nan).astype(">f8"), null)
    return None


def _copy_binary_rows(
    table: TableClause, frame: pd.DataFrame, shared: pd.DataFrame, utf8: bool = True
) -> Iterator[np.ndarray] | None:
    """PostgreSQL binary COPY rows, CHUNK_ROWS at a time, built column by column with numpy:
    integers, doubles, booleans and timestamps (NULL where missing) as big-endian words, text as
    each distinct value's bytes gathered by code, then the shared values' constant bytes. No text
    to format on our side nor to parse on the server's; None when a column does not fit (the
    caller writes CSV). Text goes as UTF-8 bytes, so a client encoding other than UTF-8
    (``utf8=False``) keeps text columns to CSV."""
    columns = []  # an untyped column (NullType) is not handled: CSV
    for f in (frame, shared):
        for name, values in f.items():
            kind = table.c[name].type
            fields = _column_fields(kind, values) if utf8 or not isinstance(kind, String) else None
            if fields is None:
                return None
            columns.append(fields)
    suffix = []
    for fields in columns[len(frame.columns) :]:
        data, mask = fields(slice(0, 1))
        suffix.append(data[0] if mask is None else data[0][mask[0]])
    count = np.array([len(columns)], ">i2").view(np.uint8)
    return _binary_chunks(
        columns[: len(frame.columns)], np.concatenate([count, *suffix]), len(frame)
    )


def _binary_chunks(
    columns: list[Callable[[slice], _Fields]], constant: np.ndarray, n: int
) -> Iterator[np.ndarray]:
    """Each chunk's rows as one byte array: field count and shared values (``constant``, split
    around the columns) in every row, the padding of variable fields compacted away."""
    head, tail = constant[:2], constant[2:]
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, min(start + CHUNK_ROWS, n))
        parts = [fields(rows) for fields in columns]
        widths = [data.shape[1] for data, _ in parts]
        edges = np.cumsum([2, *widths, len(tail)])
        out = np.empty((rows.stop - rows.start, edges[-1]), np.uint8)
        out[:, :2] = head
        out[:, edges[-2] :] = tail
        keep = None
        for (data, mask), left, right in zip(parts, edges[:-2], edges[1:-1], strict=True):
            out[:, left:right] = data
            if mask is not None:
                if keep is None:
                    keep = np.ones(out.shape, bool)
                keep[:, left:right] = mask
        yield out.ravel() if keep is None else out[keep]


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
