"""Tags, tasks and the prediction log as CSV, each entity's external id beside its internal one, so
results load back into the source CRM (``crm-predict export tags|tasks|predictions``).

The store keeps integer entity ids on these tables (the hot paths); the external id comes from a
left join of the entity table the row's ``entity_type`` names (lead → leads, deal → deals,
contact/customer → contacts, account → accounts); a row whose entity has none gets an empty cell.
Rows are streamed (``yield_per``: a server-side cursor on PostgreSQL) and written as they come, to
a temporary file beside the target that replaces it only when complete: a failed export leaves no
file and an older one untouched. Values are written as the store holds them (the csv module:
``None`` → empty cell; integers stay integers, which pandas chunks would turn into floats
wherever a chunk has a blank).
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from crm_predict.crm_store.models import (
    Account,
    Contact,
    Deal,
    Lead,
    PredictionLog,
    Tag,
    Task,
    User,
)
from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session, aliased

from crm_predict.core.errors import UserError

ENTITY_TABLES = {  # tag/task/prediction-log entity_type → the table holding its external id
    "lead": Lead,
    "deal": Deal,
    "contact": Contact,
    "customer": Contact,
    "account": Account,
}
CHUNK_ROWS = 50_000
TAG_COLUMNS = ("name", "value", "model_name", "model_version", "run_id", "scored_at")


def check_entity_type(entity_type: str | None) -> None:
    """A UserError for an entity type no tag, task or log row can have."""
    if entity_type is not None and entity_type not in ENTITY_TABLES:
        known = ", ".join(ENTITY_TABLES)
        raise UserError(f"unknown entity type {entity_type!r}; known: {known}")


def check_target(out: Path) -> None:
    """A UserError when ``out`` cannot be written (missing folder, a folder itself)."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"cannot write {str(out)!r}: it is a directory")
    parent = out.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {str(out)!r}: folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {str(out)!r}: folder {str(parent)!r} is not writable")


def export_tags(
    session: Session,
    out: Path,
    *,
    entity_type: str | None = None,
    name: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Current tags (entity type, id, external id, name, value, model, run, scored_at) → CSV, in
    key order; returns the row count."""
    check_entity_type(entity_type)
    external_id = _external_id()
    columns = [Tag.entity_type, Tag.entity_id, external_id, *(getattr(Tag, c) for c in TAG_COLUMNS)]
    query = _joined(select(*columns), Tag.entity_type, Tag.entity_id)
    if entity_type is not None:
        query = query.where(Tag.entity_type == entity_type)
    if name is not None:
        query = query.where(Tag.name == name)
    query = query.order_by(Tag.entity_type, Tag.entity_id, Tag.name)
    return _write(session, query, out, chunk_rows)


def export_tasks(
    session: Session,
    out: Path,
    *,
    entity_type: str | None = None,
    status: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Every task column, plus the entity's and the owner's external ids → CSV, by task id."""
    check_entity_type(entity_type)
    owner = aliased(User, name="owner")
    columns: list[ColumnElement] = []
    for column in Task.__table__.columns:
        columns.append(getattr(Task, column.key))
        if column.key == "entity_id":
            columns.append(_external_id())
        elif column.key == "owner_id":
            columns.append(owner.external_id.label("owner_external_id"))
    query = _joined(select(*columns), Task.entity_type, Task.entity_id)
    query = query.outerjoin(owner, owner.id == Task.owner_id)
    if entity_type is not None:
        query = query.where(Task.entity_type == entity_type)
    if status is not None:
        query = query.where(Task.status == status)
    return _write(session, query.order_by(Task.id), out, chunk_rows)


def export_predictions(
    session: Session,
    out: Path,
    *,
    entity_type: str | None = None,
    model_name: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """The prediction log with the entities' external ids → CSV, in the store's order (the log
    has no id index on PostgreSQL: sorting millions of rows would buy nothing a reader needs)."""
    check_entity_type(entity_type)
    columns: list[ColumnElement] = []
    for column in PredictionLog.__table__.columns:
        columns.append(getattr(PredictionLog, column.key))
        if column.key == "entity_id":
            columns.append(_external_id())
    query = _joined(select(*columns), PredictionLog.entity_type, PredictionLog.entity_id)
    if entity_type is not None:
        query = query.where(PredictionLog.entity_type == entity_type)
    if model_name is not None:
        query = query.where(PredictionLog.model_name == model_name)
    return _write(session, query, out, chunk_rows)


# --- the join and the write -----------------------------------------------------------------------

ENTITY_TYPES_OF: dict[type, tuple[str, ...]] = {}  # entity table → the entity types it holds
for _type, _table in ENTITY_TABLES.items():
    ENTITY_TYPES_OF[_table] = (*ENTITY_TYPES_OF.get(_table, ()), _type)
ENTITY_ALIASES = {t: aliased(t, name=f"entity_{t.__tablename__}") for t in ENTITY_TYPES_OF}


def _external_id() -> ColumnElement:
    """The external id of the row's entity: at most one of the left-joined tables matches."""
    return func.coalesce(*(a.external_id for a in ENTITY_ALIASES.values())).label(
        "entity_external_id"
    )


def _joined(query: Select, entity_type: ColumnElement, entity_id: ColumnElement) -> Select:
    """``query`` left-joined to each entity table on (the entity types it holds, id)."""
    for table, alias in ENTITY_ALIASES.items():
        types = ENTITY_TYPES_OF[table]
        kind = entity_type == types[0] if len(types) == 1 else entity_type.in_(types)
        query = query.outerjoin(alias, and_(kind, alias.id == entity_id))
    return query


def _write(session: Session, query: Select, out: Path, chunk_rows: int) -> int:
    """Stream ``query`` into ``out`` (header = its column names) through a temporary file."""
    out = Path(out)
    check_target(out)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    except OSError as exc:
        raise UserError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    rows = 0
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            result = session.execute(query.execution_options(yield_per=chunk_rows))
            writer.writerow(result.keys())
            for part in result.partitions():
                writer.writerows(part)
                rows += len(part)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return rows
