"""Nightly batch scoring: every active lead, open deal and customer scored by each model's champion,
written back as tags, tasks and prediction-log rows in resumable chunks.

Per model: features as of ``at`` (``features.scoring.scoring_frame``) + the rule context from the CRM
(owners, idle days, spend windows, …) → chunks in entity-id order → score → ``serving.writeback``.
Each chunk's writes and its ``batch_checkpoints`` row commit in one transaction, so a killed run
resumes after the last committed chunk and ends with exactly the rows a clean run writes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from sqlalchemy import DateTime, bindparam, select, text
from sqlalchemy.orm import Session

from crm_predict.errors import UserError
from crm_predict.rules import MODEL_NAMES, RULES, rfm_medians, rule_based_lead_score
from crm_predict.settings import Settings
from crm_predict.tracking import experiment_id
from crm_store.models import BatchCheckpoint, BatchRun
from serving.writeback import WriteBackResult, write_back

EXPERIMENT = "batch_scoring"
RESUME_WITHIN = timedelta(hours=24)  # an unfinished run younger than this is resumed, not restarted

# Activity types per behaviour group, as the feature pipeline reads them.
SITE_VISITS = ("site_visit", "app_visit", "web_visit", "visit")
PRICING_VIEWS = ("pricing_view", "pricing_page_view", "pricing_visit")
WHITEPAPERS = ("whitepaper_download", "whitepaper", "content_download")
TRIALS = ("trial_request", "trial", "trial_signup")

PYFUNC_SCORES = {"clv": "clv_3y", "next_best_time": "p_best"}  # the output logged as the score

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

    @property
    def tag_counts(self) -> Counter:
        out: Counter = Counter()
        for m in self.models:
            out.update(m.result.tag_counts)
        return out

    @property
    def tasks_created(self) -> int:
        return sum(m.result.tasks_created for m in self.models)

    def as_dict(self) -> dict:
        return {
            "batch_run_id": self.batch_run_id,
            "scored_at": self.scored_at.isoformat(),
            "resumed": self.resumed,
            "seconds_total": round(self.seconds_total, 3),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "tasks_created": self.tasks_created,
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


# --- Rule context from the CRM ---------------------------------------------------------------


def _query(session: Session, sql: str, **params) -> pd.DataFrame:
    stmt = text(sql)
    for name, value in params.items():
        if isinstance(value, datetime):
            stmt = stmt.bindparams(bindparam(name, type_=DateTime()))
    result = session.execute(stmt, params)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _in(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)  # constants above, never user input


def _days_before(at: datetime, stamps: pd.Series) -> pd.Series:
    return (pd.Timestamp(at) - pd.to_datetime(stamps, format="ISO8601")) / pd.Timedelta(days=1)


def lead_context(session: Session, at: datetime) -> pd.DataFrame:
    """Per open lead: owner/manager, creation and first contact, rule points (90-day window) and
    the last whitepaper download of the lead or its contact."""
    leads = _query(
        session,
        """
        SELECT l.id AS entity_id, l.contact_id, l.owner_id, u.manager_id, l.created_at,
               l.first_contacted_at, l.region AS lead_region, ac.industry, c.is_decision_maker
        FROM leads l
        LEFT JOIN users u ON u.id = l.owner_id
        LEFT JOIN accounts ac ON ac.id = l.account_id
        LEFT JOIN contacts c ON c.id = l.contact_id
        WHERE l.created_at <= :at AND (l.converted_at IS NULL OR l.converted_at > :at)
        """,
        at=at,
    )
    acts = _query(
        session,
        f"""
        SELECT lead_id,
          SUM(CASE WHEN type IN ({_in(SITE_VISITS)}) AND occurred_at > :d90 THEN 1 ELSE 0 END) AS site_visits,
          SUM(CASE WHEN type IN ({_in(PRICING_VIEWS)}) AND occurred_at > :d90 THEN 1 ELSE 0 END) AS pricing_views,
          SUM(CASE WHEN type IN ({_in(WHITEPAPERS)}) AND occurred_at > :d90 THEN 1 ELSE 0 END) AS whitepapers,
          SUM(CASE WHEN type IN ({_in(TRIALS)}) AND occurred_at > :d90 THEN 1 ELSE 0 END) AS trials,
          MAX(occurred_at) AS last_interaction_at,
          MAX(CASE WHEN type IN ({_in(WHITEPAPERS)}) THEN occurred_at END) AS last_whitepaper_at
        FROM activities WHERE lead_id IS NOT NULL AND occurred_at <= :at GROUP BY lead_id
        """,
        at=at,
        d90=at - timedelta(days=90),
    ).rename(columns={"lead_id": "entity_id"})
    frame = leads.merge(acts, on="entity_id", how="left")
    for column in ("created_at", "first_contacted_at", "last_interaction_at", "last_whitepaper_at"):
        frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    # As of ``at``: a first contact after it has not happened yet.
    frame.loc[frame["first_contacted_at"] > pd.Timestamp(at), "first_contacted_at"] = pd.NaT
    frame["rule_points"] = rule_based_lead_score(
        frame["industry"].astype(object),
        frame["is_decision_maker"].astype(object),
        frame["lead_region"].astype(object),
        frame["site_visits"].astype(float),
        frame["pricing_views"].astype(float),
        frame["whitepapers"].astype(float),
        frame["trials"].astype(float),
        _days_before(at, frame["last_interaction_at"]),
    )
    keep = ["entity_id", "contact_id", "owner_id", "manager_id", "created_at"]
    return frame[keep + ["first_contacted_at", "last_whitepaper_at", "rule_points"]]


def deal_context(session: Session, at: datetime) -> pd.DataFrame:
    """Per open deal: owner/manager, stage and days since its last activity (or its creation)."""
    frame = _query(
        session,
        """
        SELECT d.id AS entity_id, d.owner_id, u.manager_id, d.stage, d.created_at,
               MAX(a.occurred_at) AS last_activity_at
        FROM deals d
        LEFT JOIN users u ON u.id = d.owner_id
        LEFT JOIN activities a ON a.deal_id = d.id AND a.occurred_at <= :at
        WHERE d.created_at <= :at AND (d.closed_at IS NULL OR d.closed_at > :at)
        GROUP BY d.id, d.owner_id, u.manager_id, d.stage, d.created_at
        """,
        at=at,
    )
    last = pd.to_datetime(frame["last_activity_at"], format="ISO8601").fillna(
        pd.to_datetime(frame["created_at"], format="ISO8601")
    )
    frame["days_idle"] = _days_before(at, last)
    return frame[["entity_id", "owner_id", "manager_id", "stage", "days_idle"]]


def customer_context(session: Session, at: datetime) -> pd.DataFrame:
    """Per customer (contact with orders by ``at``): owner, spend windows, RFM inputs, site visits in
    30 days and days inactive (exact below the warning threshold, at least it above)."""
    orders = _query(
        session,
        """
        SELECT contact_id AS entity_id, MAX(ordered_at) AS last_order_at, COUNT(*) AS frequency,
          SUM(amount) AS monetary,
          SUM(CASE WHEN ordered_at > :d365 THEN amount ELSE 0 END) AS yearly_spend,
          SUM(CASE WHEN ordered_at > :d90 THEN amount ELSE 0 END) AS spend_last_3m,
          SUM(CASE WHEN ordered_at > :d180 AND ordered_at <= :d90 THEN amount ELSE 0 END)
            AS spend_prior_3m
        FROM orders WHERE ordered_at <= :at GROUP BY contact_id
        """,
        at=at,
        d90=at - timedelta(days=90),
        d180=at - timedelta(days=180),
        d365=at - timedelta(days=365),
    )
    window = RULES.churn.inactive_warning_days
    recent = _query(
        session,
        f"""
        SELECT contact_id AS entity_id, MAX(occurred_at) AS last_activity_at,
          SUM(CASE WHEN type IN ({_in(SITE_VISITS)}) THEN 1 ELSE 0 END) AS visits_30d
        FROM activities
        WHERE occurred_at > :since AND occurred_at <= :at AND contact_id IS NOT NULL
        GROUP BY contact_id
        """,
        at=at,
        since=at - timedelta(days=max(window, 30)),
    )
    owners = _query(session, "SELECT id AS entity_id, owner_id FROM contacts")
    frame = orders.merge(recent, on="entity_id", how="left").merge(
        owners, on="entity_id", how="left"
    )
    frame["recency_days"] = _days_before(at, frame["last_order_at"])
    frame["days_inactive"] = np.fmin(
        frame["recency_days"], _days_before(at, frame["last_activity_at"])
    )
    frame["visits_30d"] = frame["visits_30d"].fillna(0).astype(int)
    for column in ("monetary", "yearly_spend", "spend_last_3m", "spend_prior_3m"):
        frame[column] = frame[column].astype(float)
    keep = ["entity_id", "owner_id", "days_inactive", "yearly_spend", "recency_days", "frequency"]
    return frame[keep + ["monetary", "visits_30d", "spend_last_3m", "spend_prior_3m"]]


def contact_context(session: Session, at: datetime) -> pd.DataFrame:
    return _query(session, "SELECT id AS entity_id, owner_id FROM contacts")


def rule_context(session: Session, model_name: str, at: datetime) -> pd.DataFrame:
    """The columns ``serving.writeback`` rules need for one model's entities, as of ``at``."""
    if model_name == "lead_scoring":
        return lead_context(session, at)
    if model_name == "deal_health":
        return deal_context(session, at)
    if model_name in ("churn", "clv"):
        return customer_context(session, at)
    if model_name == "next_best_time":
        return contact_context(session, at)
    raise UserError(f"unknown model {model_name!r}; known: {', '.join(MODEL_NAMES)}")


def changed_entities(session: Session, model_name: str, since: datetime) -> list[int]:
    """Entities of a model whose CRM rows (or activities/orders) changed since ``since``."""
    if model_name == "lead_scoring":
        sql = """SELECT id FROM leads WHERE updated_at >= :since
                 UNION SELECT lead_id FROM activities WHERE created_at >= :since AND lead_id IS NOT NULL"""  # fmt: skip
    elif model_name == "deal_health":
        sql = """SELECT id FROM deals WHERE updated_at >= :since
                 UNION SELECT deal_id FROM activities WHERE created_at >= :since AND deal_id IS NOT NULL"""  # fmt: skip
    else:
        sql = """SELECT id FROM contacts WHERE updated_at >= :since
                 UNION SELECT contact_id FROM orders WHERE created_at >= :since
                 UNION SELECT contact_id FROM activities WHERE created_at >= :since AND contact_id IS NOT NULL"""  # fmt: skip
    return sorted(int(i) for i in _query(session, sql, since=since).iloc[:, 0])


# --- Scoring ----------------------------------------------------------------------------------


def score(model, features: pd.DataFrame) -> pd.DataFrame:
    """``entity_id`` + ``score`` (+ the pyfunc's other outputs) for one model on a feature frame.

    ``model`` is a ``serving.loader.LoadedModel``: classifiers give P(positive class); CLV's score
    is ``clv_3y``, next-best-time's ``p_best`` (beside ``best_slots`` and ``best_channel``)."""
    out = pd.DataFrame({"entity_id": features["entity_id"].to_numpy(dtype=np.int64)})
    if model.flavor == "sklearn":
        out["score"] = model.predict_proba(features)
        return out
    predicted = model.predict(features).reset_index(drop=True)
    for column in predicted.columns:
        if column != "entity_id":
            out[column] = predicted[column].to_numpy()
    out["score"] = predicted[PYFUNC_SCORES[model.name]].to_numpy(dtype=float)
    return out


# --- The run ----------------------------------------------------------------------------------


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
) -> BatchSummary:
    """Score ``models`` for every active entity as of ``at`` (default: now, UTC) and write back.

    Features come from ``features.scoring.scoring_frame`` over a fresh CRM export (``export``;
    else the last one), unless a ``scoring_frame`` with its signature is given. ``since`` limits
    scoring to entities changed since then. ``progress(model, total)`` returns a callback advanced
    by the entities of each committed chunk."""
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODEL_NAMES)}")
    if load_model is None:
        from serving.loader import load_model
    started = time.perf_counter()
    now = _utcnow().replace(microsecond=0)
    run, resumed = _start_or_resume(session, list(models), at, now)
    at = run.scored_at
    chunk_size = settings.batch_chunk_size
    summary = BatchSummary(batch_run_id=run.id, scored_at=at, resumed=resumed, models=[])
    if scoring_frame is None:
        from features.export import export_snapshots, load_snapshots
        from features.scoring import scoring_frame as features_as_of

        t = time.perf_counter()
        tables = export_snapshots(session, settings) if export else load_snapshots(settings)
        session.commit()  # end the export's read transaction
        summary.seconds["export"] += time.perf_counter() - t
        scoring_frame = partial(features_as_of, tables=tables)

    for name in models:
        n_done, last_id, model_run = _done_so_far(session, run.id, name)
        summary.models.append(model_run)
        seconds = model_run.seconds

        t = time.perf_counter()
        loaded = load_model(client, name, alias="champion")
        model_run.version = str(loaded.version)
        seconds["load"] += time.perf_counter() - t

        t = time.perf_counter()
        features = scoring_frame(settings, name, at)
        if since is not None:
            features = features[features["entity_id"].isin(changed_entities(session, name, since))]
        features = features.sort_values("entity_id", kind="stable").reset_index(drop=True)
        seconds["features"] += time.perf_counter() - t

        t = time.perf_counter()
        context = rule_context(session, name, at)
        medians = None
        if name == "clv" and len(context):
            medians = rfm_medians(
                context["recency_days"], context["frequency"], context["monetary"]
            )
        seconds["context"] += time.perf_counter() - t

        todo = features if last_id is None else features[features["entity_id"] > last_id]
        advance = progress(name, len(features)) if progress else None
        if advance and len(features) > len(todo):
            advance(len(features) - len(todo))
        for index, start in enumerate(range(0, len(todo), chunk_size), start=n_done):
            chunk = todo.iloc[start : start + chunk_size]
            t = time.perf_counter()
            scored = score(loaded, chunk).merge(context, on="entity_id", how="left")
            seconds["score"] += time.perf_counter() - t

            t = time.perf_counter()
            result = write_back(session, loaded, scored, at, rfm_medians=medians)
            session.add(
                BatchCheckpoint(
                    batch_run_id=run.id, model_name=name, model_version=model_run.version,
                    chunk=index, last_entity_id=int(chunk["entity_id"].iloc[-1]),
                    entities=len(chunk), tags_written=result.tags_written,
                    tasks_created=result.tasks_created,
                    counts=json.dumps({"tags": result.tag_counts, "tasks": result.task_counts}),
                    committed_at=_utcnow(),
                )
            )  # fmt: skip
            session.commit()  # the chunk's tags, tasks, log rows and checkpoint: one transaction
            seconds["write"] += time.perf_counter() - t
            model_run.result.add(result)
            model_run.entities += len(chunk)
            model_run.chunks += 1
            if advance:
                advance(len(chunk))

    summary.seconds_total = time.perf_counter() - started
    if log_to_mlflow:
        summary.mlflow_run_id = log_summary(client, summary)
    run.status, run.finished_at = "done", _utcnow()
    run.summary, run.mlflow_run_id = json.dumps(summary.as_dict()), summary.mlflow_run_id
    session.commit()
    return summary


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
    client.log_dict(run_id, RULES.as_dict(), "rules.json")
    client.set_terminated(run_id)
    return run_id
