"""Scores → tags, tasks and prediction-log rows: the one mapping the batch job and the API share.

A *scored frame* has one row per entity: ``entity_id``, ``score`` (P(convert), P(win), P(churn),
CLV or P(best slot)) and, where a rule needs them, a few context columns. A rule whose columns are
absent is skipped, so the API can write back what a request carries and the batch job everything.

| model | context columns (all optional) |
|---|---|
| lead_scoring | ``rule_points``, ``site_visits_30d`` (the model's feature), ``owner_id``, ``manager_id``, ``created_at``, ``first_contacted_at``, ``contact_id``, ``last_whitepaper_at`` |
| deal_health | ``owner_id``, ``manager_id``, ``stage``, ``days_idle`` |
| churn | ``owner_id``, ``days_inactive``, ``yearly_spend`` |
| clv | ``yearly_spend``, ``recency_days``, ``frequency``, ``monetary``, ``visits_30d``, ``spend_last_3m``, ``spend_prior_3m`` |
| next_best_time | ``best_slots`` (list of hour-of-week slots, best first), ``best_channel``, ``visits_30d`` |

``high_activity`` (site visits in 30 days) is written for leads (lead_scoring), customers (clv) and
the other contacts (next_best_time: a blank ``visits_30d`` is a customer's, whose flag it leaves
to clv, value ``LEAVE``). Accounts get ``account_tier`` from their won deals (``account_tag_rows``):
no model scores them.

All thresholds and task rules come from ``crm_predict.rules``; nothing here decides a number.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from crm_predict import rules as R
from crm_predict.rules import RULES, SCORE_TAGS, Rules, TaskSpec
from crm_store.bulk import EncodedRows
from crm_store.repository import (
    PREDICTION_COLUMNS,
    TAG_COLUMNS,
    TagRows,
    create_tasks,
    encode_predictions,
    log_predictions,
    prepare_tags,
    upsert_tags,
)
from training.specs import SPECS

ENTITY_TYPES = {name: spec.crm_entity for name, spec in SPECS.items()}
# Model features the built-in tags read beside the context (the batch adds them to the frame).
TAG_FEATURES = {"lead_scoring": ("site_visits_30d",)}
# A tag value saying "not this model's to set here": no row is written, the stored tag stays.
LEAVE = "\x00leave"


class ModelRef(Protocol):
    """What write-back needs to know about the model that scored (``serving.loader.LoadedModel``)."""

    name: str
    version: str
    run_id: str


@dataclass(frozen=True)
class ModelVersionRef:
    """A plain ``ModelRef`` (tests, Spark workers)."""

    name: str
    version: str
    run_id: str


@dataclass
class WriteBackResult:
    """What one ``write_back`` call wrote: counts per (tag name, value), tasks new, log rows."""

    tags_written: int = 0
    tasks_created: int = 0
    predictions_logged: int = 0
    tag_counts: Counter = field(default_factory=Counter)
    task_counts: Counter = field(default_factory=Counter)
    assignment_counts: Counter = field(default_factory=Counter)  # default_owner / queue

    def add(self, other: WriteBackResult) -> None:
        self.tags_written += other.tags_written
        self.tasks_created += other.tasks_created
        self.predictions_logged += other.predictions_logged
        self.tag_counts.update(other.tag_counts)
        self.task_counts.update(other.task_counts)
        self.assignment_counts.update(other.assignment_counts)


def _flag(values: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(values, dtype=bool), "true", "false").astype(object)


def _has(scored: pd.DataFrame, *columns: str) -> bool:
    return all(c in scored.columns for c in columns)


def _optional_id(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _timestamp(value) -> datetime | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()


# --- Tags -------------------------------------------------------------------------------------


def lead_tag_values(scored: pd.DataFrame, rules: Rules = RULES) -> dict[str, np.ndarray]:
    """Lead score 1–99 and grade A–D from P(convert); MQL from the rule-based points."""
    score = R.lead_score_1_99(scored["score"])
    values = {
        R.TAG_LEAD_SCORE: score.astype(str).astype(object),
        R.TAG_LEAD_GRADE: R.lead_grade(score),
    }
    if _has(scored, "rule_points"):
        values[R.TAG_MQL] = _flag(R.is_mql(scored["rule_points"].fillna(0), rules.lead))
    if _has(scored, "site_visits_30d"):
        values[R.TAG_HIGH_ACTIVITY] = _high_activity(scored["site_visits_30d"], rules)
    return values


def _high_activity(visits: pd.Series, rules: Rules) -> np.ndarray:
    return _flag(R.is_high_activity(pd.to_numeric(visits, errors="coerce").fillna(0), rules.value))


def deal_tag_values(scored: pd.DataFrame, rules: Rules = RULES) -> dict[str, np.ndarray]:
    """Deal health 0–100 and its colour."""
    health = R.deal_health_score(scored["score"])
    return {R.TAG_DEAL_HEALTH: health.astype(str).astype(object), R.TAG_DEAL_COLOUR: R.deal_colour(health, rules.deal)}  # fmt: skip


def churn_tag_values(scored: pd.DataFrame, rules: Rules = RULES) -> dict[str, np.ndarray]:
    """Churn risk high/medium/low, and the churn warning after 30 days without activity."""
    values = {R.TAG_CHURN_RISK: R.churn_risk_level(scored["score"], rules.churn)}
    if _has(scored, "days_inactive"):
        values[R.TAG_CHURN_WARNING] = _flag(
            R.is_churn_warning(scored["days_inactive"].fillna(np.inf), rules.churn)
        )
    return values


def clv_tag_values(
    scored: pd.DataFrame,
    rfm_medians: tuple[float, float, float] | None = None,
    rules: Rules = RULES,
) -> dict[str, np.ndarray]:
    """Value tier (yearly spend), RFM segment (against population medians) and behaviour flags."""
    values: dict[str, np.ndarray] = {}
    if _has(scored, "yearly_spend"):
        values[R.TAG_CLV_TIER] = R.value_tier(scored["yearly_spend"].fillna(0), rules.value)
    if _has(scored, "recency_days", "frequency", "monetary"):
        values[R.TAG_RFM_SEGMENT] = R.rfm_segment(
            scored["recency_days"], scored["frequency"], scored["monetary"], medians=rfm_medians
        )
    if _has(scored, "visits_30d"):
        values[R.TAG_HIGH_ACTIVITY] = _high_activity(scored["visits_30d"], rules)
    if _has(scored, "spend_last_3m", "spend_prior_3m"):
        values[R.TAG_POTENTIAL] = _flag(
            R.is_potential(
                scored["spend_last_3m"].fillna(0), scored["spend_prior_3m"].fillna(0), rules.value
            )
        )
    return values


def best_slot_value(slots, channel) -> str:
    """'Tue 14:00 email' for the best hour-of-week slot and channel."""
    label = R.slot_label(int(list(slots)[0]))
    return label if channel is None or pd.isna(channel) else f"{label} {channel}"


def next_best_time_tag_values(scored: pd.DataFrame, rules: Rules = RULES) -> dict[str, np.ndarray]:
    """``best_slot_value`` of every row, built once per distinct (slot, channel) pair, and the
    contact's ``high_activity`` flag."""
    values = {}
    if _has(scored, "visits_30d"):  # blank for customers: clv's
        visits = pd.to_numeric(scored["visits_30d"], errors="coerce")
        flag = _high_activity(visits, rules)
        values[R.TAG_HIGH_ACTIVITY] = np.where(visits.isna().to_numpy(), LEAVE, flag).astype(object)
    slots = scored["best_slots"].to_numpy()
    first = np.fromiter((s[0] for s in slots), dtype=np.int64, count=len(slots))
    if _has(scored, "best_channel"):
        codes, channels = pd.factorize(scored["best_channel"].astype(object))
    else:
        codes, channels = np.full(len(first), -1), pd.Index([])
    pairs, inverse = np.unique(first * (len(channels) + 1) + codes + 1, return_inverse=True)
    labels = [
        best_slot_value([pair // (len(channels) + 1)], channels[c - 1] if c else None)
        for pair, c in zip(pairs, pairs % (len(channels) + 1), strict=True)
    ]
    return {R.TAG_BEST_SLOT: np.array(labels, dtype=object)[inverse.reshape(-1)], **values}


def tag_values(
    model_name: str,
    scored: pd.DataFrame,
    rfm_medians: tuple[float, float, float] | None = None,
    rules: Rules = RULES,
) -> dict[str, np.ndarray]:
    """Tag name → one value per row of ``scored``, for the model that scored it (the rules'
    own tags, then the user's tag rules, which replace a built-in tag of the same name)."""
    if model_name == "lead_scoring":
        values = lead_tag_values(scored, rules)
    elif model_name == "deal_health":
        values = deal_tag_values(scored, rules)
    elif model_name == "churn":
        values = churn_tag_values(scored, rules)
    elif model_name == "clv":
        values = clv_tag_values(scored, rfm_medians, rules)
    elif model_name == "next_best_time":
        values = next_best_time_tag_values(scored, rules)
    else:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(R.MODEL_NAMES)}")
    return {**values, **user_tag_values(model_name, scored, rules)}


def user_tag_values(model_name: str, scored: pd.DataFrame, rules: Rules = RULES) -> dict:
    """The user's tag rules (``rules.tags``) for this model's entity: per tag name the value of
    the first of its rules that holds, None (no such tag) where none does. A rule reading a column
    ``scored`` lacks is skipped (the batch reports such rules in its summary)."""
    values: dict[str, np.ndarray] = {}
    decided: dict[str, np.ndarray] = {}
    for rule in rules.tag_rules(model_name):
        condition = rule.condition
        if rule.name not in values:
            values[rule.name] = np.full(len(scored), None, dtype=object)
            decided[rule.name] = np.zeros(len(scored), dtype=bool)
        if not _has(scored, *condition.columns):
            continue
        hold = condition.evaluate(scored) & ~decided[rule.name]
        values[rule.name][hold] = rule.value
        decided[rule.name] |= hold
    return values


def tag_rows(
    model: ModelRef,
    scored: pd.DataFrame,
    scored_at: datetime,
    rfm_medians: tuple[float, float, float] | None = None,
    rules: Rules = RULES,
) -> tuple[pd.DataFrame, dict]:
    """The tags of ``scored``: a long frame of ``entity_id, name, value`` and the columns every
    row shares (entity type and the model's provenance), kept apart: a bulk write sends those once.
    A flag not set has no value: its tag is removed (``crm_predict.rules.FLAG_TAGS``)."""
    values = tag_values(model.name, scored, rfm_medians, rules)
    own = {r.name for r in rules.tag_rules(model.name)}  # already None where not set
    ids = scored["entity_id"].to_numpy(dtype=np.int64)
    shared = {
        "entity_type": ENTITY_TYPES[model.name], "model_name": model.name,
        "model_version": str(model.version), "run_id": model.run_id, "scored_at": scored_at,
    }  # fmt: skip
    parts = []
    for name, vals in values.items():
        mine = np.asarray(vals != LEAVE, dtype=bool)
        part_ids = ids if mine.all() else ids[mine]
        vals = vals if mine.all() else np.asarray(vals)[mine]
        parts.append(
            pd.DataFrame(
                {
                    "entity_id": part_ids,
                    "name": name,
                    "value": vals if name in own else _unless_unflagged(name, vals),
                }
            )
        )
    if not parts or not len(ids):
        return pd.DataFrame(columns=["entity_id", "name", "value"]), shared
    return pd.concat(parts, ignore_index=True), shared


def account_tag_rows(
    accounts: pd.DataFrame, scored_at: datetime, rules: Rules = RULES
) -> tuple[pd.DataFrame, dict]:
    """``account_tier`` of each account (``entity_id``, ``won_12m``: its deals won in the trailing
    12 months, summed), as ``tag_rows`` gives them. No model scores accounts: model name ``rules``,
    no version or run (a rerun's rows equal the stored ones, so it writes nothing)."""
    tier = R.account_tier(accounts["won_12m"].fillna(0), rules.value)
    rows = pd.DataFrame(
        {
            "entity_id": accounts["entity_id"].to_numpy(dtype=np.int64),
            "name": R.TAG_ACCOUNT_TIER,
            "value": np.asarray(tier, dtype=object),
        }
    )
    shared = {
        "entity_type": "account", "model_name": "rules", "model_version": "",
        "run_id": "", "scored_at": scored_at,
    }  # fmt: skip
    return rows, shared


def _unless_unflagged(name: str, values: np.ndarray) -> np.ndarray:
    """A flag's values with None (remove the tag) where it is not set; other tags' as they are."""
    if name not in R.FLAG_TAGS:
        return values
    return np.where(values == "true", values, None)


def tag_frame(
    model: ModelRef,
    scored: pd.DataFrame,
    scored_at: datetime,
    rfm_medians: tuple[float, float, float] | None = None,
    rules: Rules = RULES,
) -> pd.DataFrame:
    """Long frame of tags (``crm_store.repository.TAG_COLUMNS``) with the model's provenance."""
    rows, shared = tag_rows(model, scored, scored_at, rfm_medians, rules)
    if rows.empty:
        return pd.DataFrame(columns=TAG_COLUMNS)
    return rows.assign(**shared)[TAG_COLUMNS]


# --- Tasks ------------------------------------------------------------------------------------


def lead_tasks(scored: pd.DataFrame, now: datetime, rules: Rules = RULES) -> list[TaskSpec]:
    """First contact (2 h SLA) for leads nobody has contacted, escalation to the manager after 24 h
    unhandled, and a 24 h follow-up on a whitepaper download in the last 24 h."""
    tasks: list[TaskSpec] = []
    if _has(scored, "created_at", "first_contacted_at"):
        new = scored[scored["first_contacted_at"].isna() & scored["created_at"].notna()]
        owners = new["owner_id"] if _has(new, "owner_id") else [None] * len(new)
        managers = new["manager_id"] if _has(new, "manager_id") else [None] * len(new)
        for lead_id, created, owner, manager in zip(
            new["entity_id"], new["created_at"], owners, managers, strict=True
        ):
            created = _timestamp(created)
            tasks.append(R.first_contact_task(int(lead_id), _optional_id(owner), created, rules))
            escalation = R.lead_escalation_task(
                int(lead_id), _optional_id(manager), created, now, rules
            )
            if escalation is not None:
                tasks.append(escalation)
    if _has(scored, "contact_id", "last_whitepaper_at"):
        window = timedelta(hours=rules.lead.whitepaper_follow_up_hours)
        downloaded = pd.to_datetime(scored["last_whitepaper_at"])
        recent = scored[
            (downloaded <= now) & (downloaded > now - window) & scored["contact_id"].notna()
        ]
        recent = recent.drop_duplicates("contact_id")
        owners = recent["owner_id"] if _has(recent, "owner_id") else [None] * len(recent)
        for contact_id, at, owner in zip(
            recent["contact_id"], recent["last_whitepaper_at"], owners, strict=True
        ):
            tasks.append(
                R.whitepaper_follow_up_task(
                    int(contact_id), _optional_id(owner), _timestamp(at), rules
                )
            )
    return tasks


def deal_task_list(scored: pd.DataFrame, now: datetime, rules: Rules = RULES) -> list[TaskSpec]:
    """Rescue for red deals, escalation to the manager for deals idle ≥ 7 days."""
    colours = R.deal_colour(R.deal_health_score(scored["score"]), rules.deal)
    idle = scored["days_idle"].fillna(0) if _has(scored, "days_idle") else pd.Series(0.0, index=scored.index)  # fmt: skip
    wanted = (colours == "red") | (idle.to_numpy() >= rules.deal.idle_escalation_days)
    rows = scored[wanted]

    def column(name: str) -> list:
        return rows[name].tolist() if _has(rows, name) else [None] * len(rows)

    tasks: list[TaskSpec] = []
    for deal_id, owner, manager, stage, colour, days in zip(
        rows["entity_id"].tolist(), column("owner_id"), column("manager_id"), column("stage"),
        colours[wanted], idle[wanted].tolist(), strict=True,
    ):  # fmt: skip
        tasks += R.deal_tasks(
            int(deal_id), _optional_id(owner), _optional_id(manager), str(colour), float(days),
            str(stage or ""), now, rules,
        )  # fmt: skip
    return tasks


def churn_task_list(scored: pd.DataFrame, now: datetime, rules: Rules = RULES) -> list[TaskSpec]:
    """Retention for high-value (diamond/gold by yearly spend) customers at high churn risk."""
    if not _has(scored, "yearly_spend"):
        return []
    risk = R.churn_risk_level(scored["score"], rules.churn)
    tier = R.value_tier(scored["yearly_spend"].fillna(0), rules.value)
    wanted = (risk == "high") & (tier != "normal")
    rows = scored[wanted]
    owners = rows["owner_id"] if _has(rows, "owner_id") else [None] * len(rows)
    tasks = []
    for contact_id, owner, r, t in zip(rows["entity_id"], owners, risk[wanted], tier[wanted], strict=True):  # fmt: skip
        task = R.retention_task(int(contact_id), _optional_id(owner), str(r), str(t), now, rules)
        if task is not None:
            tasks.append(task)
    return tasks


def task_specs(
    model_name: str, scored: pd.DataFrame, now: datetime, rules: Rules = RULES
) -> list[TaskSpec]:
    """The tasks the rules ask for, given one model's scored frame."""
    if model_name == "lead_scoring":
        return lead_tasks(scored, now, rules)
    if model_name == "deal_health":
        return deal_task_list(scored, now, rules)
    if model_name == "churn":
        return churn_task_list(scored, now, rules)
    if model_name in ("clv", "next_best_time"):
        return []
    raise ValueError(f"unknown model {model_name!r}; known: {', '.join(R.MODEL_NAMES)}")


def assign_owners(
    tasks: list[TaskSpec],
    scored: pd.DataFrame,
    rules: Rules = RULES,
    default_owners: dict[str, int] | None = None,
) -> tuple[list[TaskSpec], Counter]:
    """No task without an owner: one whose rule found none goes to the default owner of its
    entity's region (``rules.assignment``, ids resolved in ``default_owners``; the region is the
    scored row's ``region``), else to the queue (no owner, reason prefixed ``[queue:NAME]``).
    Returns the tasks and how many went to a ``default_owner`` / the ``queue``."""
    counts: Counter = Counter()
    if not any(t.owner_id is None for t in tasks):
        return tasks, counts
    region_of: dict[tuple[str, int], str] = {}
    if _has(scored, "region"):
        for key in ("entity_id", "contact_id"):
            if _has(scored, key):
                kind = "contact" if key == "contact_id" else None
                for entity, region in zip(scored[key], scored["region"], strict=True):
                    if isinstance(region, str) and not pd.isna(entity):
                        region_of.setdefault((kind or "", int(entity)), region.lower())
    owners = default_owners or {}
    queue = rules.assignment.queue
    out = []
    for task in tasks:
        if task.owner_id is not None:
            out.append(task)
            continue
        kind = "contact" if task.entity_type == "contact" and _has(scored, "contact_id") else ""
        owner = owners.get(region_of.get((kind, task.entity_id), ""))
        if owner is not None:
            out.append(replace(task, owner_id=owner))
            counts["default_owner"] += 1
        else:
            out.append(replace(task, reason=f"[queue:{queue}] {task.reason}"))
            counts["queue"] += 1
    return out, counts


# --- Prediction log and the write ---------------------------------------------------------------


def prediction_rows(
    model: ModelRef,
    scored: pd.DataFrame,
    now: datetime,
    source: str = "batch",
    request_id: str | None = None,
) -> tuple[pd.DataFrame, dict]:
    """One prediction-log row per scored entity: ``entity_id, score``, and the columns every row
    shares, kept apart (as ``tag_rows``)."""
    rows = pd.DataFrame(
        {
            "entity_id": scored["entity_id"].to_numpy(dtype=np.int64),
            "score": scored["score"].to_numpy(dtype=float),
        }
    )
    shared = {
        "entity_type": ENTITY_TYPES[model.name], "model_name": model.name,
        "model_version": str(model.version), "source": source, "request_id": request_id,
        "predicted_at": now,
    }  # fmt: skip
    return rows, shared


def prediction_frame(
    model: ModelRef,
    scored: pd.DataFrame,
    now: datetime,
    source: str = "batch",
    request_id: str | None = None,
) -> pd.DataFrame:
    """One prediction-log row per scored entity."""
    rows, shared = prediction_rows(model, scored, now, source, request_id)
    return rows.assign(**shared)[PREDICTION_COLUMNS]


@dataclass
class PreparedWrite:
    """One scored frame's write-back, computed and not yet written: the tag rows, the task specs,
    the prediction-log rows and the counts the summary reports (``prepare_write``). Building it is
    the CPU part of a write-back; ``apply_write`` is the database part, so a batch can do the two
    on different threads."""

    tags: TagRows
    tasks: list[TaskSpec]
    predictions: EncodedRows
    now: datetime
    tag_counts: Counter = field(default_factory=Counter)
    task_counts: Counter = field(default_factory=Counter)
    assignment_counts: Counter = field(default_factory=Counter)


def prepare_write(
    model: ModelRef,
    scored: pd.DataFrame,
    now: datetime,
    dialect: str,
    *,
    source: str = "batch",
    request_id: str | None = None,
    rfm_medians: tuple[float, float, float] | None = None,
    rules: Rules = RULES,
    default_owners: dict[str, int] | None = None,
) -> PreparedWrite:
    """Tags, tasks, prediction-log rows and their counts for one model's scored frame (no I/O),
    tag and log rows encoded for the bulk writes of the store's ``dialect``."""
    tags, shared = tag_rows(model, scored, now, rfm_medians, rules)
    tasks, assigned = assign_owners(
        task_specs(model.name, scored, now, rules), scored, rules, default_owners
    )
    predictions = encode_predictions(dialect, *prediction_rows(model, scored, now, source, request_id))  # fmt: skip
    prepared = PreparedWrite(prepare_tags(tags, dialect, shared), tasks, predictions, now)
    if len(tags):
        # Counts per (name, value) on integer codes, as a group-by would (a missing value is not
        # counted); numeric scores count as "*".
        names, name_keys = pd.factorize(tags["name"])
        values, value_keys = pd.factorize(tags["value"])
        shown = [*value_keys, "*"]
        values = np.where(np.asarray(name_keys.isin(SCORE_TAGS))[names], len(value_keys), values)
        keep = values >= 0
        pairs, n = np.unique(names[keep] * len(shown) + values[keep], return_counts=True)
        for pair, count in zip(pairs.tolist(), n.tolist(), strict=True):
            prepared.tag_counts[f"{name_keys[pair // len(shown)]}={shown[pair % len(shown)]}"] += (
                count
            )
    prepared.task_counts.update(Counter(t.type for t in tasks))
    prepared.assignment_counts.update(assigned)
    return prepared


def apply_write(
    session: Session, prepared: PreparedWrite, seconds: Counter | None = None
) -> WriteBackResult:
    """Write a prepared write-back: tags (previous values to history), new tasks (dedup by key),
    the prediction log. Leaves the commit to the caller. ``seconds`` adds up each part's time
    (``write_tags``, ``write_tasks``, ``write_log``)."""
    result = WriteBackResult()
    seconds = Counter() if seconds is None else seconds
    t = time.perf_counter()
    result.tags_written = upsert_tags(session, prepared.tags, prepared.now)
    seconds["write_tags"] += time.perf_counter() - t
    t = time.perf_counter()
    result.tasks_created = create_tasks(session, prepared.tasks, prepared.now)
    seconds["write_tasks"] += time.perf_counter() - t
    t = time.perf_counter()
    result.predictions_logged = log_predictions(session, prepared.predictions)
    seconds["write_log"] += time.perf_counter() - t
    result.tag_counts.update(prepared.tag_counts)
    result.task_counts.update(prepared.task_counts)
    result.assignment_counts.update(prepared.assignment_counts)
    return result


def write_back(
    session: Session,
    model: ModelRef,
    scored: pd.DataFrame,
    now: datetime,
    *,
    source: str = "batch",
    request_id: str | None = None,
    rfm_medians: tuple[float, float, float] | None = None,
    rules: Rules = RULES,
    default_owners: dict[str, int] | None = None,
) -> WriteBackResult:
    """Write tags (previous values to history), new tasks (dedup by key) and the prediction log for
    one model's scored frame. Leaves the commit to the caller (one transaction per call site)."""
    dialect = session.get_bind().dialect.name
    prepared = prepare_write(
        model, scored, now, dialect, source=source, request_id=request_id,
        rfm_medians=rfm_medians, rules=rules, default_owners=default_owners,
    )  # fmt: skip
    return apply_write(session, prepared)
