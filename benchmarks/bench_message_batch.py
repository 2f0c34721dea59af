"""Nightly message batch benchmark (issue #22): 1M inbound messages (the demo generator's
bilingual texts, 100k contacts over a year, 50k tickets) bulk-inserted into a SQLite store in
/tmp, read by a real ``message_intent`` champion (trained on 4,000 demo messages, one Optuna
trial) in one ``run_message_batch``; then the nightly case: 10k new messages, run again.
Prints seconds per stage, messages/s and the peak RSS of each run.

Run: ``python -m benchmarks.bench_message_batch [n_messages]`` (default 1000000; ``1m``, ``200k``
work too). ``CRM_PREDICT_BENCH_DIR`` keeps the store and the champion between runs (setup is not
what is measured; a kept store is emptied of the batch's outputs first).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from crm_predict.crm_store.bulk import insert_frame
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.models import Contact, Message, Ticket, User
from sqlalchemy import text

from crm_predict.core.rules import RULES
from crm_predict.core.settings import Settings

AT = datetime(2026, 6, 30, 2, 0)
NEW_MESSAGES = 10_000
TRAIN_MESSAGES = 4_000


def _size(arg: str) -> int:
    arg = arg.lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(arg[-1], 1)
    return int(float(arg.rstrip("km")) * scale)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _messages(n: int, seed: int, start: datetime, end: datetime, contacts: np.ndarray, first_id: int) -> pd.DataFrame:  # fmt: skip
    from crm_predict.crm_store.demo_messages import generate_messages

    rng = np.random.default_rng(seed)
    frame = generate_messages(n, seed, start, end, contact_ids=rng.choice(contacts, n))
    frame = frame.drop(columns=["intent", "sentiment"])  # the model's reading is what is measured
    return frame.assign(id=np.arange(first_id, first_id + n), created_at=frame["sent_at"])


def build_store(url: str, n: int) -> None:
    """Users (20 reps, 2 managers), 100k contacts, ``n`` messages over the year to ``AT``, 50k
    tickets (a few open past the limit, some closed in the last week)."""
    engine = make_engine(url)
    upgrade(engine)
    rng = np.random.default_rng(22)
    n_contacts = max(1000, n // 10)
    with session_factory(engine)() as session:
        users = pd.DataFrame(
            {"id": np.arange(1, 23), "name": [f"u{i}" for i in range(1, 23)],
             "manager_id": [None, None] + [1 + i % 2 for i in range(20)]}
        )  # fmt: skip
        insert_frame(session, User.__table__, users)
        old = AT - timedelta(days=800)
        contacts = pd.DataFrame(
            {
                "id": np.arange(1, n_contacts + 1) * 7 + 1_000_000,  # sparse, not the demo's
                "owner_id": np.where(rng.random(n_contacts) < 0.9, rng.integers(3, 23, n_contacts), None),
                "region": rng.choice(["north", "south", "east", "west"], n_contacts),
                "created_at": old, "updated_at": old,
            }
        )  # fmt: skip
        insert_frame(session, Contact.__table__, contacts)
        start = time.perf_counter()
        ids = contacts["id"].to_numpy()
        step = 200_000
        for first in range(0, n, step):
            part = _messages(
                min(step, n - first), first, AT - timedelta(days=365), AT, ids, first + 1
            )
            insert_frame(session, Message.__table__, part)
        n_tickets = max(100, n // 20)
        opened = AT - pd.to_timedelta(rng.uniform(0, 365 * 24, n_tickets), unit="h")
        closed = opened + pd.to_timedelta(rng.uniform(1, 24 * 20, n_tickets), unit="h")
        closed = pd.Series(closed).where(closed <= AT)
        tickets = pd.DataFrame(
            {"id": np.arange(1, n_tickets + 1), "contact_id": rng.choice(ids, n_tickets),
             "opened_at": opened, "closed_at": closed,
             "priority": rng.choice(["urgent", "high", "2", "low", "Sev-B"], n_tickets)}
        )  # fmt: skip
        insert_frame(session, Ticket.__table__, tickets)
        session.commit()
        print(f"store: {n:,} messages, {n_contacts:,} contacts, {n_tickets:,} tickets inserted in {time.perf_counter() - start:.1f} s")  # fmt: skip
    engine.dispose()


def train_champion(uri: str) -> None:
    import mlflow
    from crm_predict.crm_store.demo_messages import generate_messages
    from crm_predict.training import message_intent as mi
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    data = mi.prepare(generate_messages(TRAIN_MESSAGES, 7, AT - timedelta(days=730), AT - timedelta(days=365)))  # fmt: skip
    trained = mi.train(client, data, n_trials=1, lexicons=False)
    client.set_registered_model_alias("message_intent", "champion", trained.version)
    print(f"champion: message_intent v{trained.version}, intent macro-F1 {trained.metrics['intent_macro_f1_all']:.3f}")  # fmt: skip


def _run(url: str, uri: str, settings: Settings, at: datetime, label: str) -> dict:
    from crm_predict.serving.batch_messages import run_message_batch
    from mlflow import MlflowClient

    engine = make_engine(url)
    with session_factory(engine)() as session:
        start = time.perf_counter()
        result = run_message_batch(session, MlflowClient(uri, uri), settings, at, RULES)
        seconds = time.perf_counter() - start
    engine.dispose()
    out = result.as_dict()
    rate = result.messages_scored / seconds if seconds else 0.0
    print(
        f"{label}: {result.messages_scored:,} messages read ({result.messages_unreadable:,} unreadable) "
        f"in {seconds:.1f} s = {rate:,.0f} messages/s; {result.contacts_tagged:,} contacts, "
        f"{result.deals_tagged:,} deals tagged, {result.tags_written:,} tags, "
        f"{result.tasks_created:,} tasks new {dict(result.task_counts)}; peak RSS {_peak_rss_mb():,.0f} MB"
    )  # fmt: skip
    print(f"  seconds: {out['seconds']}")
    return {**out, "seconds_wall": seconds, "messages_per_second": rate, "peak_rss_mb": _peak_rss_mb()}  # fmt: skip


def main(n: int = 1_000_000) -> dict:
    root = Path(os.environ.get("CRM_PREDICT_BENCH_DIR") or tempfile.mkdtemp(prefix="bench_messages_"))  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    db, mlflow_db = root / f"messages_{n}.db", root / "mlflow.db"
    url, uri = f"sqlite:///{db}", f"sqlite:///{mlflow_db}"
    os.chdir(root)  # MLflow's default artifact location
    if not mlflow_db.exists():
        train_champion(uri)
    if not db.exists():
        build_store(url, n)
    else:  # a kept store: the batch's outputs go, the messages stay
        engine = make_engine(url)
        with engine.begin() as conn:
            for table in ("tags", "tag_history", "tasks", "batch_runs"):
                conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text(f"DELETE FROM messages WHERE id > {n}"))
        engine.dispose()
    settings = Settings(data_dir=root / "data")
    first = _run(url, uri, settings, AT, f"first run ({n:,} messages)")
    engine = make_engine(url)
    with session_factory(engine)() as session:
        contacts = np.array([r[0] for r in session.execute(text("SELECT id FROM contacts"))])
        new = _messages(NEW_MESSAGES, 99, AT, AT + timedelta(days=1), contacts, n + 1)
        insert_frame(session, Message.__table__, new)
        session.commit()
    engine.dispose()
    nightly = _run(url, uri, settings, AT + timedelta(days=1), f"nightly (+{NEW_MESSAGES:,} new)")
    rerun = _run(url, uri, settings, AT + timedelta(days=1), "rerun (nothing new)")
    quiet = _run(url, uri, settings, AT + timedelta(days=2), "next night (no new messages)")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average: {load}; store {db} ({db.stat().st_size / 1e6:,.0f} MB)")
    return {"first": first, "nightly": nightly, "rerun": rerun, "next_night": quiet, "messages": n, "load": load}  # fmt: skip


if __name__ == "__main__":
    main(_size(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
