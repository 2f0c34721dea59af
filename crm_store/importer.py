"""Import into the CRM store through a mapping: one path for CSV exports and the demo generator.

A run (``Importer``) takes one frame per entity in ``mapping.ENTITY_ORDER`` (parents first) and,
per frame: maps source columns to store fields, applies value maps and derived fields, converts
and checks every value (vectorised: a million activities take seconds), resolves references
(files name each other by the source CRM's ids, ``external_id``), then inserts new rows (the
store assigns the integer ``id``) and updates existing ones. The caller commits once, so a run
is one transaction: the first bad value raises ``UserError`` naming the file, line, column and
mapping key, and nothing is written.

Re-importing is idempotent: a row whose external id is stored updates that record, only the
fields the mapping fills and only where a value changed (the result counts exactly those rows).
Contacts are also matched by normalised email (trimmed, lower case) and phone (digits only, a
leading ``00`` read as ``+``), against each other and the store, alternates included; a merge
keeps the first record's values, fills its blanks from the others and keeps their other emails
and phones as alternates. A deal's stage, new or changed, writes a stage-history row.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from crm_predict.crm_store.bulk import insert_frame, reset_id_sequences
from crm_predict.crm_store.mapping import (
    ENTITY_ORDER,
    OTHER_CATEGORY,
    EntityMap,
    Mapping,
    identity_mapping,
)
from crm_predict.crm_store.models import ENTITY_MODELS, MESSAGE_CHANNELS, MESSAGE_DIRECTIONS
from sqlalchemy import Boolean, DateTime, Float, Integer, String, Table, bindparam, select, update
from sqlalchemy.orm import Session

from crm_predict.core.errors import UserError
from crm_predict.core.messages import INTENTS, LANGUAGES, SENTIMENTS
from crm_predict.core.tickets import ticket_priority

MAX_FIELD_CHARS = 10_000  # longer than any column; a longer value means a broken file
# Foreign keys: field → entity it names (by the source CRM's id).
REFERENCES = {
    "account_id": "accounts",
    "contact_id": "contacts",
    "lead_id": "leads",
    "deal_id": "deals",
    "ticket_id": "tickets",
    "owner_id": "users",
    "manager_id": "users",
}
# Fields a row must have (after derivations and defaults).
REQUIRED = {
    "users": ("name",),
    "accounts": ("name",),
    "leads": ("created_at",),
    "deals": ("stage", "created_at"),
    "deal_stage_history": ("deal_id", "stage", "entered_at"),
    "activities": ("type", "occurred_at"),
    "orders": ("contact_id", "ordered_at", "amount"),
    "tickets": ("opened_at",),
    "messages": ("channel", "direction", "sent_at", "text"),
}
# Field → field (or "now", the import time) it defaults to when empty.
DEFAULTS = {
    "accounts": {"created_at": "now", "updated_at": "now"},
    "contacts": {"created_at": "now", "updated_at": "now"},
    "leads": {"updated_at": "now", "status": "new"},
    "deals": {"stage_entered_at": "created_at", "updated_at": "now", "close_date_slips": 0},
    "activities": {"created_at": "occurred_at"},
    "orders": {"created_at": "ordered_at", "items": 1},
    "messages": {"created_at": "sent_at"},
}
# Fields holding one of a fixed vocabulary (matched trimmed and case-blind).
VOCABULARIES = {
    "messages": {
        "channel": MESSAGE_CHANNELS,
        "direction": MESSAGE_DIRECTIONS,
        "language": LANGUAGES,
        "intent": INTENTS,
        "sentiment": SENTIMENTS,
    },
}
# Bounds beyond the column type's: counts and amounts are not negative.
LOWER_BOUNDS = {"points": 0, "items": 1, "close_date_slips": 0, "amount": 0}
SENTIMENT_RANGE = (-1.0, 1.0)
# Fields the store fills itself, never from a file.
_NOT_MAPPED = {"id", "category", "alternate_emails", "alternate_phones"}
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "1.0", "x"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "0.0"})


@dataclass
class ImportResult:
    """What one file did to the store."""

    entity: str
    file: str
    rows: int
    inserted: int
    updated: int
    merged: int = 0
    stage_changes: int = 0  # deals: stage-history rows written
    owners_assigned: int = 0  # leads: new leads given a rep of their region
    uncategorised: dict[str, int] = field(default_factory=dict)  # activities: type → rows
    skipped_columns: list[str] = field(default_factory=list)  # mapped, not in the file

    def describe(self) -> str:
        parts = [
            f"{self.entity}: {self.rows:,} rows read, {self.inserted:,} inserted, "
            f"{self.updated:,} updated, {self.merged:,} merged as duplicates"
        ]
        if self.stage_changes:
            parts.append(f"{self.stage_changes:,} stage changes recorded")
        if self.owners_assigned:
            parts.append(f"{self.owners_assigned:,} new leads assigned an owner by region")
        if self.skipped_columns:
            parts.append(f"columns not in the file (fields left empty): {', '.join(self.skipped_columns)}")  # fmt: skip
        if self.uncategorised:
            top = ", ".join(f"{t} ({n:,})" for t, n in list(self.uncategorised.items())[:5])
            parts.append(f"activity types in no category (counted as other): {top}")
        return "; ".join(parts)


# --- where a value came from -----------------------------------------------------------------


@dataclass
class Source:
    """A frame's origin, for messages: a CSV file (with each record's first line) or a frame."""

    name: str
    lines: np.ndarray | None = None  # physical line each data row starts on (quotes span lines)

    def line(self, position: int) -> str:
        """'line N' of the record at ``position`` (0 = first data row)."""
        if self.lines is None:
            return f"row {position + 1}"
        return f"line {self.lines[position]}"


@dataclass
class _Frame:
    """An entity's rows as store fields, with where each field came from."""

    entity: str
    source: Source
    data: pd.DataFrame
    origin: dict[str, tuple[str | None, str]]  # field → (source column, mapping key)
    defaults: dict[str, Any] = field(default_factory=dict)  # insert-time values of empty fields
    skipped: list[str] = field(default_factory=list)  # mapped columns the file lacks

    def fail(self, field_name: str, positions: np.ndarray | list[int], message: str) -> UserError:
        position = int(np.asarray(positions)[0])
        column, key = self.origin.get(field_name, (None, f"entities.{self.entity}"))
        where = f"{self.source.name}, {self.source.line(position)}"
        if column is not None:
            where += f", column {column!r}"
        return UserError(f"{where} ({key}): {message}")

    def shown(self, raw: pd.Series, position: int) -> str:
        value = str(raw.iloc[position])
        return repr(value if len(value) <= 60 else value[:57] + "...")

    def check(self, field_name: str, bad, message: str, got: pd.Series | None = None) -> None:
        """Refuse the first row where ``bad`` holds, showing its value of ``got``."""
        bad = bad.fillna(False).to_numpy(dtype=bool) if isinstance(bad, pd.Series) else bad
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            if got is not None:
                message += f" (got {self.shown(got, position)})"
            raise self.fail(field_name, [position], message)


# --- reading files ---------------------------------------------------------------------------


def read_csv(path: Path, delimiter: str = ",") -> tuple[pd.DataFrame, Source]:
    """Every cell as text (blank = None), after checks that make a broken file a clear message."""
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
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    rows, lines = [], []
    try:
        header = [h.strip() for h in next(reader)]
        line = reader.line_num + 1
        for values in reader:
            start, line = line, reader.line_num + 1
            if len(values) != len(header):
                if not any(v.strip() for v in values):
                    continue  # blank lines between records are harmless
                raise UserError(
                    f"{path}, line {start}: {len(values)} values but the header has "
                    f"{len(header)} columns"
                )
            rows.append(values)
            lines.append(start)
    except csv.Error as exc:
        raise UserError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    doubled = sorted({h for h in header if header.count(h) > 1})
    if doubled:
        raise UserError(f"{path}, line 1 (header): column(s) given twice: {', '.join(doubled)}")
    if not rows:
        raise UserError(f"{path}: the file has a header but no data rows")
    columns = list(zip(*rows, strict=True))
    frame = pd.DataFrame({h: _cleaned(pd.Series(c, dtype=object)) for h, c in zip(header, columns, strict=True)})  # fmt: skip
    return frame, Source(str(path), np.asarray(lines))


# --- the run ---------------------------------------------------------------------------------


class Importer:
    """One import run over a session: frames in entity order, one transaction (the caller's)."""

    def __init__(self, session: Session, mapping: Mapping, now: datetime | None = None):
        self.session = session
        self.mapping = mapping
        self.now = now or datetime.now(UTC).replace(tzinfo=None)
        self.dialect = session.get_bind().dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise UserError(f"import supports SQLite and PostgreSQL stores, not {self.dialect}")
        self._keys: dict[str, pd.Series] = {}  # entity → internal id by external id
        self._next_id: dict[str, int] = {}
        self.results: list[ImportResult] = []

    # -- entry points --

    def add(self, entity: str, raw: pd.DataFrame, source: Source) -> ImportResult:
        """Map, check and write one entity's rows (``raw``: text cells, or typed columns)."""
        emap = self._entity_map(entity)
        frame = self._mapped(entity, emap, raw, source)
        self._convert(frame)
        self._entity_rules(frame)
        self._defaults(frame)
        self._required(frame)
        self._unique_external_ids(frame)
        # A reference to the same entity (a user's manager) may name a row of this very frame:
        # resolved once the frame's rows are in.
        own = [c for c in frame.data.columns if REFERENCES.get(c) == entity]
        deferred = frame.data[own]
        frame.data = frame.data.drop(columns=own)
        self._resolve(frame)
        write = {"contacts": self._write_contacts, "deal_stage_history": self._write_history}
        result = write.get(entity, self._write)(frame)
        result.skipped_columns = frame.skipped
        if own:
            self._link_own(frame, deferred)
        self.results.append(result)
        return result

    def _link_own(self, frame: _Frame, deferred: pd.DataFrame) -> None:
        if "external_id" not in frame.data:
            raise UserError(f"{frame.source.name} (entities.{frame.entity}.columns): references to {frame.entity} need an external_id column")  # fmt: skip
        resolved = _Frame(frame.entity, frame.source, deferred.copy(), frame.origin)
        self._resolve(resolved)
        row_ids, found = self.internal_ids(frame.entity, frame.data["external_id"])
        changed = self._changed(frame.entity, resolved.data[found], row_ids[found])
        self._update(frame.entity, changed)

    def finish(self) -> list[ImportResult]:
        reset_id_sequences(self.session)
        return self.results

    def _entity_map(self, entity: str) -> EntityMap:
        _check_entity(entity)
        emap = self.mapping.entities.get(entity)
        if emap is None:
            raise UserError(f"the mapping {self.mapping.name!r} has no entities.{entity}")
        return emap

    # -- mapping --

    def _mapped(self, entity: str, emap: EntityMap, raw: pd.DataFrame, source: Source) -> _Frame:
        table = _table(entity)
        fields = [c for c in _names(table) if c not in _NOT_MAPPED]
        key = f"entities.{entity}"
        unknown = [f for f in [*emap.columns, *emap.derive] if f not in fields]
        if unknown:
            raise UserError(
                f"{source.name} ({key}.columns): unknown field(s) {', '.join(map(repr, unknown))}"
                f" for {entity}; fields: {', '.join(fields)}"
            )
        columns = dict(emap.columns)
        if emap.same_names:
            named = {("external_id" if c == "id" else c): c for c in raw.columns}
            columns = {f: c for f, c in named.items() if f in fields} | columns
        columns = {f: c for f, c in columns.items() if c not in emap.exclude}
        missing = {f: c for f, c in columns.items() if c not in raw.columns}
        skipped = list(missing.values()) if self.mapping.missing_columns == "skip" else []
        if skipped:
            columns = {f: c for f, c in columns.items() if f not in missing}
        elif missing:
            field_name, column = next(iter(missing.items()))
            raise UserError(
                f"{source.name}, line 1 (header) ({key}.columns.{field_name}): no column "
                f"{column!r}; the file's columns: {', '.join(map(str, raw.columns))}"
            )
        data: dict[str, pd.Series] = {}
        origin: dict[str, tuple[str | None, str]] = {}
        checked = _Frame(entity, source, pd.DataFrame(), origin)  # for messages as the columns come
        too_long = f"value longer than {MAX_FIELD_CHARS:,} characters"
        for name, column in columns.items():
            data[name] = _cleaned(raw[column])
            origin[name] = (column, f"{key}.columns.{name}")
            checked.check(name, _lengths(data[name]) > MAX_FIELD_CHARS, too_long)
        for name, values in emap.values.items():
            if name not in data:
                raise UserError(
                    f"{source.name} ({key}.values.{name}): a value map for a field the mapping "
                    f"does not fill (add it to {key}.columns)"
                )
            data[name] = _value_mapped(data[name], values)
            origin[name] = (origin[name][0], f"{key}.values.{name}")
        for name, rule in emap.derive.items():
            if rule.source is not None and rule.source not in raw.columns:
                raise UserError(
                    f"{source.name}, line 1 (header) ({key}.derive.{name}.from): no column "
                    f"{rule.source!r}"
                )
            derived = _derived(rule, raw, len(raw))
            # A derived value fills what the column left empty (the column wins when both).
            data[name] = data[name].where(data[name].notna(), derived) if name in data else derived  # fmt: skip
            origin.setdefault(name, (rule.source, f"{key}.derive.{name}"))
        frame = pd.DataFrame(data, index=pd.RangeIndex(len(raw)))
        return _Frame(entity, source, frame, origin, skipped=skipped)

    # -- values --

    def _convert(self, frame: _Frame) -> None:
        table = _table(frame.entity)
        for name in list(frame.data.columns):
            if name in REFERENCES or name == "external_id":
                frame.data[name] = _as_key_text(frame.data[name])
                kind = String(100)  # the external id's column
            else:
                kind = table.c[name].type
            frame.data[name] = self._typed(frame, name, frame.data[name], kind)

    def _typed(self, frame: _Frame, name: str, values: pd.Series, kind: Any) -> pd.Series:
        given = values.notna()
        if isinstance(kind, DateTime):
            fmt = self.mapping.timestamp_format_of(frame.entity)
            out = _timestamps(values, fmt, self.mapping.zone(frame.entity))
            frame.check(name, given & out.isna(), f"not a timestamp in format {fmt or 'ISO 8601'}", values)  # fmt: skip
            return out
        if isinstance(kind, Boolean):
            if pd.api.types.is_bool_dtype(values.dtype):
                return values
            words = per_value(values, lambda v: str(v).strip().lower())
            flags = np.where(words.isin(TRUE_WORDS), True, np.where(words.isin(FALSE_WORDS), False, None))  # fmt: skip
            out = pd.Series(flags, index=values.index, dtype=object)
            frame.check(name, given & out.isna(), "not yes/no, true/false or 1/0", values)
            return out.astype("boolean")
        if isinstance(kind, Integer | Float):
            whole = isinstance(kind, Integer)
            numbers = pd.to_numeric(values, errors="coerce")
            bad = given & (numbers.isna() | ~np.isfinite(numbers.fillna(0).astype(float)))
            if whole:
                bad |= given & numbers.notna() & (numbers.fillna(0) % 1 != 0)
            frame.check(name, bad, f"not {'a whole' if whole else 'a finite'} number", values)
            if whole:
                frame.check(name, numbers.abs() > 2**31 - 1, f"must be at most {2**31 - 1:,}", values)  # fmt: skip
            low = LOWER_BOUNDS.get(name)
            if low is not None:
                frame.check(name, numbers < low, f"must be at least {low}", values)
            if name == "sentiment":
                low, high = SENTIMENT_RANGE
                outside = (numbers < low) | (numbers > high)
                frame.check(name, outside, f"must be between {low:g} and {high:g}", values)
            return numbers.astype("Int64") if whole else numbers.astype(float)
        if isinstance(kind, String) and kind.length:
            too_long = _lengths(values) > kind.length
            frame.check(name, too_long, f"longer than {kind.length} characters", values)
        return values

    def _entity_rules(self, frame: _Frame) -> None:
        data, entity = frame.data, frame.entity
        if entity == "contacts" and "email" in data:
            email = data["email"]
            shape = email.isna() | email.astype(str).str.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+")
            frame.check("email", ~shape, "not an email address", email)
        pipeline = self.mapping.vocabulary.pipeline
        if entity in ("deals", "deal_stage_history") and "stage" in data and pipeline is not None:
            hint = f"add it to vocabulary.pipeline.stages, or map it in entities.{entity}.values.stage"  # fmt: skip
            _known_values(frame, "stage", pipeline.stages, "the pipeline's stages are", hint)
            if entity == "deals":
                data["pipeline"] = pipeline.name
        for name, allowed in VOCABULARIES.get(entity, {}).items():
            if name in data:
                words = per_value(data[name], _norm)
                hint = f"map it in entities.{entity}.values.{name}"
                _known_values(frame, name, allowed, f"a {name} is one of", hint, words)
                data[name] = words
        if entity == "tickets" and "priority" in data:
            given = data["priority"]
            data["priority"] = ticket_priority(given).where(given.notna(), None)
        if entity == "deals":
            self._deal_outcomes(frame)
        if entity == "leads" and {"converted_at", "created_at"} <= set(data):
            early = data["converted_at"] < data["created_at"]
            frame.check("converted_at", early, "converted_at is before created_at")
        if entity == "activities" and "type" in data:
            category_of = self.mapping.vocabulary.category_of()
            data["category"] = per_value(
                data["type"], lambda v: category_of.get(str(v).strip().lower(), OTHER_CATEGORY)
            )

    def _deal_outcomes(self, frame: _Frame) -> None:
        data = frame.data
        pipeline = self.mapping.vocabulary.pipeline
        if pipeline is not None and "stage" in data:
            from_stage = data["stage"].map(pipeline.outcome)
            data["outcome"] = data["outcome"].where(data["outcome"].notna(), from_stage) if "outcome" in data else from_stage  # fmt: skip
            frame.origin.setdefault("outcome", frame.origin.get("stage", (None, "vocabulary.pipeline")))  # fmt: skip
        if "outcome" not in data:
            return
        outcome = data["outcome"]
        bad = outcome.notna() & ~outcome.isin(["won", "lost"])
        frame.check("outcome", bad, "outcome must be won or lost", outcome)
        closed = data["closed_at"] if "closed_at" in data else pd.Series(pd.NaT, index=data.index)
        if "expected_close_at" in data:
            # One close date for open and closed deals (HubSpot, Salesforce): a closed deal's is
            # when it closed.
            closed = closed.where(closed.notna() | outcome.isna(), data["expected_close_at"])
        data["closed_at"] = closed
        frame.origin.setdefault("closed_at", frame.origin.get("expected_close_at", (None, f"entities.{frame.entity}.columns.closed_at")))  # fmt: skip
        mismatch = outcome.notna() != closed.notna()
        frame.check("closed_at", mismatch, "outcome and closed_at go together (both set or both empty)")  # fmt: skip
        if "created_at" in data:
            frame.check("closed_at", closed < data["created_at"], "closed_at is before created_at")

    def _defaults(self, frame: _Frame) -> None:
        """Insert-time values of empty fields (updates leave absent fields alone)."""
        for name, source in DEFAULTS.get(frame.entity, {}).items():
            if source == "now":
                value: Any = pd.Series(self.now, index=frame.data.index)
            elif isinstance(source, str) and source in frame.data:
                value = frame.data[source]
            elif isinstance(source, str) and source in _names(_table(frame.entity)):
                continue  # a field the frame does not fill: nothing to default from
            else:
                value = source
            frame.defaults[name] = value
        if frame.entity == "deals" and {"outcome", "closed_at"} <= set(frame.data):
            # A closing stage is entered when the deal closes: without its own entry time (an
            # export with no stage history) it must not show before then, or features see the
            # outcome.
            closing = frame.data["closed_at"].where(frame.data["outcome"].notna())
            default = frame.defaults.get("stage_entered_at")
            frame.defaults["stage_entered_at"] = closing.where(closing.notna(), default) if default is not None else closing  # fmt: skip

    def _required(self, frame: _Frame) -> None:
        for name in REQUIRED.get(frame.entity, ()):
            default = frame.defaults.get(name)
            if name not in frame.data and default is None:
                raise UserError(
                    f"{frame.source.name} (entities.{frame.entity}.columns): the mapping does "
                    f"not fill the required field {name!r}"
                )
            if name in frame.data:
                empty = frame.data[name].isna()
                if default is not None and not np.isscalar(default):
                    empty &= pd.Series(default).isna().to_numpy()
                frame.check(name, empty, f"{name} is required")

    def _unique_external_ids(self, frame: _Frame) -> None:
        # A contact twice is a duplicate to merge, not an error.
        if "external_id" not in frame.data or frame.entity == "contacts":
            return
        ext = frame.data["external_id"]
        doubled = ext.notna() & ext.duplicated(keep=False)
        if doubled.any():
            pos = np.flatnonzero(doubled)
            first = ext.iloc[pos[0]]
            later = pos[ext.iloc[pos].to_numpy() == first]
            raise frame.fail(
                "external_id",
                later[1:],
                f"duplicate id {first!r} (first on {frame.source.line(int(later[0]))})",
            )

    def _resolve(self, frame: _Frame) -> None:
        """Every reference names a row by its source id: replaced by the internal id."""
        for name in [c for c in frame.data.columns if c in REFERENCES]:
            target = REFERENCES[name]
            refs = frame.data[name]
            ids, found = self.internal_ids(target, refs)
            dangling = refs.notna().to_numpy() & ~found
            optional = name in self.mapping.entities[frame.entity].optional_references
            if dangling.any() and not optional:
                pos = np.flatnonzero(dangling)
                where = f"{target} row with id {frame.shown(refs, pos[0])}"
                raise frame.fail(name, pos, f"no {where} (import {target} first, or add them to this run)")  # fmt: skip
            frame.data[name] = pd.array(ids, dtype="Int64")
            frame.data.loc[~found, name] = pd.NA

    def keys(self, entity: str) -> pd.Series:
        """Internal id by external id of every stored ``entity`` row (cached for the run)."""
        if entity not in self._keys:
            table = _table(entity)
            stored = pd.read_sql(select(table.c.id, table.c.external_id), self.session.connection())
            ids = stored["id"].to_numpy(dtype=np.int64)
            external = stored["external_id"].astype(object)
            # A row the store made itself (no external id) is named by its own id, unless a
            # source id already means another row.
            own = external.isna().to_numpy()
            names = external.where(~own, stored["id"].astype(str))
            keep = ~own | ~names.isin(set(external[~own])).to_numpy()
            self._keys[entity] = pd.Series(ids[keep], index=pd.Index(names[keep]))
        return self._keys[entity]

    def internal_ids(self, entity: str, external: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """The internal ids of rows named by their source ids, and which were found (an empty
        or unknown name is not)."""
        keys = self.keys(entity)
        given = external.notna().to_numpy()
        found = np.where(given, keys.index.get_indexer(external.where(given, "")), -1)
        ids = keys.to_numpy()[np.maximum(found, 0)] if len(keys) else np.zeros(len(found), dtype=np.int64)  # fmt: skip
        return ids, found >= 0

    def _remember(self, entity: str, external: pd.Series, ids: np.ndarray) -> None:
        present = external.notna().to_numpy()
        if not present.any():
            return
        added = pd.Series(ids[present], index=pd.Index(external[present].astype(object)))
        self._keys[entity] = pd.concat([self.keys(entity), added])

    def _new_ids(self, entity: str, n: int) -> np.ndarray:
        if entity not in self._next_id:
            table = _table(entity)
            top = self.session.execute(select(table.c.id).order_by(table.c.id.desc()).limit(1)).scalar()  # fmt: skip
            self._next_id[entity] = (top or 0) + 1
        start = self._next_id[entity]
        self._next_id[entity] = start + n
        return np.arange(start, start + n, dtype=np.int64)

    # -- writing --

    def _split(self, frame: _Frame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
        """(new rows, existing rows, existing rows' ids) by external id."""
        data = frame.data
        if "external_id" not in data:
            return data, data.iloc[:0], np.array([], dtype=np.int64)
        ids, old = self.internal_ids(frame.entity, data["external_id"])
        return data[~old], data[old], ids[old]

    @staticmethod
    def _with_defaults(frame: _Frame, new: pd.DataFrame) -> pd.DataFrame:
        """New rows with the insert-time values of their empty fields."""
        rows = new.copy()
        for name, value in frame.defaults.items():
            fill = value.loc[rows.index] if isinstance(value, pd.Series) else value
            rows[name] = rows[name].where(rows[name].notna(), fill) if name in rows else fill
        return rows

    def _insert(self, frame: _Frame, new: pd.DataFrame) -> np.ndarray:
        rows = self._with_defaults(frame, new)
        ids = self._new_ids(frame.entity, len(rows))
        rows.insert(0, "id", ids)
        if len(rows):
            insert_frame(self.session, _table(frame.entity), rows)
            if "external_id" in rows:
                self._remember(frame.entity, rows["external_id"], ids)
        return ids

    def _stored(self, entity: str, old: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
        """The store's values of ``old``'s fields, row for row (``ids``)."""
        columns = [c for c in old.columns if c != "external_id"]
        stored = _read_by_id(self.session, _table(entity), ["id", *columns], ids)
        return stored.set_index("id").reindex(ids)

    def _changed(
        self, entity: str, old: pd.DataFrame, ids: np.ndarray, stored: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """The existing rows whose mapped fields differ from the store's (``stored``, read when
        not given), with their ids."""
        columns = [c for c in old.columns if c != "external_id"]
        if not columns or not len(old):
            return old.iloc[:0].assign(id=np.array([], dtype=np.int64))
        stored = self._stored(entity, old, ids) if stored is None else stored
        old = old.copy()
        if entity == "leads" and "owner_id" in old and self.mapping.entities[entity].assign_owners:
            # An owner the import assigned stays when the file still has none.
            owner = old["owner_id"]
            old["owner_id"] = owner.where(owner.notna(), stored["owner_id"].to_numpy()).astype("Int64")  # fmt: skip
        differs = np.zeros(len(old), dtype=bool)
        for c in columns:
            a, b = old[c].reset_index(drop=True), stored[c].reset_index(drop=True)
            if pd.api.types.is_datetime64_any_dtype(a.dtype):
                b = pd.to_datetime(b)
            same = (a.isna() & b.isna()) | (a.astype(object) == b.astype(object)).fillna(False)
            differs |= ~same.to_numpy(dtype=bool)
        return old[differs].assign(id=ids[differs])

    def _update(self, entity: str, rows: pd.DataFrame) -> None:
        if not len(rows):
            return
        table = _table(entity)
        columns = [c for c in rows.columns if c not in ("id", "external_id")]
        if "updated_at" in table.c and "updated_at" not in columns:
            rows = rows.assign(updated_at=self.now)
            columns.append("updated_at")
        stmt = (
            update(table)
            .where(table.c.id == bindparam("_id"))
            .values({c: bindparam(f"v_{c}", type_=table.c[c].type) for c in columns})
        )
        params = [
            {"_id": int(r["id"]), **{f"v_{c}": _plain(r[c]) for c in columns}}
            for r in rows.to_dict("records")
        ]
        for start in range(0, len(params), 10_000):
            self.session.execute(stmt, params[start : start + 10_000])

    def _write(self, frame: _Frame) -> ImportResult:
        new, old, old_ids = self._split(frame)
        stored = self._stored(frame.entity, old, old_ids)
        changed = self._changed(frame.entity, old, old_ids, stored)
        assigned = self._assign_owners(frame, new) if frame.entity == "leads" else 0
        new_ids = self._insert(frame, new)
        history = 0
        if frame.entity == "deals" and "stage" in frame.data:
            history = self._stage_history(
                self._with_defaults(frame, new), new_ids, old, old_ids, stored["stage"].to_numpy()
            )
        self._update(frame.entity, changed)
        return ImportResult(
            frame.entity,
            frame.source.name,
            len(frame.data),
            len(new),
            len(changed),
            stage_changes=history,
            owners_assigned=assigned,
            uncategorised=_uncategorised(frame),
        )

    def _assign_owners(self, frame: _Frame, new: pd.DataFrame) -> int:
        """New leads without an owner get a rep of their region, the least loaded first."""
        emap = self.mapping.entities[frame.entity]
        if not emap.assign_owners or "region" not in new or not len(new):
            return 0
        owners = new["owner_id"] if "owner_id" in new else pd.Series(pd.NA, index=new.index, dtype="Int64")  # fmt: skip
        user, lead = _table("users").c, _table("leads").c
        connection = self.session.connection()
        users = pd.read_sql(select(user.id, user.region, user.manager_id), connection)
        if users.empty:
            return 0
        # Reps are users with a manager; a team without managers recorded: every user.
        reps = users[users["manager_id"].notna()] if users["manager_id"].notna().any() else users
        owned = select(lead.owner_id).where(lead.owner_id.is_not(None))
        load = pd.read_sql(owned, connection)["owner_id"].value_counts()
        assigned = owners.copy().astype("Int64")
        region = per_value(new["region"], lambda v: str(v).lower())
        reps_region = per_value(reps["region"], lambda v: str(v).lower())
        n = 0
        for name in region[owners.isna() & region.notna()].unique():
            pool = reps.loc[reps_region == name, "id"].to_numpy()
            if not len(pool):
                continue
            pool = pool[np.argsort(load.reindex(pool).fillna(0).to_numpy(), kind="stable")]
            rows = np.flatnonzero((owners.isna() & (region == name)).to_numpy())
            assigned.iloc[rows] = pool[np.arange(len(rows)) % len(pool)]
            n += len(rows)
        new["owner_id"] = assigned.to_numpy()
        return n

    def _stage_history(self, new, new_ids, old, old_ids, stages_before: np.ndarray) -> int:
        """A history row for each new deal's stage (``new`` with its insert-time values) and each
        changed stage (``stages_before``: the store's, row for row of ``old``)."""
        parts = [pd.DataFrame({"deal_id": new_ids, "stage": new["stage"].to_numpy(), "entered_at": new["stage_entered_at"].to_numpy()})]  # fmt: skip
        moved = old["stage"].to_numpy() != stages_before
        if moved.any():
            given = old["stage_entered_at"] if "stage_entered_at" in old else pd.Series(pd.NaT, index=old.index)  # fmt: skip
            when = given.where(given.notna(), self.now).to_numpy()[moved]
            ids = old_ids[moved]
            parts.append(pd.DataFrame({"deal_id": ids, "stage": old["stage"].to_numpy()[moved], "entered_at": when}))  # fmt: skip
            # The stage's entry time moves with it (the file may not say it).
            self._update("deals", pd.DataFrame({"id": ids, "stage_entered_at": when}))
        return self._append_history(pd.concat(parts, ignore_index=True))

    def _append_history(self, rows: pd.DataFrame) -> int:
        """Stage-history rows not already stored (same deal, stage and entry time)."""
        if rows.empty:
            return 0
        rows = rows.drop_duplicates(["deal_id", "stage", "entered_at"])
        table = _table("deal_stage_history")
        stored = _read_by_id(self.session, table, ["deal_id", "stage", "entered_at"], rows["deal_id"].to_numpy(), key="deal_id")  # fmt: skip
        if len(stored):
            stored["entered_at"] = pd.to_datetime(stored["entered_at"])
            seen = rows.merge(stored, on=["deal_id", "stage", "entered_at"], how="left", indicator=True)["_merge"].to_numpy() == "both"  # fmt: skip
            rows = rows[~seen]
        if len(rows):
            rows = rows.assign(deal_id=rows["deal_id"].astype(np.int64))
            rows.insert(0, "id", self._new_ids("deal_stage_history", len(rows)))
            insert_frame(self.session, table, rows)
        return len(rows)

    def _write_history(self, frame: _Frame) -> ImportResult:
        rows = frame.data[[c for c in ("deal_id", "stage", "entered_at", "expected_close_at") if c in frame.data]]  # fmt: skip
        written = self._append_history(rows)
        return ImportResult(frame.entity, frame.source.name, len(rows), written, 0)

    def _write_contacts(self, frame: _Frame) -> ImportResult:
        if not self.mapping.entities["contacts"].deduplicate:
            return self._write(frame)
        data = frame.data.copy()
        records, merged = _merge_contacts(data)
        store_ids = self._match_stored_contacts(records)
        merged += int((store_ids >= 0).sum() - _by_external(records, self.keys("contacts")))
        # Two records resolving to one stored contact: the first one's values win.
        dup = (store_ids >= 0) & pd.Series(store_ids).duplicated().to_numpy()
        merged += int(dup.sum())
        keep = ~dup
        records, store_ids = records[keep], store_ids[keep]
        new = records[store_ids < 0].drop(columns=["_emails", "_phones"])
        added = records[store_ids < 0]
        new = new.assign(
            alternate_emails=_alternates(added, "_emails", "email", normalise_email),
            alternate_phones=_alternates(added, "_phones", "phone", normalise_phone),
        )
        frame_new = _Frame("contacts", frame.source, new, frame.origin, frame.defaults)
        self._insert(frame_new, new)
        updated = self._fill_stored_contacts(records[store_ids >= 0], store_ids[store_ids >= 0])
        return ImportResult("contacts", frame.source.name, len(data), len(new), updated, merged)

    def _match_stored_contacts(self, records: pd.DataFrame) -> np.ndarray:
        """Each record's stored contact (external id, then email, then phone), -1 if none."""
        table = _table("contacts")
        identity = ("id", "email", "phone", "alternate_emails", "alternate_phones")
        stored = pd.read_sql(select(*(table.c[c] for c in identity)), self.session.connection())
        by_email = _identity_index(stored, "email", "alternate_emails", normalise_email)
        by_phone = _identity_index(stored, "phone", "alternate_phones", normalise_phone)
        keys = self.keys("contacts")
        out = np.full(len(records), -1, dtype=np.int64)
        every = zip(_column(records, "external_id"), records["_emails"], records["_phones"], strict=True)  # fmt: skip
        for i, (ext, emails, phones) in enumerate(every):
            if ext is not None and ext in keys.index:
                out[i] = keys[ext]
                continue
            found = [by_email[v] for v in _split(emails) if v in by_email]
            found = found or [by_phone[v] for v in _split(phones) if v in by_phone]
            if found:
                out[i] = found[0]
        return out

    def _fill_stored_contacts(self, records: pd.DataFrame, ids: np.ndarray) -> int:
        """Fill stored contacts' blanks and add new alternates; returns how many changed."""
        if not len(records):
            return 0
        table = _table("contacts")
        columns = [c for c in records.columns if c not in ("_emails", "_phones", "created_at", "updated_at")]  # fmt: skip
        identity = ["email", "phone", "alternate_emails", "alternate_phones"]
        read = ["id", *dict.fromkeys([*columns, *identity])]
        stored = _read_by_id(self.session, table, read, ids)
        stored = stored.set_index("id")
        changes = []
        for (_, record), cid in zip(records.iterrows(), ids, strict=True):
            row = stored.loc[cid]
            values: dict[str, Any] = {}
            for c in columns:
                if pd.isna(row[c]) and not pd.isna(record[c]):
                    values[c] = record[c]
            for kind, own, alternates, norm in (
                ("_emails", "email", "alternate_emails", normalise_email),
                ("_phones", "phone", "alternate_phones", normalise_phone),
            ):
                have = {norm(row[own])} | set(_split(row[alternates]))
                have |= {norm(values[own])} if own in values else set()
                extra = [v for v in _split(record[kind]) if v not in have]
                if extra:
                    values[alternates] = ";".join([*_split(row[alternates]), *extra])
            if values:
                changes.append({"id": int(cid), **values})
        for change in changes:
            cid = change.pop("id")
            params = {k: _plain(v) for k, v in change.items()}
            self.session.execute(update(table).where(table.c.id == cid).values(**params, updated_at=self.now))  # fmt: skip
        return len(changes)


# --- helpers ---------------------------------------------------------------------------------


def _check_entity(entity: str) -> None:
    if entity not in ENTITY_MODELS:
        raise UserError(f"unknown entity {entity!r}; choose one of: {', '.join(ENTITY_ORDER)}")


def _table(entity: str) -> Table:
    return ENTITY_MODELS[entity].__table__


def _names(table: Table) -> list[str]:
    return [column.name for column in table.columns]


def per_value(values: pd.Series, fn, missing: Any = None) -> pd.Series:
    """``fn`` of each distinct value (``missing`` for blanks), spread back over the rows: a CRM
    column holds a handful of stage or type names over millions of rows."""
    codes, uniques = pd.factorize(values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values)  # fmt: skip
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[:-1] = [fn(u) for u in uniques]
    mapped[-1] = missing
    return pd.Series(mapped[codes], index=values.index, dtype=object)


def _strip(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _cleaned(values: pd.Series) -> pd.Series:
    """Text trimmed, blank cells missing; typed columns (the demo's frames) as they are."""
    if values.dtype != object and not pd.api.types.is_string_dtype(values.dtype):
        return values
    return per_value(values, _strip)


def _lengths(values: pd.Series) -> pd.Series:
    if values.dtype != object:
        return pd.Series(0, index=values.index)
    return per_value(values, lambda v: len(v) if isinstance(v, str) else 0, 0).astype(np.int64)


def _as_key_text(values: pd.Series) -> pd.Series:
    """Source ids as text (numbers written without a decimal point: 17.0 → '17'); of a list
    (``a;b``, an export's several associations) the first."""
    if pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_float_dtype(values.dtype):
        out = values.astype("Int64").astype(str).astype(object)
        return out.where(values.notna(), None)
    return per_value(values, lambda v: str(v).split(";", 1)[0].strip() or None)


def _norm(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame``'s column ``name``, or one of None where the frame has none."""
    return frame[name] if name in frame else pd.Series([None] * len(frame), index=frame.index)


def _lookup(table: MappingType[str, Any]) -> dict[Any, Any]:
    """A value map's keys as values are matched: trimmed and case-blind."""
    return {_norm(str(k)): v for k, v in table.items()}


def _value_mapped(values: pd.Series, table: MappingType[str, Any]) -> pd.Series:
    """Source values replaced by the store's; values the map does not name pass through (a
    vocabulary check may refuse them later)."""
    lookup = _lookup(table)
    return per_value(values, lambda v: lookup.get(_norm(v), v))


def _derived(rule, raw: pd.DataFrame, n: int) -> pd.Series:
    if rule.source is None:
        return pd.Series([rule.constant] * n, dtype=object)
    values = _cleaned(raw[rule.source].reset_index(drop=True))
    if rule.values is not None:
        lookup = _lookup(rule.values)
        return per_value(values, lambda v: lookup.get(_norm(v), rule.default), rule.default)
    pattern = re.compile(rule.pattern)
    return per_value(values, lambda v: bool(pattern.search(str(v))), rule.default)


def _timestamps(values: pd.Series, fmt: str | None, zone: str) -> pd.Series:
    """Parsed timestamps as naive UTC (input without an offset is wall time in ``zone``);
    unparsable → NaT. ISO 8601 by default, then other common spellings."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if getattr(values.dtype, "tz", None) is not None:
            return values.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
        return _in_zone(values.astype("datetime64[ns]"), zone)
    text = values.astype(object).where(values.notna(), None)
    out = pd.to_datetime(text, format=fmt or "ISO8601", errors="coerce", utc=True)
    rest = out.isna() & text.notna()
    if fmt is None and rest.any():
        out[rest] = pd.to_datetime(text[rest], format="mixed", errors="coerce", utc=True)
    out = out.dt.tz_localize(None).astype("datetime64[ns]")
    if zone == "UTC":
        return out
    naive = ~text.astype(str).str.contains(r"(?:Z|[+-]\d\d:?\d\d)\s*$", regex=True)
    return out.where(~naive, _in_zone(out, zone))


def _in_zone(stamps: pd.Series, zone: str) -> pd.Series:
    """Wall times in ``zone`` as naive UTC."""
    if zone == "UTC":
        return stamps
    local = stamps.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
    return local.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")


def _plain(value: Any) -> Any:
    """A frame value as the driver takes it."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if isinstance(value, np.number | np.bool_) else value


def _read_by_id(session: Session, table: Table, columns: list[str], ids: np.ndarray, key: str = "id") -> pd.DataFrame:  # fmt: skip
    parts = []
    wanted = np.unique(np.asarray(ids, dtype=np.int64)).tolist()
    for start in range(0, len(wanted), 5_000):
        chunk = wanted[start : start + 5_000]
        stmt = select(*(table.c[c] for c in columns)).where(table.c[key].in_(chunk))
        parts.append(pd.read_sql(stmt, session.connection()))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def _known_values(frame: _Frame, name: str, allowed, listed: str, hint: str, words=None) -> None:
    """Refuse the first value of ``name`` outside ``allowed`` (compared as ``words``, if given),
    saying what is allowed."""
    values = frame.data[name]
    words = values if words is None else words
    unknown = words.notna() & ~words.isin(allowed)
    if unknown.any():
        pos = np.flatnonzero(unknown)
        shown = frame.shown(values, pos[0])
        raise frame.fail(name, pos, f"unknown {name} {shown}; {listed} {', '.join(allowed)} ({hint})")  # fmt: skip


def _uncategorised(frame: _Frame) -> dict[str, int]:
    if frame.entity != "activities" or "category" not in frame.data:
        return {}
    other = frame.data.loc[frame.data["category"] == OTHER_CATEGORY, "type"]
    return {str(k): int(v) for k, v in other.value_counts().items()}


def normalise_email(value: Any) -> str | None:
    """Trimmed, lower-case email (the contact de-duplication key)."""
    if value is None or pd.isna(value):
        return None
    value = str(value).strip().lower()
    return value or None


def normalise_phone(value: Any) -> str | None:
    """Digits only, a leading international ``00`` read as ``+`` (so '+44 20…' == '004420…')."""
    if value is None or pd.isna(value):
        return None
    digits = re.sub(r"\D", "", str(value))
    digits = digits[2:] if digits.startswith("00") else digits
    return digits or None


def _split(joined: Any) -> list[str]:
    if joined is None or (not isinstance(joined, str) and pd.isna(joined)) or not joined:
        return []
    return [v for v in str(joined).split(";") if v]


def _identity_index(stored: pd.DataFrame, own: str, alternates: str, norm) -> dict[str, int]:
    index: dict[str, int] = {}
    for cid, value, more in zip(stored["id"], stored[own], stored[alternates], strict=True):
        for key in [norm(value), *_split(more)]:
            if key:
                index.setdefault(key, int(cid))
    return index


def _alternates(records: pd.DataFrame, every: str, own: str, norm) -> list[str | None]:
    """Each record's identities (column ``every``) other than its own email/phone (``own``),
    ``;``-joined (None if none)."""
    out = []
    for joined, value in zip(records[every], _column(records, own), strict=True):
        others = [v for v in _split(joined) if v != norm(value)]
        out.append(";".join(others) or None)
    return out


def _by_external(records: pd.DataFrame, keys: pd.Series) -> int:
    if "external_id" not in records:
        return 0
    return int(records["external_id"].isin(keys.index).sum())


def _merge_contacts(data: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows that are one person (same external id, email or phone) as one record: the first
    row's values, blanks filled from the others, the others' emails/phones as alternates
    (``_emails``/``_phones``: every normalised email/phone of the record, its own first)."""
    n = len(data)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    emails, phones = (_column(data, c).map(norm) for c, norm in (("email", normalise_email), ("phone", normalise_phone)))  # fmt: skip
    ext = _column(data, "external_id")
    seen: dict[tuple[str, str], int] = {}
    for i, keys in enumerate(zip(ext, emails, phones, strict=True)):
        for kind, value in zip(("id", "email", "phone"), keys, strict=True):
            if value is None:
                continue
            j = seen.setdefault((kind, value), i)
            if j != i:
                a, b = root(j), root(i)
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    columns = list(data.columns)
    out = []
    for members in groups.values():
        record = data.iloc[members[0]].to_dict()
        for i in members[1:]:
            for c in columns:
                if record[c] is None or (not isinstance(record[c], str) and pd.isna(record[c])):
                    record[c] = data.iloc[i][c]
        if record.get("email") is not None and isinstance(record["email"], str):
            record["email"] = record["email"].lower()
        own_email, own_phone = normalise_email(record.get("email")), normalise_phone(record.get("phone"))  # fmt: skip
        all_emails = dict.fromkeys([own_email, *(emails.iloc[i] for i in members)])
        all_phones = dict.fromkeys([own_phone, *(phones.iloc[i] for i in members)])
        record["_emails"] = ";".join(e for e in all_emails if e)
        record["_phones"] = ";".join(p for p in all_phones if p)
        out.append(record)
    records = pd.DataFrame(out, columns=[*columns, "_emails", "_phones"])
    for c in columns:
        records[c] = records[c].astype(data[c].dtype) if len(records) else records[c]
    return records, n - len(records)


# --- entry points ----------------------------------------------------------------------------


def import_directory(
    session: Session, mapping: Mapping, directory: Path, now: datetime | None = None
) -> list[ImportResult]:
    """Every file the mapping names that ``directory`` holds, in one run (an export without
    orders, say, imports the rest); the caller commits."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory")
    present = [(e, m) for e, m in mapping.ordered() if m.file and (directory / m.file).is_file()]
    if not present:
        named = ", ".join(m.file for _, m in mapping.ordered() if m.file) or "none"
        raise UserError(
            f"{directory}: holds none of the files the mapping {mapping.name!r} names ({named})"
        )
    importer = Importer(session, mapping, now)
    for entity, emap in present:
        importer.add(entity, *read_csv(directory / emap.file, emap.delimiter))
    return importer.finish()


def import_csv(
    session: Session, entity: str, path: Path | str, now: datetime | None = None
) -> ImportResult:
    """One file already in the store's column names (``id`` = the source CRM's id, references
    by those ids); the caller commits (one transaction per file) and rolls back on error."""
    _check_entity(entity)
    path = Path(path)
    raw, source = read_csv(path)
    table = _table(entity)
    known = {"id", *(c for c in _names(table) if c not in _NOT_MAPPED)}
    unknown = [c for c in raw.columns if c not in known]
    if unknown:
        raise UserError(
            f"{path}, line 1 (header): unknown column(s): {', '.join(map(repr, unknown))}. "
            f"Columns for this entity: {', '.join(c for c in _names(table) if c in known)}"
        )
    importer = Importer(session, identity_mapping(entity), now)
    result = importer.add(entity, raw, source)
    importer.finish()
    return result
