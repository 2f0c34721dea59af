"""Run every ``benchmarks/bench_*.py`` ``main()`` in turn (``python -m benchmarks`` / ``make bench``)."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

from benchmarks.figures import figures_of, table


def main(names: list[str] | None = None) -> dict[str, object]:
    """Each benchmark's figures by module name (default every ``bench_*.py``); a failing
    benchmark is reported, not fatal."""
    results: dict[str, object] = {}
    names = names or [p.stem for p in sorted(Path(__file__).parent.glob("bench_*.py"))]
    for name in names:
        print(f"\n== {name} ==")
        start = time.perf_counter()
        try:
            results[name] = importlib.import_module(f"benchmarks.{name}").main()
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            print(f"{name} failed: {type(exc).__name__}: {exc}")
            results[name] = exc
        print(f"({name} took {time.perf_counter() - start:.0f} s)")
    rows = [(name, f) for name, result in results.items() for f in figures_of(name, result)]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n== every figure beside its floor measured in the same run (load average {load}) ==")
    print(table(rows))
    failed = [name for name, result in results.items() if isinstance(result, Exception)]
    if failed:
        print(f"failed benchmarks (no figures): {', '.join(failed)}")
    unread = [n for n in results if n not in failed and not any(m == n for m, _ in rows)]
    if unread:
        print(f"no figures read from (add a reader in benchmarks/figures.py): {', '.join(unread)}")
    return results


if __name__ == "__main__":
    main()
