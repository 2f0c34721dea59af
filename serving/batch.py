"""Nightly batch scoring: every active lead, open deal and customer scored by each model's champion,
written back as tags, tasks and prediction-log rows in resumable chunks.

Per model: features as of ``at`` (``crm_predict.features.scoring.scoring_frame``) + the rule context (owners,
idle days, spend windows, …), both from the run's CRM snapshot (a fresh export, or the latest one
with ``export=False``) so model and rules see the same data → chunks in entity-id order → score →
``crm_predict.serving.writeback``. Views and contexts shared by several models are computed once per run.
Each chunk's writes and its ``batch_checkpoints`` row commit in one transaction, so a killed run
resumes after the last committed chunk and ends with exactly the rows a clean run writes.

The database writes run on a writer thread (``crm_predict.core.background``) fed by a bounded queue,
while the calling thread scores the next chunks and computes the next model's features and context; the
champions load on a thread of their own meanwhile. Per-model seconds: ``load`` (waiting for the
loading thread), ``features``, ``context``, ``score``, ``prepare`` (tag rows, task specs, counts,
and the tag and log rows encoded for the store's bulk writes) and ``write_wait`` are the calling
thread's; ``write`` is the writer thread's busy time (of which ``write_tags``, ``write_tasks``,
``write_log`` and ``commit``) and overlaps them; ``write_drain`` (run level) is the wait for the
last commits.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
import pandas as pd
from crm_predict.crm_store.db import background_checkpoints
from crm_predict.crm_store.models import BatchCheckpoint, BatchRun
from crm_predict.features.rule_context import (  # noqa: F401 (rule_context: read from here too)
    CONTEXT_COLUMNS,
    CONTEXT_TABLES,
    CONTEXTS,
    Tables,
    account_context,
    rule_context,
)
from crm_predict.serving.writeback import (
    PreparedWrite,
    WriteBackResult,
    account_tag_rows,
    apply_write,
    prepare_write,
)
from crm_predict.training.specs import spec
from mlflow import MlflowClient
from sqlalchemy import DateTime, bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_predict.core.background import Writer, background_writer
from crm_predict.core.errors import UserError
from crm_predict.core.rules import MODEL_NAMES, RULES, Rules, rfm_medians
from crm_predict.core.settings import Settings
from crm_predict.core.tracking import experiment_id

EXPERIMENT = "batch_scoring"
# Every table a run writes: its run and checkpoint rows and the write-back (for a clean rerun).
OUTPUT_TABLES = (
    "batch_checkpoints",
    "batch_runs",
    "prediction_log",
    "tag_history",
    "tags",
    "tasks",
)
RESUME_WITHIN = timedelta(hours=24)  # an unfinished run younger than this is resumed, not restarted
# Prepared chunks waiting for the writer thread: enough to keep it busy while the next model's
# features and context are computed, few enough to bound the memory (a chunk's tag frame).
WRITE_QUEUE_CHUNKS = 6
# The order models are scored in, by entity (the summary keeps the caller's): the entities with
# many rows first, so the writer thread is busy early, and the small ones last, whose feature passes
# (over every activity, for a few thousand open leads and deals) then overlap the big models'
# writes. A contact's one view is quick to compute; a customer's models share their views.
SCORING_ORDER = ("contact", "customer", "lead", "deal")
# The entities read and scored together, range of ids by range (contacts' and customers' models
# by contact id: a customer is a contact), per entity.
FAMILY = {"contact": "contact", "customer": "contact", "lead": "lead", "deal": "deal"}
# A range of the snapshot spans this many scoring chunks of ids (``batch_chunk_size``): the rows
# of one range are what the job holds, whatever the store's size.
RANGE_CHUNKS = 4

ScoringFrame = Callable[..., pd.DataFrame]  # (settings, model_name, at, entity_ids=None)
ModelLoader = Callable[..., object]  # (client, name, alias="champion") -> LoadedModel


@dataclass
class ModelRun:
    """What one model's part of a run did."""

    name: str
    version: str = ""
    entities: int = 0
    chunks: int = 0
    result: WriteBackResult = field(default_factory=WriteBackResult)
    seconds: dict[str, float] = field(default_factory=lambda: Counter())


@dataclass
class BatchSummary:
    """The run summary printed by the CLI and logged to MLflow."""

    batch_run_id: int
    scored_at: datetime
    resumed: bool
    models: list[ModelRun]
    seconds: dict[str, float] = field(default_factory=lambda: Counter())  # run-level stages
    seconds_total: float = 0.0
    mlflow_run_id: str | None = None
    rules: Rules = RULES  # the run's rules, from ``rules_file`` (None: the built-in defaults)
    rules_file: str | None = None
    rule_errors: list[str] = field(default_factory=list)  # user rules the run had to skip
    account_tags: Counter = field(default_factory=Counter)  # account_tier=VALUE → accounts

    @property
    def tag_counts(self) -> Counter:
        out: Counter = Counter(self.account_tags)
        for m in self.models:
            out.update(m.result.tag_counts)
        return out

    @property
    def tasks_created(self) -> int:
        return sum(m.result.tasks_created for m in self.models)

    @property
    def task_assignment(self) -> Counter:
        """Tasks whose rule found no owner: sent to a region's ``default_owner`` / the ``queue``."""
        out: Counter = Counter({"default_owner": 0, "queue": 0})
        for m in self.models:
            out.update(m.result.assignment_counts)
        return out

    def as_dict(self) -> dict:
        return {
            "batch_run_id": self.batch_run_id,
            "scored_at": self.scored_at.isoformat(),
            "resumed": self.resumed,
            "seconds_total": round(self.seconds_total, 3),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "tasks_created": self.tasks_created,
            "tasks_to_default_owner": self.task_assignment["default_owner"],
            "tasks_to_queue": self.task_assignment["queue"],
            "rules_file": self.rules_file,
            "rule_errors": list(self.rule_errors),
            "tag_counts": dict(sorted(self.tag_counts.items())),
            "models": {
                m.name: {
                    "version": m.version,
                    "entities": m.entities,
                    "chunks": m.chunks,
                    "tags_written": m.result.tags_written,
                    "tasks_created": m.result.tasks_created,
                    "task_counts": dict(m.result.task_counts),
                    "predictions_logged": m.result.predictions_logged,
                    "seconds": {k: round(v, 3) for k, v in m.seconds.items()},
                }
                for m in self.models
            },
        }


# --- Rule context: the CRM tables it reads (computed by ``crm_predict.features.rule_context``) -------------


def _query(session: Session, sql: str, **params) -> pd.DataFrame:
    stmt = text(sql)
    for name, value in params.items():
        if isinstance(value, datetime):
            stmt = stmt.bindparams(bindparam(name, type_=DateTime()))
    result = session.execute(stmt, params)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def crm_tables(session: Session, models: Sequence[str], snapshot: Tables | None = None) -> Tables:
    """The CRM columns the rules of ``models`` read: from ``snapshot`` (the feature export's frames,
    so model and rules see the same data) where it has them, else from the store. Users (owners'
    managers) are not in the snapshot and always come from the store."""
    from crm_predict.crm_store.repository import read_table

    names = {t for m in models for t in CONTEXT_TABLES[spec(m).entity]}
    out: Tables = {}
    for name in sorted(names):
        columns = CONTEXT_COLUMNS[name]
        if snapshot is not None and name in snapshot:
            # The snapshot's own columns, not a copy (activities are tens of millions of rows).
            out[name] = pd.DataFrame({c: snapshot[name][c] for c in columns}, copy=False)
        else:
            out[name] = read_table(session, name, columns)
    return out


def snapshot_columns(models: Sequence[str]) -> dict[str, list[str]]:
    """Per snapshot table, the columns a run of ``models`` reads: their features' and their
    rules' (users come from the store)."""
    from crm_predict.features.scoring import snapshot_columns as feature_columns

    out = feature_columns(models)
    for table in sorted({t for m in models for t in CONTEXT_TABLES[spec(m).entity]} - {"users"}):
        out.setdefault(table, [])
        out[table].extend(c for c in CONTEXT_COLUMNS[table] if c not in out[table])
    return out


def tag_rule_columns(model_name: str) -> list[str]:
    """What a tag rule for ``model_name``'s entity may read in a batch: ``score``, the model's
    features (its FeatureService) and the rule context."""
    from crm_predict.features.definitions import SERVICES

    features = [f for _, names in SERVICES[model_name] for f in names]
    return list(dict.fromkeys(["score", *features, *CONTEXTS[spec(model_name).entity][1]]))


def default_owners(rules: Rules, users: pd.DataFrame | None) -> tuple[dict[str, int], list[str]]:
    """``rules.assignment.default_owner_by_region`` as internal user ids (a text owner is a
    user's external id, a number an internal id), and what could not be resolved."""
    wanted = rules.assignment.default_owner_by_region
    if not wanted:
        return {}, []
    users = users if users is not None else pd.DataFrame(columns=["id", "external_id"])
    internal = {int(i) for i in users["id"]}
    by_external = {str(e): int(i) for e, i in zip(users["external_id"], users["id"], strict=True) if not pd.isna(e)}  # fmt: skip
    out, errors = {}, []
    for region, owner in wanted.items():
        found = by_external.get(owner) if isinstance(owner, str) else (owner if owner in internal else None)  # fmt: skip
        if found is None:
            errors.append(
                f"assignment.default_owner_by_region.{region}: no user {owner!r}; "
                f"its region's ownerless tasks go to the queue {rules.assignment.queue!r}"
            )
        else:
            out[region] = found
    return out, errors


def check_tag_rules(rules: Rules, model_name: str, columns: set[str]) -> tuple[Rules, list[str]]:
    """The rules without the tag rules of ``model_name`` that read a column the run lacks, and
    a message for each (the run reports them and carries on)."""
    errors, dropped = [], []
    for i, rule in enumerate(rules.tags):
        if rule in rules.tag_rules(model_name):
            missing = [c for c in rule.condition.columns if c not in columns]
            if missing:
                errors.append(
                    f"tags[{i}] ({rule.name}, {rule.entity}): unknown column {missing[0]!r} in "
                    f"{rule.when!r}; skipped"
                )
                dropped.append(i)
    if not dropped:
        return rules, []
    kept = tuple(r for i, r in enumerate(rules.tags) if i not in dropped)
    return rules.model_copy(update={"tags": kept}), errors


def changed_entities(session: Session, model_name: str, since: datetime) -> list[int]:
    """Entities of a model whose CRM rows (or activities/orders) changed since ``since``."""
    entity = spec(model_name).crm_entity
    sql = f"""SELECT id FROM {entity}s WHERE updated_at >= :since
              UNION SELECT {entity}_id FROM activities WHERE created_at >= :since AND {entity}_id IS NOT NULL"""  # fmt: skip
    if entity == "contact":
        sql += " UNION SELECT contact_id FROM orders WHERE created_at >= :since"
    return sorted(int(i) for i in _query(session, sql, since=since).iloc[:, 0])


# --- Scoring ----------------------------------------------------------------------------------


def score(model, features: pd.DataFrame) -> pd.DataFrame:
    """``entity_id`` + ``score`` (+ the pyfunc's other outputs) for one model on a feature frame.

    ``model`` is a ``crm_predict.serving.loader.LoadedModel``: classifiers give P(positive class); CLV's score
    is ``clv_3y``, next-best-time's ``p_best`` (beside ``best_slots`` and ``best_channel``)."""
    out = pd.DataFrame({"entity_id": features["entity_id"].to_numpy(dtype=np.int64)})
    if model.flavor == "sklearn":
        # The whole Pipeline on the chunk: its column-wise transform, not the API's row path.
        proba = model.model.predict_proba(features[model.feature_names])
        out["score"] = np.asarray(proba)[:, 1]
        return out
    if model.input_types:
        # The signature's columns only: MLflow warns of any other (and drops it) on every chunk.
        features = features[[c for c in model.input_types if c in features.columns]]
    predicted = model.predict(features).reset_index(drop=True)
    for column in predicted.columns:
        if column != "entity_id":
            out[column] = predicted[column].to_numpy()
    out["score"] = predicted[spec(model.name).score_output].to_numpy(dtype=float)
    return out


# --- The run ----------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """One chunk's prepared write-back and the checkpoint row that commits with it."""

    model_run: ModelRun
    prepared: PreparedWrite
    checkpoint: dict
    advance: Callable[[int], None] | None


def commit_chunk(
    session: Session,
    prepared: PreparedWrite,
    checkpoint: dict,
    seconds: Counter | None = None,
    *,
    committed: Callable[[], None] = lambda: None,
    once: bool = False,
) -> WriteBackResult | None:
    """A chunk's tags, tasks, prediction log and ``batch_checkpoints`` row in one transaction
    (``seconds``: the write's stages, ``commit`` among them; ``committed``: called after the
    commit). ``once``: nothing written (None) when the chunk's checkpoint is there already or
    another attempt commits it first (a resumed Spark run, a retried Spark task)."""
    if once:
        done = select(BatchCheckpoint.id).where(
            BatchCheckpoint.batch_run_id == checkpoint["batch_run_id"],
            BatchCheckpoint.model_name == checkpoint["model_name"],
            BatchCheckpoint.chunk == checkpoint["chunk"],
        )
        if session.scalar(done) is not None:
            session.rollback()
            return None
    if session.get_bind().dialect.name == "postgresql":
        # No wait for each commit's WAL flush: a commit lost to a server crash is a chunk the
        # rerun writes again (its checkpoint row is in the same transaction).
        session.execute(text("SET LOCAL synchronous_commit = off"))
    result = apply_write(session, prepared, seconds)
    session.add(
        BatchCheckpoint(
            **checkpoint, tags_written=result.tags_written, tasks_created=result.tasks_created,
            counts=json.dumps({"tags": result.tag_counts, "tasks": result.task_counts,
                               "assignment": result.assignment_counts}),
            committed_at=utcnow(),
        )
    )  # fmt: skip
    committing = time.perf_counter()
    try:
        session.commit()
    except IntegrityError:  # another attempt of the same chunk committed first: its rows stand
        if not once:
            raise
        session.rollback()
        return None
    committed()
    if seconds is not None:
        seconds["commit"] += time.perf_counter() - committing
    return result


def _write_chunk(session: Session, committed: Callable[[], None], chunk: _Chunk) -> None:
    """One queued chunk, committed on the run's writer thread (which owns ``session`` while the
    caller computes the next chunks)."""
    t = time.perf_counter()
    run = chunk.model_run
    result = commit_chunk(session, chunk.prepared, chunk.checkpoint, run.seconds, committed=committed)  # fmt: skip
    run.seconds["write"] += time.perf_counter() - t
    run.result.add(result)
    run.entities += chunk.checkpoint["entities"]
    run.chunks += 1
    if chunk.advance:
        chunk.advance(chunk.checkpoint["entities"])


def utcnow() -> datetime:
    """Now in UTC, naive (as the store's stamps)."""
    return datetime.now(UTC).replace(tzinfo=None)


def start_or_resume(
    session: Session, models: Sequence[str], at: datetime | None, now: datetime
) -> tuple[BatchRun, bool]:
    """Resume the unfinished run for the same models (and ``at``, when given), else start one."""
    key = ",".join(models)
    query = select(BatchRun).where(BatchRun.status == "running", BatchRun.models == key)
    if at is not None:
        query = query.where(BatchRun.scored_at == at)
    else:
        query = query.where(BatchRun.started_at >= now - RESUME_WITHIN)
    run = session.scalars(query.order_by(BatchRun.id.desc())).first()
    if run is not None:
        return run, True
    run = BatchRun(models=key, scored_at=at or now, status="running", started_at=now)
    session.add(run)
    session.commit()
    return run, False


def done_so_far(session: Session, run_id: int, model_name: str) -> tuple[int, int | None, ModelRun]:
    """Chunks committed earlier for this run and model: count, last entity id, their totals."""
    rows = session.scalars(
        select(BatchCheckpoint)
        .where(BatchCheckpoint.batch_run_id == run_id, BatchCheckpoint.model_name == model_name)
        .order_by(BatchCheckpoint.chunk)
    ).all()
    done = ModelRun(name=model_name)
    for row in rows:
        counts = json.loads(row.counts)
        done.result.add(
            WriteBackResult(
                tags_written=row.tags_written,
                tasks_created=row.tasks_created,
                predictions_logged=row.entities,
                tag_counts=Counter(counts["tags"]),
                task_counts=Counter(counts["tasks"]),
                assignment_counts=Counter(counts.get("assignment", {})),
            )
        )
        done.entities += row.entities
        done.version = row.model_version or ""
    return len(rows), (rows[-1].last_entity_id if rows else None), done


def run_batch(
    session: Session,
    client: MlflowClient,
    settings: Settings,
    models: Sequence[str] = MODEL_NAMES,
    at: datetime | None = None,
    since: datetime | None = None,
    *,
    scoring_frame: ScoringFrame | None = None,
    load_model: ModelLoader | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    log_to_mlflow: bool = True,
    export: bool = True,
    rules: Rules | None = None,
) -> BatchSummary:
    """Score ``models`` for every active entity as of ``at`` (default: now, UTC) and write back.

    Features come from ``crm_predict.features.scoring.scoring_frame`` over a fresh CRM export (``export``;
    else the last one), read range of entities by range (``RANGE_CHUNKS``), unless a
    ``scoring_frame`` with its signature is given (then over every entity at once, the context
    from the store). ``since`` limits scoring to entities changed since then.
    ``progress(model, total)`` returns a callback advanced by the entities of each committed
    chunk. ``rules``: the business rules, read from ``settings.rules_path`` at the start of the
    run when not given (a bad file stops the run before it writes anything)."""
    rules, rules_file = run_rules(settings, models, rules)
    if load_model is None:
        from crm_predict.serving.loader import load_model
    started = time.perf_counter()
    run, summary = start_run(session, list(models), at, rules, rules_file)
    at, run_id = run.scored_at, run.id
    # The champions load on a thread of their own while the snapshot is read and the first
    # features computed (imports and unpickling beside Arrow reads and numpy work).
    loader = ThreadPoolExecutor(1, thread_name_prefix="batch-model-load")
    order = sorted(
        models, key=lambda m: (SCORING_ORDER.index(spec(m).entity), MODEL_NAMES.index(m))
    )
    champions = {name: loader.submit(load_model, client, name, alias="champion") for name in order}
    try:
        t = time.perf_counter()
        if scoring_frame is None:
            t = time.perf_counter()  # Feast's import, through features.definitions: seconds
            from crm_predict.features.export import export_snapshots

            summary.seconds["imports"] += time.perf_counter() - t
            t = time.perf_counter()
            if export:  # every table written, none held: the ranges read back what they need
                export_snapshots(session, settings, columns={})
                session.commit()  # end the export's read transaction
                summary.seconds["export"] += time.perf_counter() - t
            t = time.perf_counter()
            source: _Source = SnapshotSource(settings, models, store_users(session))
        else:
            source = _StoreSource(settings, scoring_frame, crm_tables(session, models))
        summary.seconds["context_tables"] += time.perf_counter() - t
        # The session's reads happen now: from here on it is the writer thread's.
        t = time.perf_counter()
        done = {name: done_so_far(session, run_id, name) for name in models}
        changed = {m: changed_entities(session, m, since) for m in models} if since else None
        session.commit()
        summary.seconds["resume_state"] += time.perf_counter() - t
        summary.models = [done[name][2] for name in models]
        dialect = session.get_bind().dialect.name
        owners, summary.rule_errors = default_owners(rules, source.users)
        if any(spec(m).entity == "deal" for m in models):  # B2B accounts' tiers from won deals
            t = time.perf_counter()
            summary.account_tags = write_account_tiers(session, source.accounts(), at, rules)
            summary.seconds["account_tiers"] += time.perf_counter() - t
        inputs = _Inputs(
            settings, at, run_id, progress, dialect, rules, owners, summary.rule_errors,
        )  # fmt: skip

        with (
            background_checkpoints(session) as committed,
            background_writer(
                partial(_write_chunk, session, committed), WRITE_QUEUE_CHUNKS, "batch-writer"
            ) as writer,
        ):
            for family in dict.fromkeys(FAMILY[spec(m).entity] for m in order):
                names = [m for m in order if FAMILY[spec(m).entity] == family]
                streams = {
                    name: _ModelStream(name, champions[name], *done[name],
                                       None if changed is None else set(changed[name]))
                    for name in names
                }  # fmt: skip
                _score_family(inputs, writer, source, family, streams, summary.seconds)
            draining = time.perf_counter()
        summary.seconds["write_drain"] += time.perf_counter() - draining  # the last commits
    finally:
        loader.shutdown(wait=True, cancel_futures=True)

    summary.seconds_total = time.perf_counter() - started
    finish_run(session, client, run, summary, log_to_mlflow)
    return summary


def run_rules(
    settings: Settings, models: Sequence[str], rules: Rules | None
) -> tuple[Rules, str | None]:
    """A run's rules and the file they came from (None: given by the caller), read before the
    run writes anything; a UserError for an unknown model or a bad rules file."""
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_NAMES)}")
    if rules is not None:
        return rules, None
    path = settings.rules_path
    return settings.load_rules(), None if path is None else str(path)


def start_run(
    session: Session, key: Sequence[str], at: datetime | None, rules: Rules, rules_file: str | None
) -> tuple[BatchRun, BatchSummary]:
    """The run for ``key`` (``start_or_resume``) and its summary so far."""
    run, resumed = start_or_resume(session, key, at, utcnow().replace(microsecond=0))
    summary = BatchSummary(
        batch_run_id=run.id, scored_at=run.scored_at, resumed=resumed, models=[], rules=rules,
        rules_file=rules_file,
    )  # fmt: skip
    return run, summary


def finish_run(
    session: Session, client: MlflowClient, run: BatchRun, summary: BatchSummary, log: bool
) -> None:
    """Mark ``run`` done with its summary (logged to MLflow first when ``log``)."""
    if log:
        summary.mlflow_run_id = log_summary(client, summary)
    run.status, run.finished_at = "done", utcnow()
    run.summary, run.mlflow_run_id = json.dumps(summary.as_dict()), summary.mlflow_run_id
    session.commit()


def store_users(session: Session) -> pd.DataFrame:
    """Owners' managers and external ids: from the store (the snapshot has no users)."""
    from crm_predict.crm_store.repository import read_table

    return read_table(session, "users", CONTEXT_COLUMNS["users"])


# --- Where a run's features and contexts come from, range of entities by range ----------------


@dataclass
class _Range:
    """One range of a family's entities: the CRM rows the rule contexts read and the models'
    features (``features(model_name)``), both for the entities of the range only."""

    tables: Tables
    features: Callable[[str], pd.DataFrame]
    high: int | None = None  # the range's ids are below this (None: every entity)


class _Source:
    """What a run reads: per family, its ranges (``ranges``), totals and RFM medians."""

    users: pd.DataFrame | None

    def accounts(self) -> Tables:  # accounts and deals: the account tiers' input
        raise NotImplementedError

    def ranges(
        self, family: str, names: Sequence[str], at: datetime, done: Callable[[int], bool]
    ) -> Iterator[_Range]:
        """The family's ranges in id order; those whose ids below their end every model has
        committed (``done(end)``) are not read."""
        raise NotImplementedError

    def prepass(
        self, family: str, names: Sequence[str], at: datetime, rules: Rules,
        changed: dict[str, set[int] | None],
    ) -> tuple[dict[str, int] | None, tuple[float, float, float] | None]:  # fmt: skip
        """Per model the entities it will score and the customers' RFM medians, before any range
        is scored (None: known from the one range)."""
        return None, None


class _StoreSource(_Source):
    """A given ``scoring_frame`` over every entity and the rule context from the store's tables:
    one range per family."""

    def __init__(self, settings: Settings, scoring_frame: ScoringFrame, crm: Tables):
        self.settings, self.scoring_frame = settings, scoring_frame
        self.crm, self.users = crm, crm.get("users")

    def accounts(self) -> Tables:
        return self.crm

    def ranges(self, family, names, at, done):
        yield _Range(self.crm, lambda name: self.scoring_frame(self.settings, name, at))


class SnapshotSource(_Source):
    """The Parquet snapshot read by ranges of ids (``RANGE_CHUNKS`` chunks wide): the contacts'
    models by contact id, the leads' by lead id, each range with the rows of its entities only;
    the deals (a few per account, whose history their features compare) in one range."""

    def __init__(self, settings: Settings, models: Sequence[str], users: pd.DataFrame):
        self.settings, self.users = settings, users
        self.columns = snapshot_columns(models)
        self.width = RANGE_CHUNKS * settings.batch_chunk_size

    def read(self, table: str, spans=(), where=None, columns=None) -> pd.DataFrame:
        from crm_predict.features.export import read_snapshot

        return read_snapshot(
            self.settings, table, columns or self.columns[table], spans, where, "category"
        )

    def accounts(self) -> Tables:
        return {
            "accounts": self.read("accounts", columns=CONTEXT_COLUMNS["accounts"]),
            "deals": self.read("deals", columns=CONTEXT_COLUMNS["deals"]),
        }

    def edges(self, table: str) -> list[tuple[int, int]]:
        """The ranges of ``table``'s ids, in order: ``(low, end)``, ``width`` ids each."""
        ids = self.read(table, columns=["id"])["id"].to_numpy()
        if not len(ids):
            return []
        low, high = int(ids.min()), int(ids.max()) + 1
        return [(lo, min(lo + self.width, high)) for lo in range(low, high, self.width)]

    def _features(self, tables: Tables, at: datetime) -> Callable[[str], pd.DataFrame]:
        from crm_predict.features.scoring import scoring_frame

        return partial(scoring_frame, self.settings, at=at, tables=tables, cache={})

    def ranges(self, family, names, at, done):
        import pyarrow.compute as pc
        from crm_predict.features.export import id_span

        if family == "deal":
            tables = {t: self.read(t) for t in ("deals", "deal_stage_history", "tickets", "accounts")}  # fmt: skip
            tables["activities"] = self.read("activities", where=pc.field("deal_id").is_valid())
            tables["users"] = self.users
            yield _Range(tables, self._features(tables, at))
            return
        if family == "contact":
            for lo, hi in self.edges("contacts"):
                if done(hi):
                    continue
                tables = {"users": self.users}
                for table, key in (("contacts", "id"), ("activities", "contact_id"), ("orders", "contact_id")):  # fmt: skip
                    if table in self.columns:
                        tables[table] = self.read(table, [(key, lo, hi)], id_span(key, lo, hi))
                yield _Range(tables, self._features(tables, at), hi)
            return
        accounts = self.read("accounts")
        for lo, hi in self.edges("leads"):
            if done(hi):
                continue
            leads = self.read("leads", [("id", lo, hi)], id_span("id", lo, hi))
            contacts = pa_ids(leads["contact_id"])
            c_lo, c_hi = (int(contacts.min()), int(contacts.max()) + 1) if len(contacts) else (0, 0)
            in_contacts = pc.field("contact_id").isin(contacts)
            own = id_span("lead_id", lo, hi) | (pc.field("lead_id").is_null() & in_contacts)
            tables = {
                "users": self.users, "accounts": accounts, "leads": leads,
                "contacts": self.read("contacts", [("id", c_lo, c_hi)], pc.field("id").isin(contacts)),
                "activities": self.read("activities", [("lead_id", lo, hi), ("contact_id", c_lo, c_hi)], own),
            }  # fmt: skip
            yield _Range(tables, self._features(tables, at), hi)

    def prepass(self, family, names, at, rules, changed):
        """The customers' RFM medians (their orders only: what the medians read) and every
        model's entity count, from one read of the columns that decide them."""
        from crm_predict.features.export import id_span
        from crm_predict.features.labels import active_rows
        from crm_predict.features.scoring import ACTIVE_COLUMNS

        totals: dict[str, int] = Counter()
        entities = {spec(m).entity: m for m in names}
        rfm: list[pd.DataFrame] = []
        if family == "contact":
            for lo, hi in self.edges("contacts"):
                tables = {}
                if "contact" in entities:
                    tables["contacts"] = self.read("contacts", [("id", lo, hi)], id_span("id", lo, hi), ["id", "created_at"])  # fmt: skip
                if "customer" in entities:
                    tables["orders"] = self.read("orders", [("contact_id", lo, hi)], id_span("contact_id", lo, hi), ["contact_id", "ordered_at", "amount"])  # fmt: skip
                for entity in entities:
                    _count(totals, names, entity, active_rows(entity, tables, at), changed)
                if any(spec(m).rfm_medians for m in names):
                    rfm.append(_orders_rfm(tables["orders"], at, rules))
        else:
            table = f"{family}s"
            rows = active_rows(family, {table: self.read(table, columns=ACTIVE_COLUMNS[family][table])}, at)  # fmt: skip
            _count(totals, names, family, rows, changed)
        medians = None
        if rfm:
            frame = pd.concat([r for r in rfm if len(r)] or rfm[:1], ignore_index=True)
            if len(frame):
                medians = rfm_medians(frame["recency_days"], frame["frequency"], frame["monetary"])
        return totals, medians


def pa_ids(values: pd.Series) -> np.ndarray:
    """The distinct ids of an id column (missing ones left out)."""
    return np.unique(values.dropna().to_numpy(dtype=np.int64))


def _count(totals, names, entity, rows, changed) -> None:
    for name in names:
        if spec(name).entity == entity:
            ids = rows["entity_id"]
            totals[name] += int(ids.isin(changed[name]).sum() if changed[name] is not None else len(ids))  # fmt: skip


def _orders_rfm(orders: pd.DataFrame, at: datetime, rules: Rules) -> pd.DataFrame:
    """The customers' RFM inputs of ``customer_context``, from their orders alone."""
    no_activity = pd.DataFrame(
        {"contact_id": np.array([], dtype=np.int64), "occurred_at": np.array([], dtype="datetime64[ns]"),
         "type": np.array([], dtype=object)}
    )  # fmt: skip
    no_owner = pd.DataFrame({"id": np.array([], dtype=np.int64), "owner_id": np.array([], dtype=float)})  # fmt: skip
    tables = {"orders": orders, "activities": no_activity, "contacts": no_owner}
    return CONTEXTS["customer"][0](tables, at, rules)[["recency_days", "frequency", "monetary"]]


@dataclass
class _Inputs:
    """What every model's part of a run reads."""

    settings: Settings
    at: datetime
    run_id: int
    progress: Callable[[str, int], Callable[[int], None]] | None
    dialect: str  # the store's: write-backs are encoded for it on the scoring thread
    rules: Rules = RULES
    default_owners: dict[str, int] = field(default_factory=dict)  # region → user id
    rule_errors: list[str] = field(default_factory=list)  # the summary's


@dataclass
class _ModelStream:
    """One model's part of a run across the ranges of its family: the chunks it has put, the
    entities of a chunk not yet full (``pending``: features and their context rows)."""

    name: str
    champion: Future
    index: int  # the next chunk's number (chunks committed by an earlier attempt come first)
    last_id: int | None  # the last entity an earlier attempt committed
    model_run: ModelRun
    changed: set[int] | None
    loaded: object = None
    rules: Rules = RULES
    from_features: list[str] = field(default_factory=list)
    medians: tuple[float, float, float] | None = None
    advance: Callable[[int], None] | None = None
    started: bool = False
    pending: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def chunks(
        self, features: pd.DataFrame, rows: pd.DataFrame, size: int
    ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """``features`` and their ``rows`` in chunks of ``size`` entities counted from the first
        range's first entity (so a run cuts the chunks a run over every entity at once cuts); the
        rest waits for the next range (``flush``: the end)."""
        start = 0
        if self.pending is not None and len(features):
            pending_features, pending_rows = self.pending
            start = size - len(pending_features)
            features_head, rows_head = features.iloc[:start], rows.iloc[:start]
            self.pending = (
                pd.concat([pending_features, features_head], ignore_index=True),
                pd.concat([pending_rows, rows_head], ignore_index=True),
            )
            if len(self.pending[0]) < size:
                return
            yield self.pending
            self.pending = None
        while start + size <= len(features):
            yield features.iloc[start : start + size], rows.iloc[start : start + size]
            start += size
        if start < len(features):  # a copy: the range's frames go when it is done
            self.pending = (features.iloc[start:].copy(), rows.iloc[start:].copy())

    def flush(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        if self.pending is not None:
            yield self.pending
            self.pending = None


def _score_family(
    inputs: _Inputs,
    writer: Writer[_Chunk],
    source: _Source,
    family: str,
    streams: dict[str, _ModelStream],
    run_seconds: Counter,
) -> None:
    """The models of one family (``FAMILY``) range by range on the caller's thread: per range its
    CRM rows, per model the features and the rule context of the range's entities, then per chunk
    the score and the prepared write-back, handed to ``writer`` (which commits it)."""
    at, progress, rules = inputs.at, inputs.progress, inputs.rules
    names = list(streams)
    t = time.perf_counter()
    changed = {name: s.changed for name, s in streams.items()}
    totals, medians = source.prepass(family, names, at, rules, changed)
    run_seconds["prepass"] += time.perf_counter() - t
    for name, s in streams.items():
        t = time.perf_counter()
        s.loaded = s.champion.result()
        s.model_run.version = str(s.loaded.version)
        s.model_run.seconds["load"] += time.perf_counter() - t  # what the loader had not done yet
        s.medians = medians
        if totals is not None and progress:
            s.advance = progress(name, totals[name])
            if s.model_run.entities:
                s.advance(s.model_run.entities)

    def done(high: int) -> bool:  # every model committed every entity below ``high`` before
        return all(s.last_id is not None and s.last_id >= high - 1 for s in streams.values())

    ranges = source.ranges(family, names, at, done)
    while True:
        t = time.perf_counter()
        current = next(ranges, None)
        run_seconds["read_snapshot"] += time.perf_counter() - t
        if current is None:
            break
        contexts: dict[str, pd.DataFrame] = {}  # per entity: the models of one entity share it
        for s in streams.values():
            for chunk in _range_chunks(inputs, current, s, contexts, totals is None):
                _put_chunk(inputs, writer, s, chunk)
        del current, contexts
    for s in streams.values():
        for chunk in s.flush():
            _put_chunk(inputs, writer, s, chunk)


def _range_chunks(
    inputs: _Inputs,
    current: _Range,
    s: _ModelStream,
    contexts: dict[str, pd.DataFrame],
    whole: bool,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """One model's features and context rows over one range, in its chunks."""
    seconds, name, model = s.model_run.seconds, s.name, spec(s.name)
    t = time.perf_counter()
    features = current.features(name)
    if s.changed is not None:
        features = features[features["entity_id"].isin(s.changed)]
    if not features["entity_id"].is_monotonic_increasing:
        features = features.sort_values("entity_id", kind="stable")
    features = features.reset_index(drop=True)
    seconds["features"] += time.perf_counter() - t

    t = time.perf_counter()
    if model.entity not in contexts:
        context = rule_context(current.tables, name, inputs.at, inputs.rules)
        contexts[model.entity] = context.drop_duplicates("entity_id").set_index("entity_id")
    context = contexts[model.entity]
    if not s.started:
        s.started = True
        # The user's tag rules read the model's features and the rule context (and the score).
        available = {*features.columns, *context.columns, "score"}
        s.rules, errors = check_tag_rules(inputs.rules, name, available)
        inputs.rule_errors.extend(errors)
        wanted = {c for r in s.rules.tag_rules(name) for c in r.condition.columns}
        wanted |= {c for c in model.tag_features if c in features.columns}
        s.from_features = sorted(wanted - set(context.columns) - {"entity_id", "score"})
        if whole:  # one range: the medians and the total are this range's
            if model.rfm_medians and len(context):
                s.medians = rfm_medians(context["recency_days"], context["frequency"], context["monetary"])  # fmt: skip
            if inputs.progress:
                s.advance = inputs.progress(name, len(features))
    todo = features if s.last_id is None else features[features["entity_id"] > s.last_id]
    if whole and s.advance and len(features) > len(todo):
        s.advance(len(features) - len(todo))
    # The context aligned to the entities (the index's hash table is built once per range).
    rows = context.reindex(todo["entity_id"].to_numpy()).reset_index(drop=True)
    todo = todo.reset_index(drop=True)
    seconds["context"] += time.perf_counter() - t
    yield from s.chunks(todo, rows, inputs.settings.batch_chunk_size)


def _put_chunk(
    inputs: _Inputs,
    writer: Writer[_Chunk],
    s: _ModelStream,
    chunk: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Score one chunk, prepare its write-back and hand it to the writer thread."""
    features, rows = chunk
    seconds = s.model_run.seconds
    t = time.perf_counter()
    scored = score(s.loaded, features)
    scored = pd.concat([scored, rows.reset_index(drop=True)], axis=1)
    if s.from_features:
        extra = features[s.from_features].reset_index(drop=True)
        scored = pd.concat([scored, extra.drop(columns=scored.columns, errors="ignore")], axis=1)  # fmt: skip
    seconds["score"] += time.perf_counter() - t

    t = time.perf_counter()
    prepared = prepare_write(
        s.loaded, scored, inputs.at, inputs.dialect, rfm_medians=s.medians, rules=s.rules,
        default_owners=inputs.default_owners,
    )  # fmt: skip
    checkpoint = dict(
        batch_run_id=inputs.run_id, model_name=s.name, model_version=s.model_run.version,
        chunk=s.index, last_entity_id=int(features["entity_id"].iloc[-1]), entities=len(features),
    )  # fmt: skip
    s.index += 1
    seconds["prepare"] += time.perf_counter() - t
    waited = writer.waited
    writer.put(_Chunk(s.model_run, prepared, checkpoint, s.advance))
    seconds["write_wait"] += writer.waited - waited


def write_account_tiers(
    session: Session, crm: Tables, at: datetime, rules: Rules = RULES
) -> Counter:
    """``account_tier`` on every account as of ``at``, committed in one transaction (a rerun sets
    the same values: nothing new). Returns the accounts per ``account_tier=VALUE``."""
    from crm_predict.crm_store.repository import prepare_tags, upsert_tags

    rows, shared = account_tag_rows(account_context(crm, at), at, rules)
    if len(rows):
        upsert_tags(session, prepare_tags(rows, session.get_bind().dialect.name, shared), at)
    session.commit()
    return Counter(
        f"{name}={value}" for name, value in zip(rows["name"], rows["value"], strict=True)
    )


def log_summary(client: MlflowClient, summary: BatchSummary) -> str:
    """One MLflow run per batch run: model versions, counts per tag value, tasks, stage times."""
    mlflow_run = client.create_run(
        experiment_id(client, EXPERIMENT), run_name=f"batch-{summary.batch_run_id}"
    )
    run_id = mlflow_run.info.run_id
    client.log_param(run_id, "scored_at", summary.scored_at.isoformat())
    client.log_param(run_id, "batch_run_id", summary.batch_run_id)
    for m in summary.models:
        client.log_param(run_id, f"{m.name}_version", m.version)
        client.log_metric(run_id, f"{m.name}_entities", m.entities)
        client.log_metric(run_id, f"{m.name}_tasks_created", m.result.tasks_created)
        for stage, seconds in m.seconds.items():
            client.log_metric(run_id, f"{m.name}_seconds_{stage}", seconds)
    client.log_metric(run_id, "tasks_created", summary.tasks_created)
    client.log_metric(run_id, "seconds_total", summary.seconds_total)
    client.log_dict(run_id, summary.as_dict(), "batch_summary.json")
    client.log_dict(run_id, summary.rules.as_dict(), "rules.json")
    client.log_param(run_id, "rules_file", summary.rules_file or "(built-in defaults)")
    client.log_metric(run_id, "tasks_to_default_owner", summary.task_assignment["default_owner"])
    client.log_metric(run_id, "tasks_to_queue", summary.task_assignment["queue"])
    client.set_terminated(run_id)
    return run_id
