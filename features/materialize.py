"""Load the latest feature row per entity from the Parquet sources into the online store.

The bulk path reads each view's Parquet with pyarrow, keeps the newest row per entity at or before
``end`` (what Feast's materialization keeps), and hands whole columns to the online store's
``bulk_write``; Feast's registry records the interval as for ``FeatureStore.materialize``. The stock
path (``stock=True``) is Feast's own ``materialize``, kept for comparison and as a fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView

from crm_predict.core.errors import UserError

EPOCH = datetime(1970, 1, 1)
# (view name, entities in the view) before a view starts; then rows written so far.
Progress = Callable[[str, int, int], object] | None


def _views(store: FeatureStore, names: Sequence[str] | None) -> list[FeatureView]:
    views = [v for v in store.list_feature_views() if v.online]
    if names:
        known = {v.name: v for v in views}
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise UserError(f"unknown feature view(s) {', '.join(unknown)}; known: {', '.join(known)}")  # fmt: skip
        views = [known[n] for n in names]
    return views


def latest_rows(view: FeatureView, end: datetime, start: datetime | None = None) -> pd.DataFrame:
    """The newest row per entity of a view's Parquet source with start <= timestamp <= end, as
    Feast's materialization picks it (newest event timestamp, then created timestamp, then the
    later row of the file), in entity-key order. Selected in arrow/numpy: only the kept rows are
    converted to pandas."""
    source = view.batch_source
    path = Path(source.path)
    if not path.exists():
        raise UserError(f"missing source file {path}: run `crm-predict features export` first")
    ts_field = source.timestamp_field
    created_field = source.created_timestamp_column or None
    key = view.entity_columns[0].name
    columns = [e.name for e in view.entity_columns] + [ts_field]
    columns += [created_field] if created_field else []
    columns += [f.name for f in view.features]
    table = pq.read_table(path, columns=list(dict.fromkeys(columns)))
    stamps = _naive(table.column(ts_field))
    mask = pc.less_equal(stamps, _bound(end, stamps.type))
    if start is not None:
        mask = pc.and_(mask, pc.greater_equal(stamps, _bound(start, stamps.type)))
    table = table.filter(mask)
    ids = table.column(key).to_numpy()
    if ids.dtype == object:
        ids = pd.factorize(ids, sort=True)[0]
    sort_by = [_naive(table.column(ts_field)).to_numpy().view("int64"), ids]
    if created_field:
        created = _naive(table.column(created_field)).to_numpy().view("int64")
        sort_by.insert(0, created)
    order = np.lexsort(sort_by)  # stable: equal stamps keep file order
    ordered = ids[order]
    last = np.ones(len(order), bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    return table.take(pa.array(order[last])).to_pandas()


def _bound(value: datetime, type_: pa.DataType) -> pa.Scalar:
    """A window bound as a naive-UTC arrow scalar of the column's type."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return pa.scalar(stamp.to_pydatetime(), type_)


def _naive(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps as naive UTC in their own unit (arrow stores tz-aware ones as UTC instants)."""
    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        return column
    unit = column.type.unit if pa.types.is_timestamp(column.type) else "us"
    return pc.cast(column, pa.timestamp(unit))


def materialize(
    store: FeatureStore,
    end: datetime,
    start: datetime | None = None,
    views: Sequence[str] | None = None,
    stock: bool = False,
    progress: Progress = None,
) -> dict[str, int]:
    """Materialize every online view (or ``views``) up to ``end``; returns entities per view."""
    selected = _views(store, views)
    if stock:
        counts = {}
        for view in selected:
            if progress:
                progress(view.name, 0, 0)
            store.materialize(start or EPOCH, end, feature_views=[view.name])
            counts[view.name] = len(latest_rows(view, end, start))
        return counts

    online = store.provider.online_store
    if not hasattr(online, "bulk_write"):
        raise UserError(
            f"online store {type(online).__name__} has no bulk path; use the stock materialize"
        )
    counts = {}
    for view in selected:
        frame = latest_rows(view, end, start)
        key = view.entity_columns[0].name
        if progress:
            progress(view.name, len(frame), 0)
        done = [0]

        def advance(n: int, name: str = view.name, total: int = len(frame), done=done) -> None:
            done[0] += n
            if progress:
                progress(name, total, done[0])

        online.bulk_write(
            store.config, view, frame, key, view.batch_source.timestamp_field, progress=advance
        )
        store.registry.apply_materialization(view, store.project, start or EPOCH, end)
        counts[view.name] = len(frame)
    return counts
