"""Feast declarations: entities, Parquet sources, feature views and one FeatureService per model.

Declarations are data (``VIEWS``, ``SERVICES``); Feast objects are built from them by functions that
take the settings (the Parquet paths live under ``settings.feature_dir``), so importing this module
touches nothing. ``SERVICES`` holds each model's feature list, as its spec's ``views`` name them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import timedelta

from crm_predict.features import transforms as tf
from crm_predict.training.specs import SPECS
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.types import FeastType, Float64, Int64, String

from crm_predict.core.errors import UserError
from crm_predict.core.model_spec import FEATURE_SERVICE_VERSION
from crm_predict.core.settings import Settings

# Entity name → join key. A customer is a contact with orders (same id), scored on its own key so
# churn/CLV rows never mix with next-best-time's contact rows.
ENTITIES = {
    "lead": "lead_id",
    "deal": "deal_id",
    "customer": "customer_id",
    "contact": "contact_id",
}
ENTITY_OF_MODEL = {name: spec.entity for name, spec in SPECS.items()}


@dataclass(frozen=True)
class ViewSpec:
    name: str
    entity: str
    description: str
    fields: tuple[tuple[str, FeastType, str], ...]

    @property
    def join_key(self) -> str:
        return ENTITIES[self.entity]

    @property
    def feature_names(self) -> list[str]:
        return [name for name, _, _ in self.fields]


def _window_fields(subject: str) -> tuple[tuple[str, FeastType, str], ...]:
    what = {
        "site_visits": "site/app visits",
        "pricing_views": "pricing-page views",
        "whitepapers": "whitepaper downloads",
        "trials": "trial requests",
        "email_opens": "email opens",
        "email_clicks": "email clicks",
    }
    fields = [
        (
            f"{group}_{w}d",
            Int64,
            f"{what[group]} (activity category {tf.ACTIVITY_GROUPS[group]!r}) of the {subject} "
            f"in the last {w} days",
        )
        for group in tf.ACTIVITY_GROUPS
        for w in tf.WINDOWS
    ]
    fields.append(
        (
            "days_since_last_interaction",
            Float64,
            f"days since the {subject}'s last activity of any type (NaN: none)",
        )  # fmt: skip
    )
    return tuple(fields)


def _message_fields(subject: str) -> tuple[tuple[str, FeastType, str], ...]:
    """What a customer wrote, per entity (``transforms.message_signals``). A message is read by
    the source's own labels (``messages.intent``, ``messages.sentiment``) when it has them, else,
    for the intent, by the rules file's words (``messages.topics.price`` → quote request,
    ``messages.competitors`` → comparison); an unlabelled message has no sentiment reading and
    is left out of the shares."""
    return (
        ("messages_90d", Int64, f"inbound messages of the {subject} in the last 90 days"),
        ("negative_share_90d", Float64, "share of those read as complaining (NaN: none read)"),
        ("sentiment_trend", Float64, "complaining share of the last 30 days minus that of the 60 days before (NaN: either has none)"),
        ("quote_requests_30d", Int64, f"messages of the {subject} read as quote requests in the last 30 days"),
        ("competitor_mentions_90d", Int64, f"messages of the {subject} read as competitor comparisons in the last 90 days"),
        ("days_since_last_message", Float64, f"days since the {subject}'s last inbound message (NaN: none)"),
    )  # fmt: skip


VIEWS: dict[str, ViewSpec] = {
    v.name: v
    for v in (
        ViewSpec(
            "lead_profile", "lead", "Firmographics and demographics of a lead (stamped at creation)",
            (
                ("lead_source", String, "channel the lead came from"),
                ("lead_region", String, "region of the lead"),
                ("industry", String, "industry of the lead's account"),
                ("size_band", String, "company size band of the account"),
                ("annual_revenue_band", String, "annual revenue band of the account"),
                ("role", String, "job role of the lead's contact"),
                ("is_decision_maker", Int64, "1 when the contact is a decision maker"),
                ("gender", String, "protected attribute: for fairness checks only, never a feature"),
                ("age_band", String, "protected attribute: for fairness checks only, never a feature"),
            ),
        ),
        ViewSpec("lead_behaviour", "lead", "Behaviour windows of a lead", _window_fields("lead")),
        ViewSpec(
            "customer_profile", "customer", "Demographics of a customer (stamped at creation)",
            (
                ("region", String, "customer region"),
                ("acquisition_source", String, "source the contact was acquired from"),
                ("has_account", Int64, "1 when the customer belongs to a B2B account"),
                ("gender", String, "protected attribute: for fairness checks only, never a feature"),
                ("age_band", String, "protected attribute: for fairness checks only, never a feature"),
            ),
        ),
        ViewSpec(
            "customer_behaviour", "customer", "Engagement windows of a customer",
            _window_fields("customer"),
        ),
        ViewSpec(
            "customer_transactions", "customer", "RFM, spend trends and lifetimes summary of a customer",
            (
                ("rfm_recency_days", Float64, "days since the last order"),
                ("rfm_frequency", Int64, "number of orders so far"),
                ("rfm_monetary", Float64, "total spend so far"),
                ("avg_order_value", Float64, "mean order amount"),
                ("tenure_days", Float64, "days since the first order"),
                ("orders_90d", Int64, "orders in the last 90 days"),
                ("spend_last_3m", Float64, "spend in the last 90 days"),
                ("spend_prior_3m", Float64, "spend 90 to 180 days ago"),
                ("spend_12m", Float64, "trailing-12-month spend"),
                ("frequency", Float64, "lifetimes frequency: repeat purchase weeks"),
                ("recency", Float64, "lifetimes recency: weeks from first to last purchase"),
                ("T", Float64, "lifetimes T: weeks from first purchase to the time of the row"),
                ("monetary_value", Float64, "lifetimes monetary value: mean spend of repeat weeks"),
            ),
        ),
        ViewSpec(
            "deal_activity", "deal", "Stage, activity and account history of a deal",
            (
                ("stage", String, "pipeline stage at the time"),
                ("stage_age_days", Float64, "days in the current stage"),
                ("deal_age_days", Float64, "days since the deal was created"),
                ("days_idle", Float64, "days since the last activity on the deal"),
                ("activities_30d", Int64, "activities on the deal in the last 30 days"),
                ("close_date_slips", Int64, "times the expected close date moved later"),
                ("amount", Float64, "deal amount"),
                ("amount_vs_account_median", Float64, "amount / median amount of the account's closed deals"),
                ("account_prior_deals", Int64, "the account's deals closed before"),
                ("account_win_rate", Float64, "share of the account's closed deals that were won"),
                ("tickets_90d", Int64, "tickets on the deal or account in the last 90 days"),
                ("ticket_sentiment_90d", Float64, "mean sentiment (-1..1) of those tickets"),
            ),
        ),
        ViewSpec(
            "contact_time", "contact", "When a contact responds: day-part/weekday counts, best slot",
            (
                ("responses_total", Int64, "responses (replies, answered calls, opens) so far"),
                *((f"responses_{p}", Int64, f"responses at {p} ({lo:02d}-{hi:02d} h)") for p, (lo, hi) in tf.DAY_PARTS.items()),
                *((f"responses_{d}", Int64, f"responses on {d.title()}") for d in tf.WEEKDAYS),
                ("best_slot", Int64, "hour-of-week slot with most responses (0 = Mon 00:00, -1 none)"),
                ("best_slot_share", Float64, "share of responses in the best slot"),
                ("best_channel", String, "channel with most responses"),
            ),
        ),
    )
}  # fmt: skip

# Message views, declared and computed (``transforms.message_signals``) but kept out of ``VIEWS``
# until the export builds their Parquet sources (``features/export.py`` ``compute_views``) and
# the batch reads their columns (``features/scoring.py`` ``VIEW_COLUMNS``): a view in ``VIEWS``
# is materialized, so one without its source would stop ``features materialize``.
MESSAGE_VIEWS: dict[str, ViewSpec] = {
    v.name: v
    for v in (
        ViewSpec(
            "customer_messages", "customer",
            "Messages of a customer: volume, complaints and their trend, quote requests, "
            "competitor comparisons (source labels, else the rules' words)",
            _message_fields("customer"),
        ),
        ViewSpec(
            "deal_messages", "deal",
            "Messages on a deal: volume, complaints and their trend, quote requests, competitor "
            "comparisons (source labels, else the rules' words)",
            _message_fields("deal"),
        ),
    )
}  # fmt: skip

RULE_SCORE_VIEW = "rule_based_lead_score"

# Each model's features: (view, features) pairs, from its spec's FeatureService views.
SERVICES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    name: tuple((view, feats or tuple(VIEWS[view].feature_names)) for view, feats in spec.views)
    for name, spec in SPECS.items()
}


def service_name(model_name: str) -> str:
    return SPECS[model_name].feature_service


def check_model(model_name: str) -> str:
    if model_name not in SERVICES:
        raise UserError(f"unknown model {model_name!r}; known: {', '.join(SERVICES)}")
    return model_name


def check_excluded(model_name: str, features: list[str], excluded: list[str]) -> None:
    """Raise when a model's feature list holds an excluded (protected/private) attribute."""
    leaked = sorted(set(features) & set(excluded))
    if leaked:
        raise UserError(
            f"feature service {service_name(model_name)} uses excluded feature(s) "
            f"{', '.join(leaked)} (settings.excluded_features): they may never reach a model"
        )


def feature_names(model_name: str, settings: Settings | None = None) -> list[str]:
    """The model's feature list in order, guarded against excluded features."""
    check_model(model_name)
    names = [f for _, feats in SERVICES[model_name] for f in feats]
    excluded = (settings or Settings()).excluded_features
    check_excluded(model_name, names, excluded)
    return names


def entities() -> dict[str, Entity]:
    return {
        name: Entity(
            name=name, join_keys=[key], value_type=ValueType.INT64, description=f"{name} ({key})"
        )
        for name, key in ENTITIES.items()
    }


def source_path(settings: Settings, view: str) -> str:
    return str((settings.feature_dir / f"{view}.parquet").resolve())


def feature_views(settings: Settings) -> dict[str, FeatureView]:
    ents = entities()
    views = {}
    for spec in VIEWS.values():
        views[spec.name] = FeatureView(
            name=spec.name,
            entities=[ents[spec.entity]],
            # No TTL: the point-in-time join takes the latest row at or before the time, however old.
            ttl=timedelta(0),
            schema=[Field(name=n, dtype=t, description=d) for n, t, d in spec.fields],
            source=FileSource(
                name=f"{spec.name}_source",
                path=source_path(settings, spec.name),
                timestamp_field=tf.TS,
            ),
            online=True,
            description=spec.description,
        )
    return views


def rule_score_udf(inputs: dict) -> dict:
    """ODFV transformation: the rule-based lead score from the profile and behaviour inputs.

    Python mode (columns as lists, no DataFrames): the online API runs it per request on a
    handful of rows, where building frames cost more than the score itself.
    """
    # Feast 0.67 stores a UDF as source text and re-executes it with only pandas/numpy in scope,
    # so the function imports what it needs itself.
    from crm_predict.features.transforms import RULE_SCORE_INPUTS, rule_score_values

    # Feast may hand over prefixed column names (view__feature); accept both.
    columns = {c.split("__")[-1]: c for c in inputs}
    scores = rule_score_values({name: inputs[columns[name]] for name in RULE_SCORE_INPUTS})
    return {"rule_score": scores.tolist()}


class DescribedOnDemandFeatureView(OnDemandFeatureView):
    """An on-demand view whose output Fields may carry descriptions.

    Feast's inference compares declared and inferred output Fields including ``description``
    (which inference leaves empty), so a described Field fails ``apply`` (feast-dev/feast#3617,
    closed as won't fix): inference runs on the bare Fields, then the descriptions go back.
    """

    def infer_features(self) -> None:
        described = {f.name: f.description for f in self.features}
        self.features = [Field(name=f.name, dtype=f.dtype) for f in self.features]
        super().infer_features()
        self.features = [
            Field(name=f.name, dtype=f.dtype, description=described.get(f.name, ""))
            for f in self.features
        ]


def rule_score_view(views: dict[str, FeatureView]) -> OnDemandFeatureView:
    profile = ["industry", "is_decision_maker", "lead_region"]
    behaviour = [f for f in tf.RULE_SCORE_INPUTS if f not in profile]
    return DescribedOnDemandFeatureView(
        name=RULE_SCORE_VIEW,
        sources=[views["lead_profile"][profile], views["lead_behaviour"][behaviour]],
        schema=[
            Field(
                name="rule_score",
                dtype=Float64,
                description="design notes' points score (MQL at >= 100) over 90-day behaviour",
            )
        ],
        udf=rule_score_udf,
        udf_string=inspect.getsource(rule_score_udf),
        mode="python",
        description="Rule-based lead score (the baseline every model must beat), on demand",
    )


def feature_services(
    settings: Settings, views: dict[str, FeatureView], odfv: OnDemandFeatureView
) -> dict[str, FeatureService]:
    """One versioned FeatureService per model, built from ``SERVICES`` after the excluded guard."""
    by_name = {**views, RULE_SCORE_VIEW: odfv}
    services = {}
    for model in SERVICES:
        feature_names(model, settings)  # raises on an excluded feature
        projections = []
        for view, feats in SERVICES[model]:
            projection = by_name[view][list(feats)]
            if view == RULE_SCORE_VIEW:
                # Feast 0.67 reads on-demand Fields back from the registry without their
                # description, then rejects a service projection whose Fields differ: project
                # the same Fields the registry will hold.
                projection.projection.features = [
                    Field(name=f.name, dtype=f.dtype) for f in projection.projection.features
                ]
            projections.append(projection)
        services[model] = FeatureService(
            name=service_name(model),
            features=projections,
            description=f"Features of the {model} model ({FEATURE_SERVICE_VERSION})",
            tags={"model": model, "entity": ENTITY_OF_MODEL[model]},
        )
    return services


def all_objects(settings: Settings) -> list:
    """Everything ``apply`` registers."""
    views = feature_views(settings)
    odfv = rule_score_view(views)
    services = feature_services(settings, views, odfv)
    return [*entities().values(), *views.values(), odfv, *services.values()]
