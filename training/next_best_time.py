"""Next best time to contact: per contact, a response probability for each of the 168 hour-of-week
slots (0 = Monday 00:00), learned from past outreach with a known outcome (opens, replies, answered
calls: ``responded`` true/false), plus the channel that gets answered most.

Each level is an empirical-Bayes Beta-Binomial blend of its own counts with the level above
(contact ← segment ← global ← overall rate): rate = (responses + k · parent rate) / (attempts + k),
each ``k`` maximising the Beta-Binomial marginal likelihood of the level's counts, so the data decide
how far a thin history is shrunk. Unseen contacts fall back to their segment, then to global.

Evaluation (time holdout, newest ``holdout_fraction`` of the span): ``hit_rate_topk`` is the share
of holdout responses in the contact's top-k slots, each weighted by 1 / (share of all outreach sent
in its slot): the share the recommended slots would capture if outreach were spread evenly over the
week (unweighted, it rewards the hours the team sends most in). Baseline: the global best slot(s).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from crm_predict.training.classifier import parse_boolean
from crm_predict.training.tracking import log_pyfunc_run
from mlflow import MlflowClient
from scipy.special import betaln

from crm_predict.core import rules as R
from crm_predict.core.errors import UserError, read_user_csv
from crm_predict.core.model_spec import ModelSpec
from crm_predict.core.rules import RULES, Rules, TaskSpec, slot_label
from crm_predict.core.settings import Settings
from crm_predict.core.tagging import LEAVE, has, high_activity

MODEL = ModelSpec(
    name="next_best_time",
    kind="next_best_time",
    entity="contact",
    crm_entity="contact",
    id_field="contact_id",
    score_output="p_best",
    label="response_slot",
    views=(("contact_time", None),),
    quality=("hit_rate_top1", "baseline_hit_rate_top1", "oracle_hit_rate_top1"),
    purpose="Best hour-of-week slots and channel to contact a contact, with segment "
    "and global fallbacks for thin histories.",
    known_limits="Slots are learned from past responses, so contacts never reached at an "
    "hour cannot show a preference for it.",
    key_metrics=(("hit_rate_top1", True), ("hit_rate_top3", True)),
    card_metrics=(
        ("hit_rate_top1", "baseline_hit_rate_top1", None),
        ("hit_rate_top3", "baseline_hit_rate_top3", None),
    ),
    train_metrics=("hit_rate_top1", "baseline_hit_rate_top1", "hit_rate_top3", "lift_top1_pct"),
    pyfunc_schema="best_slots array<bigint>, best_channel string, p_best double",
    reads_features=False,  # the pyfunc looks contacts up itself
    optional_inputs=("segment",),
    record_context=("best_slots", "best_channel"),
)
N_SLOTS = 168
TOP_K = 3
GLOBAL = "(global)"
NO_SEGMENT = "(none)"
ANY_CHANNEL = "any"
# Prior strengths tried, in pseudo-attempts: from "trust own counts" to "nearly the parent".
STRENGTH_GRID = np.geomspace(0.5, 5000, 49)


@dataclass(frozen=True)
class NbtConfig:
    holdout_fraction: float = 0.2
    top_k: int = TOP_K


@dataclass
class SlotModel:
    """Shrunk slot and channel response rates per level; ``strengths`` are the fitted ``k``s."""

    global_slots: np.ndarray  # (168,)
    segment_slots: pd.DataFrame  # segment × 168
    contact_slots: pd.DataFrame  # contact × 168
    contact_segment: pd.Series  # contact → segment
    global_channels: pd.Series  # channel → rate
    segment_channels: pd.DataFrame  # segment × channel
    contact_channels: pd.DataFrame  # contact × channel
    strengths: dict[str, float] = field(default_factory=dict)


@dataclass
class NbtResult:
    run_id: str
    model_version: str
    metrics: dict[str, float]
    recommendations: pd.DataFrame = field(repr=False)


# --- Input -----------------------------------------------------------------------------------


def slot_of(timestamps: pd.Series) -> pd.Series:
    """Hour-of-week slot, 0 = Monday 00:00 … 167 = Sunday 23:00."""
    return (timestamps.dt.dayofweek * 24 + timestamps.dt.hour).astype(int)


def events_frame(
    frame: pd.DataFrame,
    contact_col: str,
    time_col: str,
    responded_col: str,
    channel_col: str | None = None,
    segment_col: str | None = None,
) -> pd.DataFrame:
    """Validate a user's engagement events; rows without an outcome (``responded`` empty) are not
    outreach and are dropped. Returns columns ``contact, timestamp, slot, channel, segment,
    responded``."""
    wanted = [c for c in (contact_col, time_col, responded_col, channel_col, segment_col) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise UserError(
            f"events have no column(s) {', '.join(map(repr, missing))}; "
            f"columns are: {', '.join(map(str, frame.columns))}"
        )
    if frame[responded_col].isna().all():
        raise UserError(f"no event has an outcome in column {responded_col!r}")
    responded = parse_boolean(frame[responded_col])
    if responded is None:
        raise UserError(
            f"column {responded_col!r} must hold yes/no, true/false or 1/0 (empty = no outcome)"
        )
    timestamps = pd.to_datetime(frame[time_col], errors="coerce")
    if timestamps.isna().any():
        bad = timestamps.isna()
        raise UserError(
            f"column {time_col!r}: {int(bad.sum())} row(s) are not a valid timestamp "
            f"(first: {frame.loc[bad, time_col].iloc[0]!r})"
        )
    if timestamps.dt.tz is not None:  # the project's timestamps are naive UTC
        timestamps = timestamps.dt.tz_convert("UTC").dt.tz_localize(None)
    if frame[contact_col].isna().any():
        raise UserError(
            f"column {contact_col!r} has {int(frame[contact_col].isna().sum())} empty id(s)"
        )

    def labels(column: str | None, default: str) -> pd.Series:
        if column is None:
            return pd.Series(default, index=frame.index)
        return frame[column].astype("string").fillna(default).astype(str)

    out = pd.DataFrame(
        {
            "contact": frame[contact_col],
            "timestamp": timestamps,
            "slot": slot_of(timestamps),
            "channel": labels(channel_col, ANY_CHANNEL),
            "segment": labels(segment_col, NO_SEGMENT),
            "responded": responded,
        }
    )
    out = out[out["responded"].notna()].astype({"responded": bool})
    if out.empty:
        raise UserError(f"no event has an outcome in column {responded_col!r}")
    if out["responded"].all() or not out["responded"].any():
        raise UserError(
            f"column {responded_col!r} is always {bool(out['responded'].iloc[0])}; response rates "
            "need both answered and unanswered attempts"
        )
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


def contact_segments(contacts: pd.DataFrame) -> pd.Series:
    """Segment of each CRM contact: ``b2b`` (at an account), else ``b2c_`` + age group."""
    age_group = contacts["age_band"].map(
        {"18-24": "young", "25-34": "young", "35-44": "mid", "45-54": "mid", "55-64": "senior", "65+": "senior"}
    )  # fmt: skip
    segment = np.where(
        contacts["account_id"].notna(), "b2b", "b2c_" + age_group.fillna("unknown").astype(str)
    )
    return pd.Series(segment, index=contacts["id"].to_numpy(), name="segment")


def demo_events(session) -> pd.DataFrame:
    """Outreach with an outcome from the CRM store's activities, segmented by contact."""
    from crm_predict.crm_store.repository import read_table

    activities = read_table(
        session, "activities", ["contact_id", "occurred_at", "channel", "responded"]
    )
    activities = activities[activities["contact_id"].notna() & activities["responded"].notna()]
    if activities.empty:
        raise UserError("the CRM store has no activities with an outcome (responded)")
    contacts = read_table(session, "contacts", ["id", "account_id", "age_band"])
    activities = activities.assign(
        contact_id=activities["contact_id"].astype("int64"),
        segment=activities["contact_id"].map(contact_segments(contacts)),
    )
    return events_frame(activities, "contact_id", "occurred_at", "responded", "channel", "segment")


def outcome_channels(events: pd.DataFrame) -> pd.DataFrame:
    """Drop channels whose events never record a non-response (e.g. meetings that took place):
    they say nothing about when a contact answers."""
    answered_always = events.groupby("channel")["responded"].all()
    keep = answered_always.index[~answered_always]
    return events[events["channel"].isin(keep)].reset_index(drop=True)


# --- Model -----------------------------------------------------------------------------------


def _fit_strength(responses: np.ndarray, attempts: np.ndarray, prior: np.ndarray) -> float:
    """Prior strength ``k`` maximising the Beta-Binomial marginal likelihood of the counts, with
    prior mean ``prior`` per cell (empirical Bayes over a grid)."""
    seen = attempts > 0
    r, n, m = responses[seen], attempts[seen], np.clip(prior[seen], 1e-6, 1 - 1e-6)
    if r.size == 0:
        return float(STRENGTH_GRID[-1])
    k = STRENGTH_GRID[:, None]
    loglik = (betaln(r + k * m, n - r + k * (1 - m)) - betaln(k * m, k * (1 - m))).sum(axis=1)
    return float(STRENGTH_GRID[int(np.argmax(loglik))])


def _shrink(
    responses: pd.DataFrame, attempts: pd.DataFrame, prior: pd.DataFrame
) -> tuple[pd.DataFrame, float]:
    """Posterior mean rates of each row's cells, shrunk toward ``prior`` (same shape)."""
    r, n, m = responses.to_numpy(float), attempts.to_numpy(float), prior.to_numpy(float)
    k = _fit_strength(r.ravel(), n.ravel(), m.ravel())
    return pd.DataFrame((r + k * m) / (n + k), index=responses.index, columns=responses.columns), k


def _counts(
    events: pd.DataFrame, by: list[str], column: str, values
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(responses, attempts) tables: rows ``by``, columns ``values`` of ``column``."""
    grouped = events.groupby([*by, column])["responded"].agg(["sum", "size"])
    responses = grouped["sum"].unstack(column, fill_value=0).reindex(columns=values, fill_value=0)
    attempts = grouped["size"].unstack(column, fill_value=0).reindex(columns=values, fill_value=0)
    return responses.astype(float), attempts.astype(float)


def _hierarchy(events: pd.DataFrame, column: str, values, level: str) -> tuple:
    """Global → segment → contact shrunk rates over the values of ``column`` (slots or channels)."""
    all_r, all_n = _counts(events.assign(_all=GLOBAL), ["_all"], column, values)
    overall = events["responded"].mean()
    global_p, k_global = _shrink(
        all_r, all_n, pd.DataFrame(overall, index=all_r.index, columns=all_r.columns)
    )
    seg_r, seg_n = _counts(events, ["segment"], column, values)
    seg_prior = pd.DataFrame(
        np.repeat(global_p.to_numpy(), len(seg_r), axis=0), index=seg_r.index, columns=seg_r.columns
    )
    segment_p, k_segment = _shrink(seg_r, seg_n, seg_prior)
    con_r, con_n = _counts(events, ["contact"], column, values)
    segment_of = events.groupby("contact")["segment"].last()  # events are in time order
    con_prior = segment_p.loc[segment_of.reindex(con_r.index).to_numpy()].set_axis(con_r.index)
    contact_p, k_contact = _shrink(con_r, con_n, con_prior)
    strengths = {f"{level}_k_global": k_global, f"{level}_k_segment": k_segment, f"{level}_k_contact": k_contact}  # fmt: skip
    return global_p.iloc[0], segment_p, contact_p, segment_of, strengths


def fit_slot_model(events: pd.DataFrame) -> SlotModel:
    """Fit the slot and channel hierarchies on validated events (see ``events_frame``)."""
    events = outcome_channels(events)
    if events.empty or events["responded"].all():
        raise UserError("no channel records both answered and unanswered attempts")
    global_slots, segment_slots, contact_slots, segment_of, k_slots = _hierarchy(
        events, "slot", range(N_SLOTS), "slot"
    )
    channels = sorted(events["channel"].unique())
    global_channels, segment_channels, contact_channels, _, k_channels = _hierarchy(
        events, "channel", channels, "channel"
    )
    return SlotModel(
        global_slots=global_slots.to_numpy(),
        segment_slots=segment_slots,
        contact_slots=contact_slots,
        contact_segment=segment_of,
        global_channels=global_channels,
        segment_channels=segment_channels,
        contact_channels=contact_channels,
        strengths=k_slots | k_channels,
    )


def _top(rates: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest rates per row, best first (ties: earliest slot)."""
    return np.argsort(-rates, axis=1, kind="stable")[:, :k]


def recommendation_table(model: SlotModel, top_k: int = TOP_K) -> pd.DataFrame:
    """One row per contact, segment and the global level: ``level, key, segment, best_slots,
    best_channel, p_best`` (what the served model looks up)."""
    parts = []
    for level, slots, channels, segments in (
        ("contact", model.contact_slots, model.contact_channels, model.contact_segment.reindex(model.contact_slots.index)),
        ("segment", model.segment_slots, model.segment_channels, model.segment_slots.index.to_series()),
        ("global", pd.DataFrame([model.global_slots], index=[GLOBAL]), model.global_channels.to_frame().T.set_axis([GLOBAL]), pd.Series([GLOBAL], index=[GLOBAL])),
    ):  # fmt: skip
        rates = slots.to_numpy(float)
        best = _top(rates, top_k)
        parts.append(
            pd.DataFrame(
                {
                    "level": level,
                    "key": slots.index.astype(str),
                    "segment": segments.astype(str).to_numpy(),
                    "best_slots": [row.tolist() for row in best],
                    "best_channel": channels.loc[slots.index].idxmax(axis=1).to_numpy(),
                    "p_best": rates[np.arange(len(rates)), best[:, 0]],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


LEVELS = np.array(["contact", "segment", "global"], dtype=object)


@dataclass(frozen=True)
class RecommendationLookup:
    """A recommendation table indexed for lookups: row positions per contact key and per
    segment, and the global row. Integer contact ids are matched without formatting each as
    text when every key that could match one is a plain integer."""

    table: pd.DataFrame
    contact_keys: pd.Index  # text keys → contact_rows
    contact_rows: np.ndarray
    contact_ids: pd.Index  # the same keys as integers, where they are plain integers
    contact_id_rows: np.ndarray
    segment_keys: pd.Index
    segment_rows: np.ndarray
    global_row: int

    @classmethod
    def of(cls, table: pd.DataFrame) -> RecommendationLookup:
        table = table.reset_index(drop=True)
        level = table["level"].to_numpy()
        keys = table["key"].astype(str)
        contact = np.flatnonzero(level == "contact")
        segment = np.flatnonzero(level == "segment")
        contact_keys = pd.Index(keys.iloc[contact].to_numpy())
        # "12" is the text of the contact 12; "012" or "12.0" is no integer's text.
        plain = np.asarray(contact_keys.str.fullmatch(r"-?(0|[1-9][0-9]{0,17})"), dtype=bool)
        ids = contact_keys[plain].astype("int64")
        return cls(
            table=table,
            contact_keys=contact_keys,
            contact_rows=contact,
            contact_ids=ids,
            contact_id_rows=contact[plain],
            segment_keys=pd.Index(keys.iloc[segment].to_numpy()),
            segment_rows=segment,
            global_row=int(np.flatnonzero((level == "global") & (keys == GLOBAL).to_numpy())[0]),
        )

    def _contact_rows(self, contacts: pd.Series) -> np.ndarray:
        """Row position of each contact's own recommendation, -1 where it has none."""
        if pd.api.types.is_integer_dtype(contacts.dtype) and contacts.notna().all():
            found = self.contact_ids.get_indexer(contacts.to_numpy(dtype=np.int64))
            rows = self.contact_id_rows
        else:
            found = self.contact_keys.get_indexer(contacts.astype(str).to_numpy())
            rows = self.contact_rows
        return np.where(found >= 0, rows[found], -1)

    def recommend(self, contacts: pd.Series, segments: pd.Series | None = None) -> pd.DataFrame:
        """Each contact's row; unknown contacts get their segment's row, then the global row."""
        own = self._contact_rows(contacts)
        if segments is None:
            by_segment = np.full(len(own), -1)
        else:
            seg = pd.Series(segments.to_numpy()).astype("string").fillna(GLOBAL).to_numpy(str)
            found = self.segment_keys.get_indexer(seg)
            by_segment = np.where(found >= 0, self.segment_rows[found], -1)
        rows = np.where(own >= 0, own, np.where(by_segment >= 0, by_segment, self.global_row))
        level = LEVELS[np.where(own >= 0, 0, np.where(by_segment >= 0, 1, 2))]
        return pd.DataFrame(
            {
                "best_slots": self.table["best_slots"].to_numpy()[rows],
                "best_channel": self.table["best_channel"].to_numpy()[rows],
                "p_best": self.table["p_best"].to_numpy(float)[rows],
                "level": level,
            },
            index=contacts.index,
        )


def recommend(
    table: pd.DataFrame, contacts: pd.Series, segments: pd.Series | None = None
) -> pd.DataFrame:
    """Look up each contact; unknown contacts get their segment's row, then the global row."""
    return RecommendationLookup.of(table).recommend(contacts, segments)


class NextBestTimeModel(mlflow.pyfunc.PythonModel):
    """Served model: ``entity_id`` (+ optional ``segment``) in; ``best_slots`` (top-3 hour-of-week
    slots, 0 = Monday 00:00), ``best_channel``, ``p_best`` and the ``level`` answering out."""

    def load_context(self, context) -> None:
        table = pd.read_parquet(context.artifacts["recommendations"])
        # Parquet gives numpy arrays back; plain int lists serialise to JSON as they are.
        table["best_slots"] = table["best_slots"].map(lambda slots: [int(s) for s in slots])
        self.table = table
        self.lookup = RecommendationLookup.of(table)  # indexed once per load, not per call

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        if "entity_id" not in frame.columns:
            raise UserError("next-best-time input needs an entity_id column")
        segments = frame["segment"] if "segment" in frame.columns else None
        # Training predicts its output example before any load: no lookup yet.
        lookup = getattr(self, "lookup", None) or RecommendationLookup.of(self.table)
        out = lookup.recommend(frame["entity_id"], segments)
        out.index = pd.RangeIndex(len(out))  # in place: reset_index would copy every column
        return out


# --- Evaluation and training -----------------------------------------------------------------


def split_time(events: pd.DataFrame, holdout_fraction: float) -> pd.Timestamp:
    """Cutoff: events at or after it (the newest ``holdout_fraction`` of the span) are held out."""
    if not 0 < holdout_fraction < 1:
        raise UserError(f"holdout_fraction must be in (0, 1), not {holdout_fraction}")
    first, last = events["timestamp"].min(), events["timestamp"].max()
    return last - (last - first) * holdout_fraction


def hit_rate(slots: np.ndarray, recommended: list[list[int]], weights: np.ndarray, k: int) -> float:
    """Weighted share of responses whose slot is among the first ``k`` recommended slots."""
    hits = np.array([s in rec[:k] for s, rec in zip(slots, recommended, strict=True)])
    return float(np.sum(weights * hits) / np.sum(weights))


def evaluate_holdout(
    events: pd.DataFrame, config: NbtConfig = NbtConfig()
) -> tuple[dict[str, float], pd.DataFrame]:
    """Fit before the cutoff, score the responses after it (see the module docstring)."""
    events = outcome_channels(events)
    cutoff = split_time(events, config.holdout_fraction)
    train, test = events[events["timestamp"] < cutoff], events[events["timestamp"] >= cutoff]
    if not train["responded"].any() or (train["responded"].all()):
        raise UserError("the training period needs both answered and unanswered attempts")
    if not test["responded"].any():
        raise UserError(f"no response after the holdout cutoff {cutoff:%Y-%m-%d %H:%M}")
    model = fit_slot_model(train)
    table = recommendation_table(model, config.top_k)
    # Share of all outreach sent in each slot (+1 smoothing): the sending policy, not the contacts.
    sent = np.bincount(events["slot"], minlength=N_SLOTS) + 1.0
    slot_share = sent / sent.sum()
    responses = test[test["responded"]]
    rec = recommend(table, responses["contact"], responses["segment"])
    global_best = table.loc[table["level"] == "global", "best_slots"].iloc[0]
    slots = responses["slot"].to_numpy()
    weights = 1.0 / slot_share[slots]
    ones = np.ones(len(slots))
    recommended = list(rec["best_slots"])
    baseline = [global_best] * len(slots)
    metrics = {}
    for k in (1, config.top_k):
        metrics[f"hit_rate_top{k}"] = hit_rate(slots, recommended, weights, k)
        metrics[f"baseline_hit_rate_top{k}"] = hit_rate(slots, baseline, weights, k)
        metrics[f"hit_rate_top{k}_unweighted"] = hit_rate(slots, recommended, ones, k)
        metrics[f"baseline_hit_rate_top{k}_unweighted"] = hit_rate(slots, baseline, ones, k)
        metrics[f"lift_top{k}_pct"] = 100 * (
            metrics[f"hit_rate_top{k}"] / max(metrics[f"baseline_hit_rate_top{k}"], 1e-12) - 1
        )
    levels = rec["level"].value_counts(normalize=True)
    metrics |= {
        "n_holdout_responses": float(len(responses)),
        "n_holdout_contacts": float(responses["contact"].nunique()),
        "share_contact_level": float(levels.get("contact", 0.0)),
        "share_segment_level": float(levels.get("segment", 0.0)),
        "random_hit_rate_top1": 1 / N_SLOTS,
    }
    metrics |= {k: float(v) for k, v in model.strengths.items()}
    holdout = pd.DataFrame(
        {
            "entity_id": test["contact"].to_numpy(),
            "event_timestamp": test["timestamp"].to_numpy(),
            "slot": test["slot"].to_numpy(),
            "channel": test["channel"].to_numpy(),
            "segment": test["segment"].to_numpy(),
            "label": test["responded"].astype(int).to_numpy(),
            "weight": 1.0 / slot_share[test["slot"].to_numpy()],
        }
    )
    return metrics, holdout


def oracle_metrics(
    holdout: pd.DataFrame, truth: pd.DataFrame, top_k: int = TOP_K
) -> dict[str, float]:
    """Hit rates of the demo's true best slots on the same holdout responses: the ceiling."""
    best = truth.set_index(truth["entity_id"].astype(str))["best_slots"]
    responses = holdout[holdout["label"] == 1]
    known = responses["entity_id"].astype(str).isin(best.index)
    responses = responses[known]
    if responses.empty:
        return {}
    recommended = [list(best.loc[str(c)]) for c in responses["entity_id"]]
    slots, weights = responses["slot"].to_numpy(), responses["weight"].to_numpy()
    return {f"oracle_hit_rate_top{k}": hit_rate(slots, recommended, weights, k) for k in (1, top_k)}


def _input_example(events: pd.DataFrame) -> pd.DataFrame:
    """Two known contacts and an unknown one without a segment (marks ``segment`` optional)."""
    ids = events["contact"].drop_duplicates().head(2)
    unknown = ids.max() + 1 if pd.api.types.is_integer_dtype(ids) else f"{ids.iloc[0]}-unknown"
    segments = events.drop_duplicates("contact").head(2)["segment"].tolist()
    return pd.DataFrame(
        {"entity_id": pd.Series([*ids, unknown], dtype=ids.dtype), "segment": [*segments, None]}
    )


def train_next_best_time(
    client: MlflowClient,
    events: pd.DataFrame,
    config: NbtConfig = NbtConfig(),
    rules: Rules = RULES,
    feature_service: str = MODEL.feature_service,
    truth: pd.DataFrame | None = None,
    source: str = "dataframe",
) -> NbtResult:
    """Evaluate on a time holdout, refit on all events, log everything and register the model.

    ``events`` as returned by ``events_frame``; ``truth`` (demo only): per-contact true best slots.
    """
    metrics, holdout = evaluate_holdout(events, config)
    if truth is not None:
        metrics |= oracle_metrics(holdout, truth, config.top_k)
    model = fit_slot_model(events)
    table = recommendation_table(model, config.top_k)
    cutoff = split_time(outcome_channels(events), config.holdout_fraction)
    window = f"{events['timestamp'].min():%Y-%m-%d}..{events['timestamp'].max():%Y-%m-%d}"
    example = _input_example(events)
    python_model = NextBestTimeModel()
    python_model.table = table  # so the output example is computed by the served code path
    global_row = table[table["level"] == "global"].iloc[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recommendations.parquet"
        table.to_parquet(path, index=False)
        logged = log_pyfunc_run(
            client,
            MODEL.name,
            python_model,
            example,
            python_model.predict(None, example),
            holdout=holdout,
            params={
                "holdout_fraction": config.holdout_fraction,
                "top_k": config.top_k,
                "holdout_cutoff": f"{cutoff:%Y-%m-%d %H:%M}",
                "method": "empirical-Bayes Beta-Binomial: contact <- segment <- global",
                "global_best_slot": slot_label(int(global_row["best_slots"][0])),
                "channels": ",".join(model.global_channels.index),
            },
            metrics=metrics
            | {
                "n_events": float(len(events)),
                "n_contacts": float(len(model.contact_slots)),
                "n_segments": float(len(model.segment_slots)),
            },
            tags={
                "feature_service": feature_service,
                "feature_names": json.dumps(["slot", "channel", "segment", "responded"]),
                "data_window": window,
                "entity": "contact",
                "source": source,
            },
            dicts={
                "rules.json": rules.as_dict(),
                "segment_best_slots.json": {
                    row.key: [slot_label(int(s)) for s in row.best_slots]
                    for row in table[table["level"] == "segment"].itertuples()
                },
            },
            artifacts={"recommendations": str(path)},
            requirements=("pandas", "numpy", "pyarrow"),
            run_name=f"next_best_time {window}",
        )
    return NbtResult(logged.run_id, logged.version, metrics, table)


def run_training(
    settings: Settings,
    client: MlflowClient,
    events_csv: Path | None = None,
    contact_col: str | None = None,
    time_col: str | None = None,
    responded_col: str | None = None,
    channel_col: str | None = None,
    segment_col: str | None = None,
) -> NbtResult:
    """``crm-predict train next_best_time``: the demo CRM's activities, or a user's event CSV."""
    required = {"--contact-col": contact_col, "--time-col": time_col, "--responded-col": responded_col}  # fmt: skip
    optional = {"--channel-col": channel_col, "--segment-col": segment_col}
    config = NbtConfig(holdout_fraction=settings.holdout_fraction)
    rules = settings.load_rules()  # the rules file in effect, logged with the run
    if events_csv is None:
        if any(required.values()) or any(optional.values()):
            raise UserError(f"{', '.join([*required, *optional])} go with --events CSV")
        from crm_predict.crm_store.db import store_session

        with store_session(settings.crm_url) as session:
            events = demo_events(session)
        truth_path = settings.demo_truth_dir / f"{MODEL.name}.parquet"
        truth = pd.read_parquet(truth_path, columns=["entity_id", "best_slots"]) if truth_path.exists() else None  # fmt: skip
        return train_next_best_time(client, events, config, rules, truth=truth, source="demo")
    missing = [flag for flag, value in required.items() if not value]
    if missing:
        raise UserError(f"--events needs {', '.join(missing)}")
    frame = read_user_csv(events_csv, "events file")
    events = events_frame(frame, contact_col, time_col, responded_col, channel_col, segment_col)
    return train_next_best_time(client, events, config, rules, source=f"csv:{events_csv.name}")


# --- Tags and tasks (the write-back's rules for this model) ----------------------------------


def best_slot_value(slots, channel) -> str:
    """'Tue 14:00 email' for the best hour-of-week slot and channel."""
    label = R.slot_label(int(list(slots)[0]))
    return label if channel is None or pd.isna(channel) else f"{label} {channel}"


def tag_values(
    scored: pd.DataFrame, rules: Rules = RULES, rfm_medians: tuple | None = None
) -> dict[str, np.ndarray]:
    """``best_slot_value`` of every row, built once per distinct (slot, channel) pair, and the
    contact's ``high_activity`` flag."""
    values = {}
    if has(scored, "visits_30d"):  # blank for customers: clv's
        visits = pd.to_numeric(scored["visits_30d"], errors="coerce")
        flag = high_activity(visits, rules)
        values[R.TAG_HIGH_ACTIVITY] = np.where(visits.isna().to_numpy(), LEAVE, flag).astype(object)
    slots = scored["best_slots"].to_numpy()
    first = np.fromiter((s[0] for s in slots), dtype=np.int64, count=len(slots))
    if has(scored, "best_channel"):
        codes, channels = pd.factorize(scored["best_channel"].astype(object))
    else:
        codes, channels = np.full(len(first), -1), pd.Index([])
    pairs, inverse = np.unique(first * (len(channels) + 1) + codes + 1, return_inverse=True)
    labels = [
        best_slot_value([pair // (len(channels) + 1)], channels[c - 1] if c else None)
        for pair, c in zip(pairs, pairs % (len(channels) + 1), strict=True)
    ]
    return {R.TAG_BEST_SLOT: np.array(labels, dtype=object)[inverse.reshape(-1)], **values}


def tasks(scored: pd.DataFrame, now: datetime, rules: Rules = RULES) -> list[TaskSpec]:
    """No task rule reads this model's scores."""
    return []
