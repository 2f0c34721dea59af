"""The models and feature reads behind the online API, kept out of the BentoML class.

``ModelHub`` holds the champion of every model, reads online features by entity id, scores on one
worker thread (concurrent requests for a model are coalesced into one batch while that thread is
busy), and writes tags/tasks/prediction-log rows back through ``crm_predict.serving.writeback``. Loading never
raises: what failed is kept and reported by ``readiness`` so the service starts without MLflow or
the online store and recovers on ``reload``. The text model (``message_intent``) is loaded and
reported beside the five, but optional: without its champion the service is still ready.

The coalescer stays instead of BentoML 1.4's adaptive batching (a batchable API called through the
service's self-proxy): that cost 3.4 vs 2.4 ms server CPU per sequential lead score and failed
(HTTP 500) from 8 requests in flight, where this path holds p99 6.4 ms at 200 req/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

import numpy as np
import pandas as pd
from crm_predict.serving import scoring
from crm_predict.serving.loader import LoadedModel, load_model
from crm_predict.training.specs import TEXT_SPECS, spec
from mlflow import MlflowClient

from crm_predict.core.rules import MODEL_NAMES, RULES, Rules, rfm_medians
from crm_predict.core.settings import Settings

ALIAS = "champion"
MESSAGE_MODEL = "message_intent"
TEXT_MODELS = tuple(TEXT_SPECS)
SERVED = (*MODEL_NAMES, *TEXT_MODELS)
PROBE_ENTITY_ID = -1  # an id no CRM row has: a read that says "unknown" proves the store answers


def load_for_serving(client: MlflowClient, name: str, alias: str = ALIAS) -> LoadedModel:
    """``load_model`` as the online API wants it: a classifier scores on the calling thread (a
    thread pool costs more than it saves on a few rows; one scoring thread per process)."""
    return load_model(client, name, alias, single_thread=True)


class UnknownIdsError(LookupError):
    """Entity ids the online store has no features for."""

    def __init__(self, ids: list[int]):
        super().__init__(f"unknown id(s): {', '.join(map(str, ids))}")
        self.ids = ids


class UnknownRefsError(LookupError):
    """External ids (``*_ref``) no row of the model's entity table has."""

    def __init__(self, refs: list[str]):
        super().__init__(f"unknown ref(s): {', '.join(refs)}")
        self.refs = refs


class UnavailableError(RuntimeError):
    """A model or the online store is not there right now (HTTP 503, not the caller's fault)."""


class FeastOnline:
    """Online feature reads through ``crm_predict.features.online.ServiceReader`` (one per model's
    FeatureService, resolved on first use); the Feast store is opened on first use too."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._store = None
        self._readers: dict[str, object] = {}

    def read(self, model_name: str, ids: list[int]) -> pd.DataFrame:
        """``entity_id`` + the model's FeatureService features, one row per id."""
        from crm_predict.features.online import ServiceReader, UnknownEntityError
        from crm_predict.features.store import feature_store

        try:
            if self._store is None:
                self._store = feature_store(self.settings)
            reader = self._readers.get(model_name)
            if reader is None:
                reader = self._readers[model_name] = ServiceReader.open(self._store, model_name)
            # One id: the object-block frame, same values (see ServiceReader.read).
            return reader.read(ids, typed=len(ids) > 1)
        except UnknownEntityError as exc:
            raise UnknownIdsError(list(getattr(exc, "entity_ids", None) or ids)) from exc
        except Exception as exc:
            self.reset()  # reopen next time (the store may come back)
            raise UnavailableError(f"online store: {type(exc).__name__}: {exc}") from exc

    def reset(self) -> None:
        """Forget the store and the resolved FeatureServices (re-read from the registry)."""
        self._store = None
        self._readers = {}

    def check(self) -> str | None:
        """None when the online store answers a read, else why not."""
        try:
            self.read(MODEL_NAMES[0], [PROBE_ENTITY_ID])
        except UnknownIdsError:
            return None
        except UnavailableError as exc:
            return str(exc)
        return None


@dataclass
class Job:
    """One request's share of a batch: entity ids to read, or raw feature rows. A request by
    external id keeps its ``refs`` (request order) beside the ``ids`` they resolved to."""

    ids: list[int] | None = None
    frame: pd.DataFrame | None = None
    explain: bool = False
    refs: list[str] | None = None


@dataclass
class MessageJob:
    """One request's messages: checked (text, language) pairs and the caller's ids for them."""

    checked: list[tuple[str, str]]
    ids: list


@dataclass
class Scored:
    """What a request gets back: the model that scored, product-language records, the feature
    rows they came from (write-back context)."""

    model: LoadedModel
    records: list[dict]
    features: pd.DataFrame


T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Coalesce concurrent ``submit`` calls into one ``run(items)`` on ``executor``.

    Idle: an item runs at once, alone (no batching window, no added latency). Busy: items queue
    and go together as the next batch, up to ``max_items``. ``run`` returns one result or
    exception per item, so one bad request never fails its neighbours.

    A batch that ``inline`` calls small runs on the event loop itself when ``lock`` is free (no
    other batch running): handing one request to a thread and back costs more than scoring it,
    and the two threads then queue for the GIL behind each other. Requests that arrive while it
    runs wait in their sockets and are queued together once it is done, so concurrent requests
    are still coalesced. ``lock`` is held around every ``run``, on the loop or ``executor``."""

    def __init__(
        self,
        run: Callable[[list[T]], list[R | BaseException]],
        executor: ThreadPoolExecutor,
        max_items: int = 64,
        inline: Callable[[list[T]], bool] | None = None,
        lock: threading.Lock | None = None,
    ):
        self.run, self.executor, self.max_items = run, executor, max_items
        self.inline, self.lock = inline, lock or threading.Lock()
        self._queue: list[tuple[T, asyncio.Future]] = []
        self._draining = False
        self.batch_sizes: list[int] = []  # observed, for tests and the benchmark
        self.inline_batches = 0  # how many of them ran on the event loop

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((item, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch = self._queue[: self.max_items]
                del self._queue[: self.max_items]
                self.batch_sizes.append(len(batch))
                items = [item for item, _ in batch]
                try:
                    if self.inline is not None and self.inline(items) and self.lock.acquire(False):
                        self.inline_batches += 1
                        try:
                            results = self.run(items)
                        finally:
                            self.lock.release()
                    else:
                        results = await loop.run_in_executor(self.executor, self._locked, items)
                except Exception as exc:  # run itself broke: every item gets the error
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._draining = False

    def _locked(self, items: list[T]) -> list[R | BaseException]:
        with self.lock:
            return self.run(items)


class ModelHub:
    """Champions of every model, their scoring, reload and readiness."""

    def __init__(
        self,
        settings: Settings,
        online: FeastOnline | None = None,
        loader: Callable[[MlflowClient, str, str], LoadedModel] = load_for_serving,
    ):
        self.settings = settings
        self.online = online or FeastOnline(settings)
        self.loader = loader
        self.models: dict[str, LoadedModel] = {}
        self.errors: dict[str, str] = {name: "not loaded yet" for name in SERVED}
        self.rfm_medians: tuple[float, float, float] | None = None
        # The business rules: the built-in defaults until ``reload_rules`` reads the file.
        self.rules: Rules = RULES
        self.rules_file: str | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        # One scoring at a time, on the loop or the executor (one Feast store connection).
        self.scoring_lock = threading.Lock()
        self.batchers = {
            name: MicroBatcher(
                functools.partial(self.score_jobs, name),
                self.executor,
                max_items=64,
                inline=_small,
                lock=self.scoring_lock,
            )
            for name in MODEL_NAMES
        }
        self.batchers[MESSAGE_MODEL] = MicroBatcher(
            self.score_message_jobs,
            self.executor,
            max_items=64,
            inline=_few_texts,
            lock=self.scoring_lock,
        )
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._engine = None
        self._engine_lock = threading.Lock()
        self._last_attempt = 0.0

    # --- loading -------------------------------------------------------------------------------

    def reload(self, force: bool = False) -> dict[str, str]:
        """Load each model's champion when its version changed (or all with ``force``); returns
        what happened per model. Failures are kept in ``errors``, never raised."""
        outcome: dict[str, str] = {}
        with self._reload_lock:
            self._last_attempt = time.monotonic()
            try:
                client = self.settings.mlflow_client()
            except Exception as exc:
                for name in SERVED:
                    self.errors[name] = f"MLflow: {type(exc).__name__}: {exc}"
                return {name: "error" for name in SERVED}
            for name in SERVED:
                current = self.models.get(name)
                try:
                    if current is not None and not force:
                        version = client.get_model_version_by_alias(name, ALIAS).version
                        if str(version) == current.version:
                            outcome[name] = f"unchanged (version {current.version})"
                            continue
                    loaded = self.loader(client, name, ALIAS)
                    if name in TEXT_MODELS:
                        scoring.warm_text_model(loaded)
                    self.models[name] = loaded
                    self.errors.pop(name, None)
                    outcome[name] = f"loaded version {self.models[name].version}"
                except Exception as exc:
                    self.errors[name] = f"{type(exc).__name__}: {exc}"
                    outcome[name] = "error"
            if any(spec(name).rfm_medians for name in MODEL_NAMES if name in self.models):
                self.rfm_medians = self._load_rfm_medians()
            if force and hasattr(self.online, "reset"):
                self.online.reset()  # a forced reload also picks up a re-applied feature repo
        return outcome

    def reload_rules(self) -> dict:
        """Read the rules file again (``settings.rules_path``); a bad file raises
        ``crm_predict.core.errors.UserError`` and the rules in use stay."""
        path = self.settings.rules_path
        rules = self.settings.load_rules()
        changed = rules != self.rules
        self.rules, self.rules_file = rules, None if path is None else str(path)
        return {"file": self.rules_file, "changed": changed}

    def warm(self) -> None:
        """Open the online store and resolve each loaded model's FeatureService now (a probe
        read each), so what that loads (~75k objects) is in the heap the service freezes: left
        to the first request, every full garbage collection walked it (~25 ms, a p99 stall)."""
        for name in MODEL_NAMES:
            if name not in self.models or not spec(name).reads_features:
                continue
            # Unknown id is the probe's answer; an unreachable store is readiness's to report.
            with self.scoring_lock, contextlib.suppress(Exception):
                self.online.read(name, [PROBE_ENTITY_ID])

    def _load_rfm_medians(self) -> tuple[float, float, float] | None:
        """Population medians of the RFM features (latest row per customer of the Parquet source
        the online store is materialized from); None when the source is not there."""
        try:
            from crm_predict.features.definitions import VIEWS, source_path
            from crm_predict.features.transforms import TS

            view = VIEWS["customer_transactions"]
            frame = pd.read_parquet(
                source_path(self.settings, view.name),
                columns=[view.join_key, TS, *scoring.RFM_COLUMNS],
            )
        except Exception:
            return None
        latest = frame.sort_values(TS).groupby(view.join_key).tail(1)
        if latest.empty:
            return None
        return rfm_medians(*(latest[c] for c in scoring.RFM_COLUMNS))

    def retry_missing(self, min_interval: float = 15.0) -> bool:
        """Start a background reload when a model is missing and the last try is old enough."""
        if all(name in self.models for name in SERVED) or self._reload_lock.locked():
            return False
        if time.monotonic() - self._last_attempt < min_interval:
            return False
        threading.Thread(target=self.reload, name="champion-retry", daemon=True).start()
        return True

    def start_polling(self, interval_seconds: float) -> threading.Thread | None:
        """Check the registry for a new champion every ``interval_seconds`` (0: never)."""
        if interval_seconds <= 0:
            return None

        def poll() -> None:
            while not self._stop.wait(interval_seconds):
                self.reload()

        thread = threading.Thread(target=poll, name="champion-poll", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._stop.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._engine is not None:
            self._engine.dispose()

    # --- status --------------------------------------------------------------------------------

    def model_status(self, names: tuple[str, ...] = MODEL_NAMES) -> dict[str, dict]:
        status = {}
        for name in names:
            model = self.models.get(name)
            if model is None:
                status[name] = {"status": "not_loaded", "error": self.errors.get(name)}
                continue
            status[name] = {
                "status": "ready", "version": model.version, "alias": model.alias,
                "run_id": model.run_id, "flavor": model.flavor,
                "features": model.feature_names,
                "explainer": model.explainer.method if model.explainer else None,
                "loaded_at": model.loaded_at.isoformat(), "error": self.errors.get(name),
            }  # fmt: skip
        return status

    def readiness(self) -> dict:
        """Which models are loaded and whether the online store answers (runs a probe read); the
        text models are reported, not required."""
        models = self.model_status()
        store_error = self.executor.submit(self._locked_check).result(timeout=30)
        online = {"status": "reachable"} if store_error is None else {"status": "unreachable", "error": store_error}  # fmt: skip
        ready = store_error is None and all(m["status"] == "ready" for m in models.values())
        text = self.model_status(TEXT_MODELS)
        return {"ready": ready, "models": models, "text_models": text, "online_store": online}

    def _locked_check(self) -> str | None:
        with self.scoring_lock:
            return self.online.check()

    # --- scoring -------------------------------------------------------------------------------

    def model(self, name: str) -> LoadedModel:
        model = self.models.get(name)
        if model is None:
            raise UnavailableError(f"model {name} is not loaded: {self.errors.get(name)}")
        return model

    async def score(self, name: str, job: Job) -> Scored:
        """Score one request's ids or rows (coalesced with concurrent requests for ``name``)."""
        return await self.batchers[name].submit(job)

    def score_jobs(self, name: str, jobs: list[Job]) -> list[Scored | BaseException]:
        """One feature read for every id in the batch, one model call per explain flag."""
        try:
            model = self.model(name)
        except UnavailableError as exc:
            return [exc] * len(jobs)
        table, inputs = self._inputs(name, jobs)
        results: list = [x if isinstance(x, BaseException) else None for x in inputs]
        for explain in (False, True):
            chosen = [
                i for i, job in enumerate(jobs)
                if job.explain == explain and not isinstance(inputs[i], BaseException)
            ]  # fmt: skip
            if not chosen:
                continue
            merged = _merged(table, [inputs[i] for i in chosen])
            try:
                records = scoring.score(model, merged, explain, self.rfm_medians, self.rules)
            except Exception as exc:
                for i in chosen:
                    results[i] = exc
                continue
            start = 0
            for i in chosen:
                n = len(inputs[i])
                own = merged if len(chosen) == 1 else merged.iloc[start : start + n].reset_index(drop=True)  # fmt: skip
                results[i] = Scored(model, records[start : start + n], own)
                start += n
        return results

    def score_message_jobs(self, jobs: list[MessageJob]) -> list[Scored | BaseException]:
        """Every message of the coalesced requests in one model call."""
        try:
            model = self.model(MESSAGE_MODEL)
            checked = [pair for job in jobs for pair in job.checked]
            ids = [i for job in jobs for i in job.ids]
            records = scoring.score_messages(model, checked, ids, self.rules.messages)
        except Exception as exc:
            return [exc] * len(jobs)
        results: list[Scored | BaseException] = []
        start = 0
        for job in jobs:
            n = len(job.checked)
            results.append(Scored(model, records[start : start + n], pd.DataFrame()))
            start += n
        return results

    def _inputs(
        self, name: str, jobs: list[Job]
    ) -> tuple[pd.DataFrame | None, list[pd.DataFrame | list[int] | BaseException]]:
        """(one table read for every id of the batch, each job's input): a job's row positions
        in that table, its raw rows, its own read, or the error that is its answer."""
        id_jobs = [job for job in jobs if job.ids is not None]
        table, row_of = None, {}
        if id_jobs:
            wanted = list(dict.fromkeys(i for job in id_jobs for i in job.ids))
            try:
                table = self._read(name, wanted)
                row_of = {int(v): k for k, v in enumerate(table[scoring.ENTITY_ID].tolist())}
            except UnknownIdsError:
                table = None  # some request has unknown ids: read per request to tell whose
            except UnavailableError as exc:
                return None, [exc if job.ids is not None else job.frame for job in jobs]
            if table is not None and not set(wanted) <= set(row_of):
                table = None
        inputs: list[pd.DataFrame | list[int] | BaseException] = []
        for job in jobs:
            if job.ids is None:
                inputs.append(job.frame)
            elif table is not None:
                inputs.append([row_of[i] for i in job.ids])
            else:
                try:
                    inputs.append(_rows_for(self._read(name, job.ids), job.ids))
                except (UnknownIdsError, UnavailableError) as exc:
                    inputs.append(exc)
        return table, inputs

    def _read(self, name: str, ids: list[int]) -> pd.DataFrame:
        if not spec(name).reads_features:  # the ids are the served model's input
            return pd.DataFrame({scoring.ENTITY_ID: ids})
        return self.online.read(name, ids)

    # --- the CRM store: external ids, write-back ------------------------------------------------

    def crm_engine(self):
        """The CRM store's engine, made on first use (ref lookups and write-back share it)."""
        with self._engine_lock:
            if self._engine is None:
                from crm_predict.crm_store.db import make_engine

                self._engine = make_engine(self.settings.crm_url)
            return self._engine

    async def resolve_refs(self, name: str, refs: list[str]) -> list[int]:
        """Internal ids of ``refs`` in request order (repeats kept): one query of the model's
        entity table, on a worker thread (not the scoring thread, not the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self._resolve_refs, name, refs
        )

    def _resolve_refs(self, name: str, refs: list[str]) -> list[int]:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        table = entity_table(name)
        wanted = list(dict.fromkeys(refs))
        query = select(table.external_id, table.id).where(table.external_id.in_(wanted))
        try:
            with self.crm_engine().connect() as connection:
                found = dict(connection.execute(query).all())
        except SQLAlchemyError as exc:
            raise UnavailableError(f"CRM store: {type(exc).__name__}: {exc}") from exc
        missing = [ref for ref in wanted if ref not in found]
        if missing:
            raise UnknownRefsError(missing)
        return [int(found[ref]) for ref in refs]

    async def write_back(self, name: str, scored: Scored, request_id: str) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._write_back, name, scored, request_id)

    def _write_back(self, name: str, scored: Scored, request_id: str) -> dict[str, int]:
        """Tags, tasks and log rows of ``scored``; its records get their ``external_id`` from the
        rule-context query write-back makes anyway."""
        from crm_predict.crm_store.db import session_factory
        from crm_predict.serving.writeback import write_back

        now = datetime.now(UTC).replace(tzinfo=None)
        with session_factory(self.crm_engine())() as session:
            frame = scored_frame(name, scored, self.rules)
            frame = frame.merge(crm_context(session, name, frame["entity_id"].tolist()), "left", "entity_id")  # fmt: skip
            for record, external_id in zip(scored.records, frame.pop("external_id"), strict=True):
                record["external_id"] = None if pd.isna(external_id) else str(external_id)
            rules = self.rules
            owners = {}
            if rules.assignment.default_owner_by_region:
                from crm_predict.crm_store.repository import read_table
                from crm_predict.serving.batch import default_owners

                owners, _ = default_owners(
                    rules, read_table(session, "users", ["id", "external_id"])
                )
            result = write_back(
                session, scored.model, frame, now, source="api", request_id=request_id,
                rfm_medians=self.rfm_medians, rules=rules, default_owners=owners,
            )  # fmt: skip
            session.commit()
        return {
            "tags": result.tags_written,
            "tasks": result.tasks_created,
            "predictions_logged": result.predictions_logged,
        }


INLINE_ROWS = 32  # a coalesced batch of at most this many rows is scored on the event loop


def _small(jobs: list[Job]) -> bool:
    """Whether ``jobs`` are few enough rows to score on the event loop (a millisecond or two)."""
    rows = 0
    for job in jobs:
        rows += len(job.ids) if job.ids is not None else len(job.frame)
    return rows <= INLINE_ROWS


INLINE_CHARS = 20_000  # and at most this much text (a long message costs a few ms)


def _few_texts(jobs: list[MessageJob]) -> bool:
    """Whether ``jobs`` hold little enough text to score on the event loop."""
    texts = [text for job in jobs for text, _ in job.checked]
    return len(texts) <= INLINE_ROWS and sum(map(len, texts)) <= INLINE_CHARS


def _merged(table: pd.DataFrame | None, parts: list[pd.DataFrame | list[int]]) -> pd.DataFrame:
    """One frame of every part in order: row positions are taken from ``table`` in one go."""
    if all(isinstance(part, list) for part in parts):
        rows = [k for part in parts for k in part]
        if rows == list(range(len(table))):
            return table
        return table.iloc[rows].reset_index(drop=True)
    frames = [table.iloc[p].reset_index(drop=True) if isinstance(p, list) else p for p in parts]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _rows_for(table: pd.DataFrame, ids: list[int]) -> pd.DataFrame:
    """The rows of ``table`` for ``ids`` in request order (repeats kept)."""
    if len(table) == len(ids) and table[scoring.ENTITY_ID].tolist() == ids:
        return table  # read for exactly this request
    indexed = table.drop_duplicates(scoring.ENTITY_ID).set_index(scoring.ENTITY_ID)
    missing = [i for i in ids if i not in indexed.index]
    if missing:
        raise UnknownIdsError(missing)
    return indexed.loc[ids].reset_index()


def scored_frame(name: str, scored: Scored, rules: Rules = RULES) -> pd.DataFrame:
    """The write-back frame: ``entity_id``, ``score``, the rule context the features carry
    (``crm_predict.features.rule_context.rule_values`` under ``rules``) and the record fields of
    the spec's ``record_context``, which win over those."""
    from crm_predict.features.rule_context import rule_values

    model = spec(name)
    records, features = scored.records, scored.features.reset_index(drop=True)
    if len(features) == 1:  # a single-id read is one object block: the dtypes pandas would give
        features = features.infer_objects()
    frame = pd.DataFrame(
        {
            "entity_id": [r[model.id_field] for r in records],
            "score": [scoring.headline(name, r) for r in records],
        }
    )
    if len(features) == len(frame):
        for column, value in rule_values(model.entity, features, rules).items():
            frame[column] = value
    for field in model.record_context:  # the record's own value where it has one
        if records and field in records[0]:
            value = RECORD_VALUES.get(field, lambda v: v)
            frame[field] = [value(r[field]) for r in records]
    return frame


# Record fields whose write-back value is another shape: the best slots' hour-of-week numbers.
RECORD_VALUES = {"best_slots": lambda slots: [s["slot"] for s in slots]}


def entity_table(name: str):
    """The CRM table of a model's entities (its ids and external ids): leads, deals or contacts."""
    from crm_predict.crm_store.models import Contact, Deal, Lead

    return {"lead": Lead, "deal": Deal, "contact": Contact}[spec(name).crm_entity]


def crm_context(session, name: str, ids: list[int]) -> pd.DataFrame:
    """External id, owner, manager (and for leads the timestamps the task rules need) of the
    scored entities."""
    from crm_predict.crm_store.models import Lead, User
    from sqlalchemy import select

    if not ids:
        return pd.DataFrame(
            {"entity_id": pd.Series(dtype=np.int64), "external_id": pd.Series(dtype=object)}
        )
    table = entity_table(name)
    columns = [table.id.label("entity_id"), table.external_id, table.owner_id, User.manager_id]
    if table is Lead:
        columns += [Lead.created_at, Lead.first_contacted_at, Lead.contact_id, Lead.region]
    query = (
        select(*columns)
        .outerjoin(User, User.id == table.owner_id)
        .where(table.id.in_([int(i) for i in ids]))
    )
    frame = pd.read_sql(query, session.connection())
    frame["entity_id"] = frame["entity_id"].astype(np.int64)
    return frame
