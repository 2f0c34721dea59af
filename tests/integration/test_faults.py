"""Faults on the nightly batch job's PostgreSQL store: the database connection dropped in the middle
of a chunk's write-back (``pg_terminate_backend``) or between chunks. The job either rides over it
(the pool's pre-ping reconnects between chunks) or fails with the driver's error, and a rerun ends
with exactly the rows of a clean run. (Unreachable MLflow / online store at serve start:
tests/unit/test_serving_service.py's readiness tests.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from batch_world import AT, tiny_scoring_frame
from crm_predict.crm_store.db import make_engine, session_factory
from crm_predict.crm_store.models import BatchCheckpoint, BatchRun
from crm_predict.serving.batch import run_batch
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError
from test_batch import _clear_outputs, _outputs, _run, world  # noqa: F401 - shared fixtures

# The tag upsert's shape changes with its optimisation (and a COPY through the driver's cursor passes
# no SQLAlchemy event): the chunk's checkpoint row, flushed by its commit after the tags, tasks and
# log rows, marks a moment inside the chunk's transaction whatever writes the tags.
CHUNK_WRITE = re.compile(r"\bINSERT INTO batch_checkpoints\b")

POSTGRESQL = pytest.mark.parametrize("engine", ["postgresql"], indirect=True)


def _terminate(admin_url: str, pid: int) -> None:
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    finally:
        admin.dispose()


@dataclass
class FaultedJob:
    """A clean run's outputs (cleared again) and the faulted job's own engine on the same store."""

    expected: object
    url: str
    engine: Engine


@pytest.fixture
def faulted_job(engine, world, mlflow_client) -> Iterator[FaultedJob]:  # noqa: F811
    _run(engine, mlflow_client, world, log_to_mlflow=False)
    expected = _outputs(engine)
    _clear_outputs(engine)
    url = engine.url.render_as_string(hide_password=False)
    job_engine = make_engine(url)  # pool_pre_ping: a dead pooled connection is replaced
    yield FaultedJob(expected, url, job_engine)
    job_engine.dispose()


@POSTGRESQL
def test_connection_killed_mid_chunk_fails_cleanly_and_a_rerun_equals_a_clean_run(
    engine,
    world,  # noqa: F811
    mlflow_client,
    faulted_job,
):
    job_engine, url = faulted_job.engine, faulted_job.url
    writes = {"chunks": 0, "killed": False}

    @event.listens_for(job_engine, "after_cursor_execute")
    def _kill_in_fourth_chunk(conn, cursor, statement, parameters, context, executemany):
        # Inside the 4th chunk's transaction, its rows written, before its commit: the server
        # drops us.
        if CHUNK_WRITE.search(statement) and not writes["killed"]:
            writes["chunks"] += 1
            if writes["chunks"] == 4:
                writes["killed"] = True
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                _terminate(url, pid)

    with session_factory(job_engine)() as session, pytest.raises(DBAPIError) as err:
        run_batch(
            session, mlflow_client, world, at=AT, scoring_frame=tiny_scoring_frame,
            log_to_mlflow=False,
        )  # fmt: skip
    job_engine.dispose()
    assert writes["killed"]
    assert "terminat" in str(err.value).lower() or "closed" in str(err.value).lower()
    with session_factory(engine)() as session:
        assert session.query(BatchCheckpoint).count() == 3  # the killed chunk left nothing
        assert [r.status for r in session.query(BatchRun)] != ["done"]

    rerun = _run(engine, mlflow_client, world, log_to_mlflow=False)
    assert rerun.resumed
    assert _outputs(engine) == faulted_job.expected  # no duplicate, no missing tag, task or log row
    with session_factory(engine)() as session:
        assert [r.status for r in session.query(BatchRun)] == ["done"]


@POSTGRESQL
def test_connection_killed_between_chunks_is_reconnected_and_the_run_completes(
    engine,
    world,  # noqa: F811
    mlflow_client,
    faulted_job,
):
    job_engine, url = faulted_job.engine, faulted_job.url
    pids: list[int] = []

    @event.listens_for(job_engine, "connect")
    def _remember(dbapi_conn, _record):
        with dbapi_conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pids.append(cur.fetchone()[0])

    def progress(_model: str, _total: int):
        def advance(_n: int) -> None:
            if len(pids) == 1:  # after the first committed chunk, once
                _terminate(url, pids[0])
                pids.append(-1)

        return advance

    with session_factory(job_engine)() as session:
        summary = run_batch(
            session, mlflow_client, world, at=AT, scoring_frame=tiny_scoring_frame,
            log_to_mlflow=False, progress=progress,
        )  # fmt: skip
    job_engine.dispose()
    assert len(pids) >= 3  # the first connection, the kill marker, a fresh connection
    assert not summary.resumed
    assert _outputs(engine) == faulted_job.expected
