"""CRM tables straight into Arrow, at C speed on both backends.

ADBC reads PostgreSQL with binary ``COPY`` and SQLite through its C API, so no Python object is
made per value (``pd.read_sql`` made several per cell). A table is read in ranges by ``WORKERS``
connections of the reader's own, in parallel; on PostgreSQL they import the session's snapshot,
so what they read is one consistent state. Columns are cast to the types the models declare, and
``to_frame`` gives ``pd.read_sql``'s pandas dtypes.

A session that has written and not committed reads through its own connection instead (slower,
but it sees its own writes, as ``pd.read_sql`` did), as does a store ADBC cannot open (an
in-memory SQLite database, another dialect).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from itertools import pairwise
from typing import NoReturn

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from crm_predict.crm_store.models import ENTITY_MODELS
from crm_predict.crm_store.sqlite_reader import OK, RESPONSE_HEADER
from sqlalchemy import Column, Select, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

# Rows per query: bounds one Arrow string buffer and SQLite's type inference (see iter_tables)
# and gives the workers pieces to share.
CHUNK_ROWS = 1_000_000
# Reader connections (threads): as many as cores, up to four.
WORKERS = min(4, os.cpu_count() or 1)
# Pieces read ahead of the caller, per reader.
READ_AHEAD = 2
# Below this many rows in all, the session's own connection reads: opening reader connections
# (ADBC's PostgreSQL driver loads the type catalogue) costs more than it saves.
SMALL_ROWS = 20_000
SQLITE_BATCH_ROWS = "adbc.sqlite.query.batch_rows"
ARROW_TYPES = {
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    # Nanoseconds, as pandas and the Parquet snapshots written before this reader had them.
    datetime: pa.timestamp("ns"),
}


def _columns(table: str, columns: Sequence[str] | None) -> list[Column]:
    model = ENTITY_MODELS.get(table)
    if model is None:
        raise KeyError(f"unknown CRM table {table!r}; known: {', '.join(ENTITY_MODELS)}")
    cols = model.__table__.c
    return [cols[c] for c in columns] if columns else list(cols)


def arrow_schema(table: str, columns: Sequence[str] | None = None) -> pa.Schema:
    """The Arrow schema of a CRM table (or of its named columns), from the model's column types."""
    return pa.schema(
        [pa.field(c.name, ARROW_TYPES[c.type.python_type]) for c in _columns(table, columns)]
    )


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table read here as the DataFrame ``pd.read_sql`` gave for it."""
    return table.to_pandas(coerce_temporal_nanoseconds=True)


def read_tables(
    session: Session, tables: Mapping[str, Sequence[str] | None]
) -> dict[str, pa.Table]:
    """CRM tables as Arrow, typed as the models declare: ``tables`` maps each table to the
    columns to read (None: all)."""
    return dict(iter_tables(session, tables))


def iter_tables(
    session: Session, tables: Mapping[str, Sequence[str] | None]
) -> Iterator[tuple[str, pa.Table]]:
    """``read_tables`` one table at a time, in the order given, each as soon as it is read: the
    readers go on with the next tables while the caller writes or converts this one."""
    parts: list[pa.Table] = []
    for name, piece, last in iter_pieces(session, tables):
        parts.append(piece)
        if last:
            yield name, pa.concat_tables(parts)
            parts = []


def iter_pieces(
    session: Session, tables: Mapping[str, Sequence[str] | None]
) -> Iterator[tuple[str, pa.Table, bool]]:
    """The tables of ``read_tables`` as the pieces they are read in (about ``CHUNK_ROWS`` rows
    each), in table order: ``(table, piece, last piece of the table)``. A caller that writes each
    piece away holds a few pieces, never a whole table."""
    conn = session.connection()
    selects = {name: select(*_columns(name, cols)) for name, cols in tables.items()}
    schemas = {name: arrow_schema(name, cols) for name, cols in tables.items()}
    spans = {name: _id_span(conn, name) for name in tables}
    connect = None if sum(n for _, n in spans.values()) < SMALL_ROWS else _connector(conn)
    if connect is None:
        for name, stmt in selects.items():
            yield name, _read_rows(conn, stmt, schemas[name]), True
        return
    dialect = conn.dialect
    tasks: list[tuple[str, pa.Schema]] = []
    counts = {}
    for name, stmt in selects.items():
        if dialect.name == "postgresql" and dialect.server_version_info >= (14,):
            pieces = _block_ranges(conn, name, stmt, spans[name][1])
        else:
            pieces = _id_ranges(ENTITY_MODELS[name].__table__.c.id, stmt, *spans[name])
        counts[name] = len(pieces)
        for piece in pieces:
            sql = str(piece.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            tasks.append((sql, schemas[name]))
    # SQLite's driver infers types from a result's first batch (an all-NULL start would fix a
    # text column as integer): one batch per chunk, inferred with every value seen.
    options = {SQLITE_BATCH_ROWS: str(1 << 30)} if dialect.name == "sqlite" else {}
    parts = _read_parallel(connect, tasks, min(WORKERS, len(tasks)), options)
    try:
        for name, n in counts.items():
            for i in range(n):
                yield name, next(parts), i == n - 1
    finally:
        parts.close()


def _id_span(conn: Connection, table: str) -> tuple[int, int]:
    """(lowest id, number of ids up to the highest): the size a read is planned by."""
    key = ENTITY_MODELS[table].__table__.c.id
    # Two subqueries: SQLite answers a lone min() or max() from the index, both at once by a scan.
    low, high = conn.execute(
        select(select(func.min(key)).scalar_subquery(), select(func.max(key)).scalar_subquery())
    ).one()
    return (0, 0) if low is None else (low, high - low + 1)


def _id_ranges(key: Column, stmt: Select, low: int, span: int) -> list[Select]:
    """``stmt`` split into ranges of ``CHUNK_ROWS`` ids from ``low``; the first and last are
    open-ended, so a row outside the span measured (one committed since) still falls in one."""
    edges = list(range(low + CHUNK_ROWS, low + span, CHUNK_ROWS))
    if not edges:
        return [stmt]
    pieces = [stmt.where(key < edges[0])]
    pieces += [stmt.where(key >= lo, key < hi) for lo, hi in pairwise(edges)]
    return [*pieces, stmt.where(key >= edges[-1])]


def _block_ranges(conn: Connection, table: str, stmt: Select, rows: int) -> list[Select]:
    """``stmt`` split into ranges of heap pages (TID range scans, PostgreSQL 14+), about
    ``CHUNK_ROWS`` rows each: every piece reads its pages in order, whatever the statistics say
    (an id range the planner misjudges becomes a scan of the whole table), and the rows come in
    the order a plain scan gives them. The last range is open-ended: pages added since count."""
    pages = conn.exec_driver_sql(
        f"SELECT pg_relation_size('{table}') / current_setting('block_size')::int"
    ).scalar_one()
    n = -(-rows // CHUNK_ROWS)
    edges = sorted({pages * k // n for k in range(1, n)} - {0})
    if not edges:
        return [stmt]
    pieces = [stmt.where(text(f"ctid < '({edges[0]},0)'"))]
    pieces += [
        stmt.where(text(f"ctid >= '({lo},0)'"), text(f"ctid < '({hi},0)'"))
        for lo, hi in pairwise(edges)
    ]
    return [*pieces, stmt.where(text(f"ctid >= '({edges[-1]},0)'"))]


def _read_parallel(
    connect, tasks: list[tuple[str, pa.Schema]], workers: int, options: dict[str, str]
) -> Iterator[pa.Table]:
    """Each task's result (its query's rows cast to its schema) in task order, read by
    ``workers`` threads sharing as many readers (``connect()``: ``read(sql, options)`` → Arrow,
    ``close()``): ADBC and Arrow's casts release the GIL, so they run on as many cores while the
    caller works on the results already yielded."""
    idle: queue.SimpleQueue = queue.SimpleQueue()
    readers = []
    pool = ThreadPoolExecutor(workers)

    def read(sql: str, schema: pa.Schema) -> pa.Table:
        reader = idle.get()
        try:
            return _conform(reader.read(sql, options), schema)
        finally:
            idle.put(reader)

    try:
        # Every reader is open (on PostgreSQL, in the shared snapshot) before any table is read.
        for _ in range(workers):
            readers.append(connect())
            idle.put(readers[-1])
        # A bounded read-ahead: a result is held from its read until the caller takes it, so
        # readers faster than the caller would otherwise gather every table in memory.
        pending: deque[Future] = deque()
        todo = iter(tasks)
        for task in itertools.islice(todo, READ_AHEAD * workers):
            pending.append(pool.submit(read, *task))
        while pending:
            result = pending.popleft().result()
            for task in itertools.islice(todo, 1):
                pending.append(pool.submit(read, *task))
            yield result
            del result
    finally:
        pool.shutdown(cancel_futures=True)
        for reader in readers:
            reader.close()


def _connector(conn: Connection):
    """A function opening one ADBC reader connection that sees what ``conn`` sees, or None when
    ``conn`` must read for itself (uncommitted writes, a store ADBC cannot open)."""
    opener = {"sqlite": _sqlite, "postgresql": _postgresql}.get(conn.dialect.name)
    return opener(conn) if opener else None


def _sqlite(conn: Connection):
    path = conn.engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    # pysqlite opens a transaction only to write: one open means uncommitted writes.
    if conn.connection.dbapi_connection.in_transaction:
        return None
    return partial(_SqliteProcessReader, path)


def _postgresql(conn: Connection):
    # A savepoint cannot export its snapshot; one that has written would hide its writes.
    if conn.in_nested_transaction():
        return None
    if conn.exec_driver_sql("SELECT pg_current_xact_id_if_assigned()").scalar() is not None:
        return None
    snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
    url = conn.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def connect():
        import adbc_driver_postgresql.dbapi

        adbc = adbc_driver_postgresql.dbapi.connect(url)
        with adbc.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            # The readers are the parallelism: no parallel workers beside them on the same
            # cores, and no JIT compilation for a plain scan repeated per range.
            cur.execute("SET max_parallel_workers_per_gather = 0")
            cur.execute("SET jit = off")
        return _AdbcReader(adbc)

    return connect


class _AdbcReader:
    """One ADBC connection reading queries into Arrow."""

    def __init__(self, adbc):
        self.adbc = adbc

    def read(self, sql: str, options: dict[str, str]) -> pa.Table:
        with self.adbc.cursor() as cur:
            if options:
                cur.adbc_statement.set_options(**options)
            cur.execute(sql)
            return cur.fetch_arrow_table()

    def close(self) -> None:
        self.adbc.close()


class _SqliteProcessReader:
    """SQLite queries read by ADBC in a process of the reader's own (``crm_predict.crm_store.sqlite_reader``:
    ADBC's own copy of SQLite must not open the store in the store's process), started once and
    asked query after query."""

    def __init__(self, path: str):
        # A file, not a pipe: nothing has to drain it while the process runs. Closed by close().
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crm_predict.crm_store.sqlite_reader", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )

    def read(self, sql: str, options: dict[str, str]) -> pa.Table:
        request = json.dumps({"sql": sql, "options": options}).encode() + b"\n"
        try:
            self.process.stdin.write(request)
            self.process.stdin.flush()
        except BrokenPipeError:
            self._failed()
        status, size = RESPONSE_HEADER.unpack(self._receive(RESPONSE_HEADER.size))
        payload = self._receive(size)
        if status != OK:
            raise RuntimeError(f"SQLite reader failed: {payload.decode()}")
        return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()

    def _receive(self, size: int) -> bytes:
        """``size`` bytes of the answer; fewer mean the process ended."""
        data = self.process.stdout.read(size)
        if len(data) < size:
            self._failed()
        return data

    def _failed(self) -> NoReturn:
        self.process.kill()
        self.process.wait()
        self.stderr.seek(0)
        raise RuntimeError(f"SQLite reader process ended: {self.stderr.read().decode()[-2000:]}")

    def close(self) -> None:
        # The end of requests: the process closes the store and exits. A process that already
        # died leaves the last request unflushed, and closing would raise on it.
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.stderr.close()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` cast to ``schema``: SQLite's datetime text parsed, its 0/1 booleans and
    PostgreSQL's int4 widened; an all-NULL column inferred as any type becomes the declared one."""
    columns = [(table[f.name], f.type) for f in schema]
    arrays = [c if c.type == kind else _cast(c, kind) for c, kind in columns]
    return pa.Table.from_arrays(arrays, schema=schema)


def _cast(column: pa.ChunkedArray, kind: pa.DataType) -> pa.ChunkedArray:
    if pa.types.is_timestamp(kind) and pa.types.is_string(column.type):
        try:
            return pc.cast(column, kind)
        except pa.ArrowInvalid:
            # Text Arrow's ISO 8601 parser refuses (a zone suffix): pandas', keeping the wall
            # time as SQLAlchemy's SQLite DateTime did.
            stamps = pd.to_datetime(column.to_pandas(), format="ISO8601")
            if stamps.dt.tz is not None:
                stamps = stamps.dt.tz_localize(None)
            return pa.chunked_array([pa.array(stamps, type=kind, from_pandas=True)])
    return pc.cast(column, kind)


def _read_rows(conn: Connection, stmt: Select, schema: pa.Schema) -> pa.Table:
    """The slow path: rows through the session's own connection, then column-wise into Arrow."""
    result = conn.execute(stmt)
    rows = result.fetchall()
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays(
        [pa.array(values, type=f.type) for values, f in zip(columns, schema, strict=True)],
        schema=schema,
    )
