"""Single-row latency of a registered classifier, measured the way the service runs it.

The version is loaded with ``crm_predict.serving.loader.load_model`` (single-threaded native model and its
explainer) and scored with ``crm_predict.serving.scoring.score``, one holdout row per call, with and without
reasons. The clock is the calling thread's CPU time: the service scores on one thread (the loader
makes the model single-threaded), and other work on a shared machine does not count against the
model, nor do library thread pools whose idle spinning the process clock books in 4 ms ticks.
Wall time is reported beside it; each figure is the median over repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from crm_predict.registry.evaluation import base_model_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

ENTITY_ID = "entity_id"


@dataclass(frozen=True)
class Latency:
    """Milliseconds per single-row call: CPU p50/p99 (what the budget is compared with) and wall
    p99, each the median over ``repeats`` passes of ``calls`` rows."""

    p50_ms: float
    p99_ms: float
    wall_p99_ms: float
    calls: int
    repeats: int

    def describe(self) -> str:
        return f"p50 {self.p50_ms:.2f} / p99 {self.p99_ms:.2f} ms CPU (wall p99 {self.wall_p99_ms:.2f})"


def time_calls(
    call: Callable[[Any], object], inputs: Sequence[Any], *, warmup: int, repeats: int
) -> Latency:
    """Time ``call(x)`` for every ``x`` in ``inputs``, ``repeats`` times after ``warmup`` calls.

    Warm-up fills caches and lazy imports; the median over repeats drops a pass that a burst of
    other work on the machine disturbed.
    """
    if not inputs:
        raise ValueError("no inputs to time")
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    passes = []
    for _ in range(repeats):
        cpu, wall = np.empty(len(inputs)), np.empty(len(inputs))
        for i, x in enumerate(inputs):
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            call(x)
            cpu[i], wall[i] = time.thread_time_ns() - c0, time.perf_counter_ns() - w0
        passes.append((*np.percentile(cpu, [50, 99]), np.percentile(wall, 99)))
    p50, p99, wall_p99 = (float(statistics.median(c)) / 1e6 for c in zip(*passes, strict=True))
    return Latency(p50, p99, wall_p99, len(inputs), repeats)


def single_rows(
    holdout: pd.DataFrame, features: list[str], n: int, seed: int
) -> list[pd.DataFrame]:
    """``n`` seeded holdout rows, each a one-row frame shaped like an online read (``entity_id``
    first, then the model's features in order)."""
    columns = [c for c in (ENTITY_ID,) if c in holdout.columns] + list(features)
    sample = holdout.sample(n=min(n, len(holdout)), random_state=seed)[columns]
    return [sample.iloc[[i]] for i in range(len(sample))]


class PinnedVersion:
    """The three registry calls ``load_model`` makes, answered for one registered version: any
    alias of ``model`` resolves to ``version`` of ``registered`` (a segment model such as
    ``churn__tenant_a`` is served as its base model ``churn``)."""

    def __init__(self, client: MlflowClient, registered: str, version: str) -> None:
        self.client, self.registered, self.version = client, registered, str(version)
        self.tracking_uri = client.tracking_uri

    def get_model_version_by_alias(self, name: str, alias: str):
        return self.client.get_model_version(self.registered, self.version)

    def get_run(self, run_id: str):
        return self.client.get_run(run_id)

    def get_model_version_download_uri(self, name: str, version: str) -> str:
        return self.client.get_model_version_download_uri(self.registered, version)


@dataclass(frozen=True)
class ServingLatency:
    """Predict and explain latency of one version; ``explain`` is None when it cannot explain."""

    predict: Latency
    explain: Latency | None
    explain_method: str | None


def measure_serving_latency(
    client: MlflowClient,
    name: str,
    version: str,
    holdout: pd.DataFrame,
    *,
    rows: int,
    repeats: int,
    warmup: int,
    seed: int,
) -> ServingLatency:
    """Load ``name`` v``version`` as the service does and time single-row scoring on holdout rows."""
    from crm_predict.serving.loader import load_model
    from crm_predict.serving.scoring import score

    base = base_model_name(name)
    model = load_model(
        PinnedVersion(client, name, version), base, alias="candidate", single_thread=True
    )
    frames = single_rows(holdout, model.feature_names, rows, seed)
    predict = time_calls(lambda f: score(model, f), frames, warmup=warmup, repeats=repeats)
    if model.explainer is None:
        return ServingLatency(predict, None, None)
    explain = time_calls(
        lambda f: score(model, f, explain=True), frames, warmup=warmup, repeats=repeats
    )
    return ServingLatency(predict, explain, model.explainer.method)
