"""Business rules from the design notes: thresholds, tag names and task rules as plain data.

Every number here is a default that a team may change; jobs log ``as_dict()`` with every run so a
score can always be traced back to the rules that produced its tags and tasks.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, ClassVar, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from crm_predict.core.conditions import Condition, ConditionError, parse_condition
from crm_predict.core.errors import UserError

MODEL_NAMES = ("lead_scoring", "deal_health", "churn", "clv", "next_best_time")

# The model whose write-back evaluates an entity's tag rules (churn: the richest customer row).
TAG_ENTITIES = {"lead": "lead_scoring", "deal": "deal_health", "customer": "churn"}


class _RulesModel(BaseModel):
    """Frozen, and a key it does not know is an error naming it (a misspelt threshold must not
    silently keep its default). ``ordered``: (lower, upper) thresholds, the lower never above."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ordered: ClassVar[tuple[str, str] | None] = None

    @model_validator(mode="after")
    def _ordered(self):
        low, high = self.ordered or (None, None)
        if low and getattr(self, low) > getattr(self, high):
            raise ValueError(
                f"{low} ({getattr(self, low)}) is above {high} ({getattr(self, high)})"
            )
        return self


class ActivityPoints(_RulesModel):
    """Points per activity in the lead's 90-day window, by activity category."""

    visit: int = Field(5, description="Each site visit.")
    pricing: int = Field(20, description="Each pricing-page view.")
    content: int = Field(30, description="Each whitepaper/content download.")
    trial: int = Field(50, description="Each trial request.")


class LeadRules(_RulesModel):
    target_industries: tuple[str, ...] = ("software", "finance", "healthcare")
    target_regions: tuple[str, ...] = ("north", "east")
    points_target_industry: int = 20
    points_decision_maker: int = 30
    points_outside_region: int = -10
    points_per_activity: ActivityPoints = Field(default_factory=ActivityPoints)
    points_inactive: int = -15
    inactive_days: int = Field(30, ge=0)
    mql_threshold: int = 100
    conversion_window_days: int = Field(90, gt=0)
    first_contact_sla_hours: int = Field(2, gt=0)
    escalate_unhandled_hours: int = Field(24, ge=0)
    escalation_sla_hours: int = Field(4, gt=0)
    whitepaper_follow_up_hours: int = Field(24, gt=0)

    @field_validator("target_industries", "target_regions")
    @classmethod
    def _lower(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.lower() for v in values)  # matched case-insensitively


class DealRules(_RulesModel):
    ordered = ("yellow_at", "green_at")
    green_at: int = Field(80, ge=0, le=100)
    yellow_at: int = Field(60, ge=0, le=100)
    idle_escalation_days: int = Field(7, gt=0)
    rescue_sla_hours: int = Field(48, gt=0)
    escalation_sla_hours: int = Field(24, gt=0)
    follow_up_sla_hours: int = Field(48, gt=0)


class ChurnRules(_RulesModel):
    ordered = ("medium_at", "high_at")
    window_days: int = Field(90, gt=0)
    high_at: float = Field(0.6, ge=0, le=1)
    medium_at: float = Field(0.3, ge=0, le=1)
    inactive_warning_days: int = Field(30, gt=0)
    retention_sla_hours: int = Field(72, gt=0)


class ValueRules(_RulesModel):
    ordered = ("gold_from", "diamond_above")
    diamond_above: float = 1_000_000
    gold_from: float = 500_000
    horizon_weeks: int = Field(156, gt=0)
    annual_discount_rate: float = Field(0.10, ge=0)
    high_activity_visits_30d: int = Field(
        10, description="Site visits in 30 days from which a lead, contact or customer is flagged."
    )
    potential_growth_pct: float = 200.0
    potential_min_prior_spend: float = Field(
        0.0,
        ge=0,
        description="Prior 3 months' spend a customer needs before growth counts (0: any > 0); "
        "growth from nothing is not growth.",
    )


class TagRule(_RulesModel):
    """A user's tag: ``name=value`` on every ``entity`` whose row satisfies ``when``
    (``crm_predict.core.conditions``), removed (to history) from those that no longer do."""

    name: str = Field(min_length=1, max_length=100)
    value: str = "true"
    entity: Literal["lead", "deal", "customer"]
    when: str

    @field_validator("value", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        if isinstance(value, bool):  # YAML's `true` is the flag value "true"
            return str(value).lower()
        return str(value) if isinstance(value, int | float) else value

    @field_validator("when")
    @classmethod
    def _parses(cls, when: str) -> str:
        try:
            parse_condition(when)
        except ConditionError as exc:
            raise ValueError(f"bad condition {when!r}: {exc}") from None
        return when

    @model_validator(mode="after")
    def _not_clv_tag(self) -> TagRule:
        # Customers' tag rules run with churn; the CLV model writes these names on its own.
        clv_tags = (TAG_CLV_TIER, TAG_CLV, TAG_RFM_SEGMENT, TAG_HIGH_ACTIVITY, TAG_POTENTIAL)
        if self.entity == "customer" and self.name in clv_tags:
            raise ValueError(
                f"{self.name!r} is the CLV model's own customer tag; pick another name"
            )
        return self

    @property
    def condition(self) -> Condition:
        return parse_condition(self.when)


class AssignmentRules(_RulesModel):
    """Who gets a task whose rule found no owner: the region's default owner (a user's external
    id, or an internal id as a number), else the named queue (``owner_id`` empty, the reason
    prefixed ``[queue:NAME]``)."""

    default_owner_by_region: dict[str, int | str] = Field(default_factory=dict)
    queue: str = Field("unassigned", min_length=1)

    @field_validator("default_owner_by_region")
    @classmethod
    def _lower(cls, owners: dict[str, int | str]) -> dict[str, int | str]:
        return {region.lower(): owner for region, owner in owners.items()}


class IntentPriority(_RulesModel):
    """Each intent's weight in a message's need priority (0–1; the model's confidence and a
    complaint raise or lower it). One field per intent of ``crm_predict.core.messages.INTENTS``."""

    technical_consultation: float = Field(0.5, ge=0, le=1)
    quote_request: float = Field(0.9, ge=0, le=1)
    competitor_comparison: float = Field(0.7, ge=0, le=1)
    after_sales_support: float = Field(0.8, ge=0, le=1)


Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class MessageRules(_RulesModel):
    """What the batch does with scored messages (``crm_predict.core.messages``): the contact tags'
    windows and thresholds, need priority, the message tasks, and the words it looks for."""

    # complaint_tendency: more than this share of a contact's inbound messages in the window
    # read as complaining, counting contacts with at least ``complaint_min_messages`` there.
    complaint_window_days: int = Field(90, gt=0)
    complaint_share: float = Field(0.3, ge=0, le=1)
    complaint_min_messages: int = Field(2, ge=1)
    # Need priority 0–100: the intent's weight × the model's confidence, raised for complaints.
    intent_priority: IntentPriority = Field(default_factory=IntentPriority)
    complaint_boost: float = Field(1.25, ge=0)
    # Tasks for inbound messages sent in the last ``task_window_days``: one per message.
    task_window_days: int = Field(7, gt=0)
    quote_follow_up_sla_hours: int = Field(24, gt=0)
    competitor_sla_hours: int = Field(48, gt=0)
    competitors: tuple[Word, ...] = (
        "Salesforce", "HubSpot", "Zoho", "Pipedrive", "Dynamics", "纷享销客", "销售易", "钉钉",
    )  # fmt: skip
    # Topic → its words (any case, found inside the text): the keywords of a message's reading.
    topics: dict[Word, tuple[Word, ...]] = Field(
        default_factory=lambda: {
            "price": (
                "price",
                "pricing",
                "quote",
                "cost",
                "discount",
                "价格",
                "报价",
                "多少钱",
                "折扣",
                "年费",
            ),
            "features": (
                "feature",
                "support",
                "integrate",
                "api",
                "report",
                "功能",
                "支持",
                "对接",
                "接口",
                "报表",
            ),
            "delivery_time": (
                "deliver",
                "arrive",
                "shipping",
                "when will",
                "发货",
                "送到",
                "到货",
                "物流",
            ),
        }  # fmt: skip
    )

    @field_validator("topics")
    @classmethod
    def _words(cls, topics: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        empty = [topic for topic, words in topics.items() if not words]
        if empty:
            raise ValueError(f"topic {empty[0]!r} has no words")
        return topics


TicketPriority = Literal["P0", "P1", "P2", "P3"]


class TicketRules(_RulesModel):
    """The ticket workflow (``crm_predict.core.tickets``): priorities from the source CRM's words,
    escalation of an unresolved ticket to the owner's manager, a survey once closed."""

    # Source values (any case) per priority; anything else is ``default_priority``. Given in a
    # rules file, the table replaces the built-in one whole.
    priority_values: dict[TicketPriority, tuple[Word, ...]] = Field(
        default_factory=lambda: {
            "P0": ("p0", "0", "urgent", "critical", "blocker", "highest", "紧急"),
            "P1": ("p1", "1", "high", "高"),
            "P2": ("p2", "2", "medium", "normal", "中"),
            "P3": ("p3", "3", "low", "lowest", "低"),
        }
    )
    default_priority: TicketPriority = "P2"
    escalate_after_hours: int = Field(24, gt=0)
    escalation_sla_hours: int = Field(4, gt=0)
    survey_window_days: int = Field(7, gt=0)
    survey_sla_hours: int = Field(48, gt=0)

    @field_validator("priority_values")
    @classmethod
    def _one_priority_each(cls, table: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        seen: dict[str, str] = {}
        out = {}
        for priority, values in table.items():
            out[priority] = tuple(str(v).lower() for v in values)  # matched case-insensitively
            for value in out[priority]:
                if seen.setdefault(value, priority) != priority:
                    raise ValueError(f"{value!r} is listed under {seen[value]} and {priority}")
        return out

    @field_validator("priority_values", mode="before")
    @classmethod
    def _numbers_as_text(cls, table: object) -> object:
        # YAML reads `1` as a number: a source's priority 1 is the text "1" here.
        if isinstance(table, dict):
            return {
                k: [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in values]
                if isinstance(values, list | tuple) else values
                for k, values in table.items()
            }  # fmt: skip
        return table


class Rules(_RulesModel):
    lead: LeadRules = Field(default_factory=LeadRules)
    deal: DealRules = Field(default_factory=DealRules)
    churn: ChurnRules = Field(default_factory=ChurnRules)
    value: ValueRules = Field(default_factory=ValueRules)
    assignment: AssignmentRules = Field(default_factory=AssignmentRules)
    messages: MessageRules = Field(default_factory=MessageRules)
    tickets: TicketRules = Field(default_factory=TicketRules)
    tags: tuple[TagRule, ...] = ()

    def as_dict(self) -> dict:
        return self.model_dump(mode="json")

    def tag_rules(self, model_name: str) -> list[TagRule]:
        """The user's tag rules the given model's write-back evaluates."""
        return [r for r in self.tags if TAG_ENTITIES[r.entity] == model_name]


RULES = Rules()  # the built-in defaults (``rules.default.yaml`` says the same)
DEFAULT_RULES_FILE = Path(__file__).with_name("rules.default.yaml")


def load_rules(path: Path | None) -> Rules:
    """The rules of a YAML file (a missing key keeps its default); ``None``: the built-in
    defaults. A bad file is a ``UserError`` naming the file and the key path."""
    if path is None:
        return RULES
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read rules file {str(path)!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path.name}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path.name}: expected a mapping of sections (lead, deal, …) at the top")
    try:
        return Rules.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"{path.name}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    """``lead.mql_threshold: Input should be a valid integer`` (the first error; how many more)."""
    errors = exc.errors()
    error = errors[0]
    loc = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(error["loc"][:-1])
        if allowed:
            message = f"unknown key; allowed: {', '.join(allowed)}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc or '(top)'}: {message}{more}"


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys of the model at ``loc`` inside ``Rules`` (list positions skipped)."""
    model: type[BaseModel] = Rules
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        candidates = [annotation, *get_args(annotation)]
        model = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if model is None:
            return []
    return list(model.model_fields)


# Tag names written back to the CRM store.
TAG_LEAD_GRADE = "lead_grade"
TAG_LEAD_SCORE = "lead_score"
TAG_MQL = "mql"
TAG_DEAL_HEALTH = "deal_health"
TAG_DEAL_COLOUR = "deal_health_colour"
TAG_CHURN_RISK = "churn_risk"
TAG_CHURN_WARNING = "churn_warning"
TAG_CLV_TIER = "clv_tier"
TAG_CLV = "clv_3y"
TAG_RFM_SEGMENT = "rfm_segment"
TAG_HIGH_ACTIVITY = "high_activity"
TAG_POTENTIAL = "potential"
TAG_ACCOUNT_TIER = "account_tier"
TAG_BEST_SLOT = "best_contact_slot"
# Flags: a tag present (value "true") while its condition holds, removed (to history) once it no
# longer does; an entity never flagged carries no such tag.
FLAG_TAGS = frozenset({TAG_MQL, TAG_CHURN_WARNING, TAG_HIGH_ACTIVITY, TAG_POTENTIAL})
# Numeric scores: summaries count them per tag, not per value (1–99 values say nothing at a glance).
SCORE_TAGS = frozenset({TAG_LEAD_SCORE, TAG_DEAL_HEALTH, TAG_CLV})

# Task types.
TASK_FIRST_CONTACT = "first_contact"
TASK_ESCALATION = "escalation"
TASK_RESCUE_DEAL = "rescue_deal"
TASK_RETENTION = "retention"
TASK_WHITEPAPER_FOLLOW_UP = "whitepaper_follow_up"

RFM_SEGMENTS = {
    ("H", "H", "H"): "champions",
    ("H", "H", "L"): "loyal",
    ("H", "L", "H"): "promising_big_spenders",
    ("H", "L", "L"): "new_customers",
    ("L", "H", "H"): "cant_lose_them",
    ("L", "H", "L"): "at_risk",
    ("L", "L", "H"): "hibernating_big_spenders",
    ("L", "L", "L"): "lost",
}


def rule_based_lead_score(
    industry: pd.Series | Sequence,
    is_decision_maker: pd.Series | Sequence,
    region: pd.Series | Sequence,
    site_visits: pd.Series | Sequence,
    pricing_views: pd.Series | Sequence,
    whitepapers: pd.Series | Sequence,
    trial_requests: pd.Series | Sequence,
    days_since_last_interaction: pd.Series | Sequence,
    rules: LeadRules = RULES.lead,
) -> pd.Series | np.ndarray:
    """The seed's points score: the baseline every ML model must beat, and a feature too.

    Blank counts score nothing, a blank last interaction counts as inactive, text matches ignore
    case. Columns are Series (a Series on ``industry``'s index comes back) or arrays/lists (a
    float array comes back). Computed on numpy arrays: the online API runs it (the on-demand
    feature) per request, where a pandas call per column costs more than the rule.
    """
    score = (
        _lower_in(industry, rules.target_industries) * rules.points_target_industry
        + _flag(is_decision_maker) * rules.points_decision_maker
        + ~_lower_in(region, rules.target_regions) * rules.points_outside_region
        + _count(site_visits) * rules.points_per_activity.visit
        + _count(pricing_views) * rules.points_per_activity.pricing
        + _count(whitepapers) * rules.points_per_activity.content
        + _count(trial_requests) * rules.points_per_activity.trial
        + (_numbers(days_since_last_interaction, missing=np.inf) >= rules.inactive_days)
        * rules.points_inactive
    ).astype(float)
    if isinstance(industry, pd.Series):
        return pd.Series(score, index=industry.index)
    return score


def _values(values: pd.Series | Sequence) -> np.ndarray:
    """A column's values as a numpy array (object for text, blanks and extension dtypes)."""
    if isinstance(values, pd.Series | pd.Index):
        return values.to_numpy()
    if isinstance(values, np.ndarray):
        return values
    return np.array(values, dtype=object)


def _lower_in(values: pd.Series | Sequence, allowed: tuple[str, ...]) -> np.ndarray:
    """Case-insensitive membership; blanks and non-text values are not members."""
    return np.fromiter(
        (isinstance(v, str) and v.lower() in allowed for v in values), bool, len(values)
    )


def _floats(values: pd.Series | Sequence) -> np.ndarray:
    """``Series.to_numpy(dtype=float, na_value=nan)`` on any column: blanks (None, NaN, NA, NaT)
    become NaN; raises TypeError/ValueError for text that is not a number."""
    x = _values(values)
    if x.dtype.kind in "biuf":
        return x.astype(float)
    if x.dtype.kind != "O":  # datetimes, fixed-width text: pandas' own conversion
        return pd.Series(x).to_numpy(dtype=float, na_value=np.nan)
    x = x.copy()
    x[pd.isna(x)] = np.nan
    return x.astype(float)


def _numbers(values: pd.Series | Sequence, missing: float) -> np.ndarray:
    try:
        x = _floats(values)
    except (TypeError, ValueError):  # text: what parses as a number counts
        x = pd.to_numeric(pd.Series(_values(values)), errors="coerce").to_numpy(
            dtype=float, na_value=np.nan
        )
    return np.where(np.isnan(x), missing, x)


def _count(values: pd.Series | Sequence) -> np.ndarray:
    return _numbers(values, missing=0.0)


def _flag(values: pd.Series | Sequence) -> np.ndarray:
    """Truthiness with blanks false (1/0 flags; text flags keep Python's truthiness)."""
    try:
        x = _floats(values)
    except (TypeError, ValueError):
        return pd.Series(_values(values)).fillna(False).astype(bool).to_numpy()
    return np.where(np.isnan(x), 0.0, x) != 0


def lead_score_1_99(probability: np.ndarray | pd.Series) -> np.ndarray:
    """Conversion probability shown as a 1–99 score."""
    return np.clip(np.rint(np.asarray(probability, dtype=float) * 100), 1, 99).astype(int)


def lead_grade(score: np.ndarray | pd.Series, quartile_edges: tuple[int, int, int] = (75, 50, 25)):
    """Grade A (top quartile of the 1–99 scale) down to D."""
    score = np.asarray(score)
    a, b, c = quartile_edges
    return np.select([score >= a, score >= b, score >= c], ["A", "B", "C"], default="D")


def is_mql(points: np.ndarray | pd.Series, rules: LeadRules = RULES.lead) -> np.ndarray:
    return np.asarray(points) >= rules.mql_threshold


def deal_health_score(p_win: np.ndarray | pd.Series) -> np.ndarray:
    """Deal health 0–100 = 100 × P(win)."""
    return np.clip(np.rint(np.asarray(p_win, dtype=float) * 100), 0, 100).astype(int)


def deal_colour(health: np.ndarray | pd.Series, rules: DealRules = RULES.deal) -> np.ndarray:
    health = np.asarray(health)
    return np.select(
        [health >= rules.green_at, health >= rules.yellow_at], ["green", "yellow"], default="red"
    )


def churn_risk_level(
    p_churn: np.ndarray | pd.Series, rules: ChurnRules = RULES.churn
) -> np.ndarray:
    p = np.asarray(p_churn, dtype=float)
    return np.select([p >= rules.high_at, p >= rules.medium_at], ["high", "medium"], default="low")


def value_tier(yearly_spend: np.ndarray | pd.Series, rules: ValueRules = RULES.value) -> np.ndarray:
    spend = np.asarray(yearly_spend, dtype=float)
    return np.select(
        [spend > rules.diamond_above, spend >= rules.gold_from],
        ["diamond", "gold"],
        default="normal",
    )


def rfm_medians(recency_days, frequency, monetary) -> tuple[float, float, float]:
    """The population medians RFM compares against (computed once when scoring in chunks)."""
    return tuple(float(np.nanmedian(np.asarray(v, dtype=float))) for v in (recency_days, frequency, monetary))  # fmt: skip


def rfm_segment(
    recency_days, frequency, monetary, medians: tuple[float, float, float] | None = None
) -> np.ndarray:
    """Eight RFM segments: each of R, F, M is High or Low against its median (recent = High).

    ``medians`` are the population's (``rfm_medians``); by default those of the given rows."""
    r = np.asarray(recency_days, dtype=float)
    f = np.asarray(frequency, dtype=float)
    m = np.asarray(monetary, dtype=float)
    if r.size == 0:
        return np.array([], dtype=object)
    r_med, f_med, m_med = medians if medians is not None else rfm_medians(r, f, m)
    # Each row's (R, F, M) as a 3-bit code (Low = 1) into the segments in that order.
    code = 4 * ~(r <= r_med) + 2 * ~(f >= f_med) + ~(m >= m_med)
    segments = np.array([RFM_SEGMENTS[key] for key in itertools.product("HL", repeat=3)], dtype=object)  # fmt: skip
    return segments[code]


def is_high_activity(visits_30d, rules: ValueRules = RULES.value) -> np.ndarray:
    return np.asarray(visits_30d, dtype=float) >= rules.high_activity_visits_30d


def is_potential(spend_last_3m, spend_prior_3m, rules: ValueRules = RULES.value) -> np.ndarray:
    """Spend up by at least ``potential_growth_pct`` % over the last 3 months vs the 3 before,
    for customers whose prior spend is above 0 and at least ``potential_min_prior_spend`` (a
    first purchase after nothing is not growth)."""
    last = np.asarray(spend_last_3m, dtype=float)
    prior = np.asarray(spend_prior_3m, dtype=float)
    counted = (prior > 0) & (prior >= rules.potential_min_prior_spend)
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = np.where(counted, (last - prior) / np.where(counted, prior, 1.0) * 100.0, np.nan)
    return counted & (growth >= rules.potential_growth_pct)


def account_tier(won_amount_12m, rules: ValueRules = RULES.value) -> np.ndarray:
    """A B2B account's value tier: its deals won in the trailing 12 months, summed, through the
    yearly-spend thresholds of ``value_tier`` (the design notes give one set of tiers)."""
    return value_tier(won_amount_12m, rules)


def is_churn_warning(days_inactive, rules: ChurnRules = RULES.churn) -> np.ndarray:
    return np.asarray(days_inactive, dtype=float) >= rules.inactive_warning_days


def slot_label(slot: int) -> str:
    """Hour-of-week slot 0..167 (Monday 00:00 = 0) as 'Tue 14:00'."""
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    return f"{days[slot // 24]} {slot % 24:02d}:00"


# --- Tasks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """A task a rule asks for; ``dedup_key`` makes creating it twice a no-op."""

    type: str
    entity_type: str
    entity_id: int
    owner_id: int | None
    due_at: datetime
    sla_hours: int
    reason: str
    escalation_level: int = 0
    period: str = ""

    @property
    def dedup_key(self) -> str:
        raw = (
            f"{self.type}|{self.entity_type}|{self.entity_id}|{self.escalation_level}|{self.period}"
        )
        return hashlib.sha1(raw.encode()).hexdigest()


def _due(
    kind: str, entity: str, entity_id: int, owner_id: int | None, start: datetime, sla: int,
    reason: str, **extra,
) -> TaskSpec:  # fmt: skip
    """A task of ``kind`` due ``sla`` hours after ``start``."""
    due_at = start + timedelta(hours=sla)
    return TaskSpec(kind, entity, entity_id, owner_id, due_at, sla, reason, **extra)


def first_contact_task(
    lead_id: int, owner_id: int | None, created_at: datetime, rules: Rules = RULES
) -> TaskSpec:
    sla, reason = rules.lead.first_contact_sla_hours, "New lead: first contact within the SLA"
    return _due(TASK_FIRST_CONTACT, "lead", lead_id, owner_id, created_at, sla, reason)


def lead_escalation_task(
    lead_id: int, manager_id: int | None, created_at: datetime, now: datetime, rules: Rules = RULES
) -> TaskSpec | None:
    """Unhandled lead after 24 h → escalation to the manager."""
    hours, sla = rules.lead.escalate_unhandled_hours, rules.lead.escalation_sla_hours
    if now - created_at < timedelta(hours=hours):
        return None
    reason = f"Lead unhandled for more than {hours} h"
    return _due(TASK_ESCALATION, "lead", lead_id, manager_id, now, sla, reason, escalation_level=1)


def whitepaper_follow_up_task(
    contact_id: int, owner_id: int | None, downloaded_at: datetime, rules: Rules = RULES
) -> TaskSpec:
    hours = rules.lead.whitepaper_follow_up_hours
    return _due(
        TASK_WHITEPAPER_FOLLOW_UP, "contact", contact_id, owner_id, downloaded_at, hours,
        f"Whitepaper downloaded: follow up within {hours} h",
        period=downloaded_at.strftime("%Y-%m-%dT%H"),
    )  # fmt: skip


def deal_tasks(
    deal_id: int,
    owner_id: int | None,
    manager_id: int | None,
    colour: str,
    days_idle: float,
    stage: str,
    now: datetime,
    rules: Rules = RULES,
) -> list[TaskSpec]:
    """Rescue for red deals, escalation for idle deals, one per (deal, stage)."""
    rules = rules.deal
    tasks = []
    if colour == "red":
        sla, reason = rules.rescue_sla_hours, "Deal health is red"
        tasks.append(
            _due(TASK_RESCUE_DEAL, "deal", deal_id, owner_id, now, sla, reason, period=stage)
        )
    if days_idle >= rules.idle_escalation_days:
        reason = f"No activity for {int(days_idle)} days on an open deal"
        tasks.append(
            _due(
                TASK_ESCALATION, "deal", deal_id, manager_id, now, rules.escalation_sla_hours,
                reason, escalation_level=1, period=stage,
            )
        )  # fmt: skip
    return tasks


def retention_task(
    contact_id: int, owner_id: int | None, risk: str, tier: str, now: datetime, rules: Rules = RULES
) -> TaskSpec | None:
    """High-value customers at high churn risk get a retention task (one per quarter)."""
    if risk != "high" or tier not in ("diamond", "gold"):
        return None
    quarter = f"{now.year}Q{(now.month - 1) // 3 + 1}"
    return _due(
        TASK_RETENTION, "contact", contact_id, owner_id, now, rules.churn.retention_sla_hours,
        f"{tier.title()} customer at high churn risk", period=quarter,
    )  # fmt: skip
