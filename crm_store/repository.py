"""Typed repository functions over the CRM store. Every function takes a Session and leaves the
commit to the caller, so a job decides what is one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from crm_predict.crm_store.bulk import (
    EncodedRows,
    constant_columns,
    encode_rows,
    insert_frame,
    sqlite_datetimes,
    write_rows,
)
from crm_predict.crm_store.models import ENTITY_MODELS, PredictionLog, Tag, TagHistory, Task
from sqlalchemy import Table, bindparam, column, select, text
from sqlalchemy import table as table_clause
from sqlalchemy.orm import Session

from crm_predict.core.rules import TaskSpec

TAG_KEY = ["entity_type", "entity_id", "name"]
TAG_COLUMNS = [c.name for c in Tag.__table__.columns]  # the key, then the value and its origin
TASK_COLUMNS = [c.name for c in Task.__table__.columns if c.name != "id"]
PREDICTION_COLUMNS = [c.name for c in PredictionLog.__table__.columns if c.name != "id"]
# pg_advisory_xact_lock key that serialises tag upserts on PostgreSQL (any constant bigint).
TAG_UPSERT_LOCK = 0x7A65_7461_6773  # "tags"
HISTORY_TRIGGER = "tag_history_on_change"  # SQLite: the temporary trigger of ``upsert_tags``


def _stage(
    session: Session, table: Table, stage: str, frame: pd.DataFrame, columns: Sequence[str]
) -> None:
    """Load ``frame`` into an empty temporary copy of ``table`` named ``stage`` in one bulk write."""
    conn = session.connection()
    cols = ", ".join(columns)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {stage} AS SELECT {cols} FROM {table.name} WHERE 1 = 0"
    )
    typed = (column(c, table.c[c].type) for c in columns)
    insert_frame(session, table_clause(stage, *typed), frame[list(columns)])


def _bound_constants(
    session: Session, table: Table, columns: Sequence[str], shared: dict[str, Any]
) -> tuple[list[str], dict[str, str], dict, list]:
    """Split ``columns`` into those to stage and the ``shared`` ones (one value for the whole
    batch: model, version, run, timestamps), which travel as typed bound parameters instead.
    Returns (staged columns, SQL per column: ``s.<column>`` or the parameter, parameters, binds)."""
    dialect = session.get_bind().dialect
    staged = [c for c in columns if c not in shared]
    source = {c: f"s.{c}" for c in staged}
    params: dict = {}
    for c, value in shared.items():
        params[f"p_{c}"] = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
        # PostgreSQL cannot infer a bare parameter's type in a SELECT list: cast it there.
        kind = table.c[c].type.compile(dialect=dialect)
        source[c] = f"CAST(:p_{c} AS {kind})" if dialect.name == "postgresql" else f":p_{c}"
    # Typed binds, so datetimes reach SQLite in SQLAlchemy's storage format (not through a
    # globally registered sqlite3 adapter such as Feast's).
    binds = [bindparam(f"p_{c}", type_=table.c[c].type) for c in shared]
    return staged, source, params, binds


@dataclass(frozen=True)
class TagRows:
    """Tags ready to write (``prepare_tags``): one row per key in entity-major order, text values,
    and the columns with one value for every row (entity type, model, version, run, scored_at)
    split off into ``shared``, so the write sends them once."""

    rows: pd.DataFrame  # TAG_COLUMNS not in shared
    shared: dict[str, Any]
    encoded: EncodedRows | None = None  # ``_encode_tags``, for the store's dialect
    # Keys given without a value (TAG_KEY columns not in shared): tags to remove, such as a flag
    # whose condition no longer holds.
    cleared: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> pd.Series:
        values = self.rows.get(name)
        return pd.Series(self.shared[name], index=self.rows.index) if values is None else values


# SQLite's tag upsert re-stamps or overwrites a stored tag only when some column differs.
_PAYLOAD = TAG_COLUMNS[3:]
SQLITE_TAG_UPSERT = (
    f"ON CONFLICT ({', '.join(TAG_KEY)}) DO UPDATE SET "
    f"{', '.join(f'{c} = excluded.{c}' for c in _PAYLOAD)} "
    f"WHERE ({', '.join(f'{Tag.__tablename__}.{c}' for c in _PAYLOAD)}) "
    f"IS NOT ({', '.join(f'excluded.{c}' for c in _PAYLOAD)})"
)


def prepare_tags(
    tags: pd.DataFrame, dialect: str | None = None, shared: dict[str, Any] | None = None
) -> TagRows:
    """The CPU part of ``upsert_tags``, for another thread than the write: the last row of a
    repeated key wins; entity-major order, so the key's index takes a chunk's keys on the same few
    leaf pages. A row without a value removes its tag (``cleared``). ``shared``: columns with one
    value for every row (else found in ``tags``). With ``dialect``, the rows are encoded too."""
    if tags.empty:
        return TagRows(pd.DataFrame(columns=TAG_COLUMNS), {})
    repeated = tags.duplicated([c for c in TAG_KEY if c in tags], keep="last").to_numpy()
    if repeated.any():
        tags = tags[~repeated]
    names = pd.factorize(tags["name"], sort=True)[0]
    tags = tags.iloc[np.lexsort((names, tags["entity_id"].to_numpy()))]
    if shared is None:
        candidates = [c for c in TAG_COLUMNS if c not in ("entity_id", "name", "value")]
        shared = constant_columns(tags, candidates)
    absent = tags["value"].isna().to_numpy()
    cleared = None
    if absent.any():
        key = [c for c in TAG_KEY if c not in shared]
        cleared = tags.loc[absent, key].reset_index(drop=True)
        tags = tags[~absent]
    tags = tags.assign(value=tags["value"].astype(str))
    rows = tags[[c for c in TAG_COLUMNS if c not in shared]].reset_index(drop=True)
    encoded = _encode_tags(dialect, rows, shared) if dialect is not None and len(rows) else None
    return TagRows(rows, shared, encoded, cleared)


def _encode_tags(dialect: str, rows: pd.DataFrame, shared: dict[str, Any]) -> EncodedRows:
    """Tag rows encoded for the direct write: SQLite's upsert, PostgreSQL's COPY into tags."""
    upsert = SQLITE_TAG_UPSERT if dialect == "sqlite" else ""
    return encode_rows(dialect, Tag.__table__, rows, shared, on_conflict=upsert)


def _encoded(tags: TagRows, dialect: str) -> EncodedRows:
    """``tags``' rows encoded for ``dialect``: as prepared, or now if prepared for another."""
    if tags.encoded is not None and tags.encoded.dialect == dialect:
        return tags.encoded
    return _encode_tags(dialect, tags.rows, tags.shared)


def upsert_tags(session: Session, tags: pd.DataFrame | TagRows, now: datetime) -> int:
    """Set the current value of each (entity_type, entity_id, name): a changed value's previous
    row moves to tag history, an unchanged one is re-stamped without history, a row equal to what
    is stored is not written (a rerun writes nothing); a row without a value removes its tag, the
    last value to history. ``tags`` may come prepared. Returns the tags set or left as they were."""
    if not isinstance(tags, TagRows):
        tags = prepare_tags(tags)
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres and (len(tags) or tags.cleared is not None):
        # Concurrent writers would both move the same old value to history, or both find a key
        # new: tag upserts take turns, until the caller's transaction ends. (SQLite's single
        # writer lock already serialises them.)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TAG_UPSERT_LOCK})
    if tags.cleared is not None:  # first: whether anything is stored is then what was before
        _clear_tags(session, tags, now)
    if not len(tags):
        return 0
    if postgres:
        _upsert_tags_postgres(session, tags, now)
    else:
        _upsert_tags_sqlite(session, tags, now)
    return len(tags)


def _clear_tags(session: Session, tags: TagRows, now: datetime) -> None:
    """Remove the stored tags of ``tags.cleared``, their last values to history, per (entity type,
    name) by the key's index; a probe of the id range first (a first run has nothing to delete)."""
    cleared = tags.cleared.assign(
        **{c: tags.shared[c] for c in ("entity_type", "name") if c not in tags.cleared}
    )
    cols = ", ".join(TAG_COLUMNS)
    now_bind = bindparam("now", type_=TagHistory.__table__.c.replaced_at.type)
    history = f"INSERT INTO {TagHistory.__tablename__} ({cols}, replaced_at) SELECT {cols}, :now"
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        # = ANY(array) is an index condition (one descent per id); an IN over unnest() was planned
        # as a nested loop over the array for every stored row.
        statements = [
            text(
                f"WITH gone AS (DELETE FROM {Tag.__tablename__} WHERE entity_type = :t AND "
                f"name = :n AND entity_id = ANY(CAST(:ids AS bigint[])) RETURNING {cols}) "
                f"{history} FROM gone"
            ).bindparams(now_bind)
        ]
    else:  # json_each: the ids as one bound value, however many
        where = (
            "entity_type = :t AND name = :n AND entity_id IN (SELECT value FROM json_each(:ids))"
        )
        statements = [
            text(f"{history} FROM {Tag.__tablename__} WHERE {where}").bindparams(now_bind),
            text(f"DELETE FROM {Tag.__tablename__} WHERE {where}"),
        ]
    probe = text(
        f"SELECT EXISTS (SELECT 1 FROM {Tag.__tablename__} WHERE entity_type = :t "
        "AND entity_id BETWEEN :low AND :high AND name = :n)"
    )
    for (entity_type, name), group in cleared.groupby(["entity_type", "name"], sort=False):
        ids = group["entity_id"].to_numpy(dtype=np.int64)
        bounds = {"t": entity_type, "n": name, "low": int(ids.min()), "high": int(ids.max())}
        if not session.execute(probe, bounds).scalar_one():
            continue
        values = ids.tolist()
        params = {"t": entity_type, "n": name, "now": now}
        params["ids"] = values if postgres else json.dumps(values)
        for statement in statements:
            session.execute(statement, params)


def _upsert_tags_sqlite(session: Session, tags: TagRows, now: datetime) -> None:
    """One upsert per row (insert, re-stamp or skip); history from a temporary trigger on a
    changed value, on this connection and for this call only, instead of a join with a stage."""
    replaced_at = sqlite_datetimes(pd.Series([pd.Timestamp(now)]))[0]
    conn = session.connection()
    if not conn.connection.driver_connection.in_transaction:
        # sqlite3 opens a transaction at the first INSERT: opened here, the trigger's creation is
        # part of the caller's transaction and a rollback takes it away too.
        conn.exec_driver_sql("BEGIN")
    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS temp.{HISTORY_TRIGGER}")
    conn.exec_driver_sql(
        f"CREATE TEMP TRIGGER {HISTORY_TRIGGER} AFTER UPDATE OF value ON {Tag.__tablename__} "
        "WHEN OLD.value <> NEW.value BEGIN "
        f"INSERT INTO {TagHistory.__tablename__} ({', '.join(TAG_COLUMNS)}, replaced_at) "
        f"VALUES ({', '.join('OLD.' + c for c in TAG_COLUMNS)}, '{replaced_at}'); END"
    )
    try:
        write_rows(session, _encoded(tags, "sqlite"))
    finally:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS temp.{HISTORY_TRIGGER}")


def _upsert_tags_postgres(session: Session, tags: TagRows, now: datetime) -> None:
    """A first run (no stored tag in range) COPYs straight into tags; otherwise a COPY into a
    stage, then one statement: a join with the stored tags keeps the rows that differ, which feed
    history, an UPDATE and an INSERT of new keys. Equal rows write no dead tuple and no WAL."""
    # The rows' entity range and names, spelled out: the stored tags' statistics lag a big run,
    # and without them the planner reads the whole tags table for every chunk.
    in_range = (
        "t.entity_type = ANY(:b_types) AND t.entity_id BETWEEN :b_low AND :b_high "
        "AND t.name = ANY(:b_names)"
    )
    entity_ids = tags.rows["entity_id"]
    bounds = {
        "b_types": sorted(tags.column("entity_type").unique().tolist()),
        "b_low": int(entity_ids.min()),
        "b_high": int(entity_ids.max()),
        "b_names": sorted(tags.column("name").unique().tolist()),
    }
    # Exact: no stored tag in the range with one of these names means every key is new.
    stored = session.execute(
        text(f"SELECT EXISTS (SELECT FROM {Tag.__tablename__} t WHERE {in_range})"), bounds
    ).scalar_one()
    if not stored:
        write_rows(session, _encoded(tags, "postgresql"))
        return
    # Hash joins of a million staged rows fit in memory instead of spilling to batches; the
    # caller's setting is back once the upsert is done.
    caller_work_mem = session.execute(text("SHOW work_mem")).scalar_one()
    session.execute(text("SELECT set_config('work_mem', '256MB', true)"))
    # The key and the value are staged; the shared payload columns travel as parameters.
    bound = {c: v for c, v in tags.shared.items() if c in TAG_COLUMNS[3:] and c != "value"}
    staged, source, params, binds = _bound_constants(session, Tag.__table__, TAG_COLUMNS, bound)
    frame = tags.rows.assign(**{c: tags.column(c) for c in staged if c not in tags.rows})
    _stage(session, Tag.__table__, "tag_stage", frame, staged)
    session.connection().exec_driver_sql("ANALYZE tag_stage")  # temp tables get no stats
    on_key = " AND ".join(f"t.{c} = s.{c}" for c in TAG_KEY) + f" AND {in_range}"
    cols = ", ".join(TAG_COLUMNS)
    payload = TAG_COLUMNS[3:]
    history_cols = f"{cols}, replaced_at"
    now_bind = bindparam("now", type_=TagHistory.__table__.c.replaced_at.type)
    incoming = ", ".join(f"{source[c]} AS {c}" for c in payload)
    stored_cols = ", ".join(f"t.{c} AS old_{c}" for c in payload)
    differs = (
        f"({', '.join('t.' + c for c in payload)}) IS DISTINCT FROM "
        f"({', '.join(source[c] for c in payload)})"
    )
    sets = ", ".join(f"{c} = j.{c}" for c in payload)
    key_match = " AND ".join(f"t.{c} = j.{c}" for c in TAG_KEY)
    session.execute(
        text(
            f"WITH j AS MATERIALIZED ("
            f"SELECT s.entity_type, s.entity_id, s.name, {incoming}, t.entity_id IS NOT NULL AS stored, "
            f"{stored_cols} FROM tag_stage s LEFT JOIN {Tag.__tablename__} t ON {on_key} "
            # Only rows to write are kept: a rerun's equal rows end here.
            f"WHERE t.entity_id IS NULL OR {differs}"
            f"), history AS ("
            f"INSERT INTO {TagHistory.__tablename__} ({history_cols}) "
            f"SELECT entity_type, entity_id, name, {', '.join('old_' + c for c in payload)}, :now "
            f"FROM j WHERE stored AND old_value <> value"
            f"), updated AS ("
            # The range again: the tags to update are read by index, not by a scan of them all.
            f"UPDATE {Tag.__tablename__} AS t SET {sets} FROM j "
            f"WHERE j.stored AND {key_match} AND {in_range}"
            f") INSERT INTO {Tag.__tablename__} ({cols}) SELECT {cols} FROM j WHERE NOT stored"
        ).bindparams(*binds, now_bind),
        {**params, **bounds, "now": now},
    )
    session.connection().exec_driver_sql("DROP TABLE tag_stage")
    session.execute(text("SELECT set_config('work_mem', :v, true)"), {"v": caller_work_mem})


def create_tasks(session: Session, specs: Iterable[TaskSpec], now: datetime) -> int:
    """Create each task unless one with its dedup key exists; returns how many were new."""
    specs = list(specs)
    if not specs:
        return 0
    # Column by column: a frame from one dict per task costs more than building the rows.
    stamps = {"status": "open", "created_at": now, "updated_at": now}
    values = {c: [getattr(s, c) for s in specs] for c in TASK_COLUMNS if c not in stamps}
    frame = pd.DataFrame({**values, **stamps})
    frame = frame[TASK_COLUMNS].drop_duplicates("dedup_key")
    shared = constant_columns(frame, [c for c in TASK_COLUMNS if c != "dedup_key"])
    staged, source, params, binds = _bound_constants(session, Task.__table__, TASK_COLUMNS, shared)
    _stage(session, Task.__table__, "task_stage", frame, staged)
    result = session.execute(
        text(
            f"INSERT INTO {Task.__tablename__} ({', '.join(TASK_COLUMNS)}) "
            f"SELECT {', '.join(source[c] for c in TASK_COLUMNS)} FROM task_stage s WHERE true "
            "ON CONFLICT (dedup_key) DO NOTHING"
        ).bindparams(*binds),
        params,
    )
    session.connection().exec_driver_sql("DROP TABLE task_stage")
    return result.rowcount


def encode_predictions(
    dialect: str, predictions: pd.DataFrame, shared: dict[str, Any] | None = None
) -> EncodedRows:
    """Prediction-log rows (entity_type, entity_id, model_name, model_version, score, source,
    request_id, predicted_at) encoded for ``dialect``'s bulk write (``log_predictions``);
    ``shared``: columns with one value for every row, given apart (else found in the frame)."""
    if shared is None:
        predictions = predictions.reindex(columns=PREDICTION_COLUMNS)
        # A batch shares its entity type, model, version, source and timestamp: written once,
        # not per row (the bulk write sends entity ids and scores alone).
        candidates = [c for c in PREDICTION_COLUMNS if c not in ("entity_id", "score")]
        shared = constant_columns(predictions, candidates)
    rows = predictions.drop(columns=list(shared), errors="ignore")
    return encode_rows(dialect, PredictionLog.__table__, rows, shared)


def log_predictions(session: Session, predictions: pd.DataFrame | EncodedRows) -> int:
    """Append prediction-log rows, given as a frame or encoded (``encode_predictions``)."""
    if isinstance(predictions, pd.DataFrame):
        if predictions.empty:
            return 0
        predictions = encode_predictions(session.get_bind().dialect.name, predictions)
    return write_rows(session, predictions)


def current_tags(session: Session, entity_type: str, entity_id: int) -> dict[str, Tag]:
    key = Tag.entity_type == entity_type, Tag.entity_id == entity_id
    return {t.name: t for t in session.scalars(select(Tag).where(*key))}


def tag_history(session: Session, entity_type: str, entity_id: int, name: str) -> list[TagHistory]:
    h = TagHistory
    key = h.entity_type == entity_type, h.entity_id == entity_id, h.name == name
    return list(session.scalars(select(h).where(*key).order_by(h.replaced_at, h.id)))


def open_tasks(
    session: Session, entity_type: str | None = None, entity_id: int | None = None
) -> list[Task]:
    query = select(Task).where(Task.status == "open")
    if entity_type is not None:
        query = query.where(Task.entity_type == entity_type)
    if entity_id is not None:
        query = query.where(Task.entity_id == entity_id)
    return list(session.scalars(query.order_by(Task.due_at)))


def changed_since(session: Session, table: str, since: datetime) -> list[int]:
    """Ids of rows of ``table`` updated (or created, for append-only tables) at or after ``since``."""
    model = ENTITY_MODELS[table]
    stamp = getattr(model, "updated_at", None) or model.created_at
    return list(session.scalars(select(model.id).where(stamp >= since).order_by(model.id)))


def read_table(session: Session, table: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A whole CRM table (or the named columns) as a DataFrame with ``pd.read_sql``'s dtypes, read
    through Arrow at C speed (``crm_predict.crm_store.arrow_io``)."""
    from crm_predict.crm_store.arrow_io import read_tables, to_frame

    return to_frame(read_tables(session, {table: columns})[table])


def counts(session: Session) -> dict[str, int]:
    """Row count per table, for summaries."""
    tables = list(ENTITY_MODELS) + ["tags", "tag_history", "tasks", "prediction_log"]
    return {t: session.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in tables}
