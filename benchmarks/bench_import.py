"""Import through a mapping: N activities (default 1M) of 100k contacts from CSV into SQLite.

The export is shaped like a real one (string ids, the CRM's own activity names, timestamps with
an offset); the mapping renames columns, maps types to categories and resolves each activity's
contact by external id. Floor in the same run: the same rows, already typed, appended with
``crm_predict.crm_store.bulk.insert_frame`` (no parsing, no checks, no id lookup).

    python -m benchmarks.bench_import [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from crm_predict.crm_store.bulk import insert_frame
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.importer import import_directory
from crm_predict.crm_store.mapping import parse_mapping
from crm_predict.crm_store.models import Activity
from sqlalchemy import text

from benchmarks.figures import Figure

MAPPING = """
name: bench
vocabulary:
  activity_categories:
    event: [webinar]
    content: [content_download]
    message: [linkedin_message]
    visit: [page_view]
    call: [call]
entities:
  contacts:
    file: contacts.csv
    columns: {external_id: contact_id, email: email}
    deduplicate: false
  activities:
    file: activities.csv
    columns: {external_id: activity_id, contact_id: contact_id, type: activity_type,
              occurred_at: timestamp, responded: replied}
"""
TYPES = np.array(["webinar", "content_download", "linkedin_message", "page_view", "call"])


def write_export(directory: Path, n_activities: int, n_contacts: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    contact_ids = np.char.add("ct_", np.char.zfill(np.arange(n_contacts).astype(str), 7))
    pd.DataFrame(
        {"contact_id": contact_ids, "email": np.char.add(contact_ids, "@mail.example")}
    ).to_csv(directory / "contacts.csv", index=False)
    stamps = pd.Timestamp("2024-01-01") + pd.to_timedelta(
        rng.integers(0, 900 * 86400, n_activities), unit="s"
    )
    pd.DataFrame(
        {
            "activity_id": np.char.add("act_", np.arange(n_activities).astype(str)),
            "contact_id": contact_ids[rng.integers(0, n_contacts, n_activities)],
            "activity_type": TYPES[rng.integers(0, len(TYPES), n_activities)],
            "timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
            "replied": np.where(rng.random(n_activities) < 0.3, "true", "false"),
        }
    ).to_csv(directory / "activities.csv", index=False)


def main(n_activities: int | None = None) -> list[Figure]:
    n = 1_000_000 if n_activities is None else n_activities
    n_contacts = max(1000, n // 10)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_export(directory, n, n_contacts)
        engine = make_engine(f"sqlite:///{directory / 'crm.db'}")
        upgrade(engine)
        mapping = parse_mapping(MAPPING, "bench mapping")
        with session_factory(engine)() as session:
            start = time.perf_counter()
            results = import_directory(session, mapping, directory)
            session.commit()
            seconds = time.perf_counter() - start
            typed = pd.read_sql(
                "SELECT contact_id, type, category, occurred_at, responded, created_at FROM activities",
                session.connection(),
                parse_dates=["occurred_at", "created_at"],
            )
            session.execute(text("DELETE FROM activities"))
            session.commit()
            start = time.perf_counter()
            insert_frame(session, Activity.__table__, typed.assign(id=np.arange(1, len(typed) + 1)))
            session.commit()
            floor = time.perf_counter() - start
        engine.dispose()
    rows = {r.entity: r.rows for r in results}
    print(
        f"  import --mapping, SQLite: {rows.get('contacts', 0):,} contacts + "
        f"{rows.get('activities', 0):,} activities in {seconds:.1f} s (target ≤ 60 s for 1M "
        f"activities); floor (typed bulk insert of the activities) {floor:.1f} s"
    )
    return [
        Figure(
            f"import {n:,} activities via mapping (SQLite)",
            seconds,
            "s",
            floor,
            "bulk insert of the typed rows",
        )  # fmt: skip
    ]


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
