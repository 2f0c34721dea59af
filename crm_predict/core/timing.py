"""Per-call latency: the calling thread's CPU time and wall time of single calls.

The clock that counts is the thread's CPU time: the service scores on one thread, and other work on
a shared machine does not count against the model, nor do library thread pools whose idle spinning
the process clock books in 4 ms ticks. Each figure is the median over repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


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
