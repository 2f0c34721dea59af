"""CRM store benchmark: 1M tag upserts on SQLite and PostgreSQL (a first write, the same run again,
the next run changing 10 % of the values) beside a plain bulk insert of the same rows, and the demo
generator at 100k customers on SQLite (wall and CPU). CPU is this process's plus, on PostgreSQL,
the server backend's (read from /proc when the server runs here).

Run: ``python -m benchmarks.bench_store [n_tags] [n_customers]`` (or ``make bench``). Works in a
temporary directory and a throw-away PostgreSQL database (``CRM_PREDICT_BENCH_PG``, default the
local test server); PostgreSQL is skipped with a note when it is not reachable.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from crm_predict.crm_store.bulk import insert_frame
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.demo import generate_demo
from crm_predict.crm_store.models import Tag
from crm_predict.crm_store.repository import upsert_tags
from sqlalchemy import text

from crm_predict.core.settings import Settings

PG_ADMIN_URL = os.environ.get(
    "CRM_PREDICT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NOW = datetime(2026, 6, 30, 3, 0)


def tag_frame(n: int, seed: int, changed_share: float = 0.0, run: int = 1) -> pd.DataFrame:
    """``n`` churn_risk tags scored by run ``run``; ``changed_share`` of them get a value different
    from the one seed's unchanged frame holds."""
    rng = np.random.default_rng(seed)
    levels = np.array(["low", "medium", "high"], dtype=object)
    first = rng.integers(0, 3, n)
    change = rng.random(n) < changed_share
    value = np.where(change, (first + 1) % 3, first)
    return pd.DataFrame(
        {
            "entity_type": "contact",
            "entity_id": np.arange(1, n + 1),
            "name": "churn_risk",
            "value": levels[value],
            "model_name": "churn",
            "model_version": "1",
            "run_id": f"bench-{run}",
            "scored_at": NOW + timedelta(days=run - 1),
        }
    )


# (label, run, share of values changed): a first write, the same run again (nothing to write) and
# the next night's run, which changes 10 % of the values and re-stamps every row with its run.
PASSES = (("first", 1, 0.0), ("second", 1, 0.0), ("third", 2, 0.1))


def _backend_cpu(session) -> float:
    """CPU seconds used so far by this session's PostgreSQL backend (server on this machine), or
    NaN when its /proc entry is not readable: wall time on a shared machine hides where work is."""
    pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(session) -> float:
    """This process's CPU seconds, plus the server backend's on PostgreSQL."""
    postgres = session.get_bind().dialect.name == "postgresql"
    return time.process_time() + (_backend_cpu(session) if postgres else 0.0)


def time_upserts(url: str, n: int) -> dict[str, float]:
    """Seconds for each of ``PASSES`` of ``n`` tag upserts (one transaction each, commit included),
    beside the floor: the same first-pass rows bulk-inserted into the empty tags table alone."""
    engine = make_engine(url)
    upgrade(engine)
    figures = {"n_tags": float(n)}
    frames = {label: tag_frame(n, seed=1, changed_share=share, run=run) for label, run, share in PASSES}  # fmt: skip
    with session_factory(engine)() as session:
        # Floor, same run and database: a plain bulk insert (executemany on SQLite, COPY on
        # PostgreSQL) of the first pass's rows into the empty table, unique index included.
        start, cpu = time.perf_counter(), _cpu(session)
        insert_frame(session, Tag.__table__, frames["first"])
        session.commit()
        figures["floor_s"] = time.perf_counter() - start
        figures["floor_cpu_seconds"] = _cpu(session) - cpu
        figures["floor_rows_per_s"] = n / figures["floor_s"]
        session.execute(text("DELETE FROM tags"))
        session.commit()
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM FULL tags"))
        else:
            session.connection().exec_driver_sql("VACUUM")
        for label, run, _share in PASSES:
            start, cpu = time.perf_counter(), _cpu(session)
            upsert_tags(session, frames[label], NOW + timedelta(days=run - 1, hours=1))
            session.commit()
            figures[f"{label}_s"] = time.perf_counter() - start
            figures[f"{label}_cpu_seconds"] = _cpu(session) - cpu
            history = session.execute(text("SELECT COUNT(*) FROM tag_history")).scalar_one()
            figures[f"{label}_history_rows"] = float(history)
        figures["history_rows"] = figures[f"{PASSES[-1][0]}_history_rows"]
    engine.dispose()
    return figures


def _postgres_database():
    """A fresh database on the benchmark server, or None when the server is absent."""
    admin = make_engine(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    name = f"crm_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection problem means "skip PostgreSQL"
        print(f"  PostgreSQL skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        admin.dispose()
        return None, None
    return admin, name


def time_generator(directory: Path, n_customers: int) -> dict[str, float]:
    """Wall and CPU seconds (and rows) for the demo generator into a fresh SQLite store."""
    settings = Settings(data_dir=directory / "demo")
    settings.ensure_dirs()
    engine = make_engine(settings.crm_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        wall, cpu = time.perf_counter(), time.process_time()
        counts = generate_demo(session, settings, n_customers, seed=42)
        session.commit()
        figures = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    engine.dispose()
    figures["rows"] = float(sum(counts.values()))
    return figures


def main(n_tags: int | None = None, n_customers: int | None = None) -> dict[str, dict[str, float]]:
    """Run every measurement, print a table, return the figures (``n_customers=0`` skips the
    generator)."""
    n_tags = 1_000_000 if n_tags is None else n_tags
    n_customers = 100_000 if n_customers is None else n_customers
    results: dict[str, dict[str, float]] = {}
    print(
        f"CRM store: upsert {n_tags:,} tags (first write, same run again, next run changing 10 %), "
        f"demo data {n_customers:,} customers"
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        results["upsert_tags_sqlite"] = time_upserts(f"sqlite:///{directory / 'tags.db'}", n_tags)
        admin, name = _postgres_database()
        if admin is not None:
            try:
                url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
                results["upsert_tags_postgresql"] = time_upserts(url, n_tags)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        if n_customers:
            results["demo_generator_sqlite"] = time_generator(directory, n_customers)
    for backend in ("sqlite", "postgresql"):
        m = results.get(f"upsert_tags_{backend}")
        if not m:
            continue
        print(
            f"  upsert_tags {backend}: floor (bulk insert, same rows) {m['floor_s']:6.2f} s wall, "
            f"{m['floor_cpu_seconds']:5.2f} s CPU"
        )
        for label, _run, share in PASSES:
            seconds = m[f"{label}_s"]
            print(
                f"    {label:<6} pass ({share:>4.0%} changed) {seconds:6.2f} s wall = "
                f"{seconds / m['floor_s']:4.1f}x floor ({n_tags / seconds:>10,.0f} tags/s), "
                f"{m[f'{label}_cpu_seconds']:5.2f} s CPU, history {m[f'{label}_history_rows']:,.0f} rows"
            )  # fmt: skip
    gen = results.get("demo_generator_sqlite")
    if gen:
        print(
            f"  demo-data sqlite {n_customers:,} customers: {gen['wall_s']:.1f} s wall, "
            f"{gen['cpu_s']:.1f} s CPU, {gen['rows']:,.0f} rows ({gen['rows'] / gen['wall_s']:,.0f} rows/s)"
        )  # fmt: skip
    return results


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
