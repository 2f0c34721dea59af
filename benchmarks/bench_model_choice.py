"""Model choice on small real tables (issue #20 item 2): the demo lead and deal tables at ~5k and
~20k rows, and the ~5k ones with an injected identifier (unique per row), an injected leak (the
label plus a little noise) and an injected near-identifier (the row number in time order plus a
fraction, a float the identifier check does not call a key). Each goes through the real training
path (data checks, Optuna search — time-ordered CV below ``cv_below_rows`` — calibration, MLflow)
and the chosen model's holdout AUC is set beside sklearn's untuned ``LogisticRegression()`` and
``HistGradientBoostingClassifier()`` fitted on the same rows.

Run: ``python -m benchmarks.bench_model_choice [n_customers] [optuna_trials]`` (or ``make bench``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.figures import Figure

MODELS = ("lead_scoring", "deal_health")
SIZES = (5_000, 20_000)
INJECTED_AT = 5_000
LEAK_NOISE = 0.05  # standard deviation of the noise added to the label


@dataclass
class Outcome:
    """One table's run: what was chosen and how it did, or why the run stopped."""

    table: str
    rows: int
    chosen: str = ""
    method: str = ""
    cv: str = "—"
    auc: float | None = None
    logreg: float | None = None
    hgb: float | None = None
    rule: float | None = None
    oracle: float | None = None
    dropped: str = ""
    stopped: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool | None:
        """Whether the chosen model is at least as good as both untuned ones (None: no model)."""
        if self.auc is None or self.logreg is None or self.hgb is None:
            return None
        return self.auc >= max(self.logreg, self.hgb)


def injected(frame: pd.DataFrame, kind: str, seed: int) -> pd.DataFrame:
    """The table with one more column: ``ref_id`` (shuffled key), ``outcome_signal`` (the label
    plus noise) or ``row_position`` (time rank plus a fraction)."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    if kind == "id":
        return frame.assign(ref_id=rng.permutation(n) + 100_000)
    if kind == "leak":
        return frame.assign(outcome_signal=frame["label"] + rng.normal(0, LEAK_NOISE, n))
    if kind == "near_id":
        rank = frame["event_timestamp"].rank(method="first").to_numpy()
        return frame.assign(row_position=rank + rng.uniform(0, 1, n))
    raise ValueError(f"unknown injection {kind!r}")


def sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """``rows`` rows drawn at random over the whole time range (all of them when fewer)."""
    if len(frame) <= rows:
        return frame
    return frame.sample(rows, random_state=seed).sort_values("event_timestamp")


def run_table(settings, client, model: str, table: str, frame, truth) -> Outcome:
    """Train one table through ``training.<model>.train``; a UserError is a stopped run."""
    import importlib

    from crm_predict.core.errors import UserError

    module = importlib.import_module(f"crm_predict.training.{model}")
    out = Outcome(table, len(frame))
    start = time.perf_counter()
    try:
        result = module.train(settings, client, frame, truth=truth, source=f"bench:{table}")
    except UserError as exc:
        out.stopped = str(exc).split(";")[0]
        out.seconds = time.perf_counter() - start
        return out
    out.seconds = time.perf_counter() - start
    m = result.metrics
    run = client.get_run(result.run_id)
    out.chosen, out.method = result.candidate, run.data.tags.get("selection_method", "")
    if f"cv_auc_mean_{result.candidate}" in m:
        out.cv = (
            f"{m[f'cv_auc_mean_{result.candidate}']:.3f}±{m[f'cv_auc_std_{result.candidate}']:.3f}"
        )
    out.auc, out.rule, out.oracle = m["auc"], m.get("baseline_auc"), m.get("oracle_auc")
    out.logreg, out.hgb = m["holdout_auc_baseline_logreg"], m["holdout_auc_baseline_hgb"]
    out.dropped = ", ".join(result.data_checks.dropped) if result.data_checks else ""
    return out


def tables(frames: dict[str, tuple[pd.DataFrame, pd.DataFrame | None]], seed: int):
    """(model, table name, frame, truth) for every benchmarked table."""
    for model, (frame, truth) in frames.items():
        short = model.split("_")[0]
        for rows in SIZES:
            part = sample(frame, rows, seed)
            yield model, f"{short} {len(part) // 1000}k", part, truth
        base = sample(frame, INJECTED_AT, seed)
        for kind in ("id", "leak", "near_id"):
            yield model, f"{short} {len(base) // 1000}k + {kind}", injected(base, kind, seed), truth


def print_table(outcomes: list[Outcome]) -> None:
    def f(x: float | None) -> str:
        return f"{x:.4f}" if x is not None else "—"

    print(
        f"  {'table':22} {'rows':>6} {'chosen':20} {'CV AUC mean±std':>16} {'holdout':>8} "
        f"{'LR()':>7} {'HGB()':>7} {'rule':>7} {'oracle':>7} {'≥ both':>6} {'s':>5}  data checks"
    )
    for o in outcomes:
        verdict = {True: "pass", False: "FAIL", None: "—"}[o.passed]
        chosen = o.chosen or "(stopped)"
        checks = (
            f"stopped: {o.stopped}" if o.stopped else (f"dropped {o.dropped}" if o.dropped else "")
        )
        print(
            f"  {o.table:22} {o.rows:>6} {chosen:20} {o.cv:>16} {f(o.auc):>8} {f(o.logreg):>7} "
            f"{f(o.hgb):>7} {f(o.rule):>7} {f(o.oracle):>7} {verdict:>6} {o.seconds:>5.0f}  {checks}"
        )


def main(n_customers: int = 80_000, optuna_trials: int = 10) -> list[Figure]:
    """Demo CRM of ``n_customers`` → lead and deal training sets → every table trained once; one
    Figure per trained table (holdout AUC beside the better untuned sklearn model)."""
    from crm_predict.features.training import demo_training_set

    from benchmarks.bench_quality import demo_world

    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench_model_choice_") as tmp:
        start = time.perf_counter()
        settings, client = demo_world(Path(tmp), n_customers, optuna_trials)
        frames = {model: demo_training_set(settings, model) for model in MODELS}
        sizes = ", ".join(f"{m} {len(f):,} rows" for m, (f, _) in frames.items())
        print(f"demo CRM ({n_customers:,} customers: {sizes}): {time.perf_counter() - start:.0f} s")
        for model, table, frame, truth in tables(frames, settings.seed):
            outcomes.append(run_table(settings, client, model, table, frame, truth))
            print(f"  trained {table} in {outcomes[-1].seconds:.0f} s", flush=True)
    print(f"optuna_trials={optuna_trials}, cv_below_rows={settings.cv_below_rows}")
    print_table(outcomes)
    return [
        Figure(
            f"model choice {o.table} holdout AUC", o.auc, "AUC", max(o.logreg, o.hgb),
            "better of LogisticRegression() / HGB() defaults", "higher", o.oracle,
        )
        for o in outcomes
        if o.auc is not None
    ]  # fmt: skip


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
