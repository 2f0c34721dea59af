"""CRM store benchmark: 1M tag upserts (first write, then a pass changing half the values) on SQLite
and PostgreSQL, and the demo generator at 100k customers on SQLite.

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
from sqlalchemy import column, text
from sqlalchemy import table as table_clause

from crm_predict.settings import Settings
from crm_store.bulk import insert_frame
from crm_store.db import make_engine, session_factory, upgrade
from crm_store.demo import generate_demo
from crm_store.repository import upsert_tags

PG_ADMIN_URL = os.environ.get(
    "CRM_PREDICT_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NOW = datetime(2026, 6, 30, 3, 0)


def tag_frame(n: int, seed: int, changed_share: float = 0.0) -> pd.DataFrame:
    """``n`` churn_risk tags; ``changed_share`` of them get a value different from seed's pass."""
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
            "run_id": "bench",
            "scored_at": NOW,
        }
    )


def time_upserts(url: str, n: int) -> dict[str, float]:
    """Seconds for the first upsert of ``n`` tags and for a second pass changing half of them."""
    engine = make_engine(url)
    upgrade(engine)
    first, second = tag_frame(n, seed=1), tag_frame(n, seed=1, changed_share=0.5)
    figures = {}
    with session_factory(engine)() as session:
        for label, frame, when in (("first", first, NOW), ("second", second, NOW + timedelta(days=1))):  # fmt: skip
            start = time.perf_counter()
            upsert_tags(session, frame, when)
            session.commit()
            figures[f"{label}_s"] = time.perf_counter() - start
        history = session.execute(text("SELECT COUNT(*) FROM tag_history")).scalar_one()
        figures["history_rows"] = float(history)
        # Floor, same run: the same rows appended by the bulk writer alone (no join, no history).
        session.execute(text("CREATE TEMPORARY TABLE tag_floor AS SELECT * FROM tags WHERE 1 = 0"))
        columns = [c for c in first.columns if c != "id"]
        start = time.perf_counter()
        insert_frame(session, table_clause("tag_floor", *(column(c) for c in columns)), first[columns])  # fmt: skip
        session.commit()
        figures["floor_rows_per_s"] = n / (time.perf_counter() - start)
        figures["n_tags"] = float(n)
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
    """Run every measurement, print a table, return the figures."""
    n_tags = n_tags or 1_000_000
    n_customers = n_customers or 100_000
    results: dict[str, dict[str, float]] = {}
    print(f"CRM store: upsert {n_tags:,} tags (2nd pass changes half), demo data {n_customers:,} customers")  # fmt: skip
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
        results["demo_generator_sqlite"] = time_generator(directory, n_customers)
    for backend in ("sqlite", "postgresql"):
        figures = results.get(f"upsert_tags_{backend}")
        if figures:
            print(
                f"  upsert_tags {backend:<10} first {figures['first_s']:6.1f} s "
                f"({n_tags / figures['first_s']:,.0f} tags/s)  second {figures['second_s']:6.1f} s "
                f"({n_tags / figures['second_s']:,.0f} tags/s), {figures['history_rows']:,.0f} to history"
            )  # fmt: skip
    gen = results["demo_generator_sqlite"]
    print(
        f"  demo-data sqlite {n_customers:,} customers: {gen['wall_s']:.1f} s wall, "
        f"{gen['cpu_s']:.1f} s CPU, {gen['rows']:,.0f} rows ({gen['rows'] / gen['wall_s']:,.0f} rows/s)"
    )  # fmt: skip
    return results


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
