"""The import mapping: how a source CRM's export files become the store's entities.

A mapping (YAML, validated here) names, per entity, the source file, which source column fills
which store field, value maps (stage names, statuses, priorities …), the timestamp format and
time zone, and derived fields; its ``vocabulary`` says the deal pipeline (ordered stages, which
are won or lost) and which activity types fall in which category (what the features count).
Presets for HubSpot, Salesforce and the demo ship in ``crm_store/presets``; ``load_mapping``
takes a preset name or a path. Every key is listed in docs/import.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from crm_predict.crm_store.models import ENTITY_MODELS
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crm_predict.core.errors import UserError

# Entities in import order (parents before children: references resolve against earlier ones).
ENTITY_ORDER = tuple(ENTITY_MODELS)
OTHER_CATEGORY = "other"  # of a type in no category
# Category → its activity types: first the categories the features are built from
# (``crm_predict.features.transforms.ACTIVITY_GROUPS``), then those kept for reports.
DEFAULT_ACTIVITY_CATEGORIES: dict[str, list[str]] = {
    "visit": ["site_visit", "app_visit", "web_visit", "visit", "page_view"],
    "pricing": ["pricing_view", "pricing_page_view", "pricing_visit"],
    "content": ["whitepaper_download", "whitepaper", "content_download", "ebook_download"],
    "trial": ["trial_request", "trial", "trial_signup", "demo_request"],
    "email_open": ["email_open", "email_opened", "open"],
    "email_click": ["email_click", "email_clicked", "click"],
    "event": ["webinar", "event", "event_attended", "conference"],
    "call": ["call", "phone_call"],
    "meeting": ["meeting", "demo"],
    "email": ["email", "email_sent"],
    "message": ["linkedin_message", "chat", "sms", "wechat"],
    "engagement": ["coupon_use", "referral"],
    "system": ["close_date_slip"],
}
CATEGORIES = tuple(DEFAULT_ACTIVITY_CATEGORIES)

# Activity type (lower case) → category, for activities stored without one.
DEFAULT_CATEGORY_OF = {t: c for c, types in DEFAULT_ACTIVITY_CATEGORIES.items() for t in types}


def _known(one: str, many: str, names, choices: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in choices]
    if unknown:
        listed = ", ".join(map(repr, unknown))
        what = one if len(unknown) == 1 else many
        raise ValueError(f"unknown {what} {listed}; choose among: {', '.join(choices)}")


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pipeline(_Config):
    """The deal pipeline: ordered stages; closing stages say the outcome."""

    name: str = "default"
    stages: list[str] = Field(min_length=1)
    won: list[str] = Field(default_factory=list)
    lost: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _closing_stages_are_stages(self) -> Pipeline:
        unknown = [s for s in (*self.won, *self.lost) if s not in self.stages]
        if unknown:
            raise ValueError(f"won/lost stage(s) not among the stages: {', '.join(unknown)}")
        if set(self.won) & set(self.lost):
            raise ValueError("a stage cannot be both won and lost")
        return self

    def outcome(self, stage: str) -> str | None:
        return "won" if stage in self.won else "lost" if stage in self.lost else None


class Vocabulary(_Config):
    pipeline: Pipeline | None = None
    activity_categories: dict[str, list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_ACTIVITY_CATEGORIES)
    )

    @field_validator("activity_categories")
    @classmethod
    def _known_categories(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        _known("activity category", "activity categories", value, CATEGORIES)
        seen: dict[str, str] = {}
        for category, types in value.items():
            for t in types:
                if seen.setdefault(t.strip().lower(), category) != category:
                    raise ValueError(f"activity type {t!r} is in both {seen[t]} and {category}")
        return value

    def category_of(self) -> dict[str, str]:
        """Activity type (trimmed, lower case) → category."""
        return {
            t.strip().lower(): c for c, types in self.activity_categories.items() for t in types
        }


class Derived(_Config):
    """A field computed from a source column: by a value map, a pattern, or a constant."""

    source: str | None = Field(None, alias="from")
    values: dict[str, Any] | None = None
    pattern: str | None = None  # regex; a match gives True, else False (a flag field)
    constant: Any = None
    default: Any = None

    @model_validator(mode="after")
    def _one_way(self) -> Derived:
        if self.constant is None and self.source is None:
            raise ValueError("a derived field needs 'from' (a source column) or 'constant'")
        if self.source is not None and self.values is None and self.pattern is None:
            raise ValueError("a derived field from a column needs 'values' or 'pattern'")
        return self


class EntityMap(_Config):
    """How one source file fills one entity."""

    file: str | None = None  # relative to the import directory
    columns: dict[str, str] = Field(default_factory=dict)  # store field → source column
    # Also: each source column named like a field fills it (id → external_id).
    same_names: bool = False
    exclude: list[str] = Field(default_factory=list)  # source columns never read
    values: dict[str, dict[str, Any]] = Field(default_factory=dict)  # field → {source: store}
    derive: dict[str, Derived] = Field(default_factory=dict)
    timestamp_format: str | None = None  # strptime format; default ISO 8601 (and similar)
    timezone: str | None = None  # of naive timestamps; stored as naive UTC
    # References that may name a row of another kind (Salesforce's WhoId: a lead or a contact)
    # or one not exported: left empty when not found, instead of an error.
    optional_references: list[str] = Field(default_factory=list)
    deduplicate: bool = True  # contacts: merge rows with the same email or phone
    assign_owners: bool = True  # leads: a new lead without owner gets a rep of its region
    delimiter: str = ","


class Mapping(_Config):
    """A whole import: the vocabulary and one ``EntityMap`` per entity present."""

    name: str = "custom"
    source: str | None = None  # which export (and version) the mapping follows
    timestamp_format: str | None = None
    timezone: str = "UTC"
    # A mapped column the file lacks: an error, or (presets: exports differ in what they include)
    # the field left empty and the column named in the import summary.
    missing_columns: Literal["error", "skip"] = "error"
    vocabulary: Vocabulary = Field(default_factory=Vocabulary)
    entities: dict[str, EntityMap]

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, value: dict[str, EntityMap]) -> dict[str, EntityMap]:
        _known("entity", "entities", value, ENTITY_ORDER)
        return value

    @model_validator(mode="after")
    def _zones_exist(self) -> Mapping:
        for where, zone in [("timezone", self.timezone)] + [
            (f"entities.{e}.timezone", m.timezone) for e, m in self.entities.items() if m.timezone
        ]:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{where}: unknown time zone {zone!r}") from None
        return self

    def ordered(self) -> list[tuple[str, EntityMap]]:
        return [(e, self.entities[e]) for e in ENTITY_ORDER if e in self.entities]

    def zone(self, entity: str) -> str:
        return self.entities[entity].timezone or self.timezone

    def timestamp_format_of(self, entity: str) -> str | None:
        return self.entities[entity].timestamp_format or self.timestamp_format


PRESETS = ("demo", "hubspot", "salesforce")


def preset_text(name: str) -> str:
    return (
        resources.files("crm_predict.crm_store")
        .joinpath("presets", f"{name}.yaml")
        .read_text("utf-8")
    )


def load_mapping(spec: str | Path) -> Mapping:
    """A mapping from a preset name (``hubspot``, ``salesforce``, ``demo``) or a YAML file."""
    if str(spec) in PRESETS:
        return parse_mapping(preset_text(str(spec)), f"preset {spec}")
    path = Path(spec)
    try:
        content = path.read_text("utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such mapping file (or give a preset: {', '.join(PRESETS)})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the mapping ({exc})") from None
    return parse_mapping(content, str(path))


def parse_mapping(content: str, where: str) -> Mapping:
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise UserError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{where}: a mapping is a YAML object with an 'entities' key")
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise UserError(f"{where}: {key or 'mapping'}: {message}") from None


def identity_mapping(entity: str) -> Mapping:
    """The mapping of a file already in the store's columns (``import ENTITY FILE``): each
    column fills the field of its name, ``id`` is the source CRM's id (the external id)."""
    return Mapping(name=f"columns of {entity}", entities={entity: EntityMap(same_names=True)})
