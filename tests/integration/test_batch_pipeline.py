"""The batch job's writer thread: a failed write stops the run with its own error (no hang), a failed
score stops the writer, and either way a rerun resumes to exactly a clean run's rows."""

from __future__ import annotations

import threading

import crm_predict.serving.batch as batch
import pytest
from batch_world import AT, tiny_scoring_frame
from crm_predict.crm_store.db import session_factory
from crm_predict.crm_store.models import BatchCheckpoint
from test_batch import _clear_outputs, _outputs, _run, world  # noqa: F401 - shared fixtures


class Boom(RuntimeError):
    pass


def _no_writer_left() -> bool:
    return not any(t.name == "batch-writer" and t.is_alive() for t in threading.enumerate())


def test_write_error_surfaces_and_the_rerun_equals_a_clean_run(
    engine,
    world,  # noqa: F811
    mlflow_client,
    monkeypatch,
):
    _run(engine, mlflow_client, world, log_to_mlflow=False)
    expected = _outputs(engine)
    _clear_outputs(engine)

    real, calls = batch.apply_write, {"n": 0}

    def failing_third(session, prepared, seconds=None):
        calls["n"] += 1
        if calls["n"] == 3:
            session.connection()  # the chunk's transaction is open: it must roll back
            raise Boom("write failed")
        return real(session, prepared, seconds)

    monkeypatch.setattr(batch, "apply_write", failing_third)
    with pytest.raises(Boom):
        _run(engine, mlflow_client, world, log_to_mlflow=False)
    assert _no_writer_left()
    with session_factory(engine)() as session:
        assert session.query(BatchCheckpoint).count() == 2  # the chunks before the failed one

    monkeypatch.setattr(batch, "apply_write", real)
    rerun = _run(engine, mlflow_client, world, log_to_mlflow=False)
    assert rerun.resumed
    assert _outputs(engine) == expected


def test_score_error_stops_the_writer_and_the_rerun_equals_a_clean_run(
    engine,
    world,  # noqa: F811
    mlflow_client,
    monkeypatch,
):
    _run(engine, mlflow_client, world, log_to_mlflow=False)
    expected = _outputs(engine)
    _clear_outputs(engine)

    real, calls = batch.score, {"n": 0}

    def failing_fifth(model, features):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Boom("score failed")
        return real(model, features)

    monkeypatch.setattr(batch, "score", failing_fifth)
    with pytest.raises(Boom):
        _run(engine, mlflow_client, world, log_to_mlflow=False)
    assert _no_writer_left()
    with session_factory(engine)() as session:
        assert session.query(BatchCheckpoint).count() <= 4

    monkeypatch.setattr(batch, "score", real)
    rerun = _run(engine, mlflow_client, world, log_to_mlflow=False)
    assert rerun.resumed
    assert _outputs(engine) == expected


def test_progress_advances_per_committed_chunk_from_the_writer(
    engine,
    world,  # noqa: F811
    mlflow_client,
):
    seen: dict[str, list[int]] = {}

    def progress(model: str, total: int):
        seen[model] = [total]

        def advance(n: int) -> None:
            with session_factory(engine)() as session:  # committed by the time it is called
                committed = session.query(BatchCheckpoint).filter_by(model_name=model).all()
            assert sum(c.entities for c in committed) == sum(seen[model][1:]) + n
            seen[model].append(n)

        return advance

    with session_factory(engine)() as session:
        summary = batch.run_batch(
            session, mlflow_client, world, at=AT, scoring_frame=tiny_scoring_frame,
            log_to_mlflow=False, progress=progress,
        )  # fmt: skip
    for m in summary.models:
        assert seen[m.name][0] == m.entities == sum(seen[m.name][1:])
        assert len(seen[m.name]) - 1 == m.chunks
