"""Review pages: open deals by health, and one deal with its live score, top reasons (a SHAP
bar chart), recent activities, open tasks and the tags models wrote; one customer's 360° view
(``crm_predict.serving.customer360``).

A Starlette app with Jinja2 templates, mounted into the BentoML service at ``/review``; it reads
the CRM store and scores with the ``deal_health`` champion, loading nothing before the first request.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd
from crm_predict.crm_store.models import Account, Activity, Deal, Tag, User
from crm_predict.crm_store.repository import current_tags, open_tasks
from crm_predict.serving.customer360 import UnknownCustomer, customer_view, once, settings_sessions
from mlflow import MlflowClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from crm_predict.core.rules import TAG_DEAL_COLOUR, TAG_DEAL_HEALTH, deal_colour, deal_health_score
from crm_predict.core.settings import Settings

MODEL = "deal_health"
RECENT_ACTIVITIES = 10
CHART_FEATURES = 8

FeatureReader = Callable[[list[int]], pd.DataFrame]  # deal ids → entity_id + model features


@dataclass
class ReviewContext:
    """What the pages need: the CRM store, the registry and a reader of deal features."""

    sessions: sessionmaker[Session]
    client: MlflowClient
    features: FeatureReader
    alias: str = "champion"
    _model: object | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def model(self):
        """The ``deal_health`` model under ``alias``, reloaded when the alias moves."""
        from crm_predict.serving.loader import load_model

        version = str(self.client.get_model_version_by_alias(MODEL, self.alias).version)
        with self._lock:
            if self._model is None or self._model.version != version:
                self._model = load_model(self.client, MODEL, self.alias, single_thread=True)
            return self._model


def settings_context(settings: Settings) -> ReviewContext:
    """The production wiring: the settings' CRM store and registry, features from the last export."""
    from crm_predict.features.export import export_as_of
    from crm_predict.features.scoring import scoring_frame

    def features(deal_ids: list[int]) -> pd.DataFrame:
        return scoring_frame(settings, MODEL, export_as_of(settings), deal_ids)

    return ReviewContext(settings_sessions(settings), settings.mlflow_client(), features)


# --- Reading the store -----------------------------------------------------------------------


def open_deals(session: Session) -> pd.DataFrame:
    """Open deals with owner, health tag (and its model version), worst health first."""
    deals = pd.read_sql(
        select(
            Deal.id, Deal.name, Deal.stage, Deal.amount, Deal.expected_close_at,
            User.name.label("owner"),
        )
        .outerjoin(User, User.id == Deal.owner_id)
        .where(Deal.outcome.is_(None)),
        session.connection(),
    )  # fmt: skip
    health = pd.read_sql(
        select(Tag.entity_id, Tag.value, Tag.model_version).where(
            Tag.entity_type == "deal", Tag.name == TAG_DEAL_HEALTH
        ),
        session.connection(),
    )
    health = health.assign(
        health=pd.to_numeric(health["value"], errors="coerce"),
        entity_id=health["entity_id"].astype(int),
    ).rename(columns={"entity_id": "id"})[["id", "health", "model_version"]]
    deals = deals.merge(health, on="id", how="left")
    deals["colour"] = [
        None if pd.isna(h) else str(c)
        for h, c in zip(deals["health"], deal_colour(deals["health"].fillna(0)), strict=True)
    ]
    return deals.sort_values(["health", "id"], na_position="last", ignore_index=True)


def recent_activities(session: Session, deal_id: int, limit: int = RECENT_ACTIVITIES) -> list:
    return list(
        session.scalars(
            select(Activity)
            .where(Activity.deal_id == deal_id)
            .order_by(Activity.occurred_at.desc(), Activity.id.desc())
            .limit(limit)
        )
    )


# --- Scoring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveScore:
    """The model's current view of one deal, or why there is none."""

    health: int | None = None
    colour: str | None = None
    version: str | None = None
    contributions: pd.Series | None = None  # per raw feature, log-odds
    positive: list = field(default_factory=list)
    negative: list = field(default_factory=list)
    error: str | None = None


def live_score(context: ReviewContext, deal_id: int) -> LiveScore:
    """Score one deal with the served model and explain it; a missing model or feature row is
    reported on the page instead of failing it."""
    try:
        model = context.model()
        rows = context.features([deal_id])
    except Exception as exc:  # no champion yet, no feature export, deal not active …
        return LiveScore(error=f"{type(exc).__name__}: {exc}")
    health = int(deal_health_score(model.predict_proba(rows))[0])
    score = LiveScore(health=health, colour=str(deal_colour([health])[0]), version=model.version)
    if model.explainer is None:
        return score
    features = rows[model.feature_names]
    ((positive, negative),) = model.explainer.reasons(features)
    contributions = model.explainer.contributions(features).iloc[0]
    return replace(score, contributions=contributions, positive=positive, negative=negative)


def reasons_png(contributions: pd.Series, top: int = CHART_FEATURES) -> bytes:
    """Horizontal bar chart of the strongest contributions (green raises P(win), red lowers it)."""
    from matplotlib.figure import Figure

    strongest = contributions.reindex(contributions.abs().sort_values().index)[-top:]
    fig = Figure(figsize=(6, 0.4 * len(strongest) + 1), dpi=96, layout="constrained")
    ax = fig.subplots()
    colours = ["#2e7d32" if v > 0 else "#c62828" for v in strongest]
    ax.barh(strongest.index, strongest.to_numpy(), color=colours)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("contribution to win log-odds (SHAP)")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# --- App -------------------------------------------------------------------------------------


def template_env(**filters):
    """The Jinja2 environment of the package's templates (HTML-escaped), with ``filters``."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("crm_predict.serving", "templates"),
        autoescape=select_autoescape(["j2", "html"]),
    )
    env.filters.update(filters)
    return env


def records(frame: pd.DataFrame) -> list[dict]:
    """A frame's rows as dicts, blanks as None (what a template tests for)."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def feature_value(value: object) -> str:
    """A reason's raw value as a reader wants it: whole floats without ``.0``, others to 2 places."""
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return str(value)


def number(value: object) -> str:
    """An amount or score (a number or its text, as tags hold it) to whole units; "–" if none."""
    try:
        return f"{float(value):,.0f}"
    except (TypeError, ValueError):
        return "–"


def create_app(make_context: Callable[[], ReviewContext] | None = None) -> Starlette:
    """The review app; ``make_context`` runs once, on the first request (default: from Settings)."""
    from starlette.templating import Jinja2Templates

    filters = {
        "feature_value": feature_value,
        "number": number,
        "day": lambda iso: (iso or "")[:10],
    }
    filters["minute"] = lambda iso: (iso or "")[:16].replace("T", " ")
    templates = Jinja2Templates(env=template_env(**filters))
    context = once(make_context or (lambda: settings_context(Settings())))

    def _deal(session: Session, deal_id: int) -> Deal:
        deal = session.get(Deal, deal_id)
        if deal is None:
            raise HTTPException(404, f"no deal {deal_id}")
        return deal

    async def deal_list(request: Request) -> HTMLResponse:
        with context().sessions() as session:
            deals = open_deals(session)
        return templates.TemplateResponse(request, "review_list.html.j2", {"deals": records(deals)})

    async def deal_page(request: Request) -> HTMLResponse:
        deal_id = request.path_params["deal_id"]
        ctx = context()
        with ctx.sessions() as session:
            deal = _deal(session, deal_id)
            owner = session.get(User, deal.owner_id) if deal.owner_id else None
            account = session.get(Account, deal.account_id) if deal.account_id else None
            activities = recent_activities(session, deal_id)
            tasks = open_tasks(session, "deal", deal_id)
            tags = sorted(current_tags(session, "deal", deal_id).values(), key=lambda t: t.name)
        score = live_score(ctx, deal_id) if deal.outcome is None else LiveScore(error="deal closed")
        tag_by_name = {t.name: t for t in tags}
        stored = tag_by_name.get(TAG_DEAL_HEALTH)
        return templates.TemplateResponse(
            request,
            "review_deal.html.j2",
            {
                "deal": deal, "owner": owner, "account": account, "activities": activities,
                "tasks": tasks, "tags": tags, "score": score, "stored_health": stored,
                "stored_colour": tag_by_name.get(TAG_DEAL_COLOUR),
            },
        )  # fmt: skip

    def customer_page(request: Request) -> HTMLResponse:
        with context().sessions() as session:
            try:
                view = customer_view(session, request.path_params["ref"])
            except UnknownCustomer as exc:
                raise HTTPException(404, str(exc)) from None
        return templates.TemplateResponse(request, "review_customer.html.j2", {"view": view})

    async def deal_reasons(request: Request) -> Response:
        deal_id = request.path_params["deal_id"]
        ctx = context()
        with ctx.sessions() as session:
            _deal(session, deal_id)
        score = live_score(ctx, deal_id)
        if score.contributions is None:
            raise HTTPException(404, score.error or "the model gives no reasons for this deal")
        return Response(reasons_png(score.contributions), media_type="image/png")

    return Starlette(
        routes=[
            Route("/", deal_list, name="deals"),
            Route("/deals/{deal_id:int}", deal_page, name="deal"),
            Route("/deals/{deal_id:int}/reasons.png", deal_reasons, name="deal_reasons"),
            Route("/customers/{ref}", customer_page, name="customer"),
        ]
    )


# Mounted by the BentoML service; building it reads nothing (the context is made on first use).
app = create_app()
