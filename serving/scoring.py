"""Score feature rows with a loaded model and say the result in product language.

Pure functions over a ``LoadedModel`` and a feature frame (one row per entity, an ``entity_id``
column when the rows came by id); the thresholds come from ``crm_predict.core.rules``. Messages:
checked texts in, their reading (``score_messages``) out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from crm_predict.features.rule_context import lead_rule_points
from crm_predict.features.transforms import RULE_SCORE_INPUTS, rule_score_values
from crm_predict.serving.loader import LoadedModel
from crm_predict.training.message_intent import TextModels, check_text, reasons
from crm_predict.training.specs import MODULES, SPECS
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from crm_predict.core import rules
from crm_predict.core.errors import UserError
from crm_predict.core.messages import MessageRules, need_priority, topic_terms

ENTITY_ID = "entity_id"
RULE_SCORE = "rule_score"  # lead feature (Feast on-demand view) holding the rule-based points
RFM_COLUMNS = ("rfm_recency_days", "rfm_frequency", "rfm_monetary")
NUMERIC_TYPES = {"double", "float", "long", "integer"}


@dataclass(frozen=True)
class DerivedFeature:
    """A model input computed from other inputs (a Feast on-demand view): a raw payload sends the
    inputs and the service computes it, so a client cannot send its own score."""

    inputs: tuple[str, ...]
    compute: Callable[[pd.DataFrame], np.ndarray]
    numeric: tuple[str, ...]  # inputs that must be numbers when they come as text


# Every on-demand feature of ``crm_predict.features.definitions`` (the rule-based points: RULE_SCORE_VIEW).
DERIVED_FEATURES = {
    RULE_SCORE: DerivedFeature(
        RULE_SCORE_INPUTS,
        rule_score_values,
        tuple(
            f
            for f in RULE_SCORE_INPUTS
            if f not in ("industry", "lead_region", "is_decision_maker")
        ),
    ),
}


class FeatureInputError(ValueError):
    """A raw feature payload that does not fit the model; ``field`` names the offending input."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_rows(model: LoadedModel, rows: list[dict], field: str) -> pd.DataFrame:
    """Raw payload rows as a frame in the model's column order; missing, unknown or wrongly
    typed features raise ``FeatureInputError`` naming ``field[i].feature``.

    A derived feature (``DERIVED_FEATURES``: ``rule_score``) is computed here from its raw inputs,
    as the feature pipeline computes it; a row that sends it is refused, naming the inputs to send
    instead (a client-sent score would decide MQL and grade)."""
    derived = {name: DERIVED_FEATURES[name] for name in model.feature_names if name in DERIVED_FEATURES}  # fmt: skip
    sent = [f for f in model.feature_names if f not in derived]
    sent += [f for d in derived.values() for f in d.inputs if f not in sent]
    numeric = {f for d in derived.values() for f in d.numeric}
    expected = sent
    optional = [ENTITY_ID, *SPECS[model.name].optional_inputs]  # tiers, segments, tasks
    allowed = {*expected, *optional}
    for i, row in enumerate(rows):
        for name, feature in derived.items():
            if name in row:
                raise FeatureInputError(
                    f"{field}[{i}].{name}",
                    f"{name} is derived: the service computes it from {', '.join(feature.inputs)}; "
                    f"send those, not {name}",
                )
        missing = [f for f in expected if f not in row]
        if missing:
            raise FeatureInputError(f"{field}[{i}]", f"missing feature(s): {', '.join(missing)}")
        unknown = sorted(set(row) - allowed)
        if unknown:
            raise FeatureInputError(
                f"{field}[{i}].{unknown[0]}", f"unknown feature(s): {', '.join(unknown)}"
            )
        for name, value in row.items():
            kind = "double" if name in numeric else model.input_types.get(name)
            if kind in NUMERIC_TYPES and isinstance(value, str):
                try:
                    float(value)
                except ValueError:
                    raise FeatureInputError(
                        f"{field}[{i}].{name}", f"{name} must be a number, got {value!r}"
                    ) from None
    extra = [c for c in optional if any(c in row for row in rows)]
    frame = pd.DataFrame(rows, columns=[*extra, *expected])
    for name in expected:
        if name in numeric or model.input_types.get(name) in NUMERIC_TYPES:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    for name, feature in derived.items():
        frame[name] = feature.compute({f: frame[f] for f in feature.inputs})
    # The model's columns, the optional ones and the derived features' inputs (a rules file's lead
    # points are counted over them); nothing else the client sent.
    inputs = [f for d in derived.values() for f in d.inputs if f not in model.feature_names]
    return frame[[*extra, *model.feature_names, *dict.fromkeys(inputs)]]


def score_classifier(
    model: LoadedModel, frame: pd.DataFrame, explain: bool, rules_: rules.Rules = rules.RULES
) -> list[dict]:
    """Lead score, deal health or churn records for each row of ``frame``."""
    if explain and model.explainer is None:
        raise FeatureInputError("explain", f"model {model.name} cannot explain its scores")
    matrix = model.matrix(frame)
    p = model.predict_proba(frame, matrix)
    columns = MODULES[model.name].response(p, rules_)
    if "rule_points" in SPECS[model.name].record_context:
        points = _rule_points(frame, rules_)
        points = np.full(len(frame), np.nan) if points is None else points
        mql = rules.is_mql(points, rules_.lead)
        columns["mql"] = [None if np.isnan(x) else bool(m) for x, m in zip(points, mql, strict=True)]  # fmt: skip
        columns["rule_points"] = [None if np.isnan(x) else float(x) for x in points]
    values = {k: v if isinstance(v, list) else np.asarray(v).tolist() for k, v in columns.items()}
    key, ids = SPECS[model.name].id_field, _ids(frame)
    records = [{key: ids[i], **{k: v[i] for k, v in values.items()}} for i in range(len(frame))]
    if explain:
        reasons = model.explainer.reasons(frame, matrix=matrix)
        for record, (pos, neg) in zip(records, reasons, strict=True):
            record["reasons"] = {
                "method": model.explainer.method,
                "top_positive": [r.__dict__ for r in pos],
                "top_negative": [r.__dict__ for r in neg],
            }
    return records


def score_clv(
    model: LoadedModel,
    frame: pd.DataFrame,
    rfm_medians: tuple[float, float, float] | None,
    rules_: rules.Rules = rules.RULES,
) -> list[dict]:
    """3-year CLV, value tier and RFM segment (cut at the population's medians) per customer.

    The tier is by yearly spend as the batch tags it: trailing-12-month spend (``spend_12m``) when
    the row has it, else the predicted yearly value (``clv_3y`` over the horizon in years)."""
    out = model.predict(frame).reset_index(drop=True)
    yearly = out["clv_3y"].to_numpy(dtype=float) / (rules_.value.horizon_weeks / 52)
    spend = yearly_spend(frame, yearly)
    tier = rules.value_tier(spend, rules_.value)
    segment = rfm_segments(frame, rfm_medians)
    ids = _ids(frame)
    return [
        {
            "customer_id": ids[i], "clv_3y": float(out["clv_3y"][i]), "yearly_value": float(yearly[i]),
            "yearly_spend": float(spend[i]), "tier": str(tier[i]), "rfm_segment": segment[i],
            "p_alive": float(out["p_alive"][i]),
            "expected_purchases_90d": float(out["expected_purchases_90d"][i]),
        }
        for i in range(len(frame))
    ]  # fmt: skip


def yearly_spend(frame: pd.DataFrame, predicted_yearly: np.ndarray) -> np.ndarray:
    if "spend_12m" not in frame.columns:
        return predicted_yearly
    actual = pd.to_numeric(frame["spend_12m"], errors="coerce").to_numpy(dtype=float)
    return np.where(np.isnan(actual), predicted_yearly, actual)


def rfm_segments(
    frame: pd.DataFrame, medians: tuple[float, float, float] | None
) -> list[str | None]:
    """RFM segment per row from the ``rfm_*`` features; None without medians or inputs."""
    if medians is None or not set(RFM_COLUMNS) <= set(frame.columns):
        return [None] * len(frame)
    r, f, m = (pd.to_numeric(frame[c], errors="coerce") for c in RFM_COLUMNS)
    return [str(s) for s in rules.rfm_segment(r, f, m, medians=medians)]


def score_next_best_time(model: LoadedModel, frame: pd.DataFrame) -> list[dict]:
    """Best hour-of-week slots (with readable labels) and channel per contact."""
    out = model.predict(frame).reset_index(drop=True)
    ids = _ids(frame)
    records = []
    for i in range(len(frame)):
        slots = [int(s) for s in np.asarray(out["best_slots"][i]).reshape(-1)]
        p_best = out["p_best"][i] if "p_best" in out else None
        records.append(
            {
                "contact_id": ids[i],
                "best_slots": [{"slot": s, "label": rules.slot_label(s)} for s in slots],
                "best_channel": None if pd.isna(out["best_channel"][i]) else str(out["best_channel"][i]),
                "p_best": None if p_best is None or pd.isna(p_best) else float(p_best),
            }
        )  # fmt: skip
    return records


def score(
    model: LoadedModel,
    frame: pd.DataFrame,
    explain: bool = False,
    rfm_medians: tuple[float, float, float] | None = None,
    rules_: rules.Rules = rules.RULES,
) -> list[dict]:
    """Product-language records for ``frame`` with whichever model ``model`` is, under the
    business rules ``rules_`` (the service's loaded rules; default the built-in ones)."""
    kind = SPECS[model.name].kind
    if kind == "clv":
        return score_clv(model, frame, rfm_medians, rules_)
    if kind == "next_best_time":
        return score_next_best_time(model, frame)
    return score_classifier(model, frame, explain, rules_)


def headline(model_name: str, record: dict) -> float:
    """The one number the prediction log keeps for a record."""
    key = SPECS[model_name].score_output
    value = record.get(key)
    return float("nan") if value is None else float(value)


def _ids(frame: pd.DataFrame) -> list[int | None]:
    if ENTITY_ID not in frame.columns:
        return [None] * len(frame)
    return [None if pd.isna(v) else int(v) for v in frame[ENTITY_ID]]


def _rule_points(frame: pd.DataFrame, rules_: rules.Rules = rules.RULES) -> np.ndarray | None:
    """The leads' points: the ``rule_score`` feature (the built-in rules' points), or under a rules
    file with other lead rules the file's points over the same inputs, as the write-back counts."""
    if rules_.lead != rules.RULES.lead and set(RULE_SCORE_INPUTS) <= set(frame.columns):
        inputs = frame[list(RULE_SCORE_INPUTS)].infer_objects()
        return lead_rule_points(inputs, rules_.lead)
    if RULE_SCORE not in frame.columns:
        return None
    points = frame[RULE_SCORE]
    if pd.api.types.is_float_dtype(points):
        return points.to_numpy()
    values = points.to_numpy()
    if all(v is None or type(v) in (int, float) for v in values):  # a single-id read's objects
        return np.array([np.nan if v is None else v for v in values], dtype=float)
    return pd.to_numeric(points, errors="coerce").to_numpy(dtype=float)


# --- messages ------------------------------------------------------------------------------------


def check_messages(texts: list, field: str) -> list[tuple[str, str]]:
    """(stripped text, language) per text; an empty, over-long, binary or unreadable one raises
    ``FeatureInputError`` naming it (``field`` with ``{i}`` for its position)."""
    checked = []
    for i, text in enumerate(texts):
        try:
            checked.append(check_text(text))
        except UserError as exc:
            raise FeatureInputError(field.format(i=i), str(exc)) from None
    return checked


def text_models(model: LoadedModel) -> TextModels:
    """The fitted vectorizer and heads inside a loaded ``message_intent`` pyfunc."""
    return model.model.unwrap_python_model().models


def warm_text_model(model: LoadedModel) -> None:
    """Build the loaded text model's caches (~0.1 s for 200k n-grams) before a request needs them."""
    text_models(model).warm()


def score_messages(
    model: LoadedModel,
    checked: list[tuple[str, str]],
    ids: list | None = None,
    rules_: MessageRules = MessageRules(),
    k: int = 5,
) -> list[dict]:
    """Intent and sentiment with their probabilities, need priority, the configured topics the
    text mentions, keywords (topic words, then the terms that drove the intent, English stop
    words left out) and the terms behind each reading, per checked text; one vectorizer pass."""
    models = text_models(model)
    texts = [text for text, _ in checked]
    rows, x = models.rows(texts)
    p_intent, p_sentiment = models.probabilities("intent", x), models.probabilities("sentiment", x)
    k_intent, k_sentiment = p_intent.argmax(axis=1), p_sentiment.argmax(axis=1)
    intents = models.intent.classes_[k_intent]
    sentiments = models.sentiment.classes_[k_sentiment]
    intent_p = p_intent.max(axis=1).round(4)
    priority = need_priority(intents, intent_p, sentiments, rules_)
    ids = ids or [None] * len(texts)
    records = []
    for i, (text, language) in enumerate(checked):
        _, intent_terms = reasons(models, "intent", text, k, rows[i], int(k_intent[i]))
        _, sentiment_terms = reasons(models, "sentiment", text, k, rows[i], int(k_sentiment[i]))
        found = topic_terms(text, rules_.topics)
        keywords = [{"term": w, "topic": topic} for w, topic in found]
        keywords += [
            {"term": t["term"], "topic": None}
            for t in intent_terms
            if t["term"] not in ENGLISH_STOP_WORDS
            and not any(t["term"] in w or w in t["term"] for w, _ in found)
        ]
        records.append(
            {
                "id": ids[i], "language": language, "intent": str(intents[i]),
                "intent_p": float(intent_p[i]), "sentiment": str(sentiments[i]),
                "sentiment_p": float(round(p_sentiment[i].max(), 4)),
                "need_priority": int(priority[i]),
                "topics": list(dict.fromkeys(topic for _, topic in found)),
                "keywords": keywords,
                "reasons": {"intent": intent_terms, "sentiment": sentiment_terms},
            }
        )  # fmt: skip
    return records
