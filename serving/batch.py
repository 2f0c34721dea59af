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
from collections.abc import Callable, Sequence
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


def _write_chunk(session: Session, committed: Callable[[], None], chunk: _Chunk) -> None:
    """One queued chunk's tags, tasks, prediction log and checkpoint in one transaction, on the
    run's writer thread (which owns ``session`` while the caller computes the next chunks)."""
    t = time.perf_counter()
    if session.get_bind().dialect.name == "postgresql":
        # No wait for each commit's WAL flush: a commit lost to a server crash is a chunk the
        # rerun writes again (its checkpoint row is in the same transaction).
        session.execute(text("SET LOCAL synchronous_commit = off"))
    run = chunk.model_run
    result = apply_write(session, chunk.prepared, run.seconds)
    session.add(
        BatchCheckpoint(
            **chunk.checkpoint, tags_written=result.tags_written,
            tasks_created=result.tasks_created,
            counts=json.dumps(
                {"tags": result.tag_counts, "tasks": result.task_counts,
                 "assignment": result.assignment_counts}
            ),
            committed_at=_utcnow(),
        )
    )  # fmt: skip
    committing = time.perf_counter()
    session.commit()  # the chunk's tags, tasks, log rows and checkpoint: one transaction
    committed()
    run.seconds["commit"] += time.perf_counter() - committing
    run.seconds["write"] += time.perf_counter() - t
    run.result.add(result)
    run.entities += chunk.checkpoint["entities"]
    run.chunks += 1
    if chunk.advance:
        chunk.advance(chunk.checkpoint["entities"])


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _start_or_resume(
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


def _done_so_far(
    session: Session, run_id: int, model_name: str
) -> tuple[int, int | None, ModelRun]:
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
    else the last one), unless a ``scoring_frame`` with its signature is given. ``since`` limits
    scoring to entities changed since then. ``progress(model, total)`` returns a callback advanced
    by the entities of each committed chunk. ``rules``: the business rules, read from
    ``settings.rules_path`` at the start of the run when not given (a bad file stops the run
    before it writes anything)."""
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_NAMES)}")
    rules_file = settings.rules_path if rules is None else None
    if rules is None:
        rules = settings.load_rules()
    if load_model is None:
        from crm_predict.serving.loader import load_model
    started = time.perf_counter()
    now = _utcnow().replace(microsecond=0)
    run, resumed = _start_or_resume(session, list(models), at, now)
    at, run_id = run.scored_at, run.id
    summary = BatchSummary(
        batch_run_id=run_id, scored_at=at, resumed=resumed, models=[], rules=rules,
        rules_file=None if rules_file is None else str(rules_file),
    )  # fmt: skip
    # The champions load on a thread of their own while the snapshot is read and the first
    # features computed (imports and unpickling beside Arrow reads and numpy work).
    loader = ThreadPoolExecutor(1, thread_name_prefix="batch-model-load")
    order = sorted(
        models, key=lambda m: (SCORING_ORDER.index(spec(m).entity), MODEL_NAMES.index(m))
    )
    champions = {name: loader.submit(load_model, client, name, alias="champion") for name in order}
    try:
        if scoring_frame is None:
            t = time.perf_counter()  # Feast's import, through features.definitions: seconds
            from crm_predict.features.export import export_snapshots, load_snapshots
            from crm_predict.features.scoring import scoring_frame as features_as_of

            summary.seconds["imports"] += time.perf_counter() - t
            t = time.perf_counter()
            # Only the columns this run reads, text as categoricals (no string per row).
            columns = snapshot_columns(models)
            if export:
                tables = export_snapshots(session, settings, columns=columns, strings="category")
            else:
                tables = load_snapshots(settings, columns=columns, strings="category")
            session.commit()  # end the export's read transaction
            summary.seconds["export" if export else "load_snapshot"] += time.perf_counter() - t
            scoring_frame = partial(features_as_of, tables=tables, cache={})
        else:
            tables = None
        t = time.perf_counter()
        crm = crm_tables(session, models, snapshot=tables)
        summary.seconds["context_tables"] += time.perf_counter() - t
        # The session's reads happen now: from here on it is the writer thread's.
        t = time.perf_counter()
        done = {name: _done_so_far(session, run_id, name) for name in models}
        changed = {m: changed_entities(session, m, since) for m in models} if since else None
        session.commit()
        summary.seconds["resume_state"] += time.perf_counter() - t
        summary.models = [done[name][2] for name in models]
        dialect = session.get_bind().dialect.name
        owners, summary.rule_errors = default_owners(rules, crm.get("users"))
        if any(spec(m).entity == "deal" for m in models):  # B2B accounts' tiers from won deals
            t = time.perf_counter()
            summary.account_tags = write_account_tiers(session, crm, at, rules)
            summary.seconds["account_tiers"] += time.perf_counter() - t
        inputs = _Inputs(
            settings, at, run_id, scoring_frame, crm, progress, dialect, rules, owners,
            summary.rule_errors,
        )  # fmt: skip

        with (
            background_checkpoints(session) as committed,
            background_writer(
                partial(_write_chunk, session, committed), WRITE_QUEUE_CHUNKS, "batch-writer"
            ) as writer,
        ):
            for name in order:
                _score_model(
                    inputs, writer, name, champions[name], done[name],
                    changed[name] if changed is not None else None,
                )  # fmt: skip
            draining = time.perf_counter()
        summary.seconds["write_drain"] += time.perf_counter() - draining  # the last commits
    finally:
        loader.shutdown(wait=True, cancel_futures=True)

    summary.seconds_total = time.perf_counter() - started
    if log_to_mlflow:
        summary.mlflow_run_id = log_summary(client, summary)
    run.status, run.finished_at = "done", _utcnow()
    run.summary, run.mlflow_run_id = json.dumps(summary.as_dict()), summary.mlflow_run_id
    session.commit()
    return summary


@dataclass
class _Inputs:
    """What every model's part of a run reads."""

    settings: Settings
    at: datetime
    run_id: int
    scoring_frame: ScoringFrame
    crm: Tables
    progress: Callable[[str, int], Callable[[int], None]] | None
    dialect: str  # the store's: write-backs are encoded for it on the scoring thread
    rules: Rules = RULES
    default_owners: dict[str, int] = field(default_factory=dict)  # region → user id
    rule_errors: list[str] = field(default_factory=list)  # the summary's
    contexts: dict[str, pd.DataFrame] = field(default_factory=dict)  # per entity: models share


def _score_model(
    inputs: _Inputs,
    writer: Writer[_Chunk],
    name: str,
    champion: Future,
    done: tuple[int, int | None, ModelRun],
    changed: list[int] | None,
) -> None:
    """One model's part of a run on the caller's thread: features, rule context, then per chunk
    the score and the prepared write-back, handed to ``writer`` (which commits it)."""
    settings, at, progress = inputs.settings, inputs.at, inputs.progress
    n_done, last_id, model_run = done
    seconds = model_run.seconds
    t = time.perf_counter()
    loaded = champion.result()
    model_run.version = str(loaded.version)
    seconds["load"] += time.perf_counter() - t  # what the loading thread had not done yet

    t = time.perf_counter()
    features = inputs.scoring_frame(settings, name, at)
    if changed is not None:
        features = features[features["entity_id"].isin(changed)]
    if not features["entity_id"].is_monotonic_increasing:
        features = features.sort_values("entity_id", kind="stable")
    features = features.reset_index(drop=True)
    seconds["features"] += time.perf_counter() - t

    t = time.perf_counter()
    model = spec(name)
    if model.entity not in inputs.contexts:
        inputs.contexts[model.entity] = rule_context(inputs.crm, name, at, inputs.rules)
    context = inputs.contexts[model.entity].drop_duplicates("entity_id").set_index("entity_id")
    # The user's tag rules read the model's features and the rule context (and the score).
    available = {*features.columns, *context.columns, "score"}
    rules, errors = check_tag_rules(inputs.rules, name, available)
    inputs.rule_errors.extend(errors)
    wanted = {c for r in rules.tag_rules(name) for c in r.condition.columns}
    wanted |= {c for c in model.tag_features if c in features.columns}
    from_features = sorted(wanted - set(context.columns) - {"entity_id", "score"})
    medians = None
    if model.rfm_medians and len(context):
        medians = rfm_medians(context["recency_days"], context["frequency"], context["monetary"])
    seconds["context"] += time.perf_counter() - t

    todo = features if last_id is None else features[features["entity_id"] > last_id]
    advance = progress(name, len(features)) if progress else None
    if advance and len(features) > len(todo):
        advance(len(features) - len(todo))
    chunk_size = settings.batch_chunk_size
    for index, start in enumerate(range(0, len(todo), chunk_size), start=n_done):
        chunk = todo.iloc[start : start + chunk_size]
        t = time.perf_counter()
        scored = score(loaded, chunk)
        # Align the context to the chunk (the index's hash table is built once per model).
        rows = context.reindex(scored["entity_id"].to_numpy())
        scored = pd.concat([scored, rows.reset_index(drop=True)], axis=1)
        if from_features:
            extra = chunk[from_features].reset_index(drop=True)
            scored = pd.concat([scored, extra.drop(columns=scored.columns, errors="ignore")], axis=1)  # fmt: skip
        seconds["score"] += time.perf_counter() - t

        t = time.perf_counter()
        prepared = prepare_write(
            loaded, scored, at, inputs.dialect, rfm_medians=medians, rules=rules,
            default_owners=inputs.default_owners,
        )  # fmt: skip
        checkpoint = dict(
            batch_run_id=inputs.run_id, model_name=name, model_version=model_run.version, chunk=index,
            last_entity_id=int(chunk["entity_id"].iloc[-1]), entities=len(chunk),
        )  # fmt: skip
        seconds["prepare"] += time.perf_counter() - t
        waited = writer.waited
        writer.put(_Chunk(model_run, prepared, checkpoint, advance))
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
