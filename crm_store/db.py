"""Engines and sessions for the CRM store (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_CACHE_KIB = 256 * 1024


def make_engine(url: str) -> Engine:
    """An engine with SQLite set up for bulk writes (WAL, relaxed fsync, staging tables and sorts in
    memory) and foreign keys on."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Temporary staging tables and index builds stay in RAM instead of temp files; the
            # page cache (a ceiling, allocated as used) holds a million-row upsert's working set.
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def background_checkpoints(session: Session) -> Iterator[Callable[[], None]]:
    """SQLite: for a run of big write transactions, the write-ahead log is checkpointed on a
    thread of its own, which yields a function to call after each commit. The session's
    connection stops checkpointing at commit (``wal_autocheckpoint=0``): that copied each
    transaction's pages into the database file and synced it before the commit returned, about a
    fifth of a million-tag batch's write time. A ``PASSIVE`` checkpoint never blocks the writer.
    Other backends (or an in-memory database): a no-op."""
    path = session.get_bind().url.database
    if session.get_bind().dialect.name != "sqlite" or not path or path == ":memory:":
        yield lambda: None
        return
    wake, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def checkpoint() -> None:
        # The sqlite3 module's SQLite, as the store's connections: one library, one set of locks.
        conn = sqlite3.connect(path, timeout=60)
        try:
            while not stop.is_set():
                wake.wait()
                wake.clear()
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
            errors.append(exc)
        finally:
            conn.close()

    def committed() -> None:
        wake.set()
        # A pooled connection may change between transactions: each gets the setting.
        session.connection().exec_driver_sql("PRAGMA wal_autocheckpoint = 0")

    thread = threading.Thread(target=checkpoint, name="sqlite-checkpoint", daemon=True)
    thread.start()
    try:
        session.connection().exec_driver_sql("PRAGMA wal_autocheckpoint = 0")
        yield committed
    finally:
        stop.set()
        wake.set()
        thread.join()
        session.rollback()  # nothing left to commit; after a failed write, its transaction
        session.connection().exec_driver_sql("PRAGMA wal_autocheckpoint = 1000")  # the default
        session.commit()
    if errors:
        raise errors[0]


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def store_session(url: str) -> Iterator[Session]:
    """A session on the CRM store at ``url``, schema upgraded first, engine disposed on exit: for
    a job that reads or writes the store once and moves on."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        with session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (the only way tables are created)."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine), revision)
