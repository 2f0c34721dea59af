"""The nightly batch's input: every active entity's features as of a time, computed in bulk.

The training sources' own transforms, evaluated once at ``at`` over the exported CRM snapshot: a
million customers cost a few passes over the activities rather than a million online lookups. The
columns are the model's FeatureService (``definitions.SERVICES``); ``snapshot_columns`` says which
snapshot columns that reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from crm_predict.features import transforms as tf
from crm_predict.features.definitions import (
    ENTITIES,
    ENTITY_OF_MODEL,
    RULE_SCORE_VIEW,
    SERVICES,
    VIEWS,
    check_model,
    feature_names,
)
from crm_predict.features.export import compute_views, load_snapshots
from crm_predict.features.labels import active_rows
from crm_predict.features.online import UnknownEntityError

from crm_predict.core.settings import Settings

TS = tf.TS
# The snapshot columns each view's transform (``compute_views``) and each entity's active rows
# (``active_rows``) read: a batch loads only these.
VIEW_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "lead_profile": {
        "leads": ("id", "contact_id", "account_id", "created_at", "source", "region"),
        "contacts": ("id", "role", "is_decision_maker", "gender", "age_band", "account_id"),
        "accounts": ("id", "industry", "size_band", "annual_revenue_band"),
    },
    "lead_behaviour": {
        "leads": ("id", "contact_id"),
        "activities": ("lead_id", "contact_id", "type", "category", "occurred_at"),
    },
    "customer_profile": {
        "contacts": ("id", "created_at", "region", "source", "gender", "age_band", "account_id"),
    },
    "customer_behaviour": {"activities": ("contact_id", "type", "category", "occurred_at")},
    "customer_transactions": {"orders": ("contact_id", "ordered_at", "amount")},
    "deal_activity": {
        "deals": (
            "id", "account_id", "amount", "created_at", "stage", "stage_entered_at", "closed_at",
            "outcome",
        ),
        "deal_stage_history": ("deal_id", "stage", "entered_at", "expected_close_at"),
        "activities": ("deal_id", "occurred_at"),
        "tickets": ("deal_id", "account_id", "opened_at", "sentiment"),
    },
    "contact_time": {"activities": ("contact_id", "occurred_at", "responded", "channel")},
}  # fmt: skip
ACTIVE_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "lead": {"leads": ("id", "status", "created_at", "updated_at", "converted_at")},
    "deal": {"deals": ("id", "created_at", "closed_at")},
    "customer": {"orders": ("contact_id", "ordered_at")},
    "contact": {"contacts": ("id", "created_at")},
}


def snapshot_columns(models: Iterable[str]) -> dict[str, list[str]]:
    """Per snapshot table, the columns ``scoring_frame`` reads for ``models``."""
    out: dict[str, dict[str, None]] = {}
    for model in models:
        needs = [ACTIVE_COLUMNS[ENTITY_OF_MODEL[model]]]
        needs += [VIEW_COLUMNS[view] for view, _ in SERVICES[model] if view in VIEW_COLUMNS]
        for need in needs:
            for table, columns in need.items():
                out.setdefault(table, {}).update(dict.fromkeys(columns))
    return {table: list(columns) for table, columns in out.items()}


def scoring_frame(
    settings: Settings,
    model_name: str,
    at: datetime,
    entity_ids: Iterable[int] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    cache: dict | None = None,
) -> pd.DataFrame:
    """``entity_id`` + the model's features for every active entity at ``at`` (open leads, open
    deals, customers with orders, contacts), or for ``entity_ids`` (which must be active).
    ``cache`` (a dict the caller keeps across models) lets models of one entity (churn and CLV)
    share the active rows and views: the batch computes each view once per run."""
    check_model(model_name)
    names = feature_names(model_name, settings)
    entity = ENTITY_OF_MODEL[model_name]
    key = ENTITIES[entity]
    tables = tables if tables is not None else load_snapshots(settings)
    at = pd.Timestamp(at).to_pydatetime()

    if cache is None or entity_ids is not None:  # cached tables are for every active entity
        cache = {}
    rows = _cached(cache, ("rows", id(tables), entity, at), lambda: active_rows(entity, tables, at))
    if entity_ids is not None:
        wanted = pd.Index(pd.Series(list(entity_ids), dtype="int64").unique())
        missing = wanted.difference(rows["entity_id"])
        if len(missing):
            raise UnknownEntityError(model_name, sorted(missing.tolist()))
        rows = rows[rows["entity_id"].isin(wanted)]
    times = {entity: rows.rename(columns={"entity_id": key})}

    def view_at(view: str) -> pd.DataFrame:
        table = compute_views(tables, times, only=[view])[view]
        # Profile views are stamped at creation: take each entity's latest row at or before ``at``.
        return tf.latest_per_entity(table[table[TS] <= pd.Timestamp(at)], key)

    ids = rows["entity_id"].to_numpy()
    columns: dict[str, Any] = {"entity_id": ids}
    for view, feats in SERVICES[model_name]:
        if view == RULE_SCORE_VIEW:
            continue
        table = _cached(cache, ("view", id(tables), view, at), partial(view_at, view))
        columns.update(_aligned(table, key, ids, feats))
    if any(view == RULE_SCORE_VIEW for view, _ in SERVICES[model_name]):
        columns["rule_score"] = tf.rule_score_values(columns)
    _fill_missing(columns, model_name)
    # One frame built from the columns at the end: a frame grown column by column and renamed
    # is consolidated (every object column copied again) on a million rows.
    return pd.DataFrame({name: columns[name] for name in ["entity_id", *names]})


def _aligned(
    table: pd.DataFrame, key: str, ids: np.ndarray, feats: Sequence[str]
) -> dict[str, np.ndarray]:
    """``feats`` of ``table`` (unique ``key``) for each of ``ids``: a left join, NaN where an
    entity has no row. A view computed for these very entities is in their order already."""
    keys = table[key].to_numpy()
    if len(keys) == len(ids) and (keys == ids).all():
        return {name: table[name].to_numpy() for name in feats}
    at = tf.positions(keys, ids)
    missing = bool((at < 0).any())
    out = {}
    for name in feats:
        values = table[name].to_numpy()
        if missing:
            values = values.astype(float if values.dtype.kind in "iub" else values.dtype)
            values = np.append(values, np.nan if values.dtype.kind == "f" else None)
        out[name] = values[at]  # position -1: the appended missing value
    return out


def _cached(cache: dict, key: tuple, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    return cache[key] if key in cache else cache.setdefault(key, compute())


def _fill_missing(columns: dict[str, np.ndarray], model_name: str) -> None:
    """Entities without a row in some view (e.g. no activity yet) get that view's empty values:
    0 for counts, NaN for measurements, "unknown" for text, as in the training sources."""
    for view, feats in SERVICES[model_name]:
        if view == RULE_SCORE_VIEW:
            continue
        dtypes = {n: str(t) for n, t, _ in VIEWS[view].fields}
        for name in feats:
            values = columns[name]
            if "Int" in dtypes[name] and values.dtype.kind != "i":
                columns[name] = np.nan_to_num(values.astype(float), nan=0.0).astype("int64")
            elif "String" in dtypes[name] and (blank := pd.isna(values)).any():
                columns[name] = np.where(blank, "unknown", values).astype(object)
