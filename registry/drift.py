"""Feature drift: population stability index (PSI) per feature between the training window and
the newest data.

Reference: the version's logged holdout (the newest 20 % of its training window, the closest
logged sample of what the model learned from). Current: a user's CSV/Parquet file, or the
features of every active entity "now" (``crm_predict.features.scoring.scoring_frame``). Numbers
are binned at ten quantiles of the reference, text by category; a missing value is its own bin.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from crm_predict.registry.evaluation import (
    VersionInfo,
    all_versions,
    base_model_name,
    get_version,
    load_holdout,
)

from crm_predict.core.errors import UserError, read_user_csv
from crm_predict.core.tracking import CHAMPION, version_for_alias

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from crm_predict.core.settings import Settings

EPSILON = 1e-4  # stands in for an empty bin so the log stays finite


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected, EPSILON, None)
    a = np.clip(actual, EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(reference: pd.Series, current: pd.Series, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference``."""
    if len(reference) == 0 or len(current) == 0:
        raise UserError("drift needs rows in both the reference and the current data")
    numeric = pd.api.types.is_numeric_dtype(reference) and not pd.api.types.is_bool_dtype(reference)
    if numeric:
        ref = reference.astype(float)
        cur = pd.to_numeric(current, errors="coerce").astype(float)
        edges = np.unique(np.nanquantile(ref.dropna(), np.linspace(0, 1, bins + 1)))
        edges[0], edges[-1] = -np.inf, np.inf
        if len(edges) < 2:
            edges = np.array([-np.inf, np.inf])

        def shares(x: pd.Series) -> np.ndarray:
            counts = np.histogram(x.dropna(), bins=edges)[0]
            return np.append(counts, x.isna().sum()) / len(x)

        return _psi(shares(ref), shares(cur))
    ref = reference.astype("string").fillna("(missing)")
    cur = current.astype("string").fillna("(missing)")
    levels = sorted(set(ref) | set(cur))
    expected = ref.value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
    actual = cur.value_counts(normalize=True).reindex(levels, fill_value=0).to_numpy()
    return _psi(expected, actual)


def drift_table(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[str], threshold: float = 0.2
) -> pd.DataFrame:
    """One row per feature: PSI and whether it exceeds ``threshold``, most drifted first."""
    missing = [f for f in features if f not in current.columns]
    if missing:
        raise UserError(f"the current data lacks features: {', '.join(missing)}")
    rows = [
        {"feature": f, "psi": psi(reference[f], current[f])}
        for f in features
        if f in reference.columns
    ]
    table = pd.DataFrame(rows, columns=["feature", "psi"])
    table["flagged"] = table["psi"] > threshold
    return table.sort_values("psi", ascending=False, ignore_index=True)


def read_table(path: Path) -> pd.DataFrame:
    """A user's CSV or Parquet file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_user_csv(path)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise UserError(f"{path}: expected a .csv or .parquet file")


@dataclass
class DriftReport:
    name: str
    version: str
    source: str
    table: pd.DataFrame
    run_id: str | None = None

    @property
    def flagged(self) -> list[str]:
        return self.table.loc[self.table["flagged"], "feature"].tolist()


def _version_to_watch(client: MlflowClient, name: str, version: str | None) -> VersionInfo:
    if version is not None:
        return get_version(client, name, version)
    champion = version_for_alias(client, name, CHAMPION)
    return get_version(client, name, champion) if champion else all_versions(client, name)[-1]


def drift_report(
    settings: Settings,
    client: MlflowClient,
    name: str,
    *,
    data: Path | None = None,
    at: datetime | None = None,
    version: str | None = None,
    threshold: float = 0.2,
    log: bool = True,
) -> DriftReport:
    """PSI per feature of ``name``'s champion (or ``version``, else the newest) between its
    training window and ``data`` (or the scoring frame at ``at``, default now); logged as a run."""
    info = _version_to_watch(client, name, version)
    reference = load_holdout(client, info.run_id)
    if data is not None:
        current, source = read_table(data), str(data)
    else:
        from crm_predict.registry.lifecycle import utc_now

        try:  # Feast is heavy: only when asked for
            from crm_predict.features.scoring import scoring_frame
        except ImportError as exc:
            raise UserError(f"no scoring frame available ({exc}); pass --data FILE") from None

        at = at or utc_now()
        current = scoring_frame(settings, base_model_name(name), at)
        source = f"scoring frame at {at:%Y-%m-%d %H:%M}"
    table = drift_table(reference, current, info.feature_names, threshold)
    report = DriftReport(name, info.version, source, table)
    if log:
        report.run_id = log_drift(client, report, threshold)
    return report


def log_drift(client: MlflowClient, report: DriftReport, threshold: float) -> str:
    """PSI per feature as metrics, the table as an artifact, flagged features as a tag."""
    from crm_predict.registry.compare import markdown_table, registry_experiment_id

    run = client.create_run(
        registry_experiment_id(client, report.name),
        run_name=f"drift v{report.version}",
        tags={
            "registry_job": "drift",
            "model_name": report.name,
            "model_version": report.version,
            "current_data": report.source[:500],
            "flagged_features": ",".join(report.flagged)[:5000],
        },
    )
    run_id = run.info.run_id
    client.log_param(run_id, "psi_threshold", threshold)
    for feature, value in zip(report.table["feature"], report.table["psi"], strict=True):
        client.log_metric(run_id, f"psi_{feature}", float(value))
    client.log_table(run_id, report.table, "drift/psi.json")
    client.log_text(run_id, markdown_table(report.table), "drift/psi.md")
    client.set_terminated(run_id)
    return run_id
