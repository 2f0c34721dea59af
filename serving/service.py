"""The online API: one BentoML service, five models, single and batch endpoints.

Thin on purpose: ``__init__`` builds the ``ModelHub`` (loads the champions; a failure is reported by
``/readyz``, never a crash), each ``@bentoml.api`` method hands its request to ``_answer``, and the
scoring, wording and write-back live in ``crm_predict.serving.hub``, ``crm_predict.serving.scoring`` and
``crm_predict.serving.writeback``. ``/healthz``, ``/readyz``, ``/models`` and ``/admin/reload`` are a small
Starlette app put in front of BentoML's own probes (``OpsRoutes``); the deal review pages
(``crm_predict.serving.review``) are mounted at ``/review``. OpenAPI: ``/docs.json``, UI at ``/``.
"""

from __future__ import annotations

import gc
import secrets
import uuid
import warnings
from typing import TypeVar

import anyio.to_thread
import bentoml
from crm_predict.serving import review
from crm_predict.serving import schemas as S
from crm_predict.serving.hub import (
    Job,
    ModelHub,
    UnavailableError,
    UnknownIdsError,
    UnknownRefsError,
)
from crm_predict.serving.scoring import FeatureInputError, check_rows
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crm_predict.core.errors import UserError
from crm_predict.core.settings import Settings

SERVICE_NAME = "crm_predict"
JSON = "application/json"
Answer = TypeVar("Answer", bound=S.Single | S.Batch)


class ApiError(Exception):
    """A 4xx/5xx answer: ``status``, a message and the request field it is about."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        body = S.ApiError(error=self.message, field=self.field, status=self.status)
        return JSONResponse(body.model_dump(), status_code=self.status, headers=headers)


def freeze_heap() -> None:
    """Keep what is loaded now (libraries, champions: ~500k objects) out of the garbage
    collector's full passes: one pass over them takes ~300 ms, a stall every request queued
    behind it would wait for (p99 of a paced load). Garbage is collected first."""
    gc.collect()
    gc.freeze()


def quiet_bentoml_deprecation() -> None:
    """Ignore the deprecation warning BentoML 1.4's endpoint raises on every request (it reads
    ``model_fields`` off the request instance, deprecated in pydantic 2.11). A ``catch_warnings``
    in a library on the request path resets Python's once-per-location registry, so it was
    printed to the log again and again (a formatted traceback line per request). Feast is
    imported first: its import puts a filter for every DeprecationWarning ahead of ours."""
    import crm_predict.features.online  # noqa: F401 - see above
    from pydantic.warnings import PydanticDeprecatedSince211

    warnings.filterwarnings(
        "ignore", message="Accessing the 'model_fields' attribute on the instance",
        category=PydanticDeprecatedSince211,
    )  # fmt: skip


def check_token(authorization: str | None, token: str) -> None:
    """401 without a bearer token, 403 with a wrong one (an empty configured token matches
    nothing, so a misconfigured service refuses every write rather than accepting ``Bearer ``)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise ApiError(401, "bearer token required", "Authorization")
    given = authorization.split(" ", 1)[1].strip()
    if not given:
        raise ApiError(401, "bearer token required", "Authorization")
    if not token or not secrets.compare_digest(given.encode(), token.encode()):
        raise ApiError(403, "invalid bearer token", "Authorization")


@bentoml.asgi_app(review.app, path="/review")
@bentoml.service(name=SERVICE_NAME, traffic={"timeout": 60}, workers=1)
class CrmPredict:
    """CRM predictions: lead score, deal health, churn, CLV and next best time to contact."""

    def __init__(self) -> None:
        quiet_bentoml_deprecation()
        settings = Settings()
        # A bare `bentoml serve` must refuse a missing token as `crm-predict serve` does.
        self.settings = settings.model_copy(update={"api_token": settings.serving_token()})
        self.hub = ModelHub(self.settings)
        self.hub.reload_rules()  # a bad rules file refuses to serve, naming the key
        self.hub.reload(force=True)
        self.hub.warm()
        freeze_heap()
        self.hub.start_polling(self.settings.reload_interval_seconds)

    @bentoml.on_shutdown
    def _close(self) -> None:
        self.hub.close()

    async def _answer(
        self, ctx: bentoml.Context, name: str, request: S.ScoreRequest, answer: type[Answer]
    ) -> Response:
        """Authorize, resolve external ids (``*_ref``: one CRM store query), score (ids through
        the online store, or raw rows), write back if asked.

        The validated answer goes out as the bytes BentoML would send (its JSON serde is the
        model's ``model_dump_json``), in one body with a Content-Length rather than BentoML's
        chunked iterable response: fewer writes per request for the same JSON."""
        batch = issubclass(answer, S.Batch)
        job = None
        try:
            headers = ctx.request.headers
            if request.write_back or self.settings.protect_reads:
                check_token(headers.get("authorization"), self.settings.api_token)
            request_id = headers.get("x-request-id") or uuid.uuid4().hex
            job = self._job(name, request, batch)
            if job.refs is not None:
                job.ids = await self.hub.resolve_refs(name, job.refs)
            scored = await self.hub.score(name, job)
            if job.refs is not None:
                for record, ref in zip(scored.records, job.refs, strict=True):
                    record["external_id"] = ref
            written = {"requested": False}
            if request.write_back:
                if any(r.get(_id_key(name)) is None for r in scored.records):
                    raise ApiError(422, "write_back needs entity ids", request.id_field)
                written = {"requested": True, **await self.hub.write_back(name, scored, request_id)}
        except UnknownRefsError as exc:
            return _error(ctx, _unknown_refs(name, request, exc.refs))
        except UnknownIdsError as exc:
            if job is not None and job.refs is not None:  # in the CRM, not in the online store
                ref_of = dict(zip(job.ids, job.refs, strict=True))
                refs = [ref_of.get(int(i), str(i)) for i in exc.ids]
                return _error(ctx, _unknown_refs(name, request, refs))
            message = f"unknown {_id_key(name)}(s): {', '.join(map(str, exc.ids))}"
            return _error(ctx, ApiError(404, message, request.id_field))
        except FeatureInputError as exc:
            return _error(ctx, ApiError(422, str(exc), exc.field))
        except UnavailableError as exc:
            return _error(ctx, ApiError(503, str(exc)))
        except ApiError as exc:
            return _error(ctx, exc)
        model = scored.model
        info = {"name": model.name, "version": model.version, "alias": model.alias, "run_id": model.run_id}  # fmt: skip
        body = {"request_id": request_id, "model": info, "written_back": written}
        if batch:
            body["predictions"] = scored.records
        else:
            body["prediction"] = scored.records[0]
        return Response(answer.model_validate(body).model_dump_json(), media_type=JSON)

    def _job(self, name: str, request: S.ScoreRequest, batch: bool) -> Job:
        explain = bool(getattr(request, "explain", False))
        ids = getattr(request, request.id_field)
        if ids is not None:
            ids = list(ids) if batch else [ids]
            _check_size(len(ids), self.settings.max_batch_size, request.id_field)
            return Job(ids=ids, explain=explain)
        refs = getattr(request, request.ref_field)
        if refs is not None:
            refs = list(refs) if batch else [refs]
            _check_size(len(refs), self.settings.max_batch_size, request.ref_field)
            return Job(refs=refs, explain=explain)
        rows = getattr(request, request.rows_field)
        rows = list(rows) if batch else [rows]
        _check_size(len(rows), self.settings.max_batch_size, request.rows_field)
        return Job(
            frame=check_rows(self.hub.model(name), rows, request.rows_field), explain=explain
        )

    # --- lead scoring --------------------------------------------------------------------------

    @bentoml.api(route="/lead_score", input_spec=S.LeadScoreRequest, output_spec=S.Single[S.LeadScore])  # fmt: skip
    async def lead_score(self, ctx: bentoml.Context, **request) -> S.Single[S.LeadScore]:
        """Lead score 1–99, grade A–D and MQL flag for one lead (id or raw features)."""
        return await self._answer(
            ctx, "lead_scoring", S.LeadScoreRequest(**request), S.Single[S.LeadScore]
        )

    @bentoml.api(route="/lead_score/batch", input_spec=S.LeadScoreBatchRequest, output_spec=S.Batch[S.LeadScore])  # fmt: skip
    async def lead_score_batch(self, ctx: bentoml.Context, **request) -> S.Batch[S.LeadScore]:
        """Lead scores for many leads (ids or raw feature rows)."""
        return await self._answer(ctx, "lead_scoring", S.LeadScoreBatchRequest(**request), S.Batch[S.LeadScore])  # fmt: skip

    # --- deal health ---------------------------------------------------------------------------

    @bentoml.api(route="/deal_health", input_spec=S.DealHealthRequest, output_spec=S.Single[S.DealHealth])  # fmt: skip
    async def deal_health(self, ctx: bentoml.Context, **request) -> S.Single[S.DealHealth]:
        """Deal health 0–100 and colour (green/yellow/red) for one open deal."""
        return await self._answer(
            ctx, "deal_health", S.DealHealthRequest(**request), S.Single[S.DealHealth]
        )

    @bentoml.api(route="/deal_health/batch", input_spec=S.DealHealthBatchRequest, output_spec=S.Batch[S.DealHealth])  # fmt: skip
    async def deal_health_batch(self, ctx: bentoml.Context, **request) -> S.Batch[S.DealHealth]:
        """Deal health for many deals."""
        return await self._answer(ctx, "deal_health", S.DealHealthBatchRequest(**request), S.Batch[S.DealHealth])  # fmt: skip

    # --- churn ---------------------------------------------------------------------------------

    @bentoml.api(route="/churn", input_spec=S.ChurnRequest, output_spec=S.Single[S.Churn])
    async def churn(self, ctx: bentoml.Context, **request) -> S.Single[S.Churn]:
        """Churn probability (next 90 days) and risk level for one customer."""
        return await self._answer(ctx, "churn", S.ChurnRequest(**request), S.Single[S.Churn])

    @bentoml.api(route="/churn/batch", input_spec=S.ChurnBatchRequest, output_spec=S.Batch[S.Churn])  # fmt: skip
    async def churn_batch(self, ctx: bentoml.Context, **request) -> S.Batch[S.Churn]:
        """Churn probability and risk for many customers."""
        return await self._answer(ctx, "churn", S.ChurnBatchRequest(**request), S.Batch[S.Churn])

    # --- CLV -----------------------------------------------------------------------------------

    @bentoml.api(route="/clv", input_spec=S.ClvRequest, output_spec=S.Single[S.Clv])
    async def clv(self, ctx: bentoml.Context, **request) -> S.Single[S.Clv]:
        """3-year customer value, value tier and RFM segment for one customer."""
        return await self._answer(ctx, "clv", S.ClvRequest(**request), S.Single[S.Clv])

    @bentoml.api(route="/clv/batch", input_spec=S.ClvBatchRequest, output_spec=S.Batch[S.Clv])
    async def clv_batch(self, ctx: bentoml.Context, **request) -> S.Batch[S.Clv]:
        """CLV, tier and RFM segment for many customers."""
        return await self._answer(ctx, "clv", S.ClvBatchRequest(**request), S.Batch[S.Clv])

    # --- next best time ------------------------------------------------------------------------

    @bentoml.api(route="/next_best_time", input_spec=S.NextBestTimeRequest, output_spec=S.Single[S.NextBestTime])  # fmt: skip
    async def next_best_time(self, ctx: bentoml.Context, **request) -> S.Single[S.NextBestTime]:
        """Best hour-of-week slots and channel to contact one contact."""
        return await self._answer(ctx, "next_best_time", S.NextBestTimeRequest(**request), S.Single[S.NextBestTime])  # fmt: skip

    @bentoml.api(route="/next_best_time/batch", input_spec=S.NextBestTimeBatchRequest, output_spec=S.Batch[S.NextBestTime])  # fmt: skip
    async def next_best_time_batch(
        self, ctx: bentoml.Context, **request
    ) -> S.Batch[S.NextBestTime]:
        """Best slots and channel for many contacts."""
        return await self._answer(ctx, "next_best_time", S.NextBestTimeBatchRequest(**request), S.Batch[S.NextBestTime])  # fmt: skip


def _id_key(name: str) -> str:
    from crm_predict.serving.scoring import ID_FIELD

    return ID_FIELD[name]


def _unknown_refs(name: str, request: S.ScoreRequest, refs: list[str]) -> ApiError:
    key = _id_key(name).removesuffix("_id") + "_ref"
    message = f"unknown {key}(s): {', '.join(dict.fromkeys(refs))}"
    return ApiError(404, message, request.ref_field)


def _error(ctx: bentoml.Context, error: ApiError) -> JSONResponse:
    ctx.response.status_code = error.status  # BentoML copies the context's status onto the reply
    return error.response()


def _check_size(n: int, limit: int, field: str) -> None:
    if n > limit:
        raise ApiError(413, f"{n} items; at most {limit} per request (max_batch_size)", field)


# --- operational routes ---------------------------------------------------------------------------


def _service() -> CrmPredict:
    try:
        return bentoml.get_current_service()
    except Exception as exc:
        raise ApiError(503, f"service not initialised: {exc}") from exc


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: every champion loaded and the online store reachable; says which is not."""
    try:
        svc = _service()
    except ApiError as exc:
        return exc.response()
    state = await anyio.to_thread.run_sync(svc.hub.readiness)
    if not state["ready"]:
        svc.hub.retry_missing()
    return JSONResponse(state, status_code=200 if state["ready"] else 503)


async def models(request: Request) -> JSONResponse:
    """The loaded champion of every model (version, run, features, explainer)."""
    try:
        svc = _service()
        if svc.settings.protect_reads:
            check_token(request.headers.get("authorization"), svc.settings.api_token)
    except ApiError as exc:
        return exc.response()
    return JSONResponse({"models": svc.hub.model_status()})


async def admin_reload(request: Request) -> JSONResponse:
    """Pick up new champions and the rules file without a restart (``?force=true`` reloads
    every model). A bad rules file is a 422 naming the key; then nothing is reloaded and the rules
    in use stay."""
    try:
        svc = _service()
        check_token(request.headers.get("authorization"), svc.settings.api_token)
    except ApiError as exc:
        return exc.response()
    try:
        rules = await anyio.to_thread.run_sync(svc.hub.reload_rules)
    except UserError as exc:
        return ApiError(422, f"rules not reloaded: {exc}", "rules_file").response()
    force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
    outcome = await anyio.to_thread.run_sync(lambda: svc.hub.reload(force=force))
    await anyio.to_thread.run_sync(svc.hub.warm)  # a forced reload reopens the online store
    freeze_heap()  # the new champions too
    return JSONResponse({"reloaded": outcome, "rules": rules, "models": svc.hub.model_status()})


OPS_APP = Starlette(
    routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/admin/reload", admin_reload, methods=["POST"]),
    ]
)
OPS_PATHS = frozenset(route.path for route in OPS_APP.routes)


class OpsRoutes:
    """ASGI middleware sending the operational paths to ``OPS_APP``, ahead of BentoML's own
    ``/healthz`` and ``/readyz`` (which cannot say what is not ready)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] in OPS_PATHS:
            await OPS_APP(scope, receive, send)
            return
        await self.app(scope, receive, send)


CrmPredict.add_asgi_middleware(OpsRoutes)
