"""CSV import into the CRM store: every row validated (pydantic) before anything is written.

One file is one transaction: a bad row raises ``UserError`` naming the file, line and field, and
nothing is written. Import order follows the foreign keys: accounts → contacts → leads → deals →
activities, orders, tickets (``owner_id`` refers to existing users).

Idempotency: every entity except contacts has a required ``id`` (the CRM's id); a row whose id
exists updates that record — only the columns present in the file, so a partial file never blanks
the others — and importing the same file twice leaves the same rows.
Contacts are matched by ``id`` when given, else by normalised email (trimmed, lower case), else by
normalised phone (digits only, a leading ``00`` read as ``+``). Rows matching each other within the
file, or matching an existing contact, are merged instead of doubled: the first record wins and
the others' non-empty fields only fill its blanks (an existing contact's values are never
overwritten). The result reports how many rows were merged.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import Table, bindparam, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from crm_predict.errors import UserError
from crm_store.bulk import reset_id_sequences
from crm_store.models import Account, Activity, Contact, Deal, Lead, Order, Ticket, User

MAX_FIELD_CHARS = 10_000  # longer than any column; a longer value means a broken file
DEAL_STAGES = (
    "qualification",
    "needs_analysis",
    "proposal",
    "negotiation",
    "closed_won",
    "closed_lost",
)
ACTIVITY_TYPES = (
    "call",
    "meeting",
    "email",
    "site_visit",
    "pricing_page_view",
    "whitepaper_download",
    "trial_request",
    "demo",
    "email_open",
    "email_click",
    "app_visit",
    "coupon_use",
    "referral",
    "close_date_slip",
)


def _naive_utc(value: datetime | None) -> datetime | None:
    """Timestamps are naive UTC everywhere; aware input is converted."""
    if value is not None and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


Timestamp = Annotated[datetime, AfterValidator(_naive_utc)]
# Bounds of the columns (BIGINT ids, INTEGER counts): a bigger number is a clear field error, not
# a driver overflow after validation. Amounts are finite ("inf"/"nan" are refused).
Id = Annotated[int, Field(gt=0, le=2**63 - 1)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _text(n: int) -> Any:
    return Annotated[str, Field(max_length=n)]


class _Row(BaseModel):
    """Shared parsing: blank cells are missing values, text is trimmed, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_missing(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class AccountRow(_Row):
    id: Id
    name: _text(300)
    industry: _text(100) | None = None
    size_band: _text(50) | None = None
    region: _text(50) | None = None
    annual_revenue_band: _text(50) | None = None
    owner_id: Id | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class ContactRow(_Row):
    id: Id | None = None
    account_id: Id | None = None
    first_name: _text(200) | None = None
    last_name: _text(200) | None = None
    email: _text(320) | None = None
    phone: _text(50) | None = None
    role: _text(100) | None = None
    is_decision_maker: bool | None = None
    age_band: _text(20) | None = None
    gender: _text(20) | None = None
    region: _text(50) | None = None
    membership_level: Literal["bronze", "silver", "gold", "platinum"] | None = None
    points: Count | None = None
    signup_at: Timestamp | None = None
    owner_id: Id | None = None
    source: _text(100) | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError("not an email address")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> ContactRow:
        if self.email is None and self.phone is None:
            raise ValueError("a contact needs an email or a phone")
        return self


class LeadRow(_Row):
    id: Id
    contact_id: Id | None = None
    account_id: Id | None = None
    source: _text(100) | None = None
    region: _text(50) | None = None
    owner_id: Id | None = None
    status: Literal["new", "working", "converted", "disqualified"] | None = None
    stage: _text(50) | None = None
    created_at: Timestamp
    first_contacted_at: Timestamp | None = None
    converted_at: Timestamp | None = None
    updated_at: Timestamp | None = None

    @model_validator(mode="after")
    def _ordered(self) -> LeadRow:
        if self.converted_at is not None and self.converted_at < self.created_at:
            raise ValueError("converted_at is before created_at")
        return self


class DealRow(_Row):
    id: Id
    account_id: Id | None = None
    contact_id: Id | None = None
    lead_id: Id | None = None
    owner_id: Id | None = None
    name: _text(300) | None = None
    amount: Amount | None = None
    stage: Literal[DEAL_STAGES]  # type: ignore[valid-type]
    stage_entered_at: Timestamp | None = None
    expected_close_at: Timestamp | None = None
    close_date_slips: Count | None = None
    created_at: Timestamp
    closed_at: Timestamp | None = None
    outcome: Literal["won", "lost"] | None = None
    updated_at: Timestamp | None = None

    @model_validator(mode="after")
    def _closed_consistently(self) -> DealRow:
        if (self.outcome is None) != (self.closed_at is None):
            raise ValueError("outcome and closed_at go together (both set or both empty)")
        if self.closed_at is not None and self.closed_at < self.created_at:
            raise ValueError("closed_at is before created_at")
        return self


class ActivityRow(_Row):
    id: Id
    contact_id: Id | None = None
    lead_id: Id | None = None
    deal_id: Id | None = None
    type: Literal[ACTIVITY_TYPES]  # type: ignore[valid-type]
    channel: _text(30) | None = None
    occurred_at: Timestamp
    responded: bool | None = None
    created_at: Timestamp | None = None


class OrderRow(_Row):
    id: Id
    contact_id: Id
    ordered_at: Timestamp
    amount: Amount
    items: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    channel: _text(30) | None = None
    created_at: Timestamp | None = None


class TicketRow(_Row):
    id: Id
    contact_id: Id | None = None
    account_id: Id | None = None
    deal_id: Id | None = None
    opened_at: Timestamp
    closed_at: Timestamp | None = None
    priority: Literal["low", "medium", "high", "urgent"] | None = None
    sentiment: Annotated[float, Field(ge=-1, le=1)] | None = None
    subject: _text(MAX_FIELD_CHARS) | None = None


@dataclass(frozen=True)
class EntitySpec:
    row: type[_Row]
    model: type
    references: dict[str, type]  # column → referenced model
    defaults: dict[str, str]  # column → column it defaults to when absent ("now" = import time)


ENTITIES: dict[str, EntitySpec] = {
    "accounts": EntitySpec(
        AccountRow, Account, {"owner_id": User}, {"created_at": "now", "updated_at": "now"}
    ),
    "contacts": EntitySpec(
        ContactRow,
        Contact,
        {"account_id": Account, "owner_id": User},
        {"created_at": "now", "updated_at": "now"},
    ),
    "leads": EntitySpec(
        LeadRow,
        Lead,
        {"contact_id": Contact, "account_id": Account, "owner_id": User},
        {"updated_at": "now"},
    ),
    "deals": EntitySpec(
        DealRow,
        Deal,
        {"account_id": Account, "contact_id": Contact, "lead_id": Lead, "owner_id": User},
        {"stage_entered_at": "created_at", "updated_at": "now"},
    ),
    "activities": EntitySpec(
        ActivityRow,
        Activity,
        {"contact_id": Contact, "lead_id": Lead, "deal_id": Deal},
        {"created_at": "occurred_at"},
    ),
    "orders": EntitySpec(OrderRow, Order, {"contact_id": Contact}, {"created_at": "ordered_at"}),
    "tickets": EntitySpec(
        TicketRow, Ticket, {"contact_id": Contact, "account_id": Account, "deal_id": Deal}, {}
    ),
}
# Columns the database requires that a file may leave out: filled on insert only.
_INSERT_DEFAULTS = {
    "leads": {"status": "new"},
    "deals": {"close_date_slips": 0},
    "orders": {"items": 1},
}


@dataclass
class ImportResult:
    """What one file did to the store."""

    entity: str
    file: str
    rows: int
    inserted: int
    updated: int
    merged: int = 0


@dataclass
class _Parsed:
    line: int
    row: _Row


def import_csv(
    session: Session, entity: str, path: Path | str, now: datetime | None = None
) -> ImportResult:
    """Validate every row of ``path`` and upsert them as ``entity``; the caller commits (one
    transaction per file) and rolls back on error."""
    spec = ENTITIES.get(entity)
    if spec is None:
        raise UserError(f"unknown entity {entity!r}; choose one of: {', '.join(ENTITIES)}")
    path = Path(path)
    now = now or datetime.now(UTC).replace(tzinfo=None)
    header, parsed = _read(path, spec)
    _check_duplicate_ids(path, parsed)
    _check_references(session, path, spec, parsed)
    if entity == "contacts":
        result = _import_contacts(session, path, header, parsed, now)
    else:
        result = _upsert_by_id(session, entity, spec, path, header, parsed, now)
    reset_id_sequences(session)
    return result


# --- reading and validation ------------------------------------------------------------------


def _where(path: Path, line: int, field: str | None = None) -> str:
    return f"{path}, line {line}" + (f", field '{field}'" if field else "")


def _read(path: Path, spec: EntitySpec) -> tuple[list[str], list[_Parsed]]:
    """Decode, parse and validate the whole file; raises UserError on the first problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}, line {line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    if not content.strip():
        raise UserError(f"{path}: the file is empty (expected a header row)")
    if "\x00" in content:
        line = content[: content.index("\x00")].count("\n") + 1
        raise UserError(f"{path}, line {line}: contains a NUL byte; is this really a CSV file?")

    fields = spec.row.model_fields
    required = [name for name, info in fields.items() if info.is_required()]
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
        problems = []
        unknown = [h for h in header if h not in fields]
        missing = [r for r in required if r not in header]
        doubled = sorted({h for h in header if header.count(h) > 1})
        if missing:
            problems.append(f"missing required column(s): {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s): {', '.join(map(repr, unknown))}")
        if doubled:
            problems.append(f"column(s) given twice: {', '.join(doubled)}")
        if spec.row is ContactRow and not {"email", "phone"} & set(header):
            problems.append("a contacts file needs an email or a phone column")
        if problems:
            raise UserError(
                f"{path}, line 1 (header): {'; '.join(problems)}. "
                f"Columns for this entity: {', '.join(fields)}"
            )
        parsed: list[_Parsed] = []
        line = reader.line_num + 1
        for values in reader:
            start, line = line, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue  # blank lines between records are harmless
            if len(values) != len(header):
                raise UserError(
                    f"{_where(path, start)}: {len(values)} values but the header has "
                    f"{len(header)} columns"
                )
            for name, value in zip(header, values, strict=True):
                if len(value) > MAX_FIELD_CHARS:
                    raise UserError(
                        f"{_where(path, start, name)}: value is {len(value):,} characters long "
                        f"(at most {MAX_FIELD_CHARS:,})"
                    )
            record = dict(zip(header, values, strict=True))
            try:
                parsed.append(_Parsed(start, spec.row.model_validate(record)))
            except ValidationError as exc:
                raise UserError(_describe(path, start, exc, record)) from None
    except csv.Error as exc:
        raise UserError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    if not parsed:
        raise UserError(f"{path}: the file has a header but no data rows")
    return header, parsed


def _describe(path: Path, line: int, exc: ValidationError, record: dict[str, str]) -> str:
    """The first validation error as 'file, line N, field 'x': message (got '…')'."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else None
    message = error["msg"].removeprefix("Value error, ")
    if field is not None and field in record:
        shown = record[field] if len(record[field]) <= 60 else record[field][:57] + "..."
        return f"{_where(path, line, field)}: {message} (got {shown!r})"
    return f"{_where(path, line)}: {message}"


def _check_duplicate_ids(path: Path, parsed: list[_Parsed]) -> None:
    first_line: dict[int, int] = {}
    for item in parsed:
        row_id = getattr(item.row, "id", None)
        if row_id is None:
            continue
        if row_id in first_line:
            raise UserError(
                f"{_where(path, item.line, 'id')}: duplicate id {row_id} "
                f"(first on line {first_line[row_id]})"
            )
        first_line[row_id] = item.line


def _existing_ids(session: Session, table: Table, ids: set[int]) -> set[int]:
    found: set[int] = set()
    wanted = sorted(ids)
    for start in range(0, len(wanted), 5_000):
        chunk = wanted[start : start + 5_000]
        found.update(session.scalars(select(table.c.id).where(table.c.id.in_(chunk))))
    return found


def _check_references(
    session: Session, path: Path, spec: EntitySpec, parsed: list[_Parsed]
) -> None:
    """Every foreign key must name an existing row (import parents first)."""
    for column, target in spec.references.items():
        wanted = {v for item in parsed if (v := getattr(item.row, column, None)) is not None}
        if not wanted:
            continue
        missing = wanted - _existing_ids(session, target.__table__, wanted)
        if missing:
            item = next(i for i in parsed if getattr(i.row, column, None) in missing)
            raise UserError(
                f"{_where(path, item.line, column)}: no {target.__tablename__} row with id "
                f"{getattr(item.row, column)} (import {target.__tablename__} first)"
            )


# --- writing ---------------------------------------------------------------------------------


def _values(row: _Row, header: list[str], spec: EntitySpec, now: datetime) -> dict[str, Any]:
    """The row's columns from the file plus defaults for absent ones (insert-time values)."""
    values = {name: getattr(row, name) for name in header}
    for column, source in spec.defaults.items():
        if values.get(column) is None:
            values[column] = now if source == "now" else values.get(source, getattr(row, source))
    return values


def _dialect_insert(session: Session, table: Table):
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return pg_insert(table)
    if name == "sqlite":
        return sqlite_insert(table)
    raise UserError(f"CSV import supports SQLite and PostgreSQL stores, not {name}")


def _upsert_by_id(
    session: Session,
    entity: str,
    spec: EntitySpec,
    path: Path,
    header: list[str],
    parsed: list[_Parsed],
    now: datetime,
) -> ImportResult:
    """INSERT … ON CONFLICT (id) DO UPDATE of the file's columns: re-imports update in place."""
    table = spec.model.__table__
    rows = []
    for item in parsed:
        values = _values(item.row, header, spec, now)
        for column, default in _INSERT_DEFAULTS.get(entity, {}).items():
            if values.get(column) is None:
                values[column] = default
        rows.append(values)
    columns = list(rows[0])
    existing = _existing_ids(session, table, {r["id"] for r in rows})
    # Only what the file says is updated (plus the touch time); absent columns keep their values.
    update_cols = [
        c for c in columns if c != "id" and (c in header or spec.defaults.get(c) == "now")
    ]
    stmt = _dialect_insert(session, table)
    stmt = (
        stmt.on_conflict_do_update(
            index_elements=["id"], set_={c: stmt.excluded[c] for c in update_cols}
        )
        if update_cols
        else stmt.on_conflict_do_nothing(index_elements=["id"])
    )
    for start in range(0, len(rows), 10_000):
        session.execute(stmt, rows[start : start + 10_000])
    return ImportResult(entity, str(path), len(rows), len(rows) - len(existing), len(existing))


def normalise_email(value: str | None) -> str | None:
    """Trimmed, lower-case email (the contact de-duplication key)."""
    if value is None or pd.isna(value):
        return None
    value = str(value).strip().lower()
    return value or None


def normalise_phone(value: str | None) -> str | None:
    """Digits only, a leading international ``00`` read as ``+`` (so '+44 20…' == '004420…')."""
    if value is None or pd.isna(value):
        return None
    digits = re.sub(r"\D", "", str(value))
    digits = digits[2:] if digits.startswith("00") else digits
    return digits or None


def _import_contacts(
    session: Session, path: Path, header: list[str], parsed: list[_Parsed], now: datetime
) -> ImportResult:
    """Merge rows that are the same person (id, email, phone), fill blanks of matches, insert the
    rest."""
    spec = ENTITIES["contacts"]
    file_cols = [c for c in header if c != "id"]
    # Union rows sharing an id, email or phone key (first row of a group is its representative).
    parent = list(range(len(parsed)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[tuple[str, Any], int] = {}
    for i, item in enumerate(parsed):
        row = item.row
        for key in (("email", normalise_email(row.email)), ("phone", normalise_phone(row.phone))):
            if key[1] is None:
                continue
            if key in seen:
                a, b = root(seen[key]), root(i)
                parent[max(a, b)] = min(a, b)
            else:
                seen[key] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(parsed)):
        groups.setdefault(root(i), []).append(i)

    records = []
    for members in groups.values():
        merged = {c: getattr(parsed[members[0]].row, c) for c in header}
        for i in members[1:]:
            for c in header:
                if merged[c] is None:
                    merged[c] = getattr(parsed[i].row, c)
        if merged.get("email") is not None:
            merged["email"] = merged["email"].lower()
        records.append(merged)
    merged_rows = len(parsed) - len(records)

    # Match merged records against the store: id first, then email, then phone.
    table = Contact.__table__
    stored = pd.read_sql(select(table.c.id, table.c.email, table.c.phone), session.connection())
    by_email = {
        k: i for k, i in zip(stored["email"].map(normalise_email), stored["id"], strict=True) if k
    }
    by_phone = {
        k: i for k, i in zip(stored["phone"].map(normalise_phone), stored["id"], strict=True) if k
    }
    stored_ids = set(stored["id"].tolist())
    matches: dict[int, dict[str, Any]] = {}
    new: list[dict[str, Any]] = []
    for record in records:
        found = record.get("id") if record.get("id") in stored_ids else None
        if found is None:
            found = by_email.get(normalise_email(record.get("email"))) or by_phone.get(
                normalise_phone(record.get("phone"))
            )
            if found is not None:
                merged_rows += 1
        if found is None:
            new.append(record)
        elif found in matches:  # two file records resolve to one stored contact
            merged_rows += 1
            for c in file_cols:
                if matches[found][c] is None:
                    matches[found][c] = record[c]
        else:
            matches[found] = {c: record[c] for c in file_cols}

    inserted = 0
    if new:
        rows = []
        for record in new:
            values = {c: record.get(c) for c in header}
            for column, source in spec.defaults.items():
                if values.get(column) is None:
                    values[column] = now if source == "now" else values.get(source)
            rows.append(values)
        with_id = [r for r in rows if r.get("id") is not None]
        without_id = [
            {k: v for k, v in r.items() if k != "id"} for r in rows if r.get("id") is None
        ]
        for batch in (with_id, without_id):
            for start in range(0, len(batch), 10_000):
                session.execute(table.insert(), batch[start : start + 10_000])
        inserted = len(rows)

    updated = 0
    fill_cols = [c for c in file_cols if c not in ("created_at", "updated_at")]
    if matches and fill_cols:
        # Fill blanks only: COALESCE keeps every stored value; touch updated_at only on change.
        # Explicit casts: PostgreSQL cannot infer a parameter's type from "IS NOT NULL".
        dialect = session.get_bind().dialect
        new = {c: f"CAST(:{c} AS {table.c[c].type.compile(dialect=dialect)})" for c in fill_cols}
        changed = " OR ".join(f"({c} IS NULL AND {new[c]} IS NOT NULL)" for c in fill_cols)
        sets = ", ".join(f"{c} = COALESCE({c}, {new[c]})" for c in fill_cols)
        params = [
            {"_id": cid, "_now": now, **{c: v[c] for c in fill_cols}} for cid, v in matches.items()
        ]
        stmt = text(
            f"UPDATE contacts SET {sets}, "
            f"updated_at = CASE WHEN {changed} THEN :_now ELSE updated_at END WHERE id = :_id"
        ).bindparams(
            # Typed, so datetimes are stored in SQLAlchemy's format whatever sqlite3 adapters
            # another library registered (Feast registers an epoch adapter for datetime).
            bindparam("_now", type_=table.c.updated_at.type),
            *(bindparam(c, type_=table.c[c].type) for c in fill_cols),
        )
        for start in range(0, len(params), 10_000):
            session.execute(stmt, params[start : start + 10_000])
        updated = len(matches)
    return ImportResult("contacts", str(path), len(parsed), inserted, updated, merged_rows)
