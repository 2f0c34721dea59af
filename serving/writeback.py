"""Scores → tags, tasks and prediction-log rows: the one mapping the batch job and the API share.

A *scored frame* has one row per entity: ``entity_id``, ``score`` (P(convert), P(win), P(churn),
CLV or P(best slot)) and, where a rule needs them, a few context columns. A rule whose columns are
absent is skipped, so the API can write back what a request carries and the batch job everything.

The batch adds its entity's rule context (``crm_predict.features.rule_context.CONTEXTS``) and the
model spec's ``tag_features``; the API what the features imply (``rule_values``) and the record's
``record_context`` fields.

``high_activity`` (site visits in 30 days) is written for leads (lead_scoring), customers (clv) and
the other contacts (next_best_time: a blank ``visits_30d`` is a customer's, whose flag it leaves
to clv, value ``LEAVE``). Accounts get ``account_tier`` from their won deals (``account_tag_rows``):
no model scores them.

Each model's tag and task rules are its own module's ``tag_values`` and ``tasks``
(``training/<model>.py``, over ``crm_predict.core.rules``' thresholds); this module turns what they
decide into rows and writes them.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import numpy as np
import pandas as pd
from crm_predict.crm_store.bulk import EncodedRows
from crm_predict.crm_store.repository import (
    PREDICTION_COLUMNS,
    TAG_COLUMNS,
    TagRows,
    create_tasks,
    encode_predictions,
    log_predictions,
    prepare_tags,
    upsert_tags,
)
from crm_predict.training.specs import MODULES, SPECS
from sqlalchemy.orm import Session

from crm_predict.core import rules as R
from crm_predict.core.rules import RULES, SCORE_TAGS, Rules, TaskSpec
from crm_predict.core.tagging import LEAVE, has


class ModelRef(Protocol):
    """What write-back needs to know about the model that scored (``crm_predict.serving.loader.LoadedModel``)."""

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


# --- Tags -------------------------------------------------------------------------------------


def tag_values(
    model_name: str,
    scored: pd.DataFrame,
    rfm_medians: tuple[float, float, float] | None = None,
    rules: Rules = RULES,
) -> dict[str, np.ndarray]:
    """Tag name → one value per row of ``scored``, for the model that scored it (the rules'
    own tags, then the user's tag rules, which replace a built-in tag of the same name)."""
    if model_name not in MODULES:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(MODULES)}")
    values = MODULES[model_name].tag_values(scored, rules, rfm_medians)
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
        if not has(scored, *condition.columns):
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
    A flag not set has no value: its tag is removed (``crm_predict.core.rules.FLAG_TAGS``)."""
    values = tag_values(model.name, scored, rfm_medians, rules)
    own = {r.name for r in rules.tag_rules(model.name)}  # already None where not set
    ids = scored["entity_id"].to_numpy(dtype=np.int64)
    shared = {
        "entity_type": SPECS[model.name].crm_entity, "model_name": model.name,
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
    """Long frame of tags (``crm_predict.crm_store.repository.TAG_COLUMNS``) with the model's provenance."""
    rows, shared = tag_rows(model, scored, scored_at, rfm_medians, rules)
    if rows.empty:
        return pd.DataFrame(columns=TAG_COLUMNS)
    return rows.assign(**shared)[TAG_COLUMNS]


# --- Tasks ------------------------------------------------------------------------------------


def task_specs(
    model_name: str, scored: pd.DataFrame, now: datetime, rules: Rules = RULES
) -> list[TaskSpec]:
    """The tasks the rules ask for, given one model's scored frame (its module's ``tasks``)."""
    if model_name not in MODULES:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(MODULES)}")
    return MODULES[model_name].tasks(scored, now, rules)


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
    if has(scored, "region"):
        for key in ("entity_id", "contact_id"):
            if has(scored, key):
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
        kind = "contact" if task.entity_type == "contact" and has(scored, "contact_id") else ""
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
        "entity_type": SPECS[model.name].crm_entity, "model_name": model.name,
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
