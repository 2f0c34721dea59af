"""Export the CRM store to Parquet snapshots and compute the feature tables Feast reads.

Layout under ``settings.feature_dir``:
- ``crm/<table>.parquet``: each CRM table with an ``event_timestamp`` (its event/creation time);
- ``<view>.parquet``: one feature table per feature view, stamped at the label snapshot times and
  at the export's cut-off ``as_of`` (the scoring time "now");
- ``labels/<model>.parquet``: each model's prediction rows and labels (``entity_id,
  event_timestamp, label``), taken from the CRM at ``as_of``;
- ``export.json``: ``as_of`` and row counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from crm_predict.crm_store.arrow_io import iter_pieces, to_frame
from crm_predict.crm_store.models import ENTITY_MODELS
from crm_predict.features import labels as lb
from crm_predict.features import transforms as tf
from crm_predict.features.definitions import ENTITIES, VIEWS
from crm_predict.training.specs import SPECS
from sqlalchemy.orm import Session

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

TS = tf.TS
# The time each CRM row "happened" (its event timestamp in the snapshot).
EVENT_TIME = {
    "users": None,
    "accounts": "created_at",
    "contacts": "created_at",
    "leads": "created_at",
    "deals": "created_at",
    "deal_stage_history": "entered_at",
    "activities": "occurred_at",
    "orders": "ordered_at",
    "tickets": "opened_at",
    "messages": "sent_at",
}
MODEL_TABLES = tuple(t for t in ENTITY_MODELS if t != "users")
SNAPSHOT_COMPRESSION = "snappy"
# Rows per Parquet row group: its statistics let a reader of one range of entities
# (``read_snapshot``) skip the groups outside it.
ROW_GROUP_ROWS = 128 * 1024
SNAPSHOT_STRINGS = ("object", "category", "arrow")
Progress = Callable[[str], object] | None


def snapshot_dir(settings: Settings) -> Path:
    return settings.feature_dir / "crm"


def labels_dir(settings: Settings) -> Path:
    return settings.feature_dir / "labels"


def _latest_event(tables: dict[str, pd.DataFrame]) -> datetime:
    latest = []
    for name, frame in tables.items():
        column = EVENT_TIME.get(name)
        if column and not frame.empty:
            latest.append(pd.to_datetime(frame[column]).max())
    stamps = [t for t in latest if pd.notna(t)]
    if not stamps:
        raise UserError("the CRM store is empty: nothing to export (load or generate data first)")
    return max(stamps).to_pydatetime()


def export_snapshots(
    session: Session,
    settings: Settings,
    columns: Mapping[str, Sequence[str] | None] | None = None,
    strings: str = "object",
) -> dict[str, pd.DataFrame]:
    """Every CRM table as a Parquet snapshot with an event timestamp; returns the frames as
    ``load_snapshots`` gives them back (``columns`` and ``strings`` as there: a caller that reads
    a few columns does not pay for the conversion of the others; ``{}`` converts none). The
    tables are read into Arrow in one consistent pass (``crm_predict.crm_store.arrow_io``) and
    written piece by piece as they come, in row groups of ``ROW_GROUP_ROWS``: only the pieces in
    flight and the columns asked for are held."""
    _check_strings(strings)
    wanted = dict.fromkeys(MODEL_TABLES) if columns is None else dict(columns)
    out_dir = snapshot_dir(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept: dict[str, list[pa.Table]] = {name: [] for name in wanted}
    writer = None
    try:
        for name, piece, last in iter_pieces(session, dict.fromkeys(MODEL_TABLES)):
            column = EVENT_TIME[name]
            stamps = piece[column] if column else pa.nulls(len(piece), pa.timestamp("ns"))
            piece = piece.append_column(TS, stamps)
            # Written aside and renamed, so a job reading the last snapshot never sees half a file.
            part = out_dir / f".{name}.parquet.part"
            if writer is None:
                text = [f.name for f in piece.schema if pa.types.is_string(f.type)]
                # Dictionaries for text only: hashing every id and timestamp costs a third of the
                # write.
                writer = pq.ParquetWriter(
                    part, piece.schema, compression=SNAPSHOT_COMPRESSION, use_dictionary=text
                )
            writer.write_table(piece, row_group_size=ROW_GROUP_ROWS)
            if name in wanted:
                cols = wanted[name]
                kept[name].append(piece if cols is None else piece.select(list(cols)))
            if last:
                writer.close()
                writer = None
                part.replace(out_dir / f"{name}.parquet")
    finally:
        if writer is not None:
            writer.close()
    # In the order asked for, as loaded.
    return {name: _as_frame(pa.concat_tables(kept[name]), strings) for name in wanted}


def load_snapshots(
    settings: Settings,
    columns: Mapping[str, Sequence[str] | None] | None = None,
    strings: str = "object",
) -> dict[str, pd.DataFrame]:
    """The exported CRM tables; a missing file is a user error naming the command to run.

    ``columns`` maps the tables to load to the columns wanted (None: all), for a caller that
    needs fewer than every column of every table. ``strings``: "object" (as exported),
    "category" (pandas categoricals from the Parquet dictionaries: no Python string per row) or
    "arrow" (``pd.ArrowDtype`` strings)."""
    _check_strings(strings)
    wanted = dict.fromkeys(MODEL_TABLES) if columns is None else dict(columns)
    tables = {}
    for name, cols in wanted.items():
        path = snapshot_dir(settings) / f"{name}.parquet"
        if not path.exists():
            raise UserError(f"missing source file {path}: run `crm-predict features export` first")
        schema = pq.read_schema(path)
        names = schema.names if cols is None else list(cols)
        # Categoricals straight from the files' dictionaries, not encoded again.
        text = [n for n in names if pa.types.is_string(schema.field(n).type)]
        table = pq.read_table(
            path, columns=names, read_dictionary=text if strings == "category" else None
        )
        tables[name] = _as_frame(table, strings)
    return tables


def read_snapshot(
    settings: Settings,
    table: str,
    columns: Sequence[str],
    spans: Sequence[tuple[str, int, int]] = (),
    where: pc.Expression | None = None,
    strings: str = "category",
) -> pd.DataFrame:
    """The rows of one exported table where ``where`` holds, ``columns`` as ``load_snapshots``
    gives them, in the file's order. ``spans`` (``(column, low, high)``, any of them) bound the
    rows ``where`` keeps: the row groups whose statistics lie outside every span are not read,
    so a batch reading its entities range by range reads each group about once."""
    _check_strings(strings)
    path = snapshot_dir(settings) / f"{table}.parquet"
    if not path.exists():
        raise UserError(f"missing source file {path}: run `crm-predict features export` first")
    schema = pq.read_schema(path)
    text = [n for n in columns if pa.types.is_string(schema.field(n).type)]
    file = pq.ParquetFile(path, read_dictionary=text if strings == "category" else None)
    groups = [i for i in range(file.num_row_groups) if _may_hold(file.metadata.row_group(i), spans)]  # fmt: skip
    needs = list(dict.fromkeys([*columns, *(c for c, _, _ in spans)]))
    if where is None:
        parts = [file.read_row_groups(groups, columns=needs)] if groups else []
    else:
        # Filtered group by group: a selective ``where`` over the whole file (the deals'
        # activities) holds one group's columns, never the table's.
        parts = [file.read_row_group(i, columns=needs).filter(where) for i in groups]
    data = pa.concat_tables(parts) if parts else file.schema_arrow.empty_table().select(needs)
    return _as_frame(data.select(list(columns)), strings)


def id_span(column: str, low: int, high: int) -> pc.Expression:
    """``low <= column < high``: the rows of one range of entities (``read_snapshot``)."""
    return (pc.field(column) >= low) & (pc.field(column) < high)


def _may_hold(group: pq.RowGroupMetaData, spans: Sequence[tuple[str, int, int]]) -> bool:
    """Whether a row group's statistics allow a row in one of ``spans`` (none: every group)."""
    if not spans:
        return True
    names = {group.column(j).path_in_schema: j for j in range(group.num_columns)}
    for column, low, high in spans:
        stats = group.column(names[column]).statistics
        if stats is None or not stats.has_min_max:
            if stats is None or stats.null_count != group.num_rows:
                return True  # no statistics: it may
            continue  # every value missing: in no span
        if stats.max >= low and stats.min < high:
            return True
    return False


def _check_strings(strings: str) -> None:
    if strings not in SNAPSHOT_STRINGS:
        raise ValueError(f"strings must be one of {', '.join(SNAPSHOT_STRINGS)}, not {strings!r}")


def _as_frame(table: pa.Table, strings: str) -> pd.DataFrame:
    """An Arrow snapshot table as pandas, text as ``strings`` says (see ``load_snapshots``)."""
    if strings == "arrow":
        return table.to_pandas(
            coerce_temporal_nanoseconds=True,
            types_mapper={pa.string(): pd.ArrowDtype(pa.string())}.get,
        )
    if strings == "category":
        encoded = [
            pc.dictionary_encode(c) if pa.types.is_string(c.type) else c for c in table.columns
        ]
        table = pa.table(encoded, names=table.column_names)
    return to_frame(table)


def export_as_of(settings: Settings) -> datetime:
    path = settings.feature_dir / "export.json"
    if not path.exists():
        raise UserError(f"missing {path}: run `crm-predict features export` first")
    return datetime.fromisoformat(json.loads(path.read_text())["as_of"])


def _times(rows: Sequence[pd.DataFrame], key: str) -> pd.DataFrame:
    # Empty frames left out (pandas deprecates their part in the result's dtypes), the first kept
    # for the columns when all are.
    parts = [r[["entity_id", TS]] for r in rows if len(r)] or [rows[0][["entity_id", TS]]]
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.drop_duplicates().rename(columns={"entity_id": key})
    frame[key] = frame[key].astype("int64")
    frame[TS] = pd.to_datetime(frame[TS]).astype("datetime64[ns]")
    return frame.sort_values([key, TS], ignore_index=True)


def compute_views(
    tables: dict[str, pd.DataFrame],
    times: dict[str, pd.DataFrame],
    only: Iterable[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Feature view tables at the given per-entity times (``times[entity]``: ``<join key>,
    event_timestamp``), for every view of those entities or just ``only``. Shared by the export
    (label times + now) and the batch scoring frame."""
    wanted = set(only) if only is not None else set(VIEWS)
    acts = tables["activities"]
    builders = {
        "lead_profile": (
            "lead",
            lambda t: tf.lead_profile(tables["leads"], tables["contacts"], tables["accounts"]),
        ),  # fmt: skip
        "lead_behaviour": ("lead", lambda t: tf.lead_behaviour(acts, tables["leads"], t)),
        "customer_profile": ("customer", lambda t: tf.customer_profile(tables["contacts"])),
        "customer_behaviour": (
            "customer",
            lambda t: tf.behaviour_windows(acts, t, "customer_id", event_key="contact_id"),
        ),  # fmt: skip
        "customer_transactions": ("customer", lambda t: tf.transactions(tables["orders"], t)),
        "deal_activity": (
            "deal",
            lambda t: tf.deal_activity(
                tables["deals"], tables["deal_stage_history"], acts, tables["tickets"], t
            ),
        ),  # fmt: skip
        "contact_time": ("contact", lambda t: tf.contact_time_profile(acts, t)),
    }
    return {
        name: conform(name, build(times[entity]))
        for name, (entity, build) in builders.items()
        if entity in times and name in wanted
    }


def conform(view: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Columns and dtypes exactly as the view declares (join key, timestamp, features), sorted by
    key and time; columns already of their dtype are taken as they are."""
    spec = VIEWS[view]
    columns = {
        spec.join_key: frame[spec.join_key].astype("int64"),
        TS: pd.to_datetime(frame[TS]).astype("datetime64[ns]"),
    }
    for name, dtype, _ in spec.fields:
        kind = str(dtype)
        if "Float" in kind:
            columns[name] = pd.to_numeric(frame[name], errors="coerce").astype(float)
        elif "Int" in kind:
            columns[name] = pd.to_numeric(frame[name], errors="coerce").fillna(0).astype("int64")
        else:
            columns[name] = tf.as_text(frame[name])
    out = pd.DataFrame(columns).reset_index(drop=True)
    keys, stamps = out[spec.join_key].to_numpy(), out[TS].to_numpy()
    same = keys[1:] == keys[:-1]
    if ((keys[1:] > keys[:-1]) | (same & (stamps[1:] >= stamps[:-1]))).all():
        return out  # in order already (the rows of ``times`` usually are)
    return out.sort_values([spec.join_key, TS], ignore_index=True)


def export(
    session: Session,
    settings: Settings,
    as_of: datetime | None = None,
    churn_cutoffs: Sequence[datetime] | None = None,
    progress: Progress = None,
) -> dict[str, int]:
    """Snapshot the CRM, compute labels and feature tables at the label times and ``as_of``
    (default: the latest event in the CRM). Churn cutoffs: the demo truth file when present, else
    ``churn_cutoffs``, else the last monthly cutoffs with a complete 90-day window. Returns row
    counts per written file."""
    note = progress or (lambda _msg: None)
    note("reading the CRM store")
    tables = export_snapshots(session, settings)
    as_of = as_of or _latest_event(tables)
    as_of = pd.Timestamp(as_of).to_pydatetime()

    note("labels")
    truth = lb.read_truth_cutoffs(settings.demo_truth_dir)
    cutoffs = truth if truth is not None else churn_cutoffs
    rows = {model: lb.prediction_rows(model, tables, as_of, cutoffs) for model in SPECS}
    labels_dir(settings).mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for model, frame in rows.items():
        frame.to_parquet(labels_dir(settings) / f"{model}.parquet", index=False)
        counts[f"labels/{model}"] = len(frame)

    times = {}
    for entity in ENTITIES:
        stamps = [rows[m] for m, spec in SPECS.items() if spec.entity == entity]
        stamps.append(lb.active_rows(entity, tables, as_of))
        times[entity] = _times(stamps, ENTITIES[entity])

    note("feature tables")
    for name, frame in compute_views(tables, times).items():
        frame.to_parquet(settings.feature_dir / f"{name}.parquet", index=False)
        counts[name] = len(frame)
    summary = {"as_of": as_of.isoformat(), "rows": counts}
    (settings.feature_dir / "export.json").write_text(json.dumps(summary, indent=2))
    return counts
