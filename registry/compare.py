"""Compare registered versions of one model on the same holdout rows.

Row policy (``rows``), keyed on ``entity_id`` + ``event_timestamp``:

- ``newest`` (default): the holdout of the newest chosen version. Holdouts are out of time (the
  newest 20 % of each training window), so an older version never trained on these rows.
- ``intersection``: rows present in every chosen version's holdout (values from the newest).
- ``union``: every chosen version's holdout rows, de-duplicated (newest version's copy wins).
  Rows from an older holdout may lie inside a newer version's training window, which flatters the
  newer version — prefer ``newest`` for promotion decisions (the champion gate always uses it).

Classifiers are re-scored; CLV and next-best-time are pyfuncs without a shared label, so their
logged holdout metrics (``mae_purchases``, ``hit_rate_top1``/``top3``) are shown side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from crm_predict.registry.evaluation import (
    KEY_COLUMNS,
    LABEL,
    VersionInfo,
    all_versions,
    get_version,
    is_classifier,
    key_metrics,
    load_holdout,
    score_version,
)

from crm_predict.core.errors import UserError
from crm_predict.core.metrics import classification_metrics
from crm_predict.core.tracking import experiment_id

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

ROW_POLICIES = ("newest", "intersection", "union")


@dataclass
class Comparison:
    """Side-by-side metrics of several versions, with the scores behind them (classifiers)."""

    name: str
    versions: list[VersionInfo]
    rows: str
    n_rows: int | None
    table: pd.DataFrame
    labels: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def default_versions(client: MlflowClient, name: str) -> list[str]:
    """Champion and challenger (read from the registered model's aliases); a clear error naming
    the versions when either alias is not set."""
    versions = all_versions(client, name)
    by_alias = {a: v.version for v in versions for a in v.aliases}
    missing = [a for a in ("champion", "challenger") if a not in by_alias]
    if missing:
        held = ", ".join(f"{a} v{v}" for a, v in by_alias.items()) or "no aliases"
        listed = ", ".join(v.version for v in versions)
        raise UserError(
            f"{name} has no {' and no '.join(missing)} alias ({held}; versions {listed}); "
            f"name the versions to compare, e.g. `crm-predict registry compare {name} "
            f"{' '.join(v.version for v in versions[-2:])}`"
        )
    return [by_alias["champion"], by_alias["challenger"]]


def holdout_rows(holdouts: list[pd.DataFrame], policy: str) -> pd.DataFrame:
    """The rows every version is scored on; ``holdouts`` ordered oldest → newest version."""
    if policy not in ROW_POLICIES:
        raise UserError(f"rows must be one of {', '.join(ROW_POLICIES)}, got {policy!r}")
    if policy == "newest":
        return holdouts[-1].reset_index(drop=True)
    for frame in holdouts:
        missing = [c for c in (*KEY_COLUMNS, LABEL) if c not in frame.columns]
        if missing:
            raise UserError(f"a holdout lacks {', '.join(missing)}; use --rows newest")
    newest_first = list(reversed(holdouts))
    if policy == "union":
        rows = pd.concat(newest_first, ignore_index=True)
        return rows.drop_duplicates(KEY_COLUMNS, keep="first").reset_index(drop=True)
    keys = newest_first[0][KEY_COLUMNS]
    for frame in newest_first[1:]:
        keys = keys.merge(frame[KEY_COLUMNS].drop_duplicates(), on=KEY_COLUMNS)
    rows = newest_first[0].merge(keys.drop_duplicates(), on=KEY_COLUMNS)
    if rows.empty:
        raise UserError("the chosen versions' holdouts share no rows; use --rows newest or union")
    return rows


def _row_label(info: VersionInfo) -> str:
    return f"v{info.version}" + (f" ({', '.join(info.aliases)})" if info.aliases else "")


def compare_versions(
    client: MlflowClient, name: str, versions: list[str] | None = None, rows: str = "newest"
) -> Comparison:
    """Metrics of ``versions`` (default: champion vs challenger) on the same holdout rows."""
    chosen = versions or default_versions(client, name)
    infos = sorted(
        (get_version(client, name, v) for v in dict.fromkeys(map(str, chosen))),
        key=lambda info: int(info.version),
    )
    if not is_classifier(name):
        logged = [
            {"version": _row_label(i), **{m: i.metrics.get(m, np.nan) for m in key_metrics(name)}}
            for i in infos
        ]
        rows = "logged (each version's own holdout)"
        return Comparison(name, infos, rows, None, pd.DataFrame(logged))

    frame = holdout_rows([load_holdout(client, info.run_id) for info in infos], rows)
    labels = frame[LABEL].to_numpy(dtype=int)
    scores, records = {}, []
    for info in infos:
        p = score_version(client, info, frame)
        scores[info.version] = p
        records.append({"version": _row_label(info), **classification_metrics(labels, p)})
    return Comparison(name, infos, rows, len(frame), pd.DataFrame(records), labels, scores)


def comparison_figure(comparison: Comparison) -> Figure:
    """Cumulative lift and reliability (calibration) curves of every version, same rows."""
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve

    fig = Figure(figsize=(11, 4.5))
    lift_ax, cal_ax = fig.subplots(1, 2)
    y = comparison.labels
    base = y.mean()
    for version, p in comparison.scores.items():
        order = np.argsort(-p, kind="stable")
        hits = np.cumsum(y[order])
        share = np.arange(1, len(y) + 1) / len(y)
        lift_ax.plot(share * 100, hits / np.arange(1, len(y) + 1) / base, label=f"v{version}")
        rate, mean_p = calibration_curve(y, p, n_bins=10)
        cal_ax.plot(mean_p, rate, marker="o", label=f"v{version}")
    lift_ax.axhline(1, color="grey", lw=0.8, ls="--")
    lift_ax.set(xlabel="% of rows targeted (highest scores first)", ylabel="lift", title="Lift")
    cal_ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    cal_ax.set(xlabel="mean predicted probability", ylabel="observed rate", title="Calibration")
    for ax in (lift_ax, cal_ax):
        ax.legend()
    fig.suptitle(f"{comparison.name}: {comparison.n_rows} holdout rows ({comparison.rows})")
    fig.tight_layout()
    return fig


def markdown_table(frame: pd.DataFrame) -> str:
    """A small frame as a Markdown table (floats to 4 decimals)."""

    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join(lines) + "\n"


def registry_experiment_id(client: MlflowClient, name: str) -> str:
    """Experiment ``registry-{name}`` for compare/drift runs, kept apart from training runs."""
    return experiment_id(client, f"registry-{name}")


def log_comparison(client: MlflowClient, comparison: Comparison) -> str:
    """Log the table (JSON + Markdown), per-version metrics and the plot as one MLflow run."""
    versions = ", ".join(f"v{i.version}" for i in comparison.versions)
    run = client.create_run(
        registry_experiment_id(client, comparison.name),
        run_name=f"compare {versions}",
        tags={"registry_job": "compare", "model_name": comparison.name, "rows": comparison.rows},
    )
    run_id = run.info.run_id
    for record in comparison.table.to_dict("records"):
        version = record["version"].split()[0]
        for metric, value in record.items():
            if metric != "version" and pd.notna(value):
                client.log_metric(run_id, f"{version}_{metric}", float(value))
    client.log_table(run_id, comparison.table, "compare/metrics.json")
    client.log_text(run_id, markdown_table(comparison.table), "compare/metrics.md")
    if comparison.scores:
        client.log_figure(run_id, comparison_figure(comparison), "compare/lift_calibration.png")
    client.set_terminated(run_id)
    return run_id
