"""Demo CRM with known ground truth: a seeded B2B + B2C history whose outcomes are drawn from
latent probabilities of what is observable at each model's prediction time.

Every outcome is drawn from ``p = sigmoid(x + e)``, ``x`` a linear function (plus a few interactions)
of features observable at the prediction time ``t`` and ``e ~ N(0, sigma)`` unobserved noise. The
truth files hold ``p = E_e[sigmoid(x + e)] ≈ sigmoid(x / sqrt(1 + pi sigma^2 / 8))``: the best any
model can do from the observables, so AUC(label, p) is the oracle AUC.

Observables behind each latent ``x`` (all derivable from the CRM tables as of ``t``):

* lead_scoring, ``t = leads.created_at + 7 d``: account ``industry`` in the target industries
  (missing = no), contact ``is_decision_maker`` (missing = no), lead ``region`` outside the target
  regions (missing = outside), lead ``source``, account ``size_band``, and counts of the lead's
  activities with ``occurred_at`` in ``[created_at, t)`` by type: ``site_visit`` (log1p),
  ``pricing_page_view`` and ``whitepaper_download`` (capped at 3), ``trial_request`` and ``demo``
  (any), ``email_open`` (log1p); interactions decision-maker × trial, target industry × pricing.
  Label: ``converted_at`` in ``(t, created_at + 90 d]``; leads converted before ``t`` and leads
  whose 90-day window ends after ``as_of`` have no truth row.
* deal_health, ``t = deals.created_at + 21 d``: stage at ``t`` (``deal_stage_history``), days in
  that stage, log1p(count of the deal's ``call``/``email``/``meeting`` activities before ``t``), days
  since the last of them (30 when none), close-date slips before ``t`` (activities of type
  ``close_date_slip``), log(amount / typical amount of the account's ``annual_revenue_band``) and
  the mean ``sentiment`` of the deal's tickets opened before ``t`` (0 when none). Label:
  ``outcome == "won"``; only deals open at ``t`` and closed by ``as_of`` have truth rows.
* churn, ``t`` = the customer's cutoff in ``[as_of - 360 d, as_of - 90 d]``: days since the last
  order, orders in the last 365 days, mean order amount, tenure since ``signup_at``, engagement
  events (``email_open``, ``email_click``, ``app_visit``, ``site_visit``, ``coupon_use``,
  ``referral``) in the last 30 days, mean ticket sentiment and ticket count in the last 90 days,
  ``membership_level``. Label: no order in ``(t, t + 90 d]`` (orders after ``t`` are drawn to agree).
  ``contacts.points`` is an ``as_of`` snapshot of lifetime spend: not observable at ``t``.

Messages (``demo_messages``) lean on outcomes drawn above, as customers' words do: a churner's
messages in the 90 days before its cutoff complain more (and a share of churners write extra ones
then); a deal's contact writes in its first ``DEAL_MESSAGE_DAYS``, a won deal's messages asking for
quotes more, a lost one's comparing with competitors; a ticket's body reads its ticket's sentiment.
They carry part of each outcome's unobserved noise, so the truth ``p`` is the oracle of the
tabular observables above, and a model reading messages may pass it.

Orders follow a BG/NBD-like process (purchase rate per customer from a Gamma, dropout after each
purchase from a Beta, first order at signup) with Gamma-Gamma order values; ``clv.parquet`` holds
those latent parameters and what was realised in ``(as_of - 90 d, as_of]``.

Next-best-time: each contact responds in hour-of-week slot ``s`` (0 = Monday 00:00) with
probability ``base * ((1 - w) * segment_pattern[s] + w * own_pattern[s])`` (patterns mean 1, capped
at 0.95; calls answer with ``call_factor`` times that). Outbound ``email``/``call`` activities are
sent at varied slots and ``responded`` is drawn from it; engagement events and orders happen at
slots drawn from the same mixture. ``next_best_time.parquet`` is wide: one row per contact with
``segment``, ``call_factor``, ``best_slots`` and ``p_best`` (top 3) and ``p_slots`` (all 168).

Noise on purpose: missing industry/region/phone/gender/age band, duplicate contacts (same email
or phone in another format, another source), activities logged days late (``created_at`` after
``occurred_at``), deals that close-date slip, late lead conversions outside the window.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from crm_predict.crm_store.bulk import indexes_deferred, reset_id_sequences, store_is_empty
from crm_predict.crm_store.demo_messages import message_frame, write_messages
from crm_predict.crm_store.importer import Importer, Source
from crm_predict.crm_store.mapping import ENTITY_ORDER, load_mapping
from sqlalchemy.orm import Session

from crm_predict.core.errors import UserError
from crm_predict.core.rules import RULES
from crm_predict.core.settings import Settings


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


AS_OF = datetime(2026, 6, 30)
HISTORY_DAYS = 900  # ~30 months of history before as_of
CUSTOMER_CHUNK = 100_000  # customers generated and written per pass (memory bound for 1M)
LEAD_RATIO, DEAL_RATIO, ACCOUNT_RATIO = 0.3, 0.1, 0.05
# Messages: this many per contact, written by a share of the contacts over the last year.
MESSAGE_RATIO, MESSAGE_WRITERS, MESSAGE_DAYS = 0.8, 0.25, 365
TICKET_BODY_SHARE = 0.5  # of the tickets opened in that year, with their text as a message
# Messages leaning on outcomes: (intent weights in INTENTS' order, sentiment weights in
# SENTIMENTS'), on the draws of ``write_messages``.
CHURN_WRITERS, CHURN_MESSAGES = 0.2, 1.2  # share of churners writing extra, messages (mean)
DEAL_MESSAGES, DEAL_MESSAGE_DAYS = 1.5, 45  # per deal (mean), in its first days
CHURN_LEAN = ((0.8, 0.7, 1.2, 2.0), (0.5, 3.0, 1.2))  # support and complaints
WON_LEAN = ((1.0, 2.5, 0.6, 0.8), (1.5, 0.6, 0.9))  # quote requests
LOST_LEAN = ((1.0, 0.6, 2.5, 1.2), (0.7, 1.4, 1.5))  # competitor comparisons, hesitation
BULK_TABLES = ENTITY_ORDER[2:]  # indexes rebuilt after the load: all but small users, accounts

REGIONS = ("north", "east", "south", "west")
INDUSTRIES = _words("software finance healthcare retail manufacturing education logistics")
INDUSTRY_P = (0.2, 0.12, 0.12, 0.16, 0.18, 0.1, 0.12)
SIZE_BANDS = ("1-10", "11-50", "51-200", "201-1000", "1000+")
SIZE_EFFECT = np.array([-0.3, 0.0, 0.2, 0.3, 0.4])
REVENUE_BANDS = ("<1M", "1M-10M", "10M-100M", ">100M")
TYPICAL_DEAL = np.array([5_000.0, 20_000.0, 80_000.0, 250_000.0])  # by revenue band
LEAD_SOURCES = ("web_form", "referral", "event", "paid_search", "cold_outbound", "partner")
LEAD_SOURCE_P = (0.3, 0.1, 0.12, 0.22, 0.18, 0.08)
SOURCE_EFFECT = np.array([0.0, 0.6, 0.3, -0.2, -0.6, 0.3])
ROLES = ("ceo", "cto", "cfo", "vp_sales", "head_of_it", "manager", "analyst", "engineer")
ROLE_DM_P = np.array([0.9, 0.9, 0.9, 0.8, 0.6, 0.2, 0.05, 0.05])
DEAL_STAGES = ("qualification", "needs_analysis", "proposal", "negotiation")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SEGMENT = np.array([1, 1, 2, 2, 3, 3])  # index into SEGMENTS
MEMBERSHIP = ("bronze", "silver", "gold", "platinum")
MEMBERSHIP_EFFECT = np.array([0.3, 0.0, -0.3, -0.6])
SEGMENTS = ("b2b", "b2c_young", "b2c_mid", "b2c_senior")
ENGAGEMENT_TYPES = _words("email_open email_click app_visit site_visit coupon_use referral")
ENGAGEMENT_P = (0.35, 0.12, 0.2, 0.25, 0.05, 0.03)
LEAD_ACTIVITY_TYPES = _words(
    "site_visit pricing_page_view whitepaper_download trial_request demo email_open"
)
LEAD_ACTIVITY_RATES = np.array([2.5, 0.5, 0.35, 0.15, 0.12, 1.0])  # first week, unit engagement
PRIORITIES = ("low", "medium", "high", "urgent")
FIRST_NAMES = _words(
    "Ana Ben Chen Dana Eli Fatima Goran Hana Ivan Jun Kai Lena Mia Noah Omar Priya Quinn Rosa Sam "
    "Tariq"
)
LAST_NAMES = _words(
    "Abe Berg Costa Diaz Eriksen Fischer Gupta Horvat Ito Jensen Kowalski Lopez Moreau Nowak "
    "Okafor Park Rossi Silva Tanaka Weber"
)
COMPANY_WORDS = _words(
    "Acme Blue Cedar Delta Ember Falcon Granite Harbor Iris Juniper Keystone Lumen Maple Nimbus "
    "Orion Pioneer"
)
COMPANY_SUFFIX = ("Labs", "Systems", "Group", "Partners", "Works", "Holdings", "Solutions", "Co")

# Noise levels of the latent outcomes (unobserved by any model).
LEAD_SIGMA, DEAL_SIGMA, CHURN_SIGMA = 0.5, 0.5, 0.5
_EPOCH = np.datetime64("1970-01-01T00:00:00", "s")

Progress = Callable[[str, float], None]
Rng = np.random.Generator


# --- time and randomness helpers --------------------------------------------------------------


def _day_number(when: datetime) -> float:
    """Days since 1970-01-01 (a Thursday) as a float: the time axis used internally."""
    return (np.datetime64(when, "s") - _EPOCH) / np.timedelta64(1, "D")


def _timestamps(days: np.ndarray) -> np.ndarray:
    """Float day numbers → datetime64[s] (whole seconds, so every backend stores them exactly);
    NaN → NaT."""
    days = np.asarray(days, dtype=float)
    seconds = np.rint(np.nan_to_num(days) * 86_400).astype("int64").astype("timedelta64[s]")
    out = _EPOCH + seconds
    out[np.isnan(days)] = np.datetime64("NaT")
    return out


def _week_start(days: np.ndarray) -> np.ndarray:
    """Monday 00:00 of the week containing each day number."""
    return np.floor((days + 3) / 7) * 7 - 3


def _slot_of(days: np.ndarray) -> np.ndarray:
    """Hour-of-week slot 0..167 (Monday 00:00 = 0) of each day number."""
    return np.minimum(((days - _week_start(days)) * 24).astype(int), 167)


def _at_slot(rng: Rng, days: np.ndarray, slot: np.ndarray, lo: np.ndarray, hi: float) -> np.ndarray:
    """Move each time to the given slot of its own week (random minute), kept inside [lo, hi]."""
    out = _week_start(days) + (slot + rng.random(len(days))) / 24
    out = np.where(out > hi, out - 7, out)
    return np.where(out < lo, np.minimum(out + 7, hi), out)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw_outcome(rng: Rng, x: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Label ~ Bernoulli(sigmoid(x + noise)); returns (p marginalised over the noise, label)."""
    label = rng.random(len(x)) < _sigmoid(x + rng.normal(0.0, sigma, len(x)))
    return _sigmoid(x / math.sqrt(1 + math.pi * sigma**2 / 8)), label


def _choice(rng: Rng, n: int, p) -> np.ndarray:
    return rng.choice(len(p), size=n, p=np.asarray(p) / np.sum(p))


def _events(
    rng: Rng, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``counts[i]`` uniform times in ``[lo[i], hi[i])`` per owner i → (owner index, time)."""
    counts = np.where(hi > lo, np.maximum(np.asarray(counts, dtype=np.int64), 0), 0)
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, lo[owner] + rng.random(len(owner)) * np.maximum(hi[owner] - lo[owner], 0)


def _null(values: np.ndarray, rng: Rng, rate: float) -> np.ndarray:
    """Blank out a share of values (missing data)."""
    out = np.asarray(values, dtype=object).copy()
    out[rng.random(len(out)) < rate] = None
    return out


def _isin(values: np.ndarray, options) -> np.ndarray:
    """Membership test that tolerates None in object arrays."""
    return pd.Series(values, dtype=object).isin(options).to_numpy()


def _nullable(values, n: int, dtype: str = "Int64") -> pd.api.extensions.ExtensionArray:
    """``values`` as a nullable column; None: all NULL (no Python list of None to convert)."""
    if values is not None:
        return pd.array(values, dtype=dtype)
    cls = pd.arrays.IntegerArray if dtype == "Int64" else pd.arrays.BooleanArray
    return cls(np.zeros(n, dtype=np.int64 if dtype == "Int64" else bool), np.ones(n, dtype=bool))


def _optional_ids(values: np.ndarray, present: np.ndarray) -> pd.arrays.IntegerArray:
    """Nullable integer column: ``values`` where ``present``, NULL elsewhere."""
    out = pd.array(np.nan_to_num(values).astype(np.int64), dtype="Int64")
    out[~np.asarray(present, dtype=bool)] = pd.NA
    return out


def _pick(options: tuple, idx: np.ndarray) -> np.ndarray:
    return np.asarray(options, dtype=object)[idx]


def _group_mean(groups: np.ndarray, values: np.ndarray, n: int, empty: float) -> np.ndarray:
    total = np.bincount(groups, weights=values, minlength=n)
    count = np.bincount(groups, minlength=n)
    return np.where(count > 0, total / np.maximum(count, 1), empty)


def _group_max(groups: np.ndarray, values: np.ndarray, n: int, empty: float) -> np.ndarray:
    out = np.full(n, -np.inf)
    np.maximum.at(out, groups, values)
    return np.where(np.isfinite(out), out, empty)


# --- next-best-time response patterns ---------------------------------------------------------


def _segment_patterns() -> np.ndarray:
    """(4, 168) response shapes with mean 1: B2B office hours, young evenings/weekends, …"""
    hours = np.arange(24)

    def bumps(*peaks: tuple[float, float, float]) -> np.ndarray:
        return 0.05 + sum(h * np.exp(-0.5 * ((hours - c) / w) ** 2) for c, w, h in peaks)

    weekday, weekend = np.array([1.0] * 5 + [0.0] * 2), np.array([0.0] * 5 + [1.0] * 2)
    shapes = [
        np.outer(weekday, bumps((10, 1.5, 1.0), (14.5, 1.5, 0.8)))
        + 0.1 * np.outer(weekend, bumps((11, 2, 0.3))),
        np.outer(weekday, bumps((20.5, 1.5, 1.0), (13, 1, 0.3)))
        + np.outer(weekend, bumps((15, 3, 1.0))),
        np.outer(weekday, bumps((7.5, 1, 0.7), (12.5, 1, 0.6), (20.5, 1.2, 0.9)))
        + np.outer(weekend, bumps((10, 2, 0.6))),
        np.outer(np.ones(7), bumps((9.5, 1.5, 1.0), (16, 2, 0.4))),
    ]
    out = np.array([s.reshape(-1) for s in shapes])
    return out / out.mean(axis=1, keepdims=True)


SEGMENT_PATTERNS = _segment_patterns()


@dataclass
class ResponseParams:
    """Per-contact next-best-time parameters (see the module docstring)."""

    segment: np.ndarray  # index into SEGMENTS
    weight: np.ndarray  # share of the individual pattern
    fav_hour: np.ndarray
    kappa: np.ndarray  # concentration around the favourite hour
    day_weights: np.ndarray  # (n, 7), mean 1
    base: np.ndarray
    call_factor: np.ndarray
    hour_norm: np.ndarray  # mean over the 24 hours of exp(kappa cos(.)), so own patterns mean 1

    @classmethod
    def draw(cls, rng: Rng, segment: np.ndarray) -> ResponseParams:
        n = len(segment)
        fav = np.where(segment == 0, rng.uniform(8, 18, n), rng.uniform(6, 23, n))
        kappa = rng.uniform(1.5, 4.0, n)
        angles = 2 * np.pi * (np.arange(24)[None, :] - fav[:, None]) / 24
        return cls(
            segment=segment,
            weight=rng.beta(2.0, 2.0, n),
            fav_hour=fav,
            kappa=kappa,
            day_weights=rng.dirichlet(np.full(7, 2.0), n) * 7,
            base=rng.beta(2.0, 9.0, n),
            call_factor=rng.lognormal(0.0, 0.4, n),
            hour_norm=np.exp(kappa[:, None] * np.cos(angles)).mean(axis=1),
        )

    def p(self, idx: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Response probability (email) of contacts ``idx`` in slots ``slot``."""
        hour, day = slot % 24, slot // 24
        own = np.exp(self.kappa[idx] * np.cos(2 * np.pi * (hour - self.fav_hour[idx]) / 24))
        own = own / self.hour_norm[idx] * self.day_weights[idx, day]
        shape = (1 - self.weight[idx]) * SEGMENT_PATTERNS[self.segment[idx], slot] + self.weight[
            idx
        ] * own
        return np.minimum(self.base[idx] * shape, 0.95)

    def all_slots(self, idx: np.ndarray) -> np.ndarray:
        """(len(idx), 168) response probabilities: ``p`` for every slot, with the own pattern
        computed as (hour of day) x (day of week), 24 + 7 terms per contact instead of 168."""
        angles = 2 * np.pi * (np.arange(24)[None, :] - self.fav_hour[idx, None]) / 24
        hour = np.exp(self.kappa[idx, None] * np.cos(angles)) / self.hour_norm[idx, None]
        own = (self.day_weights[idx, :, None] * hour[:, None, :]).reshape(len(idx), 168)
        weight = self.weight[idx, None]
        shape = (1 - weight) * SEGMENT_PATTERNS[self.segment[idx]] + weight * own
        return np.minimum(self.base[idx, None] * shape, 0.95)

    def sample_slots(self, rng: Rng, idx: np.ndarray) -> np.ndarray:
        """Slots where contacts ``idx`` are active, drawn from their mixture pattern."""
        n = len(idx)
        seg_cdf = np.cumsum(SEGMENT_PATTERNS, axis=1) / 168
        seg_slot = _segment_sample(seg_cdf, self.segment[idx], rng.random(n))
        day_cdf = np.cumsum(self.day_weights[idx], axis=1) / 7
        day = np.minimum((day_cdf < rng.random(n)[:, None]).sum(axis=1), 6)
        hour = (
            np.rint(self.fav_hour[idx] + rng.vonmises(0.0, self.kappa[idx]) * 24 / (2 * np.pi)) % 24
        )
        own_slot = (day * 24 + hour).astype(int)
        return np.where(rng.random(n) < self.weight[idx], own_slot, np.minimum(seg_slot, 167))


def _segment_sample(seg_cdf: np.ndarray, segment: np.ndarray, u: np.ndarray) -> np.ndarray:
    out = np.empty(len(u), dtype=int)
    for s in range(len(SEGMENTS)):
        mask = segment == s
        out[mask] = np.searchsorted(seg_cdf[s], u[mask])
    return out


def _sender_slots(rng: Rng, n: int) -> np.ndarray:
    """When sales/marketing send: mostly weekday office hours, the rest anywhere in the week."""
    office = rng.integers(0, 5, n) * 24 + rng.integers(8, 18, n)
    return np.where(rng.random(n) < 0.6, office, rng.integers(0, 168, n))


# --- frames and writing -----------------------------------------------------------------------


@dataclass
class _Rows:
    """Activity and ticket rows of a history ending at ``end``, with the next free id per table
    (explicit ids keep runs identical on every backend)."""

    end: float
    next_id: dict[str, int] = field(default_factory=dict)

    def take(self, table: str, n: int) -> np.ndarray:
        start = self.next_id.get(table, 1)
        self.next_id[table] = start + n
        return np.arange(start, start + n)

    def activities(
        self, rng: Rng, occurred, type_, channel, responded=None, **refs
    ) -> pd.DataFrame:
        """Activity rows (``refs``: contact_id, lead_id, deal_id); about 3 % are logged late
        (``created_at`` days after ``occurred_at``)."""
        n = len(occurred)
        late = rng.random(n) < 0.03
        delay = np.where(late, rng.uniform(1, 10, n), rng.uniform(0, 0.01, n))
        created = np.minimum(occurred + delay, self.end)
        return pd.DataFrame(
            {
                "id": self.take("activities", n),
                **{c: _nullable(refs.get(c), n) for c in ("contact_id", "lead_id", "deal_id")},
                "type": type_,
                "channel": channel,
                "occurred_at": _timestamps(occurred),
                "responded": _nullable(responded, n, "boolean"),
                "created_at": _timestamps(np.maximum(created, occurred)),
            }
        )

    def outbound(self, rng: Rng, plan: tuple, contact_ids, lead_ids=None) -> pd.DataFrame:
        """The emails/calls of ``plan`` (``_outbound_plan``) up to the end; ``responded``
        (opened/replied, answered) drawn from the slot's p."""
        owner, when, is_call, p_resp = plan
        keep = when <= self.end
        owner, when, is_call, p_resp = owner[keep], when[keep], is_call[keep], p_resp[keep]
        responded = rng.random(len(when)) < p_resp
        kinds = np.where(is_call, "call", "email"), np.where(is_call, "phone", "email")
        refs = {"contact_id": contact_ids[owner]}
        if lead_ids is not None:
            refs["lead_id"] = lead_ids[owner]
        return self.activities(rng, when, *kinds, responded, **refs)

    def tickets(self, rng: Rng, opened, sentiment, subject: str, **refs) -> pd.DataFrame:
        """Ticket rows (``refs``: contact_id, account_id, deal_id); angry ones are urgent."""
        n = len(opened)
        closed = opened + rng.exponential(2.0, n)
        priority = np.where(sentiment < -0.5, rng.integers(2, 4, n), rng.integers(0, 3, n))
        return pd.DataFrame(
            {
                "id": self.take("tickets", n),
                **{c: _nullable(refs.get(c), n) for c in ("contact_id", "account_id", "deal_id")},
                "opened_at": _timestamps(opened),
                "closed_at": _timestamps(np.where(closed <= self.end, closed, np.nan)),
                "priority": _pick(PRIORITIES, priority),
                "sentiment": sentiment,
                "subject": subject,
            }
        )


def _outbound_plan(rng: Rng, params: ResponseParams, counts, lo, hi, end: float, calls: float):
    """Outbound contact in ``[lo, hi)`` sent at varied slots, a share ``calls`` of it calls:
    (owner index, time, is a call, response probability)."""
    owner, when = _events(rng, counts, lo, hi)
    when = _at_slot(rng, when, _sender_slots(rng, len(owner)), lo[owner], end)
    is_call = rng.random(len(owner)) < calls
    p_resp = params.p(owner, _slot_of(when)) * np.where(is_call, params.call_factor[owner], 1.0)
    return owner, when, is_call, p_resp


def _truth_frame(entity_id, event_day, p, label) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": np.asarray(entity_id, dtype=np.int64),
            "event_timestamp": _timestamps(event_day).astype("datetime64[us]"),
            "p": np.asarray(p, dtype=float),
            "label": np.asarray(label, dtype=np.int8),
        }
    )


# --- the generator ----------------------------------------------------------------------------


def demo_counts(n_customers: int) -> dict[str, int]:
    """How many users, accounts and leads go with ``n_customers`` (deals follow conversions)."""
    return {
        "users": max(8, n_customers // 2500),
        "accounts": max(10, round(ACCOUNT_RATIO * n_customers)),
        "leads": max(30, round(LEAD_RATIO * n_customers)),
        "deals": max(10, round(DEAL_RATIO * n_customers)),
    }


def generate_demo(
    session: Session,
    settings: Settings,
    n_customers: int,
    as_of: datetime = AS_OF,
    seed: int | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write a demo CRM ending at ``as_of`` into an empty store and its truth files; returns the
    row count per table. Same seed → identical tables. The caller commits."""
    if n_customers < 10:
        raise UserError(f"--customers must be at least 10 (got {n_customers})")
    if not store_is_empty(session):
        raise UserError("the CRM store is not empty; use --replace to overwrite it")
    seed = settings.seed if seed is None else seed
    report = progress or (lambda _step, _done: None)
    with indexes_deferred(session, BULK_TABLES):
        written = _generate(
            session, Path(settings.demo_truth_dir), n_customers, _day_number(as_of), seed, report
        )
    reset_id_sequences(session)
    report("done", 1.0)
    return {name: written[name] for name in ENTITY_ORDER}


def _generate(
    session: Session, truth_dir: Path, n_customers: int, end: float, seed: int, report: Progress
) -> dict[str, int]:
    """The generator proper: writes every table and truth file, returns rows written per table."""
    sizes = demo_counts(n_customers)
    written: Counter[str] = Counter()

    # The demo goes in through the import path, as any CRM's export does (the demo preset).
    importer = Importer(session, load_mapping("demo"))

    def write(tables: dict[str, pd.DataFrame]) -> None:
        for name, frame in tables.items():
            result = importer.add(name, frame, Source(f"demo {name}"))
            written[name] += result.inserted
            written["deal_stage_history"] += result.stage_changes  # a deal's stage is one too

    def rng(part: int, chunk: int = 0) -> Rng:
        return np.random.default_rng([seed, part, chunk])

    rows = _Rows(end)
    truth_dir.mkdir(parents=True, exist_ok=True)

    report("users and accounts", 0.0)
    users = _users(rng(1), sizes["users"])
    accounts = _accounts(rng(2), sizes["accounts"], users, end)
    write({"users": users, "accounts": accounts})

    report("leads", 0.05)
    n_leads = sizes["leads"]
    b2b_params = ResponseParams.draw(rng(3), np.zeros(n_leads, dtype=int))
    leads = _leads(rng(4), rows, n_leads, accounts, users, b2b_params)
    write(leads.tables)
    leads.truth.to_parquet(truth_dir / "lead_scoring.parquet", index=False)

    report("deals", 0.15)
    deals = _deals(rng(5), rows, sizes["deals"], leads, accounts, b2b_params)
    write(deals.tables)
    deals.truth.to_parquet(truth_dir / "deal_health.parquet", index=False)

    lead_contacts = leads.tables["contacts"]["id"].to_numpy()
    with pq.ParquetWriter(truth_dir / "next_best_time.parquet", _NBT_SCHEMA) as nbt_writer:
        nbt_writer.write_table(_nbt_truth(b2b_params, np.arange(n_leads), lead_contacts))
        churn_parts, clv_parts, dup_parts = [], [], []
        ticket_parts = [deals.tables["tickets"]]
        first_id = n_leads + 1
        for chunk, start in enumerate(range(0, n_customers, CUSTOMER_CHUNK)):
            report("customers", 0.2 + 0.75 * start / n_customers)
            n = min(CUSTOMER_CHUNK, n_customers - start)
            contact_ids = np.arange(first_id + start, first_id + start + n)
            part = _customers(rng(6, chunk), rows, contact_ids, users)
            write(part.tables)
            churn_parts.append(part.churn_truth)
            clv_parts.append(part.clv_truth)
            dup_parts.append(part.duplicates)
            ticket_parts.append(
                part.tables["tickets"][["id", "contact_id", "opened_at", "deal_id", "sentiment"]]
            )
            nbt_writer.write_table(_nbt_truth(part.params, np.arange(n), contact_ids))

    report("duplicate contacts", 0.95)
    duplicates = pd.concat(dup_parts, ignore_index=True)
    duplicates["id"] = np.arange(len(duplicates)) + first_id + n_customers
    write({"contacts": duplicates})
    churn = pd.concat(churn_parts, ignore_index=True)
    churn.to_parquet(truth_dir / "churn.parquet", index=False)
    pd.concat(clv_parts, ignore_index=True).to_parquet(truth_dir / "clv.parquet", index=False)
    report("messages", 0.96)
    writers = np.arange(1, first_id + n_customers)  # lead contacts and customers, not duplicates
    tickets = pd.concat(ticket_parts, ignore_index=True)
    write({"messages": _messages(rng(7), writers, deals.tables["deals"], tickets, churn, end)})
    report("indexes", 0.97)
    return written


def _messages(
    rng: Rng,
    contact_ids: np.ndarray,
    deals: pd.DataFrame,
    tickets: pd.DataFrame,
    churn: pd.DataFrame,
    end: float,
) -> pd.DataFrame:
    """Inbound bilingual messages with their intent and sentiment (``demo_messages``) over the
    last ``MESSAGE_DAYS``: from a share of the contacts (every deal's among them), each linked to
    the writer's deal open at the time, plus those of deals and churners (``_outcome_messages``),
    leaning on their outcomes; and the body of a share of the tickets opened then, reading the
    ticket's sentiment."""
    start, stop = _timestamps(np.array([end - MESSAGE_DAYS, end])).astype(datetime)
    n = max(1, round(MESSAGE_RATIO * len(contact_ids)))
    sample = rng.choice(contact_ids, max(1, round(MESSAGE_WRITERS * len(contact_ids))), replace=False)  # fmt: skip
    writers = np.union1d(sample, deals["contact_id"].dropna().astype(np.int64))
    own = np.random.default_rng(int(rng.integers(2**31)))
    frames = [message_frame(n, own, start, stop, writers), *_outcome_messages(own, deals, churn, end)]  # fmt: skip
    messages = pd.concat(frames, ignore_index=True).sort_values("sent_at", kind="stable", ignore_index=True)  # fmt: skip
    deal = _latest(messages, deals, "created_at")
    open_then = deal["_found"].notna() & ~(deal["closed_at"] < messages["sent_at"])
    messages["deal_id"] = _optional_ids(deal["_found"].to_numpy(), open_then.to_numpy())
    messages["ticket_id"] = _nullable(None, len(messages))
    messages = write_messages(messages, own, *_leanings(messages, deals, churn))

    recent = tickets[tickets["contact_id"].notna() & (tickets["opened_at"] >= start)]
    recent = recent[rng.random(len(recent)) < TICKET_BODY_SHARE]
    # Tickets have no source id in the demo: a body names its ticket by the id the store gives
    # it (written in order into an empty store: the demo's own).
    bodies = message_frame(len(recent), own, start, stop, channel="ticket").assign(
        contact_id=recent["contact_id"].to_numpy(),
        sent_at=recent["opened_at"].astype(messages["sent_at"].dtype).to_numpy(),
        deal_id=pd.array(recent["deal_id"], dtype="Int64"),
        ticket_id=pd.array(recent["id"], dtype="Int64"),
    )
    intent_w, sentiment_w = _leanings(bodies, deals, churn)
    mood = recent["sentiment"].astype(float).fillna(0.0).to_numpy()[:, None]
    sentiment_w *= np.exp(1.5 * mood * np.array([1.0, -1.0, 0.0]))  # -1 complains, +1 pleased
    bodies = write_messages(bodies, own, intent_w, sentiment_w)
    out = pd.concat([messages, bodies], ignore_index=True)
    return out.sort_values("sent_at", kind="stable", ignore_index=True)


def _days(stamps) -> np.ndarray:
    """datetime64 values → float day numbers (NaT → NaN)."""
    return (np.asarray(stamps, dtype="datetime64[s]") - _EPOCH) / np.timedelta64(1, "D")


def _outcome_messages(rng: Rng, deals: pd.DataFrame, churn: pd.DataFrame, end: float) -> list[pd.DataFrame]:  # fmt: skip
    """Messages (``message_frame``'s, with their writer and time) of deals in their first
    ``DEAL_MESSAGE_DAYS`` while open, and of a share of the churners in the 90 days before their
    cutoff, inside the messages' window."""
    first = end - MESSAGE_DAYS
    deals = deals[deals["contact_id"].notna()]
    created, closed = _days(deals["created_at"]), _days(deals["closed_at"])
    lo = np.maximum(created, first)
    hi = np.fmin(np.fmin(closed, created + DEAL_MESSAGE_DAYS), end)
    deal_i, deal_when = _events(rng, rng.poisson(DEAL_MESSAGES, len(deals)), lo, hi)
    churners = churn[(churn["label"] == 1).to_numpy() & (rng.random(len(churn)) < CHURN_WRITERS)]
    cutoff = _days(churners["event_timestamp"])
    churn_i, churn_when = _events(
        rng, rng.poisson(CHURN_MESSAGES, len(churners)), np.maximum(cutoff - 90, first), cutoff
    )
    start, stop = _timestamps(np.array([first, end])).astype(datetime)
    out = []
    for writers, when in (
        (deals["contact_id"].to_numpy(dtype=np.int64)[deal_i], deal_when),
        (churners["entity_id"].to_numpy(dtype=np.int64)[churn_i], churn_when),
    ):
        frame = message_frame(len(when), rng, start, stop)
        frame.insert(0, "contact_id", writers)
        out.append(frame.assign(sent_at=_timestamps(when).astype("datetime64[ns]")))
    return out


def _leanings(messages: pd.DataFrame, deals: pd.DataFrame, churn: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per message, the weights on its intent and sentiment draws: its deal's outcome
    (``WON_LEAN``, ``LOST_LEAN``), its writer's churn in the 90 days before the cutoff
    (``CHURN_LEAN``)."""
    n = len(messages)
    intent_w, sentiment_w = np.ones((n, 4)), np.ones((n, 3))
    outcome = messages["deal_id"].map(deals.set_index("id")["outcome"]).to_numpy()
    for value, (lean_intent, lean_sentiment) in (("won", WON_LEAN), ("lost", LOST_LEAN)):
        hit = outcome == value
        intent_w[hit] *= lean_intent
        sentiment_w[hit] *= lean_sentiment
    truth = churn.set_index("entity_id")
    writer = messages["contact_id"].astype("Int64")
    cutoff = writer.map(truth["event_timestamp"]).astype("datetime64[ns]")
    sent = messages["sent_at"].astype("datetime64[ns]")
    before = (writer.map(truth["label"]) == 1).fillna(False).to_numpy(dtype=bool) & (
        (sent > cutoff - pd.Timedelta(days=90)) & (sent <= cutoff)
    ).fillna(False).to_numpy(dtype=bool)
    intent_w[before] *= CHURN_LEAN[0]
    sentiment_w[before] *= CHURN_LEAN[1]
    return intent_w, sentiment_w


def _latest(messages: pd.DataFrame, rows: pd.DataFrame, at: str) -> pd.DataFrame:
    """Each message's latest row of ``rows`` of its contact with ``at`` at or before it was sent,
    its id as ``_found`` (NaN where none), row for row."""
    rows = rows[rows["contact_id"].notna()].astype({"contact_id": np.int64})
    rows = rows.assign(_at=rows[at].astype("datetime64[ns]")).rename(columns={"id": "_found"})
    left = messages[["contact_id", "sent_at"]].astype({"sent_at": "datetime64[ns]"})
    found = pd.merge_asof(
        left.reset_index().sort_values("sent_at"), rows.sort_values("_at"),
        left_on="sent_at", right_on="_at", by="contact_id",
    )  # fmt: skip
    return found.set_index("index").reindex(messages.index)


def _users(rng: Rng, n: int) -> pd.DataFrame:
    """One manager per region (ids 1–4, written first), reps spread over the regions under them."""
    region = np.concatenate([np.arange(4), rng.integers(0, 4, n - 4)])
    ids = np.arange(1, n + 1)
    names = [f"{FIRST_NAMES[i % 20]} {LAST_NAMES[(i * 7) % 20]}" for i in range(n)]
    return pd.DataFrame(
        {
            "id": ids,
            "name": names,
            "email": [f"user{i}@crm-predict.example" for i in ids],
            "region": _pick(REGIONS, region),
            "manager_id": _optional_ids(region + 1, ids > 4),
        }
    )


def _owners_by_region(rng: Rng, users: pd.DataFrame, region: np.ndarray) -> np.ndarray:
    """A random rep of each row's region (any rep when the region is missing)."""
    reps = users[users["manager_id"].notna()]
    out = np.empty(len(region), dtype=np.int64)
    for name in (*REGIONS, None):
        mask = pd.isna(region) if name is None else region == name
        pool = (
            reps["id"].to_numpy()
            if name is None
            else reps.loc[reps["region"] == name, "id"].to_numpy()
        )
        pool = pool if len(pool) else reps["id"].to_numpy()
        out[mask] = rng.choice(pool, int(mask.sum()))
    return out


def _accounts(rng: Rng, n: int, users: pd.DataFrame, end: float) -> pd.DataFrame:
    size = _choice(rng, n, (0.25, 0.3, 0.25, 0.13, 0.07))
    revenue = np.clip(np.rint(size * 0.75 + rng.normal(0, 0.6, n)), 0, 3).astype(int)
    region = _pick(REGIONS, rng.integers(0, 4, n))
    created = end - HISTORY_DAYS - rng.uniform(0, 700, n)
    names = [
        f"{COMPANY_WORDS[a]} {COMPANY_SUFFIX[b]} {i}"
        for i, (a, b) in enumerate(
            zip(rng.integers(0, 16, n), rng.integers(0, 8, n), strict=True), start=1
        )
    ]
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "name": names,
            "industry": _null(_pick(INDUSTRIES, _choice(rng, n, INDUSTRY_P)), rng, 0.05),
            "size_band": _pick(SIZE_BANDS, size),
            "region": region,
            "annual_revenue_band": _pick(REVENUE_BANDS, revenue),
            "owner_id": _owners_by_region(rng, users, region),
            "created_at": _timestamps(created),
            "updated_at": _timestamps(created + rng.uniform(0, 1, n) * (end - created)),
        }
    )


@dataclass
class _LeadPart:
    tables: dict[str, pd.DataFrame]  # contacts, leads, activities
    truth: pd.DataFrame
    account_idx: np.ndarray
    created: np.ndarray
    converted: np.ndarray  # day number, NaN when not converted by as_of


def _leads(
    rng: Rng,
    rows: _Rows,
    n: int,
    accounts: pd.DataFrame,
    users: pd.DataFrame,
    params: ResponseParams,
) -> _LeadPart:
    """Leads, each with a new B2B contact at an account, their first-week activity and outcome."""
    end = rows.end
    rules = RULES.lead
    n_acc = len(accounts)
    popularity = 1.0 / np.arange(1, n_acc + 1) ** 0.8
    acc = rng.permutation(n_acc)[_choice(rng, n, popularity)]
    created = end - HISTORY_DAYS + rng.random(n) * (HISTORY_DAYS - 1)
    t = created + 7

    role = rng.integers(0, len(ROLES), n)
    dm = rng.random(n) < ROLE_DM_P[role]
    dm_seen = _null(dm, rng, 0.03)
    region = _null(accounts["region"].to_numpy()[acc], rng, 0.04)
    source = _choice(rng, n, LEAD_SOURCE_P)
    industry = accounts["industry"].to_numpy()[acc]
    size = pd.Categorical(accounts["size_band"].to_numpy()[acc], categories=SIZE_BANDS).codes

    # First-week activity (observable at t), driven by an unobserved engagement level.
    engagement = rng.gamma(1.2, 1 / 1.2, n)
    counts = rng.poisson(
        LEAD_ACTIVITY_RATES[None, :] * engagement[:, None] * np.where(dm, 1.3, 1.0)[:, None]
    )
    target_industry = _isin(industry, rules.target_industries)
    outside = ~_isin(region, rules.target_regions)
    is_dm = dm_seen == True  # noqa: E712 - object array with None
    trial, pricing = counts[:, 3] > 0, counts[:, 1]
    x = (
        -3.2
        + 0.7 * target_industry
        + 0.9 * is_dm
        - 0.4 * outside
        + SOURCE_EFFECT[source]
        + SIZE_EFFECT[size]
        + 0.35 * np.log1p(counts[:, 0])
        + 0.6 * np.minimum(pricing, 3)
        + 0.7 * np.minimum(counts[:, 2], 3)
        + 1.3 * trial
        + 0.9 * (counts[:, 4] > 0)
        + 0.3 * np.log1p(counts[:, 5])
        + 0.6 * is_dm * trial
        + 0.3 * target_industry * (pricing > 0)
    )
    p, label = _draw_outcome(rng, x, LEAD_SIGMA)
    fast = rng.random(n) < 0.04  # converted inside the first week: no prediction row
    late = ~label & (rng.random(n) < 0.05)  # converted after the 90-day window: label 0
    conv = np.full(n, np.nan)
    conv[label] = t[label] + np.minimum(rng.gamma(2.0, 12.0, n), 82.9)[label]
    conv[late] = created[late] + 90 + rng.uniform(1, 60, n)[late]
    conv[fast] = created[fast] + rng.uniform(0.5, 6.9, n)[fast]
    conv[conv > end] = np.nan
    label = label & ~fast

    # Activity rows: the first week as counted above, then follow-up activity (more for converters).
    owner_i, type_i = np.nonzero(counts)
    reps = counts[owner_i, type_i]
    lead_i, act_type = np.repeat(owner_i, reps), np.repeat(type_i, reps)
    when = created[lead_i] + rng.random(len(lead_i)) * 7
    stop = np.fmin(np.where(np.isnan(conv), created + 60, conv), created + 60)
    post_i, post_when = _events(
        rng, rng.poisson(engagement * 3 + 4 * label), t, np.maximum(stop, t)
    )
    post_type = _choice(rng, len(post_i), LEAD_ACTIVITY_RATES)
    outbound = _outbound_plan(rng, params, rng.poisson(3, n), created, created + 60, end, 0.3)
    contact_ids = np.arange(1, n + 1)
    lead_ids = np.arange(1, n + 1)

    all_i = np.concatenate([lead_i, post_i])
    all_when = np.concatenate([when, post_when])
    all_type = np.concatenate([act_type, post_type])
    keep = all_when <= end
    web = _pick(LEAD_ACTIVITY_TYPES, all_type[keep])
    channel = np.where(web == "demo", "meeting", np.where(web == "email_open", "email", "web"))
    refs = {"contact_id": contact_ids[all_i[keep]], "lead_id": lead_ids[all_i[keep]]}
    web_rows = rows.activities(rng, all_when[keep], web, channel, **refs)
    outbound_rows = rows.outbound(rng, outbound, contact_ids, lead_ids)
    activities = pd.concat([web_rows, outbound_rows], ignore_index=True)
    last_act = _group_max(all_i[keep], all_when[keep], n, np.nan)

    first, last = rng.integers(0, 20, n), rng.integers(0, 20, n)
    domain = [f"{COMPANY_WORDS[i % 16].lower()}{a}.example" for i, a in enumerate(acc)]
    contacts = pd.DataFrame(
        {
            "id": contact_ids,
            "account_id": accounts["id"].to_numpy()[acc],
            "first_name": _pick(FIRST_NAMES, first),
            "last_name": _pick(LAST_NAMES, last),
            "email": [
                f"{FIRST_NAMES[f].lower()}.{LAST_NAMES[g].lower()}{i}@{d}"
                for i, f, g, d in zip(contact_ids, first, last, domain, strict=True)
            ],
            "phone": _null([f"+1 555 {i:07d}" for i in contact_ids], rng, 0.3),
            "role": _pick(ROLES, role),
            "is_decision_maker": pd.array(dm_seen, dtype="boolean"),
            "region": region,
            "owner_id": accounts["owner_id"].to_numpy()[acc],
            "source": _pick(LEAD_SOURCES, source),
            "created_at": _timestamps(created),
            "updated_at": _timestamps(created),
        }
    )
    converted = ~np.isnan(conv)
    open_lead = ~converted & (end - created <= 90)
    contacted = created + rng.exponential(10, n) / 24
    status = np.where(
        converted,
        "converted",
        np.where(open_lead, np.where(contacted <= end, "working", "new"), "disqualified"),
    )
    stage = np.where(converted, "opportunity", np.where(open_lead, "nurture", "closed"))
    updated = np.fmin(np.fmax(np.fmax(created, last_act), np.nan_to_num(conv, nan=-np.inf)), end)
    leads = pd.DataFrame(
        {
            "id": lead_ids,
            "contact_id": contact_ids,
            "account_id": accounts["id"].to_numpy()[acc],
            "source": _pick(LEAD_SOURCES, source),
            "region": region,
            "owner_id": _owners_by_region(rng, users, region),
            "status": status,
            "stage": stage,
            "created_at": _timestamps(created),
            "first_contacted_at": _timestamps(
                np.where((rng.random(n) < 0.08) | (contacted > end), np.nan, contacted)
            ),
            "converted_at": _timestamps(conv),
            "updated_at": _timestamps(updated),
        }
    )
    in_truth = ~fast & (created + rules.conversion_window_days <= end)
    truth = _truth_frame(lead_ids[in_truth], t[in_truth], p[in_truth], label[in_truth])
    tables = {"contacts": contacts, "leads": leads, "activities": activities}
    return _LeadPart(tables, truth, acc, created, conv)


@dataclass
class _DealPart:
    tables: dict[str, pd.DataFrame]  # deals, deal_stage_history, activities, tickets
    truth: pd.DataFrame


def _deals(
    rng: Rng,
    rows: _Rows,
    n_target: int,
    leads: _LeadPart,
    accounts: pd.DataFrame,
    params: ResponseParams,
) -> _DealPart:
    """Deals from converted leads plus upsell deals, moving through stages to won/lost."""
    end = rows.end
    conv_i = np.flatnonzero(~np.isnan(leads.converted))
    n_up = max(0, n_target - len(conv_i))
    up_i = rng.integers(0, len(leads.created), n_up)
    lead_idx = np.concatenate([conv_i, up_i])
    n = len(lead_idx)
    created = np.concatenate(
        [leads.converted[conv_i], end - HISTORY_DAYS + rng.random(n_up) * (HISTORY_DAYS - 1)]
    )
    from_lead = np.arange(n) < len(conv_i)
    acc = leads.account_idx[lead_idx]
    contact_id = lead_idx + 1  # B2B contact ids equal lead index + 1
    t = created + 21

    momentum = rng.normal(0, 1, n)
    dwell = 12 * np.exp(-0.35 * momentum)
    entries = created[:, None] + np.concatenate(
        [np.zeros((n, 1)), np.cumsum(rng.exponential(1, (n, 3)) * dwell[:, None], axis=1)], axis=1
    )
    stage_t = (entries[:, 1:] <= t[:, None]).sum(axis=1)
    stage_age = t - entries[np.arange(n), stage_t]

    rate = 0.25 * np.exp(0.5 * momentum)
    pre_i, pre_when = _events(rng, rng.poisson(21 * rate), created, t)
    n_pre = np.bincount(pre_i, minlength=n)
    since_last = t - _group_max(pre_i, pre_when, n, np.nan)
    since_last = np.where(np.isnan(since_last), 30.0, since_last)
    slip_pre_i, slip_pre_when = _events(
        rng, rng.poisson(0.25 * np.exp(-0.6 * momentum)), created, t
    )
    slips_pre = np.bincount(slip_pre_i, minlength=n)
    revenue = pd.Categorical(
        accounts["annual_revenue_band"].to_numpy()[acc], categories=REVENUE_BANDS
    ).codes
    amount = np.round(TYPICAL_DEAL[revenue] * rng.lognormal(0, 0.6, n), -1)
    mood = 0.25 * momentum + rng.normal(0, 0.3, n)
    tk_pre_i, tk_pre_when = _events(rng, rng.poisson(0.4, n), created, t)
    tk_pre_sent = np.clip(mood[tk_pre_i] + rng.normal(0, 0.25, len(tk_pre_i)), -1, 1).round(2)
    sentiment = _group_mean(tk_pre_i, tk_pre_sent, n, 0.0)
    x = (
        -1.3
        + 0.55 * stage_t
        - 0.04 * stage_age
        + 0.7 * np.log1p(n_pre)
        - 0.08 * since_last
        - 0.5 * slips_pre
        - 0.45 * np.log(amount / TYPICAL_DEAL[revenue])
        + 0.9 * sentiment
    )
    p, won = _draw_outcome(rng, x, DEAL_SIGMA)

    quick = rng.random(n) < 0.05  # closed inside the first three weeks: no prediction row
    closed = np.where(quick, created + rng.uniform(3, 20, n), t + rng.gamma(2.0, 18.0, n))
    won = np.where(quick, rng.random(n) < 0.5, won)
    is_closed = closed <= end
    stop = np.minimum(np.where(is_closed, closed, end), end)
    # Won deals pass through every stage before closing; lost ones stop where they are.
    reached = (entries[:, 1:] < stop[:, None]).sum(axis=1)
    for k in range(1, 4):
        fill = won & is_closed & (reached < k)
        lo = np.maximum(entries[np.arange(n), reached], np.where(quick, created, t))
        entries[fill, k] = lo[fill] + (closed[fill] - lo[fill]) * k / 4
    n_stages = np.where(won & is_closed, 3, reached)

    post_slip_i, post_slip_when = _events(
        rng, rng.poisson(np.where(won, 0.2, 0.6)), np.where(quick, stop, t), np.maximum(stop, t)
    )
    slip_i = np.concatenate([slip_pre_i[slip_pre_when <= stop[slip_pre_i]], post_slip_i])
    slip_when = np.concatenate([slip_pre_when[slip_pre_when <= stop[slip_pre_i]], post_slip_when])
    slip_days = rng.integers(14, 31, len(slip_i)).astype(float)
    first_close = created + 45 + rng.integers(0, 31, n)

    deal_ids = np.arange(1, n + 1)
    # Stage history rows with the expected close date at each entry (slips before it included).
    h_deal = np.repeat(np.arange(n), n_stages + 1)
    h_stage = np.concatenate([np.arange(k + 1) for k in n_stages])
    h_when = entries[h_deal, h_stage]
    h_name = _pick(DEAL_STAGES, h_stage)
    final = np.flatnonzero(is_closed)
    h_deal = np.concatenate([h_deal, final])
    h_when = np.concatenate([h_when, closed[final]])
    h_name = np.concatenate([h_name, np.where(won[final], "closed_won", "closed_lost")])
    order = np.lexsort((h_when, h_deal))
    h_deal, h_when, h_name = h_deal[order], h_when[order], h_name[order]
    slips_before = _slips_before(slip_i, slip_when, slip_days, h_deal, h_when)
    history = pd.DataFrame(
        {
            "id": rows.take("history", len(h_deal)),
            "deal_id": deal_ids[h_deal],
            "stage": h_name,
            "entered_at": _timestamps(h_when),
            "expected_close_at": _timestamps(first_close[h_deal] + slips_before),
        }
    )
    last_entry = history.groupby("deal_id").tail(1).set_index("deal_id")
    slips_total = np.bincount(slip_i, minlength=n)

    # Activities: before t as counted, after t until close (busier on deals that will be won).
    post_i, post_when = _events(
        rng,
        rng.poisson(rate * np.maximum(stop - t, 0) * np.where(won, 1.5, 1.0)),
        t,
        np.maximum(stop, t),
    )
    act_i = np.concatenate([pre_i[pre_when <= stop[pre_i]], post_i])
    act_when = np.concatenate([pre_when[pre_when <= stop[pre_i]], post_when])
    kind = _choice(rng, len(act_i), (0.4, 0.4, 0.2))
    contact_idx = lead_idx[act_i]
    responded = np.where(
        kind == 2,
        True,
        rng.random(len(act_i))
        < params.p(contact_idx, _slot_of(act_when))
        * np.where(kind == 0, params.call_factor[contact_idx], 1.0),
    )
    activities = pd.concat(
        [
            rows.activities(
                rng,
                act_when,
                _pick(("call", "email", "meeting"), kind),
                _pick(("phone", "email", "meeting"), kind),
                responded,
                contact_id=contact_id[act_i],
                deal_id=deal_ids[act_i],
            ),
            rows.activities(
                rng,
                slip_when,
                np.full(len(slip_i), "close_date_slip"),
                np.full(len(slip_i), "crm"),
                contact_id=contact_id[slip_i],
                deal_id=deal_ids[slip_i],
            ),
        ],
        ignore_index=True,
    )
    last_act = _group_max(act_i, act_when, n, -np.inf)

    tk_post_i, tk_post_when = _events(rng, rng.poisson(0.3, n), t, np.maximum(stop, t))
    tk_i = np.concatenate([tk_pre_i, tk_post_i])
    tk_when = np.concatenate([tk_pre_when, tk_post_when])
    tk_sent = np.concatenate(
        [
            tk_pre_sent,
            np.clip(
                mood[tk_post_i]
                + 0.3 * (won[tk_post_i] - 0.5)
                + rng.normal(0, 0.25, len(tk_post_i)),
                -1,
                1,
            ).round(2),
        ]
    )
    keep = tk_when <= stop[tk_i]
    tk_deal = tk_i[keep]
    tickets = rows.tickets(
        rng,
        tk_when[keep],
        tk_sent[keep],
        "Question about the offer",
        contact_id=contact_id[tk_deal],
        account_id=accounts["id"].to_numpy()[acc][tk_deal],
        deal_id=deal_ids[tk_deal],
    )

    names = accounts["name"].to_numpy()[acc]
    deals = pd.DataFrame(
        {
            "id": deal_ids,
            "account_id": accounts["id"].to_numpy()[acc],
            "contact_id": contact_id,
            "lead_id": _optional_ids(lead_idx + 1, from_lead),
            "owner_id": accounts["owner_id"].to_numpy()[acc],
            "name": [
                f"{a} - {'new business' if f else 'upsell'}"
                for a, f in zip(names, from_lead, strict=True)
            ],
            "amount": amount,
            "stage": last_entry.loc[deal_ids, "stage"].to_numpy(),
            "stage_entered_at": last_entry.loc[deal_ids, "entered_at"].to_numpy(),
            "expected_close_at": _timestamps(
                first_close + np.bincount(slip_i, weights=slip_days, minlength=n)
            ),
            "close_date_slips": slips_total,
            "created_at": _timestamps(created),
            "closed_at": _timestamps(np.where(is_closed, closed, np.nan)),
            "outcome": np.where(is_closed, np.where(won, "won", "lost"), None),
            "updated_at": _timestamps(
                np.minimum(np.fmax(np.where(is_closed, closed, created), last_act), end)
            ),
        }
    )
    in_truth = ~quick & is_closed & (closed > t)
    truth = _truth_frame(deal_ids[in_truth], t[in_truth], p[in_truth], won[in_truth])
    tables = {"deals": deals, "deal_stage_history": history}
    return _DealPart({**tables, "activities": activities, "tickets": tickets}, truth)


def _slips_before(slip_i, slip_when, slip_days, at_i, at_when) -> np.ndarray:
    """Sum of slip days of each deal strictly before each (deal, time) query."""
    slips = pd.DataFrame({"deal": slip_i, "when": slip_when, "days": slip_days}).sort_values(
        ["deal", "when"]
    )
    slips["cum"] = slips.groupby("deal")["days"].cumsum()
    query = pd.DataFrame({"deal": at_i, "when": at_when, "pos": np.arange(len(at_i))}).sort_values(
        "when"
    )
    merged = pd.merge_asof(
        query,
        slips.sort_values("when")[["deal", "when", "cum"]],
        on="when",
        by="deal",
        allow_exact_matches=False,
    )
    return merged.sort_values("pos")["cum"].fillna(0.0).to_numpy()


@dataclass
class _CustomerPart:
    tables: dict[str, pd.DataFrame]  # contacts, orders, activities, tickets
    duplicates: pd.DataFrame  # contacts without ids, written after every chunk
    churn_truth: pd.DataFrame
    clv_truth: pd.DataFrame
    params: ResponseParams


def _customers(
    rng: Rng, rows: _Rows, contact_ids: np.ndarray, users: pd.DataFrame
) -> _CustomerPart:
    """B2C customers: BG/NBD orders, engagement, tickets, outbound contact, churn drawn at t_i."""
    end = rows.end
    n = len(contact_ids)
    cutoff = end - rng.uniform(90, 360, n)
    signup = end - HISTORY_DAYS + rng.random(n) * (cutoff - 30 - (end - HISTORY_DAYS))
    age = _choice(rng, n, (0.12, 0.24, 0.22, 0.18, 0.14, 0.1))
    age_seen = _null(_pick(AGE_BANDS, age), rng, 0.05)
    segment = np.where(pd.isna(age_seen), 2, AGE_SEGMENT[age])
    params = ResponseParams.draw(rng, segment)
    membership = _choice(rng, n, (0.5, 0.3, 0.15, 0.05))
    region = _null(_pick(REGIONS, rng.integers(0, 4, n)), rng, 0.03)

    # BG/NBD-like purchasing: first order at signup, repeats at rate lam until dropout.
    lam = rng.gamma(0.8, 1 / 6.0, n) / 7  # per day (Gamma(r=0.8, alpha=6 weeks))
    dropout = rng.beta(1.2, 6.0, n)
    nu = rng.gamma(3.0, 1 / 150.0, n)  # Gamma-Gamma: order value ~ Gamma(4, rate nu)
    repeats = np.minimum(rng.geometric(dropout), 150)
    o_i = np.repeat(np.arange(n), repeats)
    cum = np.cumsum(rng.exponential(1.0, len(o_i)) / lam[o_i])
    starts = np.repeat(np.cumsum(repeats) - repeats, repeats)
    o_when = signup[o_i] + cum - np.concatenate([[0.0], cum])[starts]
    keep = o_when <= end
    o_i, o_when = o_i[keep], o_when[keep]
    # Repeat orders happen at the customer's active hours (same week); the first one at signup.
    o_when = _at_slot(rng, o_when, params.sample_slots(rng, o_i), signup[o_i], end)
    o_i = np.concatenate([np.arange(n), o_i])
    o_when = np.concatenate([signup, o_when])
    o_amount = np.round(rng.gamma(4.0, 1.0, len(o_i)) / nu[o_i], 2)

    # Engagement and tickets over the whole history.
    eta = rng.gamma(2.0, 0.006, n) * (1 + 20 * lam)  # events per day
    e_i, e_when = _events(rng, rng.poisson(eta * (end - signup)), signup, np.full(n, end))
    e_when = _at_slot(rng, e_when, params.sample_slots(rng, e_i), signup[e_i], end)
    e_type = _choice(rng, len(e_i), ENGAGEMENT_P)
    mood = rng.normal(0.05, 0.35, n)
    t_i, t_when = _events(rng, rng.poisson(0.4 / 365 * (end - signup)), signup, np.full(n, end))
    t_sent = np.clip(mood[t_i] + rng.normal(0, 0.3, len(t_i)), -1, 1).round(2)

    # Churn latent from what is observable at each customer's cutoff.
    before = o_when <= cutoff[o_i]
    recency = cutoff - _group_max(o_i[before], o_when[before], n, np.nan)
    freq_365 = np.bincount(o_i[before & (o_when > cutoff[o_i] - 365)], minlength=n)
    monetary = _group_mean(o_i[before], o_amount[before], n, 300.0)
    tenure_years = (cutoff - signup) / 365
    eng_30 = np.bincount(e_i[(e_when <= cutoff[e_i]) & (e_when > cutoff[e_i] - 30)], minlength=n)
    tk_win = (t_when <= cutoff[t_i]) & (t_when > cutoff[t_i] - 90)
    sent_90 = _group_mean(t_i[tk_win], t_sent[tk_win], n, 0.0)
    tickets_90 = np.bincount(t_i[tk_win], minlength=n)
    x = (
        -1.1
        + 1.0 * np.log1p(recency / 30)
        - 0.8 * np.log1p(freq_365)
        - 0.3 * np.log(monetary / 300)
        - 0.25 * np.minimum(tenure_years, 3)
        - 0.4 * np.log1p(eng_30)
        - 0.9 * sent_90
        + 0.25 * tickets_90
        + MEMBERSHIP_EFFECT[membership]
        + 0.3 * (eng_30 == 0) * (recency > 60)
    )
    p_churn, churned = _draw_outcome(rng, x, CHURN_SIGMA)

    # Orders after the cutoff agree with the label: none in (t, t+90] for churners, ≥ 1 otherwise.
    in_window = (o_when > cutoff[o_i]) & (o_when <= cutoff[o_i] + 90)
    drop = in_window & churned[o_i]
    o_i, o_when, o_amount = o_i[~drop], o_when[~drop], o_amount[~drop]
    has_next = (
        np.bincount(o_i[(o_when > cutoff[o_i]) & (o_when <= cutoff[o_i] + 90)], minlength=n) > 0
    )
    need = np.flatnonzero(~churned & ~has_next)
    add_when = cutoff[need] + rng.uniform(0.01, 0.999, len(need)) * 90
    add_when = _at_slot(
        rng, add_when, params.sample_slots(rng, need), cutoff[need] + 1e-3, cutoff[need] + 90
    )
    o_i = np.concatenate([o_i, need])
    o_when = np.concatenate([o_when, add_when])
    o_amount = np.concatenate([o_amount, np.round(rng.gamma(4.0, 1.0, len(need)) / nu[need], 2)])
    order = np.lexsort((o_when, o_i))
    o_i, o_when, o_amount = o_i[order], o_when[order], o_amount[order]
    # Churners go quiet after the cutoff; most of their engagement stops.
    quiet = churned[e_i] & (e_when > cutoff[e_i]) & (rng.random(len(e_i)) < 0.7)
    e_i, e_when, e_type = e_i[~quiet], e_when[~quiet], e_type[~quiet]

    # Outbound marketing contact: sent at varied slots, answered per the response pattern.
    outbound = _outbound_plan(rng, params, rng.poisson(6, n), signup, np.full(n, end), end, 0.25)

    engagement_types = _pick(ENGAGEMENT_TYPES, e_type).astype(str)
    channel = np.where(
        np.isin(engagement_types, ["email_open", "email_click"]),
        "email",
        np.where(engagement_types == "app_visit", "app", "web"),
    )
    activities = pd.concat(
        [
            rows.activities(rng, e_when, engagement_types, channel, contact_id=contact_ids[e_i]),
            rows.outbound(rng, outbound, contact_ids),
        ],
        ignore_index=True,
    )
    orders = pd.DataFrame(
        {
            "id": rows.take("orders", len(o_i)),
            "contact_id": contact_ids[o_i],
            "ordered_at": _timestamps(o_when),
            "amount": o_amount,
            "items": 1 + rng.poisson(o_amount / 150),
            "channel": _pick(("web", "app", "store"), _choice(rng, len(o_i), (0.5, 0.3, 0.2))),
            "created_at": _timestamps(o_when),
        }
    )
    tickets = rows.tickets(rng, t_when, t_sent, "Customer complaint", contact_id=contact_ids[t_i])

    first, last = rng.integers(0, 20, n), rng.integers(0, 20, n)
    emails = np.array(
        [
            f"{FIRST_NAMES[f].lower()}.{LAST_NAMES[g].lower()}.{i}@mail.example"
            for i, f, g in zip(contact_ids, first, last, strict=True)
        ],
        dtype=object,
    )
    phones = np.array(
        [f"+44 20 {i // 10000 % 10000:04d} {i % 10000:04d}" for i in contact_ids], dtype=object
    )
    spend = np.bincount(o_i, weights=o_amount, minlength=n)
    last_seen = np.fmax(_group_max(o_i, o_when, n, -np.inf), signup)
    gender = _null(
        _pick(("female", "male", "diverse"), _choice(rng, n, (0.49, 0.49, 0.02))), rng, 0.04
    )
    contacts = pd.DataFrame(
        {
            "id": contact_ids,
            "first_name": _pick(FIRST_NAMES, first),
            "last_name": _pick(LAST_NAMES, last),
            "email": _null(emails, rng, 0.02),
            "phone": _null(phones, rng, 0.25),
            "age_band": age_seen,
            "gender": gender,
            "region": region,
            "membership_level": _pick(MEMBERSHIP, membership),
            "points": (spend // 10).astype(np.int64),
            "signup_at": _timestamps(signup),
            "owner_id": _owners_by_region(rng, users, region),
            "source": _pick(("web", "store", "app"), _choice(rng, n, (0.5, 0.3, 0.2))),
            "created_at": _timestamps(signup),
            "updated_at": _timestamps(np.minimum(last_seen, end)),
        }
    )
    # ~2 % of customers also arrive from another source: same person, email/phone written
    # differently, fewer fields, no orders (the import de-duplication story).
    dup = np.flatnonzero(rng.random(n) < 0.02)
    dup_email = np.array(
        [None if e is None else f"  {e.upper()} " for e in contacts["email"].to_numpy()[dup]],
        dtype=object,
    )
    dup_phone = np.array(
        [
            None if p is None else p.replace(" ", "").replace("+", "00")
            for p in contacts["phone"].to_numpy()[dup]
        ],
        dtype=object,
    )
    dup_email = np.where(pd.isna(dup_email) & pd.isna(dup_phone), emails[dup], dup_email)
    dup_created = np.minimum(signup[dup] + rng.uniform(10, 400, len(dup)), end)
    duplicates = pd.DataFrame(
        {
            "first_name": contacts["first_name"].to_numpy()[dup],
            "last_name": contacts["last_name"].to_numpy()[dup],
            "email": dup_email,
            "phone": dup_phone,
            "age_band": None,
            "gender": gender[dup],
            "region": _pick(REGIONS, rng.integers(0, 4, len(dup))),
            "source": "newsletter_import",
            "created_at": _timestamps(dup_created),
            "updated_at": _timestamps(dup_created),
        }
    )

    churn_truth = _truth_frame(contact_ids, cutoff, p_churn, churned)
    recent = o_when > end - 90
    clv_truth = pd.DataFrame(
        {
            "entity_id": contact_ids.astype(np.int64),
            "purchase_rate_per_week": lam * 7,
            "dropout_p": dropout,
            "spend_shape": 4.0,
            "spend_rate": nu,
            "expected_order_value": 4.0 / nu,
            "purchases_last_90d": np.bincount(o_i[recent], minlength=n),
            "spend_last_90d": np.bincount(o_i[recent], weights=o_amount[recent], minlength=n),
        }
    )
    tables = {"contacts": contacts, "orders": orders, "activities": activities, "tickets": tickets}
    return _CustomerPart(tables, duplicates, churn_truth, clv_truth, params)


_NBT_SCHEMA = pa.schema(
    [
        ("entity_id", pa.int64()),
        ("segment", pa.string()),
        ("call_factor", pa.float32()),
        ("best_slots", pa.list_(pa.int16())),
        ("p_best", pa.list_(pa.float32())),
        ("p_slots", pa.list_(pa.float32())),
    ]
)


def _nbt_truth(params: ResponseParams, idx: np.ndarray, contact_ids: np.ndarray) -> pa.Table:
    """Wide next-best-time truth: top-3 slots and all 168 slot probabilities per contact."""
    parts = []
    for start in range(0, len(idx), 20_000):  # 20k × 168 floats at a time
        sub = idx[start : start + 20_000]
        probs = params.all_slots(sub).astype(np.float32)
        best = np.argsort(-probs, axis=1, kind="stable")[:, :3]
        columns = {
            "entity_id": contact_ids[start : start + 20_000],
            "segment": _pick(SEGMENTS, params.segment[sub]),
            "call_factor": params.call_factor[sub],
            "best_slots": _lists(best, pa.int16()),
            "p_best": _lists(np.take_along_axis(probs, best, 1), pa.float32()),
            "p_slots": _lists(probs, pa.float32()),
        }
        parts.append(pa.table(columns, schema=_NBT_SCHEMA))
    return pa.concat_tables(parts) if parts else _NBT_SCHEMA.empty_table()


def _lists(matrix: np.ndarray, kind: pa.DataType) -> pa.Array:
    """The rows of ``matrix`` as Arrow lists of ``kind``."""
    flat = pa.array(matrix.reshape(-1), kind)
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]).cast(pa.list_(kind))
