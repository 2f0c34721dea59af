"""Nightly reading of customer messages by the ``message_intent`` champion, written back as tags
and tasks (issue #22).

1. **Read**: inbound messages without a reading from the champion's version (an ``intent`` tag,
   or ``unreadable`` for a text the model cannot read: empty, binary, another language) are scored
   in chunks by id; each chunk's message tags (``intent``, ``sentiment``, ``need_priority``) commit
   together. A nightly run reads the new messages, a rerun none, a new champion all of them again.
2. **Contacts and deals**: contact tags ``latest_intent`` / ``complaint_tendency`` /
   ``need_priority`` (``crm_predict.core.messages.contact_tags``) for the contacts whose messages
   changed since their tags were computed (a newer reading, a message whose time has come, one
   that left the complaint window), or every contact when the rules' ``messages`` section differs
   from the last finished run's (kept in its ``batch_runs`` summary); deal tag ``latest_intent``
   likewise. Computed from the stored readings, chunk by chunk.
3. **Tasks**: quote follow-up and competitor response for the inbound messages of the task window
   (owner: the contact's owner), ticket escalation (the owner's manager) and satisfaction survey
   (``crm_predict.core.tickets``); ownerless tasks go to the region's default owner or the queue,
   as in the tabular batch. Dedup keys make a rerun create none.

Every step finds its work from what the store holds, not from what the run remembers, so a killed
run rerun (with the same ``at``) ends with the rows a clean run writes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from crm_predict.crm_store.models import BatchRun
from crm_predict.crm_store.repository import create_tasks, upsert_tags
from sqlalchemy import BigInteger, DateTime, Float, String, bindparam, select, text
from sqlalchemy.orm import Session

from crm_predict.core import messages as M
from crm_predict.core import tickets as T
from crm_predict.core.errors import UserError
from crm_predict.core.rules import Rules, TaskSpec
from crm_predict.core.settings import Settings
from crm_predict.core.tracking import CHAMPION, version_for_alias

MODEL_NAME = "message_intent"
MESSAGE = "message"  # entity_type of a message's tags
TAG_INTENT, TAG_SENTIMENT, TAG_PRIORITY = "intent", "sentiment", M.TAG_NEED_PRIORITY
TAG_UNREADABLE = "unreadable"  # value: why the model could not read the text
# A message carrying either tag from the champion's version has been read by it.
READING_TAGS = (TAG_INTENT, TAG_UNREADABLE)
RUN_KEY = MODEL_NAME  # batch_runs.models of a message run (the tabular runs' keys differ)
CHUNK = 20_000  # messages scored, or contacts / deals tagged, per transaction
TAG_VALUE_CHARS = 200  # tags.value's width

ModelLoader = Callable[..., object]  # (client, name, alias="champion") -> LoadedModel


@dataclass
class MessageBatchResult:
    """What one run did: messages read, entities tagged, tags and tasks written, seconds."""

    model_version: str = ""
    skipped: str | None = None  # why nothing was read (no champion); not an error
    messages_scored: int = 0
    messages_unreadable: int = 0
    chunks: int = 0
    contacts_tagged: int = 0
    deals_tagged: int = 0
    tags_written: int = 0
    tasks_created: int = 0
    contacts_full: bool = False  # every contact's tags recomputed (first run, rules changed)
    task_counts: Counter = field(default_factory=Counter)
    assignment_counts: Counter = field(default_factory=Counter)  # default_owner / queue
    seconds: dict[str, float] = field(default_factory=Counter)
    seconds_total: float = 0.0

    def as_dict(self) -> dict:
        return {
            "model": MODEL_NAME,
            "model_version": self.model_version,
            "skipped": self.skipped,
            "messages_scored": self.messages_scored,
            "messages_unreadable": self.messages_unreadable,
            "chunks": self.chunks,
            "contacts_tagged": self.contacts_tagged,
            "deals_tagged": self.deals_tagged,
            "contacts_full": self.contacts_full,
            "tags_written": self.tags_written,
            "tasks_created": self.tasks_created,
            "task_counts": dict(self.task_counts),
            "tasks_to_default_owner": self.assignment_counts["default_owner"],
            "tasks_to_queue": self.assignment_counts["queue"],
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "seconds_total": round(self.seconds_total, 3),
        }


def run_message_batch(
    session: Session,
    client,
    settings: Settings,
    at: datetime | None = None,
    rules: Rules | None = None,
    *,
    load_model: ModelLoader | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    full: bool = False,
) -> MessageBatchResult:
    """Read the messages the ``message_intent`` champion has not read yet and write back their
    tags, the contacts' and deals' message tags and the message and ticket tasks, as of ``at``
    (default: now, UTC). ``rules``: read from ``settings.rules_path`` when not given (a bad file
    stops the run before it writes). ``progress(name, total)`` returns a callback advanced by the
    messages of each committed chunk. ``full``: recompute every contact's tags, not only those
    whose messages changed since (after a change of the rules' ``messages`` section). No
    champion: a result saying so, nothing written."""
    started = time.perf_counter()
    at = _naive_utc(at)
    rules = settings.load_rules() if rules is None else rules
    result = MessageBatchResult()
    try:
        version = version_for_alias(client, MODEL_NAME, CHAMPION)
    except UserError:
        version = None
    if version is None:
        result.skipped = f"no {MODEL_NAME} model with alias {CHAMPION!r} in the registry"
        return result
    if load_model is None:
        from crm_predict.serving.loader import load_model
    clock = time.perf_counter()
    model = load_model(client, MODEL_NAME, alias=CHAMPION)
    result.model_version = str(model.version)
    result.seconds["load"] += time.perf_counter() - clock
    run, previous = _start(session, at)
    # Contact tags computed under other message rules (or unknown ones) are all recomputed.
    result.contacts_full = full or previous != rules.messages.model_dump(mode="json")
    provenance = {
        "model_name": MODEL_NAME,
        "model_version": str(model.version),
        "run_id": model.run_id,
        "scored_at": at,
    }
    _read_messages(session, model, provenance, rules, result, progress)
    _tag_contacts(session, provenance, rules, result, result.contacts_full)
    _tag_deals(session, provenance, result)
    _create_tasks(session, at, rules, result)
    result.seconds_total = time.perf_counter() - started
    summary = {**result.as_dict(), "rules": {"messages": rules.messages.model_dump(mode="json")}}
    run.status, run.finished_at = "done", _naive_utc(None)
    run.summary = json.dumps(summary, ensure_ascii=False)
    session.commit()
    return result


def _start(session: Session, at: datetime) -> tuple[BatchRun, dict | None]:
    """This run's ``batch_runs`` row (an unfinished message run's, resumed) and the message
    rules of the last finished one (None: no finished run)."""
    runs = select(BatchRun).where(BatchRun.models == RUN_KEY).order_by(BatchRun.id.desc())
    done = session.scalars(runs.where(BatchRun.status == "done")).first()
    previous = json.loads(done.summary or "{}").get("rules", {}).get("messages") if done else None
    run = session.scalars(runs.where(BatchRun.status == "running")).first()
    now = _naive_utc(None)
    if run is None:
        run = BatchRun(models=RUN_KEY, scored_at=at, status="running", started_at=now)
        session.add(run)
    run.scored_at = at
    session.commit()
    return run, previous


def _naive_utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC).replace(tzinfo=None)
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at


# --- 1. Read the messages ---------------------------------------------------------------------


def read_texts(model, texts: Sequence[str], rules: Rules) -> pd.DataFrame:
    """Per text: ``intent, intent_p, sentiment, need_priority`` from the loaded ``message_intent``
    model, or ``unreadable`` (why the text cannot be read; the other columns then empty)."""
    from crm_predict.serving.scoring import text_models
    from crm_predict.training.message_intent import check_text

    readable, unreadable = [], [None] * len(texts)
    for i, raw in enumerate(texts):
        try:
            readable.append((i, check_text(raw)[0]))
        except UserError as exc:
            unreadable[i] = str(exc)[:TAG_VALUE_CHARS]
    out = pd.DataFrame(
        {
            "intent": pd.Series([None] * len(texts), dtype=object),
            "intent_p": np.full(len(texts), np.nan),
            "sentiment": pd.Series([None] * len(texts), dtype=object),
            "need_priority": pd.Series([None] * len(texts), dtype=object),
            "unreadable": pd.Series(unreadable, dtype=object),
        }
    )
    if not readable:
        return out
    rows = np.fromiter((i for i, _ in readable), dtype=np.int64, count=len(readable))
    models = text_models(model)
    # Each distinct text once: chat lines, templates and forwarded mails repeat.
    codes, distinct = pd.factorize(pd.Series([t for _, t in readable], dtype=object))
    x = models.vectorizer.transform(list(distinct))[codes]
    p_intent, p_sentiment = models.probabilities("intent", x), models.probabilities("sentiment", x)
    intents = models.intent.classes_[p_intent.argmax(axis=1)]
    sentiments = models.sentiment.classes_[p_sentiment.argmax(axis=1)]
    intent_p = p_intent.max(axis=1).round(4)
    priority = M.need_priority(intents, intent_p, sentiments, rules.messages)
    out.loc[rows, "intent"] = intents.astype(str)
    out.loc[rows, "intent_p"] = intent_p
    out.loc[rows, "sentiment"] = sentiments.astype(str)
    out.loc[rows, "need_priority"] = priority.astype(str)
    return out


def _read_messages(session, model, provenance, rules, result, progress) -> None:
    """Score the inbound messages without a reading from this version, chunk by chunk; each
    chunk's message tags commit together (the tags are the checkpoint)."""
    unread = (
        "m.direction = 'inbound' AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.entity_type = "
        f"'{MESSAGE}' AND t.entity_id = m.id AND t.name IN {_sql_tuple(READING_TAGS)} "
        "AND t.model_name = :model AND t.model_version = :version)"
    )
    params = {"model": MODEL_NAME, "version": provenance["model_version"]}
    advance = None
    if progress is not None:
        total = session.execute(
            text(f"SELECT COUNT(*) FROM messages m WHERE {unread}"), params
        ).scalar_one()
        advance = progress(MODEL_NAME, int(total))
    base = f"SELECT m.id, m.text FROM messages m WHERE {unread}"
    chunks = _keyset(session, base, params, {"text": String()})
    while True:
        clock = time.perf_counter()
        chunk = next(chunks, None)
        result.seconds["read"] += time.perf_counter() - clock
        if chunk is None:
            break
        clock = time.perf_counter()
        readings = read_texts(model, chunk["text"].tolist(), rules)
        result.seconds["score"] += time.perf_counter() - clock
        clock = time.perf_counter()
        ids = chunk["id"].to_numpy(dtype=np.int64)
        read = readings["unreadable"].isna().to_numpy()
        frames = [
            _tag_frame(ids[read], name, readings.loc[read, column])
            for name, column in (
                (TAG_INTENT, "intent"),
                (TAG_SENTIMENT, "sentiment"),
                (TAG_PRIORITY, "need_priority"),
            )
        ]
        frames.append(_tag_frame(ids[~read], TAG_UNREADABLE, readings.loc[~read, "unreadable"]))
        tags = pd.concat(frames, ignore_index=True).assign(entity_type=MESSAGE, **provenance)
        if _read_before(session, ids):
            # Read by another version: a message unreadable now (or readable now) loses the
            # other kind of reading, so each message carries one.
            tags = pd.concat([tags, _cleared(ids, read, provenance)], ignore_index=True)
        result.tags_written += upsert_tags(session, tags, provenance["scored_at"])
        session.commit()
        result.seconds["write"] += time.perf_counter() - clock
        result.messages_scored += int(read.sum())
        result.messages_unreadable += int((~read).sum())
        result.chunks += 1
        if advance is not None:
            advance(len(chunk))


def _read_before(session, ids: np.ndarray) -> bool:
    """Whether any message of the chunk (by its id range) carries a reading, of any version."""
    names = _sql_tuple((*READING_TAGS, TAG_SENTIMENT, TAG_PRIORITY))
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM tags WHERE entity_type = '{MESSAGE}' "
        f"AND entity_id BETWEEN :low AND :high AND name IN {names})"
    )
    bounds = {"low": int(ids.min()), "high": int(ids.max())}
    return bool(session.execute(text(sql), bounds).scalar_one())


def _cleared(ids: np.ndarray, read: np.ndarray, provenance: dict) -> pd.DataFrame:
    """Tag rows without a value (removed, to history): ``unreadable`` of the messages read,
    the reading tags of those unreadable."""

    def none(n: int) -> pd.Series:
        return pd.Series([None] * n, dtype=object)

    frames = [_tag_frame(ids[read], TAG_UNREADABLE, none(int(read.sum())))]
    for name in (TAG_INTENT, TAG_SENTIMENT, TAG_PRIORITY):
        frames.append(_tag_frame(ids[~read], name, none(int((~read).sum()))))
    return pd.concat(frames, ignore_index=True).assign(entity_type=MESSAGE, **provenance)


def _tag_frame(ids: np.ndarray, name: str, values: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"entity_id": ids, "name": name, "value": values.to_numpy(dtype=object)})


# --- 2. Contacts' and deals' tags ---------------------------------------------------------------


# The entities whose tags may have changed since they were computed (their ``scored_at``): no
# tag yet; a reading newer than the tag (both are stamped with their run's ``at``; a rerun as of
# the same time recomputes what that time read, which may have grown); a message sent after the
# tag, now sent as of ``at``; for contacts, a message that has left the complaint window since.
_STALE = """
SELECT DISTINCT m.{key} AS id FROM messages m
JOIN tags r ON r.entity_type = '{message}' AND r.entity_id = m.id AND r.name = '{intent}'
LEFT JOIN tags e ON e.entity_type = '{entity}' AND e.entity_id = m.{key} AND e.name = '{tag}'
WHERE m.direction = 'inbound' AND m.{key} IS NOT NULL AND m.sent_at <= :at
  AND r.model_name = :model
  AND (e.scored_at IS NULL OR e.scored_at < r.scored_at
       OR (e.scored_at = :at AND r.scored_at = :at) OR m.sent_at > e.scored_at{left})
"""
# sent_at + window > the tag's scored_at, for messages out of the window at ``at``; SQLite's
# julianday is a float of days: a second's slack errs on recomputing.
_LEFT_WINDOW = {
    "sqlite": "julianday(m.sent_at) + :window + 1.0 / 86400 > julianday(e.scored_at)",
    "postgresql": "m.sent_at + CAST(:window AS integer) * INTERVAL '1 day' > e.scored_at",
}


# Inbound messages of the given entities with their stored readings.
_READINGS = """
SELECT m.id, m.{key} AS {key}, m.sent_at, m.direction, ti.value AS intent,
       ts.value AS sentiment, tp.value AS need_priority
FROM messages m
JOIN tags ti ON ti.entity_type = '{message}' AND ti.entity_id = m.id AND ti.name = '{intent}'
JOIN tags ts ON ts.entity_type = '{message}' AND ts.entity_id = m.id AND ts.name = '{sentiment}'
JOIN tags tp ON tp.entity_type = '{message}' AND tp.entity_id = m.id AND tp.name = '{priority}'
WHERE m.direction = 'inbound' AND m.sent_at <= :at AND m.{key} {ids}
"""


def _names(**extra) -> dict:
    return {
        "message": MESSAGE, "intent": TAG_INTENT, "sentiment": TAG_SENTIMENT,
        "priority": TAG_PRIORITY, **extra,
    }  # fmt: skip


def _stale(session, key: str, entity: str, tag: str, at: datetime, window: int | None = None) -> set[int]:  # fmt: skip
    """Ids of ``_STALE``; with ``window`` (days) those whose window lost a message too."""
    left, params = "", {"at": at, "model": MODEL_NAME}
    if window is not None:
        dialect = session.get_bind().dialect.name
        left = f" OR (m.sent_at <= :left_before AND {_LEFT_WINDOW[dialect]})"
        params |= {"window": window, "left_before": at - timedelta(days=window)}
    sql = _STALE.format(**_names(key=key, entity=entity, tag=tag, left=left))
    return set(_ids(session, sql, **params))


def _tag_contacts(
    session, provenance, rules: Rules, result: MessageBatchResult, full: bool
) -> None:
    """Contact tags, for the contacts ``_STALE`` finds (every contact with a reading: ``full``)."""
    at, window = provenance["scored_at"], rules.messages.complaint_window_days
    clock = time.perf_counter()
    if full:
        sql = (
            "SELECT DISTINCT m.contact_id AS id FROM messages m WHERE m.direction = 'inbound' "
            "AND m.contact_id IS NOT NULL AND m.sent_at <= :at"
        )
        contacts = set(_ids(session, sql, at=at))
    else:
        contacts = _stale(session, "contact_id", "contact", M.TAG_COMPLAINT, at, window)
    result.seconds["contacts_find"] += time.perf_counter() - clock
    for ids in _batches(sorted(contacts)):
        clock = time.perf_counter()
        scored = _readings(session, "contact_id", ids, at)
        tags = M.contact_tags(scored, at, rules.messages)
        result.tags_written += _write_tags(session, tags, "contact_id", "contact", provenance)
        result.contacts_tagged += len(tags)
        result.seconds["contacts"] += time.perf_counter() - clock


def _write_tags(session, tags: pd.DataFrame, key: str, entity_type: str, provenance: dict) -> int:
    """Upsert one tag per (entity, column) of ``tags`` (``key`` + a column per tag) and commit."""
    rows = tags.melt(id_vars=key, var_name="name", value_name="value")
    rows = rows.rename(columns={key: "entity_id"}).assign(entity_type=entity_type, **provenance)
    written = upsert_tags(session, rows, provenance["scored_at"])
    session.commit()
    return written


def _tag_deals(session, provenance, result: MessageBatchResult) -> None:
    at = provenance["scored_at"]
    clock = time.perf_counter()
    deals = _stale(session, "deal_id", "deal", M.TAG_LATEST_INTENT, at)
    for ids in _batches(sorted(deals)):
        scored = _readings(session, "deal_id", ids, at)
        tags = M.deal_tags(scored, at)
        result.tags_written += _write_tags(session, tags, "deal_id", "deal", provenance)
        result.deals_tagged += len(tags)
    result.seconds["deals"] += time.perf_counter() - clock


def _readings(session, key: str, ids: list[int], at: datetime) -> pd.DataFrame:
    postgres = session.get_bind().dialect.name == "postgresql"
    sql = _READINGS.format(**_names(key=key, ids=_in_ids(postgres)))
    types = {"sent_at": DateTime(), key: BigInteger(), "id": BigInteger()}
    frame = _frame(session, sql, types, at=at, ids=_ids_param(ids, postgres))
    # In id order: the newest of messages sent at the same time is then the last one written.
    frame = frame.sort_values("id", kind="stable")
    return frame.assign(**{key: frame[key].astype(np.int64)})


# --- 3. Tasks -------------------------------------------------------------------------------


# Inbound messages of the task window read as a quote request or a comparison, with the owner.
_MESSAGE_TASKS = f"""
SELECT m.id, m.contact_id, m.sent_at, m.direction, m.channel, m.text, ti.value AS intent,
       c.owner_id, c.region
FROM messages m
JOIN tags ti ON ti.entity_type = '{MESSAGE}' AND ti.entity_id = m.id AND ti.name = '{TAG_INTENT}'
JOIN contacts c ON c.id = m.contact_id
WHERE m.direction = 'inbound' AND m.sent_at > :since AND m.sent_at <= :at
  AND ti.value IN ('quote_request', 'competitor_comparison')
"""

# Tickets that may need an escalation (open past the limit) or a survey (closed recently), with
# the contact's owner and the owner's manager.
_TICKET_TASKS = """
SELECT t.id, t.contact_id, t.opened_at, t.closed_at, t.priority, t.subject, c.owner_id,
       u.manager_id, c.region
FROM tickets t
JOIN contacts c ON c.id = t.contact_id
LEFT JOIN users u ON u.id = c.owner_id
WHERE (((t.closed_at IS NULL OR t.closed_at > :at) AND t.opened_at <= :opened_before)
   OR (t.closed_at > :closed_since AND t.closed_at <= :at))
"""


def _create_tasks(session, at: datetime, rules: Rules, result: MessageBatchResult) -> None:
    from crm_predict.serving.batch import default_owners
    from crm_predict.serving.writeback import assign_owners

    clock = time.perf_counter()
    users = _frame(session, "SELECT id, external_id FROM users", {"id": BigInteger()})
    owners, _ = default_owners(rules, users)
    since = at - timedelta(days=rules.messages.task_window_days)
    typed = {"sent_at": DateTime(), "owner_id": Float(), "contact_id": BigInteger()}
    for chunk in _keyset(session, _MESSAGE_TASKS, {"since": since, "at": at}, typed):
        tasks = M.message_tasks(chunk, at, rules.messages)
        _write_tasks(session, tasks, chunk, at, rules, owners, result, assign_owners)
    limits = {
        "at": at,
        "opened_before": at - timedelta(hours=rules.tickets.escalate_after_hours),
        "closed_since": at - timedelta(days=rules.tickets.survey_window_days),
    }
    typed = {
        "opened_at": DateTime(), "closed_at": DateTime(), "owner_id": Float(),
        "manager_id": Float(), "contact_id": BigInteger(), "priority": String(),
    }  # fmt: skip
    for chunk in _keyset(session, _TICKET_TASKS, limits, typed, alias="t"):
        tasks = T.ticket_tasks(chunk, at, rules.tickets)
        _write_tasks(session, tasks, chunk, at, rules, owners, result, assign_owners)
    result.seconds["tasks"] += time.perf_counter() - clock


def _write_tasks(session, tasks: list[TaskSpec], chunk, at, rules, owners, result, assign) -> None:
    """Create the tasks (ownerless ones assigned as the tabular batch does), counting the new
    ones by type, and commit."""
    tasks, assigned = assign(tasks, chunk, rules, owners)
    by_type: dict[str, list[TaskSpec]] = {}
    for task in tasks:
        by_type.setdefault(task.type, []).append(task)
    for kind, group in by_type.items():
        new = create_tasks(session, group, at)
        result.tasks_created += new
        result.task_counts[kind] += new
    session.commit()
    result.assignment_counts.update(assigned)


# --- SQL helpers ----------------------------------------------------------------------------


def _sql_tuple(values: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _in_ids(postgres: bool) -> str:
    # One bound value however many ids: an array on PostgreSQL, JSON on SQLite.
    return "= ANY(CAST(:ids AS bigint[]))" if postgres else "IN (SELECT value FROM json_each(:ids))"


def _ids_param(ids: list[int], postgres: bool):
    return list(ids) if postgres else json.dumps(list(ids))


def _statement(sql: str, params: dict, types: dict | None = None):
    stmt = text(sql)
    binds = [bindparam(k, type_=DateTime()) for k, v in params.items() if isinstance(v, datetime)]
    if binds:
        stmt = stmt.bindparams(*binds)
    return stmt.columns(**types) if types else stmt


def _frame(session, sql: str, types: dict | None = None, **params) -> pd.DataFrame:
    result = session.execute(_statement(sql, params, types), params)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def _ids(session, sql: str, **params) -> list[int]:
    return [int(v) for v in session.execute(_statement(sql, params), params).scalars()]


def _batches(ids: list[int], size: int | None = None) -> Iterator[list[int]]:
    size = size or CHUNK
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _keyset(
    session, base: str, params: dict, types: dict, alias: str = "m", size: int | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of ``base`` (a query ending in its WHERE clause) in ``alias.id`` order, ``size``
    at a time: keyset on the table's own primary key, so each page is an index range."""
    sql = f"{base.rstrip()} AND {alias}.id > :after ORDER BY {alias}.id LIMIT :size"
    size = size or CHUNK
    after = -(2**62)
    while True:
        frame = _frame(session, sql, types, **params, after=after, size=size)
        if frame.empty:
            return
        frame["id"] = frame["id"].astype(np.int64)
        yield frame
        if len(frame) < size:
            return
        after = int(frame["id"].iloc[-1])
