"""The online API: one BentoML service, five models and the message model, single and batch
endpoints.

Thin on purpose: ``__init__`` builds the ``ModelHub`` (a champion that fails to load is reported by
``/readyz``, never a crash); every endpoint hands its request to ``_answer`` (messages:
``_answer_messages``); scoring and write-back live in ``hub``, ``scoring`` and ``writeback``. ``/healthz``, ``/readyz``, ``/models`` and
``/admin/reload`` are a Starlette app in front of BentoML's own probes (``OpsRoutes``); the deal
review pages are mounted at ``/review``. OpenAPI: ``/docs.json``, UI at ``/``.
"""

from __future__ import annotations

import gc
import secrets
import uuid
import warnings
from typing import Literal, TypeVar

import anyio.to_thread
import bentoml
from crm_predict.serving import customer360, review
from crm_predict.serving import schemas as S
from crm_predict.serving.hub import (
    MESSAGE_MODEL,
    TEXT_MODELS,
    Job,
    MessageJob,
    ModelHub,
    Scored,
    UnavailableError,
    UnknownIdsError,
    UnknownRefsError,
)
from crm_predict.serving.scoring import FeatureInputError, check_messages, check_rows
from crm_predict.training.specs import SPECS
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
    """Ignore the warning BentoML 1.4 raises on every request (``model_fields`` read off the
    request instance, deprecated in pydantic 2.11): a ``catch_warnings`` on the request path resets
    the once-per-location registry, so it would be logged per request. Feast is imported first:
    its import puts a filter for every DeprecationWarning ahead of ours."""
    import crm_predict.features.online  # noqa: F401 - see above
    from pydantic.warnings import PydanticDeprecatedSince211

    warnings.filterwarnings(
        "ignore", message="Accessing the 'model_fields' attribute on the instance",
        category=PydanticDeprecatedSince211,
    )  # fmt: skip


def check_token(authorization: str | None, token: str) -> None:
    """401 without a bearer token, 403 with a wrong one (an empty configured token matches
    nothing, so a misconfigured service refuses every write rather than accepting ``Bearer ``)."""
    bearer = bool(authorization) and authorization.lower().startswith("bearer ")
    given = authorization.split(" ", 1)[1].strip() if bearer else ""
    if not given:
        raise ApiError(401, "bearer token required", "Authorization")
    if not token or not secrets.compare_digest(given.encode(), token.encode()):
        raise ApiError(403, "invalid bearer token", "Authorization")


def _endpoints(
    name: str, route: str, one: type, many: type, record: type, doc: str, batch_doc: str
):
    """The single and batch ``@bentoml.api`` methods of model ``name`` at ``/route`` and
    ``/route/batch``; each hands its validated request to ``CrmPredict._answer``."""

    def endpoint(path: str, request: type[S.ScoreRequest], answer: type, text: str):
        async def call(self, ctx: bentoml.Context, **fields) -> Response:
            return await self._answer(ctx, name, request(**fields), answer)

        call.__name__ = call.__qualname__ = path.strip("/").replace("/", "_")
        call.__doc__ = text
        return bentoml.api(route=path, input_spec=request, output_spec=answer)(call)

    return (
        endpoint(f"/{route}", one, S.Single[record], doc),
        endpoint(f"/{route}/batch", many, S.Batch[record], batch_doc),
    )


@bentoml.asgi_app(review.app, path="/review")
@bentoml.service(name=SERVICE_NAME, traffic={"timeout": 60}, workers=1)
class CrmPredict:
    """CRM predictions: lead score, deal health, churn, CLV, next best time to contact, and the
    intent and sentiment of customer messages."""

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
        except (FeatureInputError, UnavailableError, ApiError) as exc:
            return _error(ctx, _api_error(exc))
        return _reply(answer, request_id, scored, written)

    async def _answer_messages(
        self,
        ctx: bentoml.Context,
        messages: list[S.MessageIntentRequest],
        answer: type[Answer],
        field: str,
    ) -> Response:
        """Check every text (422 naming the first bad one: nothing scored), then read them in
        one model call coalesced with concurrent requests. Nothing is written."""
        try:
            headers = ctx.request.headers
            if self.settings.protect_reads:
                check_token(headers.get("authorization"), self.settings.api_token)
            request_id = headers.get("x-request-id") or uuid.uuid4().hex
            limit = self.settings.max_batch_size
            if len(messages) > limit:
                raise ApiError(413, f"{len(messages)} messages; at most {limit} per request (max_batch_size)", "messages")  # fmt: skip
            job = MessageJob(check_messages([m.text for m in messages], field), [m.id for m in messages])  # fmt: skip
            scored = await self.hub.score(MESSAGE_MODEL, job)
        except (FeatureInputError, UnavailableError, ApiError) as exc:
            return _error(ctx, _api_error(exc))
        return _reply(answer, request_id, scored, {"requested": False})

    def _job(self, name: str, request: S.ScoreRequest, batch: bool) -> Job:
        explain = bool(getattr(request, "explain", False))
        # The request holds exactly one of the three (its validator says so).
        field = next(f for f in (request.id_field, request.ref_field, request.rows_field) if getattr(request, f) is not None)  # fmt: skip
        items = list(getattr(request, field)) if batch else [getattr(request, field)]
        limit = self.settings.max_batch_size
        if len(items) > limit:
            raise ApiError(413, f"{len(items)} items; at most {limit} per request (max_batch_size)", field)  # fmt: skip
        if field == request.id_field:
            return Job(ids=items, explain=explain)
        if field == request.ref_field:
            return Job(refs=items, explain=explain)
        return Job(frame=check_rows(self.hub.model(name), items, field), explain=explain)

    lead_score, lead_score_batch = _endpoints(
        "lead_scoring", "lead_score", S.LeadScoreRequest, S.LeadScoreBatchRequest, S.LeadScore,
        "Lead score 1–99, grade A–D and MQL flag for one lead (id or raw features).",
        "Lead scores for many leads (ids or raw feature rows).",
    )  # fmt: skip
    deal_health, deal_health_batch = _endpoints(
        "deal_health", "deal_health", S.DealHealthRequest, S.DealHealthBatchRequest, S.DealHealth,
        "Deal health 0–100 and colour (green/yellow/red) for one open deal.",
        "Deal health for many deals.",
    )  # fmt: skip
    churn, churn_batch = _endpoints(
        "churn", "churn", S.ChurnRequest, S.ChurnBatchRequest, S.Churn,
        "Churn probability (next 90 days) and risk level for one customer.",
        "Churn probability and risk for many customers.",
    )  # fmt: skip
    clv, clv_batch = _endpoints(
        "clv", "clv", S.ClvRequest, S.ClvBatchRequest, S.Clv,
        "3-year customer value, value tier and RFM segment for one customer.",
        "CLV, tier and RFM segment for many customers.",
    )  # fmt: skip
    next_best_time, next_best_time_batch = _endpoints(
        "next_best_time", "next_best_time", S.NextBestTimeRequest, S.NextBestTimeBatchRequest,
        S.NextBestTime, "Best hour-of-week slots and channel to contact one contact.",
        "Best slots and channel for many contacts.",
    )  # fmt: skip

    @bentoml.api(
        route="/message_intent",
        input_spec=S.MessageIntentRequest,
        output_spec=S.Single[S.MessageIntent],
    )
    async def message_intent(self, ctx: bentoml.Context, **fields) -> Response:
        """Intent, sentiment, language, keywords and the terms behind them for one message."""
        message = S.MessageIntentRequest(**fields)
        return await self._answer_messages(ctx, [message], S.Single[S.MessageIntent], "text")

    @bentoml.api(
        route="/message_intent/batch",
        input_spec=S.MessageIntentBatchRequest,
        output_spec=S.Batch[S.MessageIntent],
    )
    async def message_intent_batch(self, ctx: bentoml.Context, **fields) -> Response:
        """Intent, sentiment, keywords and reasons for many messages, in request order."""
        messages = S.MessageIntentBatchRequest(**fields).messages
        return await self._answer_messages(
            ctx, messages, S.Batch[S.MessageIntent], "messages[{i}].text"
        )


def _reply(answer: type[Answer], request_id: str, scored: Scored, written: dict) -> Response:
    """The validated answer as the bytes BentoML would send (see ``CrmPredict._answer``)."""
    model = scored.model
    info = {"name": model.name, "version": model.version, "alias": model.alias, "run_id": model.run_id}  # fmt: skip
    batch = issubclass(answer, S.Batch)
    records = {"predictions": scored.records} if batch else {"prediction": scored.records[0]}
    body = {"request_id": request_id, "model": info, "written_back": written, **records}
    return Response(answer.model_validate(body).model_dump_json(), media_type=JSON)


def _id_key(name: str) -> str:
    return SPECS[name].id_field


def _unknown_refs(name: str, request: S.ScoreRequest, refs: list[str]) -> ApiError:
    key = _id_key(name).removesuffix("_id") + "_ref"
    message = f"unknown {key}(s): {', '.join(dict.fromkeys(refs))}"
    return ApiError(404, message, request.ref_field)


def _api_error(exc: FeatureInputError | UnavailableError | ApiError) -> ApiError:
    """The answer to what scoring raises: features it cannot read 422, no champion 503."""
    if isinstance(exc, FeatureInputError):
        return ApiError(422, str(exc), exc.field)
    if isinstance(exc, UnavailableError):
        return ApiError(503, str(exc))
    return exc


def _error(ctx: bentoml.Context, error: ApiError) -> JSONResponse:
    ctx.response.status_code = error.status  # BentoML copies the context's status onto the reply
    return error.response()


# --- operational routes ---------------------------------------------------------------------------


def _service(request: Request, token: Literal["never", "reads", "always"]) -> CrmPredict:
    """The running service, once the request carries the API token where ``token`` asks for it
    ("reads": when the settings protect reads)."""
    try:
        svc = bentoml.get_current_service()
    except Exception as exc:
        raise ApiError(503, f"service not initialised: {exc}") from exc
    if token == "always" or (token == "reads" and svc.settings.protect_reads):
        check_token(request.headers.get("authorization"), svc.settings.api_token)
    return svc


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Readiness: every champion loaded and the online store reachable; says which is not."""
    svc = _service(request, "never")
    state = await anyio.to_thread.run_sync(svc.hub.readiness)
    if not state["ready"]:
        svc.hub.retry_missing()
    return JSONResponse(state, status_code=200 if state["ready"] else 503)


async def models(request: Request) -> JSONResponse:
    """The loaded champion of every model (version, run, features, explainer), the text
    models' apart."""
    svc = _service(request, "reads")
    text = svc.hub.model_status(TEXT_MODELS)
    return JSONResponse({"models": svc.hub.model_status(), "text_models": text})


async def admin_reload(request: Request) -> JSONResponse:
    """Pick up new champions and the rules file without a restart (``?force=true`` reloads
    every model). A bad rules file is a 422 naming the key; then nothing is reloaded and the rules
    in use stay."""
    svc = _service(request, "always")
    try:
        rules = await anyio.to_thread.run_sync(svc.hub.reload_rules)
    except UserError as exc:
        raise ApiError(422, f"rules not reloaded: {exc}", "rules_file") from None
    force = request.query_params.get("force", "false").lower() in ("1", "true", "yes")
    outcome = await anyio.to_thread.run_sync(lambda: svc.hub.reload(force=force))
    await anyio.to_thread.run_sync(svc.hub.warm)  # a forced reload reopens the online store
    freeze_heap()  # the new champions too
    text = svc.hub.model_status(TEXT_MODELS)
    return JSONResponse(
        {"reloaded": outcome, "rules": rules, "models": svc.hub.model_status(), "text_models": text}
    )


OPS_APP = Starlette(
    routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/admin/reload", admin_reload, methods=["POST"]),
        *customer360.customer_routes(guard=lambda request: _service(request, "reads")),
    ],
    exception_handlers={ApiError: lambda request, exc: exc.response()},
)
OPS_PATHS = frozenset(route.path for route in OPS_APP.routes)


class OpsRoutes:
    """ASGI middleware sending the operational paths and ``/customers/{ref}`` (the 360° view) to
    ``OPS_APP``, ahead of BentoML's own ``/healthz`` and ``/readyz`` (which cannot say what is not
    ready)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path in OPS_PATHS or path.startswith("/customers/")):
            await OPS_APP(scope, receive, send)
            return
        await self.app(scope, receive, send)


CrmPredict.add_asgi_middleware(OpsRoutes)
