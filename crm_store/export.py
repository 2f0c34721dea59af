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
from typing import Any

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
    query = _query(Tag, entity_type=entity_type, name=name)
    return _write(
        session, query.order_by(Tag.entity_type, Tag.entity_id, Tag.name), out, chunk_rows
    )


def export_tasks(
    session: Session,
    out: Path,
    *,
    entity_type: str | None = None,
    status: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Every task column, plus the entity's and the owner's external ids → CSV, by task id."""
    owner = aliased(User, name="owner")
    query = _query(Task, owner, entity_type=entity_type, status=status)
    query = query.outerjoin(owner, owner.id == Task.owner_id)
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
    query = _query(PredictionLog, entity_type=entity_type, model_name=model_name)
    return _write(session, query, out, chunk_rows)


# --- the join and the write -----------------------------------------------------------------------

# Entity table → the entity types it holds, and its alias in the joins.
ENTITY_TYPES_OF = {
    table: tuple(t for t, of in ENTITY_TABLES.items() if of is table)
    for table in dict.fromkeys(ENTITY_TABLES.values())
}
ENTITY_ALIASES = {t: aliased(t, name=f"entity_{t.__tablename__}") for t in ENTITY_TYPES_OF}


def _query(model: type, owner: Any = None, **filters: str | None) -> Select:
    """Every column of ``model`` with the entity's external id after ``entity_id`` (and the
    owner's after ``owner_id``), left-joined to each entity table on (the entity types it holds,
    id); rows where each given filter column equals its value."""
    check_entity_type(filters.get("entity_type"))
    columns: list[ColumnElement] = []
    for column in model.__table__.columns:
        columns.append(getattr(model, column.key))
        if column.key == "entity_id":
            # At most one of the left-joined tables matches.
            external = func.coalesce(*(a.external_id for a in ENTITY_ALIASES.values()))
            columns.append(external.label("entity_external_id"))
        elif column.key == "owner_id" and owner is not None:
            columns.append(owner.external_id.label("owner_external_id"))
    query = select(*columns)
    for table, alias in ENTITY_ALIASES.items():
        types = ENTITY_TYPES_OF[table]
        kind = model.entity_type == types[0] if len(types) == 1 else model.entity_type.in_(types)
        query = query.outerjoin(alias, and_(kind, alias.id == model.entity_id))
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(model, name) == value)
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
