"""Request and response shapes of the online API (pydantic): ids or raw features in, product
language out (lead score and grade, deal health and colour, churn risk, CLV tier, best slots);
message text in, intent, sentiment, keywords and the terms behind them out."""

from __future__ import annotations

from typing import Annotated, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model, model_validator

from crm_predict.core.messages import INTENTS, LANGUAGES, SENTIMENTS

FeatureValue = float | int | str | bool | None
# Ids are BIGINTs: a larger number is a 400 naming the field, not an overflow (500) downstream.
EntityId = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
# External ids: the source CRM's own id as text (String(100) in the store; no NUL, which
# PostgreSQL text cannot hold: a 400 naming the field, not a failed query).
EntityRef = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")]
REF_DESCRIPTION = "The source CRM's id (external_id) instead of the internal id."
FeatureRow = dict[str, FeatureValue]


# --- requests ------------------------------------------------------------------------------------


class ScoreRequest(BaseModel):
    """Exactly one of the entity id(s), the external id(s) (``*_ref``: the source CRM's own id)
    or the raw feature row(s); unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    id_field: ClassVar[str]
    ref_field: ClassVar[str]
    rows_field: ClassVar[str]
    write_back: StrictBool = Field(
        False, description="Write tags/tasks to the CRM store and log predictions (bearer token)."
    )

    @model_validator(mode="after")
    def _one_source(self):
        sources = (self.id_field, self.ref_field, self.rows_field)
        given = [f for f in sources if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of {given[0]!r} or {given[1]!r}, not both")
        if not given:
            raise ValueError(
                f"give exactly one of {self.id_field!r}, {self.ref_field!r} or {self.rows_field!r}"
            )
        return self


class ExplainableRequest(ScoreRequest):
    explain: StrictBool = Field(False, description="Add the top positive and negative reasons.")


def _requests(prefix: str, entity: str, base: type[ScoreRequest]) -> tuple[type, type]:
    """``<prefix>Request`` (an ``<entity>_id``, ``<entity>_ref`` or ``features``) and
    ``<prefix>BatchRequest`` (``<entity>_ids``, ``<entity>_refs`` or ``rows``)."""
    ref, many = Field(None, description=REF_DESCRIPTION), Field(None, min_length=1)
    many_refs = Field(None, min_length=1, description=REF_DESCRIPTION)
    one = {
        f"{entity}_id": (EntityId | None, None),
        f"{entity}_ref": (EntityRef | None, ref),
        "features": (FeatureRow | None, None),
    }
    batch = {
        f"{entity}_ids": (list[EntityId] | None, many),
        f"{entity}_refs": (list[EntityRef] | None, many_refs),
        "rows": (list[FeatureRow] | None, many),
    }
    models = []
    for name, fields in ((f"{prefix}Request", one), (f"{prefix}BatchRequest", batch)):
        model = create_model(name, __base__=base, __module__=__name__, **fields)
        model.id_field, model.ref_field, model.rows_field = fields
        models.append(model)
    return tuple(models)


LeadScoreRequest, LeadScoreBatchRequest = _requests("LeadScore", "lead", ExplainableRequest)
DealHealthRequest, DealHealthBatchRequest = _requests("DealHealth", "deal", ExplainableRequest)
ChurnRequest, ChurnBatchRequest = _requests("Churn", "customer", ExplainableRequest)
ClvRequest, ClvBatchRequest = _requests("Clv", "customer", ScoreRequest)
NextBestTimeRequest, NextBestTimeBatchRequest = _requests("NextBestTime", "contact", ScoreRequest)

# A message's id as the caller keeps it (a number or text), echoed back beside its reading.
MessageId = EntityId | EntityRef


class MessageIntentRequest(BaseModel):
    """One message: its text (English or Chinese) and optionally the caller's id for it."""

    model_config = ConfigDict(extra="forbid")
    id: MessageId | None = Field(None, description="Your id of the message, echoed back.")
    text: str = Field(
        description="What the customer wrote, English or Chinese; at most 20,000 characters."
    )


class MessageIntentBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[MessageIntentRequest] = Field(min_length=1)


# --- responses -----------------------------------------------------------------------------------

EXTERNAL_ID_DESCRIPTION = (
    "The source CRM's id of the entity: set when the request came by *_ref or with write_back "
    "(the CRM store is read then anyway); null otherwise, so a read by internal id costs no query."
)


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str
    run_id: str


class Reason(BaseModel):
    feature: str
    value: FeatureValue
    contribution: float = Field(description="Push on the log-odds of the classifier.")


class Reasons(BaseModel):
    method: str
    top_positive: list[Reason]
    top_negative: list[Reason]


class LeadScore(BaseModel):
    lead_id: int | None
    external_id: str | None = Field(None, description=EXTERNAL_ID_DESCRIPTION)
    score: int = Field(ge=1, le=99, description="Conversion probability shown as 1–99.")
    probability: float
    grade: Literal["A", "B", "C", "D"]
    mql: bool | None = Field(description="Rule-based points ≥ the MQL threshold (None: unknown).")
    rule_points: float | None
    reasons: Reasons | None = None


class DealHealth(BaseModel):
    deal_id: int | None
    external_id: str | None = Field(None, description=EXTERNAL_ID_DESCRIPTION)
    health: int = Field(ge=0, le=100, description="100 × P(win).")
    p_win: float
    colour: Literal["green", "yellow", "red"]
    reasons: Reasons | None = None


class Churn(BaseModel):
    customer_id: int | None
    external_id: str | None = Field(None, description=EXTERNAL_ID_DESCRIPTION)
    p_churn: float = Field(description="P(no purchase in the next 90 days).")
    risk: Literal["high", "medium", "low"]
    reasons: Reasons | None = None


class Clv(BaseModel):
    customer_id: int | None
    external_id: str | None = Field(None, description=EXTERNAL_ID_DESCRIPTION)
    clv_3y: float = Field(description="Discounted 3-year customer value.")
    yearly_value: float = Field(description="Predicted yearly value: clv_3y over 3 years.")
    yearly_spend: float = Field(description="Trailing-12-month spend (predicted if unknown).")
    tier: Literal["diamond", "gold", "normal"]
    rfm_segment: str | None = Field(description="RFM segment (None when RFM inputs are absent).")
    p_alive: float
    expected_purchases_90d: float


class Slot(BaseModel):
    slot: int = Field(ge=0, le=167, description="Hour of week, 0 = Monday 00:00.")
    label: str


class NextBestTime(BaseModel):
    contact_id: int | None
    external_id: str | None = Field(None, description=EXTERNAL_ID_DESCRIPTION)
    best_slots: list[Slot]
    best_channel: str | None
    p_best: float | None


class Term(BaseModel):
    term: str = Field(description="A word of the text (Chinese: its characters).")
    weight: float = Field(description="TF-IDF × the class's weight over the other classes'.")


class Keyword(BaseModel):
    term: str
    topic: str | None = Field(
        description="The configured topic whose word it is (price, features, delivery_time); "
        "null: one of the terms that drove the intent."
    )


class MessageReasons(BaseModel):
    intent: list[Term] = Field(description="The terms that drove the intent, strongest first.")
    sentiment: list[Term] = Field(description="The terms that drove the sentiment.")


class MessageIntent(BaseModel):
    id: MessageId | None
    language: Literal[LANGUAGES]
    intent: Literal[INTENTS]
    intent_p: float = Field(description="The model's probability of the intent.")
    sentiment: Literal[SENTIMENTS]
    sentiment_p: float = Field(description="The model's probability of the sentiment.")
    need_priority: int = Field(
        ge=0, le=100, description="The intent's weight × its probability, raised for complaints."
    )
    topics: list[str] = Field(description="Configured topics the text mentions.")
    keywords: list[Keyword]
    reasons: MessageReasons


class WriteBack(BaseModel):
    """What ``write_back=true`` wrote; always present (OpenAPI 3.0 has no ``null`` type)."""

    requested: bool = False
    tags: int = 0
    tasks: int = 0
    predictions_logged: int = 0


P = TypeVar("P")


class Single(BaseModel, Generic[P]):
    request_id: str
    model: ModelInfo
    prediction: P
    written_back: WriteBack = WriteBack()


class Batch(BaseModel, Generic[P]):
    request_id: str
    model: ModelInfo
    predictions: list[P]
    written_back: WriteBack = WriteBack()


class ApiError(BaseModel):
    error: str
    field: str | None = None
    status: int
