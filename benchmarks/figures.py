"""One shape for every benchmark figure, so ``make bench`` ends with a single table.

A bench module's ``main()`` may return a list of :class:`Figure` rows directly; the modules that
return their own dict of figures get a reader here (``READERS[module]``) turning it into rows. Each
row puts a figure beside its floor or baseline measured in the same run (``floor`` None when the
module measures none), with ``better`` saying which direction wins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    floor: float | None = None
    floor_name: str = ""
    better: str = "lower"  # "lower" (times) or "higher" (rates)
    ceiling: float | None = None  # best attainable, when known (model quality: the oracle)

    def ratio(self) -> float | None:
        """How many times the floor the figure costs (≥ 1 means slower than the floor)."""
        if self.floor is None or not self.floor or not self.value:
            return None
        return self.value / self.floor if self.better == "lower" else self.floor / self.value


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def serving_figures(r: dict) -> list[Figure]:
    rows = []
    for key in ("plain", "explain"):
        floor = _get(r, f"floor_{key}")
        for case, label in ((f"http_sequential_{key}", "sequential"), (f"http_paced200_{key}", "paced 200/s")):  # fmt: skip
            for p in ("p50", "p99"):
                value = _get(r, case, f"{p}_ms")
                if value is not None:
                    rows.append(Figure(
                        f"online {key} {label} {p}", value, "ms", _get(floor, f"{p}_ms"),
                        f"in-process read+predict {p}",
                    ))  # fmt: skip
    single = _get(r, "floor_plain", "p50_ms")
    for key in ("plain", "explain"):
        for in_flight in (8, 32):
            rate = _get(r, f"http_concurrent{in_flight}_{key}", "req_per_s")
            p50 = _get(r, f"floor_{key}", "p50_ms")
            if rate is not None:
                rows.append(Figure(
                    f"online {key} {in_flight} in flight", rate, "req/s",
                    1000 / p50 if p50 else None, "in-process single-row req/s", "higher",
                ))  # fmt: skip
    rate = _get(r, "http_batch100", "predictions_per_s")
    if rate is not None:
        rows.append(Figure(
            "online batched (100/request)", rate, "pred/s", 1000 / single if single else None,
            "in-process single-row pred/s", "higher",
        ))  # fmt: skip
    return rows


def batch_figures(r: dict) -> list[Figure]:
    rows = []
    for backend in ("sqlite", "postgresql"):
        run = _get(r, backend)
        if not run:
            continue
        for stage, seconds in (run.get("seconds") or {}).items():
            rows.append(Figure(f"nightly batch {backend} {stage}", seconds, "s"))
        for model, m in (run.get("models") or {}).items():
            for stage, seconds in (m.get("seconds") or {}).items():
                rows.append(Figure(f"nightly batch {backend} {model} {stage}", seconds, "s"))
        if run.get("seconds_total") is not None:
            rows.append(Figure(
                f"nightly batch {backend} job", run["seconds_total"], "s",
                _get(run, "floor", "seconds"), "XGBoost predict + bulk insert of the same rows",
            ))  # fmt: skip
        if run.get("wall_seconds") is not None:
            rows.append(Figure(f"nightly batch {backend} wall", run["wall_seconds"], "s"))
        if run.get("peak_rss_mb") is not None:
            rows.append(Figure(f"nightly batch {backend} peak RSS", run["peak_rss_mb"], "MB"))
    return rows


def features_figures(r: dict) -> list[Figure]:
    rows = []
    for backend, m in r.items():
        if not isinstance(m, dict):
            continue
        rows.append(Figure(
            f"Feast materialize {backend}", m["bulk_entities_per_s"], "entities/s",
            m.get("stock_entities_per_s"), "stock Feast materialize", "higher",
        ))  # fmt: skip
        for n in ("1", "100"):
            rows.append(Figure(
                f"Feast online read {n} {backend} p50", m[f"read{n}_p50_ms"], "ms",
                m.get(f"stock_read{n}_p50_ms"), "stock online store p50",
            ))  # fmt: skip
    return rows


def store_figures(r: dict) -> list[Figure]:
    """Every upsert pass (``<label>_s``) beside the same rows bulk-inserted; the demo generator."""
    rows = []
    for backend in ("sqlite", "postgresql"):
        m = _get(r, f"upsert_tags_{backend}")
        if not m:
            continue
        n = m.get("n_tags")
        passes = [k.removesuffix("_s") for k in m if k.endswith("_s") and not k.startswith("floor")]
        for label in passes:
            seconds = m[f"{label}_s"]
            rows.append(Figure(
                f"tag upserts {backend} ({label} pass)", n / seconds if n else seconds,
                "tags/s" if n else "s", m.get("floor_rows_per_s") if n else None,
                "plain bulk insert of the same rows", "higher" if n else "lower",
            ))  # fmt: skip
    gen = _get(r, "demo_generator_sqlite")
    if gen and gen.get("wall_s"):
        rows.append(Figure("demo-data generator sqlite", gen["rows"] / gen["wall_s"], "rows/s", better="higher"))  # fmt: skip
    return rows


def message_batch_figures(r: dict) -> list[Figure]:
    """The message batch's first reading (rate, wall, memory) and its nightly and rerun walls."""
    rows = []
    first = _get(r, "first")
    if first:
        rows.append(Figure("message batch first run", first["messages_per_second"], "msg/s", better="higher"))  # fmt: skip
        rows.append(Figure("message batch first run wall", first["seconds_wall"], "s"))
        rows.append(Figure("message batch first run peak RSS", first["peak_rss_mb"], "MB"))
    for run in ("nightly", "rerun"):
        seconds = _get(r, run, "seconds_wall")
        if seconds is not None:
            rows.append(Figure(f"message batch {run} wall", seconds, "s"))
    return rows


READERS: dict[str, Callable[[dict], list[Figure]]] = {
    "bench_message_batch": message_batch_figures,
    "bench_serving": serving_figures,
    "bench_batch": batch_figures,
    "bench_features": features_figures,
    "bench_store": store_figures,
}


def figures_of(module: str, result: Any) -> list[Figure]:
    """The rows of one benchmark's result (a list of Figures, or a dict with a reader)."""
    if isinstance(result, list) and all(isinstance(f, Figure) for f in result):
        return result
    reader = READERS.get(module)
    return reader(result) if reader and isinstance(result, dict) else []


def _number(x: float) -> str:
    """Small figures (AUCs, hit rates, sub-10 ms) keep three decimals."""
    return f"{x:,.3f}" if abs(x) < 10 else f"{x:,.2f}"


def table(rows: list[tuple[str, Figure]]) -> str:
    """The summary table: figure, value, floor/baseline measured in the same run, ratio (and the
    oracle where one bounds the figure)."""
    lines = [
        f"{'benchmark':15} {'figure':48} {'value':>12} {'unit':10} {'floor (same run)':>16} "
        f"{'x floor':>8}  floor is",
    ]
    for module, f in rows:
        floor = _number(f.floor) if f.floor is not None else "—"
        ratio = f.ratio()
        lines.append(
            f"{module.removeprefix('bench_'):15} {f.name:48} {_number(f.value):>12} {f.unit:10} "
            f"{floor:>16} {(f'{ratio:.2f}' if ratio is not None else '—'):>8}  {f.floor_name}"
            + (f"; oracle {f.ceiling:,.3f}" if f.ceiling is not None else "")
        )
    return "\n".join(lines)
