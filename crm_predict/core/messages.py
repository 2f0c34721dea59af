"""What the batch does with scored customer messages: tags per contact (latest intent, need
priority, complaint tendency) and tasks per message (quote follow-up, competitor response), as
small pure functions over the rules file's ``messages`` section (``MessageRules``, defined with
the other sections in ``crm_predict.core.rules`` and importable from here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from crm_predict.core.rules import MessageRules, TaskSpec

# The vocabulary the message model reads and the demo writes.
INTENTS = (
    "technical_consultation",
    "quote_request",
    "competitor_comparison",
    "after_sales_support",
)
SENTIMENTS = ("satisfied", "complaining", "hesitant")
LANGUAGES = ("en", "zh")
TS = "sent_at"

TAG_LATEST_INTENT, TAG_COMPLAINT, TAG_NEED_PRIORITY = (
    "latest_intent",
    "complaint_tendency",
    "need_priority",
)
TASK_QUOTE_FOLLOW_UP, TASK_COMPETITOR = "quote_follow_up", "competitor_response"


def need_priority(intent: Sequence[str], intent_p: Sequence[float], sentiment: Sequence[str], rules: MessageRules) -> np.ndarray:  # fmt: skip
    """0–100 per message: the intent's weight × the model's confidence, raised for complaints."""
    weights = rules.intent_priority.model_dump()
    weight = np.array([weights.get(i, 0.0) for i in intent], dtype=float)
    boost = np.where(np.asarray(sentiment) == "complaining", rules.complaint_boost, 1.0)
    priority = np.round(100 * weight * np.asarray(intent_p, dtype=float) * boost)
    return np.clip(priority, 0, 100).astype(int)


def contact_tags(scored: pd.DataFrame, now: datetime, rules: MessageRules = MessageRules()) -> pd.DataFrame:  # fmt: skip
    """Per contact with inbound messages up to ``now``: the newest message's intent and need
    priority, and whether complaints exceed their share over the window (``contact_id`` plus one
    text column per tag). ``scored``: ``contact_id, direction, sent_at, intent, sentiment`` and
    ``intent_p``, or the messages' own ``need_priority`` (as the batch stored it) instead."""
    inbound = scored[(scored["direction"] == "inbound") & (scored[TS] <= now)].sort_values(
        TS, kind="stable"
    )
    if inbound.empty:
        return pd.DataFrame(
            columns=["contact_id", TAG_LATEST_INTENT, TAG_NEED_PRIORITY, TAG_COMPLAINT]
        )
    newest = inbound.groupby("contact_id").tail(1).set_index("contact_id")
    recent = inbound[inbound[TS] > now - pd.Timedelta(days=rules.complaint_window_days)]
    counts = recent.groupby("contact_id")["sentiment"].agg(
        total="size", complaining=lambda s: int((s == "complaining").sum())
    )
    complaining = (counts["total"] >= rules.complaint_min_messages) & (
        counts["complaining"] > rules.complaint_share * counts["total"]
    )
    if "need_priority" in newest:
        priority = pd.to_numeric(newest["need_priority"], errors="coerce").fillna(0).astype(int)
    else:
        priority = need_priority(newest["intent"], newest["intent_p"], newest["sentiment"], rules)
    out = pd.DataFrame(
        {
            TAG_LATEST_INTENT: newest["intent"].astype(str),
            TAG_NEED_PRIORITY: np.asarray(priority).astype(str),
            TAG_COMPLAINT: np.where(
                complaining.reindex(newest.index, fill_value=False), "true", "false"
            ),
        },
        index=newest.index,
    )
    return out.rename_axis("contact_id").reset_index()


def deal_tags(scored: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Per deal with inbound messages up to ``now``: the newest message's intent (``deal_id``,
    ``latest_intent``)."""
    inbound = scored[(scored["direction"] == "inbound") & (scored[TS] <= now)]
    inbound = inbound[inbound["deal_id"].notna()].sort_values(TS, kind="stable")
    newest = inbound.groupby("deal_id").tail(1)
    return pd.DataFrame(
        {"deal_id": newest["deal_id"].astype("int64").to_numpy(),
         TAG_LATEST_INTENT: newest["intent"].astype(str).to_numpy()}
    )  # fmt: skip


def competitor_named(text: str, rules: MessageRules) -> str | None:
    lowered = text.lower()
    return next((c for c in rules.competitors if c.lower() in lowered), None)


def message_tasks(scored: pd.DataFrame, now: datetime, rules: MessageRules = MessageRules()) -> list:  # fmt: skip
    """A follow-up for the owner after a quote request and a response task naming the competitor
    after a comparison, for inbound messages of the last ``task_window_days``; one per message
    (the message id is the task's period, so a rerun finds it)."""
    since = now - pd.Timedelta(days=rules.task_window_days)
    rows = scored[
        (scored["direction"] == "inbound")
        & (scored[TS] > since)
        & (scored[TS] <= now)
        & scored["intent"].isin(["quote_request", "competitor_comparison"])
    ]
    tasks = []
    for row in rows.itertuples(index=False):
        owner = None if pd.isna(getattr(row, "owner_id", None)) else int(row.owner_id)
        sent = pd.Timestamp(getattr(row, TS)).to_pydatetime()
        if row.intent == "quote_request":
            kind, sla, reason = (
                TASK_QUOTE_FOLLOW_UP,
                rules.quote_follow_up_sla_hours,
                "Quote requested",
            )
        else:
            named = competitor_named(row.text, rules)
            kind, sla = TASK_COMPETITOR, rules.competitor_sla_hours
            reason = f"Compared with {named}" if named else "Compared with a competitor"
        tasks.append(
            TaskSpec(
                kind,
                "contact",
                int(row.contact_id),
                owner,
                sent + pd.Timedelta(hours=sla).to_pytimedelta(),
                sla,
                f"{reason} in a {row.channel} message on {sent:%Y-%m-%d}",
                period=f"message:{row.id}",
            )  # fmt: skip
        )
    return tasks


def topic_terms(text: str, topics: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """(word, topic) for each configured topic word ``text`` holds, in the configured order; a
    word inside a longer one found too (``price`` in ``pricing``) is left out."""
    lowered = text.lower()
    found = [(w.lower(), topic) for topic, words in topics.items() for w in words if w.lower() in lowered]  # fmt: skip
    return [(w, t) for w, t in found if not any(w != other and w in other for other, _ in found)]


def topic_keywords(text: str, topics: Mapping[str, Sequence[str]]) -> list[str]:
    """The configured topics (price, features, delivery time …) whose words occur in ``text``."""
    return list(dict.fromkeys(topic for _, topic in topic_terms(text, topics)))
