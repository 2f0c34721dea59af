"""SQLAlchemy 2 models of the CRM store.

A contact is both a B2B person at an account and a B2C customer (orders, engagement); the churn and
CLV models score contacts that have orders, the lead model scores leads, the deal model open deals.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The prediction-log rows ``crm_predict.crm_store.kpis`` reads (the CLV model's batches), as SQL literals: a
# partial index serves a query only when its WHERE names the same constants.
CLV_BATCH = "model_name = 'clv' AND source = 'batch'"
# What a message's ``channel`` and ``direction`` hold.
MESSAGE_CHANNELS = ("email", "chat", "wechat", "call_note", "ticket")
MESSAGE_DIRECTIONS = ("inbound", "outbound")
# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class _Entity:
    """A CRM entity's ids, first in its table: the store's and the source CRM's."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, sort_order=-2)
    external_id: Mapped[str | None] = mapped_column(String(100), unique=True, sort_order=-1)


class _TagValue:
    """A tag's value and what set it (after the key in ``tags`` and ``tag_history``)."""

    value: Mapped[str] = mapped_column(String(200))
    model_name: Mapped[str | None] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(50))
    run_id: Mapped[str | None] = mapped_column(String(64))
    scored_at: Mapped[datetime] = mapped_column(DateTime)


class User(_Entity, Base):
    """A sales/CS owner; ``manager_id`` is who escalations go to."""

    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    region: Mapped[str | None] = mapped_column(String(50))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Account(_Entity, Base):
    __tablename__ = "accounts"
    name: Mapped[str] = mapped_column(String(300))
    industry: Mapped[str | None] = mapped_column(String(100))
    size_band: Mapped[str | None] = mapped_column(String(50))
    region: Mapped[str | None] = mapped_column(String(50))
    annual_revenue_band: Mapped[str | None] = mapped_column(String(50))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Contact(_Entity, Base):
    __tablename__ = "contacts"
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    phone: Mapped[str | None] = mapped_column(String(50), index=True)
    # Emails and phones of records merged into this one (";"-separated), kept for matching.
    alternate_emails: Mapped[str | None] = mapped_column(Text)
    alternate_phones: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str | None] = mapped_column(String(100))
    is_decision_maker: Mapped[bool | None] = mapped_column(Boolean)
    age_band: Mapped[str | None] = mapped_column(String(20))
    gender: Mapped[str | None] = mapped_column(String(20))
    region: Mapped[str | None] = mapped_column(String(50))
    membership_level: Mapped[str | None] = mapped_column(String(50))
    points: Mapped[int | None] = mapped_column(Integer)
    signup_at: Mapped[datetime | None] = mapped_column(DateTime)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    source: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Lead(_Entity, Base):
    __tablename__ = "leads"
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    source: Mapped[str | None] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(50))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(30), default="new")
    stage: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    first_contacted_at: Mapped[datetime | None] = mapped_column(DateTime)
    converted_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Deal(_Entity, Base):
    __tablename__ = "deals"
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str | None] = mapped_column(String(300))
    amount: Mapped[float | None] = mapped_column(Float)
    pipeline: Mapped[str | None] = mapped_column(String(100))
    stage: Mapped[str] = mapped_column(String(50))
    stage_entered_at: Mapped[datetime] = mapped_column(DateTime)
    expected_close_at: Mapped[datetime | None] = mapped_column(DateTime)
    close_date_slips: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    outcome: Mapped[str | None] = mapped_column(String(10))  # "won" / "lost" / None while open
    updated_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class DealStageHistory(Base):
    __tablename__ = "deal_stage_history"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("deals.id"), index=True)
    stage: Mapped[str] = mapped_column(String(50))
    entered_at: Mapped[datetime] = mapped_column(DateTime)
    expected_close_at: Mapped[datetime | None] = mapped_column(DateTime)


class Activity(_Entity, Base):
    """Sales activities and engagement events alike (call, email_open, site_visit, coupon_use, …).

    ``responded`` marks a reply, an answered call or an opened email: what next-best-time learns from.
    """

    __tablename__ = "activities"
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"), index=True)
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id"), index=True)
    type: Mapped[str] = mapped_column(String(50))
    # The vocabulary category the type was mapped to at import (what the features count).
    category: Mapped[str | None] = mapped_column(String(30))
    channel: Mapped[str | None] = mapped_column(String(30))
    occurred_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    responded: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Order(_Entity, Base):
    __tablename__ = "orders"
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    ordered_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    amount: Mapped[float] = mapped_column(Float)
    items: Mapped[int] = mapped_column(Integer, default=1)
    channel: Mapped[str | None] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Ticket(_Entity, Base):
    __tablename__ = "tickets"
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id"), index=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    priority: Mapped[str | None] = mapped_column(String(20))
    sentiment: Mapped[float | None] = mapped_column(Float)  # -1 (angry) … +1 (happy)
    subject: Mapped[str | None] = mapped_column(Text)


class Message(_Entity, Base):
    """What a customer wrote or was sent (email, chat, WeChat, call note, ticket body), linked to
    the entities it concerns. ``intent`` and ``sentiment`` hold a source's own labels (the demo's
    ground truth) when it has them; the model's reading of a message is written as tags."""

    __tablename__ = "messages"
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id"))
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))  # MESSAGE_CHANNELS
    direction: Mapped[str] = mapped_column(String(10))  # MESSAGE_DIRECTIONS
    sent_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    language: Mapped[str | None] = mapped_column(String(10))
    text: Mapped[str] = mapped_column(Text)
    intent: Mapped[str | None] = mapped_column(String(50))
    sentiment: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Tag(_TagValue, Base):
    """The current value of one tag on one entity; older values move to ``tag_history``."""

    __tablename__ = "tags"
    # The natural key is the primary key: a surrogate id was one more index on every tag write.
    entity_type: Mapped[str] = mapped_column(String(20), primary_key=True)
    entity_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)


class TagHistory(_TagValue, Base):
    __tablename__ = "tag_history"
    __table_args__ = (Index("ix_tag_history_entity", "entity_type", "entity_id", "name"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(20))
    entity_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(100))
    replaced_at: Mapped[datetime] = mapped_column(DateTime, sort_order=1)


class Task(Base):
    __tablename__ = "tasks"
    # The 360° view reads an entity's open tasks (0009).
    __table_args__ = (Index("ix_tasks_entity", "entity_type", "entity_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(50))
    entity_type: Mapped[str] = mapped_column(String(20))
    entity_id: Mapped[int] = mapped_column(BigInteger)
    owner_id: Mapped[int | None] = mapped_column(BigInteger)
    due_at: Mapped[datetime] = mapped_column(DateTime)
    sla_hours: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="open")
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class PredictionLog(Base):
    __tablename__ = "prediction_log"
    # The one read of the log (the CLV model's latest batch, ``crm_predict.crm_store.kpis``) has a partial
    # index: the other rows a batch appends cost no B-tree entry. Time windows: a BRIN.
    __table_args__ = (
        Index(
            "ix_prediction_log_clv_batch",
            "predicted_at",
            postgresql_where=text(CLV_BATCH),
            sqlite_where=text(CLV_BATCH),
        ),
        Index("ix_prediction_log_time", "predicted_at", postgresql_using="brin").ddl_if(
            dialect="postgresql"
        ),
    )
    # The rows' identity; on PostgreSQL without the primary key's B-tree (0005): values from the
    # sequence, nothing reads a row by id.
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(20))
    entity_id: Mapped[int] = mapped_column(BigInteger)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(50))
    score: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(20))  # "batch" / "api"
    request_id: Mapped[str | None] = mapped_column(String(64))
    predicted_at: Mapped[datetime] = mapped_column(DateTime)


class BatchRun(Base):
    """One run of the nightly batch job (``crm_predict.serving.batch``): what it scores, as of when, how it ended."""

    __tablename__ = "batch_runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    models: Mapped[str] = mapped_column(String(200))  # comma-separated model names
    scored_at: Mapped[datetime] = mapped_column(DateTime)  # the "now" features and rules use
    status: Mapped[str] = mapped_column(String(20), default="running")  # running / done
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    summary: Mapped[str | None] = mapped_column(Text)  # JSON, once done
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))


class BatchCheckpoint(Base):
    """A chunk of a batch run whose tags, tasks and prediction log are committed (same transaction)."""

    __tablename__ = "batch_checkpoints"
    __table_args__ = (
        UniqueConstraint("batch_run_id", "model_name", "chunk", name="uq_batch_checkpoint_chunk"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_run_id: Mapped[int] = mapped_column(ForeignKey("batch_runs.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(50))
    chunk: Mapped[int] = mapped_column(Integer)
    last_entity_id: Mapped[int] = mapped_column(BigInteger)  # entities are scored in id order
    entities: Mapped[int] = mapped_column(Integer)
    tags_written: Mapped[int] = mapped_column(Integer)
    tasks_created: Mapped[int] = mapped_column(Integer)
    counts: Mapped[str] = mapped_column(Text)  # JSON {"tag=value": n, "task:type": n}
    committed_at: Mapped[datetime] = mapped_column(DateTime)


ENTITY_MODELS = {
    "users": User,
    "accounts": Account,
    "contacts": Contact,
    "leads": Lead,
    "deals": Deal,
    "deal_stage_history": DealStageHistory,
    "activities": Activity,
    "orders": Order,
    "tickets": Ticket,
    "messages": Message,
}
