"""Customer lifetime value: BG/NBD (how often, and whether still alive) + Gamma-Gamma (how much).

Works on any transaction table with a customer, a date and an amount. Time is measured in weeks
(the units of the pyfunc contract); ``freq`` only says how purchases are counted: "D" counts at most
one purchase per customer per day (recency/T in fractional weeks), "W" at most one per week.

The job fits on a calibration period, scores the newest holdout period (MAE of predicted vs actual
purchases beside a naive "same rate as in calibration" baseline), then refits on all data for the
served model, which is a pyfunc holding only the seven fitted parameters.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import mlflow
import numpy as np
import pandas as pd
from crm_predict.training.tracking import log_pyfunc_run
from mlflow import MlflowClient

from crm_predict.core import rules as R
from crm_predict.core.errors import UserError, read_user_csv
from crm_predict.core.model_spec import ModelSpec
from crm_predict.core.rules import RULES, Rules, TaskSpec, rfm_segment, value_tier
from crm_predict.core.settings import Settings
from crm_predict.core.tagging import flag, has, high_activity

MODEL = ModelSpec(
    name="clv",
    kind="clv",
    entity="customer",
    crm_entity="contact",
    id_field="customer_id",
    score_output="clv_3y",
    label="purchases_90d",
    views=(
        ("customer_transactions", ("frequency", "recency", "T", "monetary_value", "rfm_recency_days", "rfm_frequency", "rfm_monetary", "spend_12m")),
    ),
    quality=("mae_purchases", "baseline_mae_purchases", "oracle_mae_purchases"),
    purpose="Three-year discounted customer lifetime value (BG/NBD + Gamma-Gamma) and value tiers.",
    known_limits="Assumes stable purchase behaviour; new customers with one order have wide "
    "uncertainty.",
    lower_is_better=True,
    key_metrics=(("mae_purchases", False),),
    card_metrics=(("mae_purchases", "baseline_mae_purchases", None),),
    card_lines=lambda params, tags: fit_card_lines(params, tags),
    train_note=lambda result: fit_line(result.params, result.fit),
    train_metrics=("mae_purchases", "baseline_mae_purchases", "mean_clv_3y"),
    pyfunc_schema="clv_3y double, p_alive double, expected_purchases_90d double",
    optional_inputs=("rfm_recency_days", "rfm_frequency", "rfm_monetary", "spend_12m"),
    record_context=("yearly_spend",),
    rfm_medians=True,
)  # fmt: skip
FEATURES = ["frequency", "recency", "T", "monetary_value"]
WEEKS_PER_MONTH = 4.345  # the conversion lifetimes' customer_lifetime_value uses for freq="W"
WEEKS_90_DAYS = 90 / 7
PARAM_NAMES = ("r", "alpha", "a", "b", "p", "q", "v")

Freq = Literal["D", "W"]


@dataclass(frozen=True)
class ClvConfig:
    """How to fit: penalizer (``None``: the unpenalised MLE, retried with a small penalizer only
    when it does not converge; a number: exactly that one), purchase granularity and the
    calibration/holdout split (default: the newest ``holdout_fraction`` of the date span)."""

    penalizer: float | None = None
    freq: Freq = "D"
    holdout_fraction: float = 0.2
    calibration_end: datetime | None = None
    observation_end: datetime | None = None


@dataclass(frozen=True)
class ClvParams:
    """Fitted BG/NBD (r, alpha, a, b) and Gamma-Gamma (p, q, v) parameters, in weeks."""

    r: float
    alpha: float
    a: float
    b: float
    p: float
    q: float
    v: float
    horizon_weeks: int = RULES.value.horizon_weeks
    annual_discount_rate: float = RULES.value.annual_discount_rate


@dataclass(frozen=True)
class ClvFit:
    """Fitted parameters and the penalizer each sub-model ended with (0 = the MLE); ``notes`` say
    why a penalizer was used."""

    params: ClvParams
    penalizer_bgnbd: float
    penalizer_gamma_gamma: float
    notes: tuple[str, ...] = ()

    @property
    def penalized(self) -> bool:
        return self.penalizer_bgnbd > 0 or self.penalizer_gamma_gamma > 0

    def describe(self) -> str:
        """One line for the CLI, the run's tag and the model card."""
        if not self.penalized:
            return "unpenalised MLE (penalizer 0)"
        return (
            f"penalized: BG/NBD {self.penalizer_bgnbd:g}, Gamma-Gamma {self.penalizer_gamma_gamma:g}"
            + (f" ({'; '.join(self.notes)})" if self.notes else "")
        )


@dataclass
class ClvResult:
    run_id: str
    model_version: str
    params: ClvParams
    metrics: dict[str, float]
    customers: pd.DataFrame = field(repr=False)
    fit: ClvFit | None = None


# --- Input -----------------------------------------------------------------------------------


def transactions_frame(
    frame: pd.DataFrame, customer_col: str, date_col: str, amount_col: str
) -> pd.DataFrame:
    """Validate a user's transaction table and return it as columns ``customer, date, amount``."""
    missing = [c for c in (customer_col, date_col, amount_col) if c not in frame.columns]
    if missing:
        raise UserError(
            f"transactions have no column(s) {', '.join(map(repr, missing))}; "
            f"columns are: {', '.join(map(str, frame.columns))}"
        )
    out = pd.DataFrame(
        {
            "customer": frame[customer_col],
            "date": pd.to_datetime(frame[date_col], errors="coerce"),
            "amount": pd.to_numeric(frame[amount_col], errors="coerce"),
        }
    )
    for column, source, kind in (
        ("customer", customer_col, "customer id"),
        ("date", date_col, "date"),
        ("amount", amount_col, "number"),
    ):
        bad = out[column].isna()
        if bad.any():
            example = frame.loc[bad, source].iloc[0]
            raise UserError(
                f"column {source!r}: {int(bad.sum())} row(s) are not a valid {kind} "
                f"(first: {example!r})"
            )
    if (out["amount"] < 0).any():
        raise UserError(
            f"column {amount_col!r} has {int((out['amount'] < 0).sum())} negative amount(s); "
            "net returns out of their orders before training"
        )
    if out["date"].dt.tz is not None:  # the project's timestamps are naive UTC
        out["date"] = out["date"].dt.tz_convert("UTC").dt.tz_localize(None)
    # Purchases count per day at most (freq D or W), and day boundaries keep the cut-offs exact.
    out["date"] = out["date"].dt.floor("D")
    if out["customer"].nunique() < 2 or len(out) < 3:
        raise UserError("need transactions of at least 2 customers to fit a CLV model")
    return out.sort_values(["date", "customer"], kind="stable").reset_index(drop=True)


def demo_transactions(session) -> pd.DataFrame:
    """The CRM store's orders as a transaction table (customer = contact_id)."""
    from crm_predict.crm_store.repository import read_table

    orders = read_table(session, "orders", ["contact_id", "ordered_at", "amount"])
    if orders.empty:
        raise UserError("the CRM store has no orders; run the demo generator or import orders")
    return transactions_frame(orders, "contact_id", "ordered_at", "amount")


# --- Model -----------------------------------------------------------------------------------


def _freq_args(freq: Freq) -> dict:
    if freq not in ("D", "W"):
        raise UserError(f"freq must be 'D' or 'W', not {freq!r}")
    # lifetimes divides its period counts by freq_multiplier: days / 7 = weeks.
    return {"freq": freq, "freq_multiplier": 7 if freq == "D" else 1}


def customer_summary(
    transactions: pd.DataFrame, observation_end: datetime, freq: Freq = "D"
) -> pd.DataFrame:
    """Per customer ``frequency, recency, T, monetary_value`` (weeks) as of ``observation_end``."""
    from lifetimes.utils import summary_data_from_transaction_data

    summary = summary_data_from_transaction_data(
        transactions[transactions["date"] <= observation_end],
        "customer",
        "date",
        monetary_value_col="amount",
        observation_period_end=observation_end,
        **_freq_args(freq),
    )
    summary.index.name = "customer"
    return summary[FEATURES]


FALLBACK_PENALIZERS = (0.001, 0.01, 0.1)  # tried in turn when the MLE does not converge


def _fitted(fitter, penalizer: float, columns: list[pd.Series]) -> dict[str, float] | None:
    """A lifetimes fitter's parameters; None when it does not converge (ConvergenceError or
    non-finite parameters). lifetimes prints scipy's whole result on failure: the UserError of
    ``_fit_with_fallback`` says it better."""
    from lifetimes.utils import ConvergenceError

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            params = fitter(penalizer_coef=penalizer).fit(*columns).params_
    except ConvergenceError:
        return None
    params = {name: float(value) for name, value in params.items()}
    return params if np.isfinite(list(params.values())).all() else None


def _fit_with_fallback(fitter, columns: list[pd.Series], penalizer: float | None, what: str):
    """(params, penalizer used, note): ``penalizer`` exactly, or for ``None`` the MLE and then
    each of ``FALLBACK_PENALIZERS`` until one converges."""
    tries = (0.0, *FALLBACK_PENALIZERS) if penalizer is None else (penalizer,)
    for coef in tries:
        params = _fitted(fitter, coef, columns)
        if params is None:
            continue
        note = f"the {what} MLE did not converge; fitted with penalizer {coef:g}" if coef else None
        return params, coef, note if penalizer is None else None
    if penalizer is None:
        raise UserError(
            f"the {what} model did not converge, even with penalizer {tries[-1]:g}; "
            "check the transactions (dates, one row per purchase) or pass a higher --penalizer"
        )
    hint = f"try a higher penalizer than {penalizer:g} (e.g. --penalizer {max(penalizer * 10, 0.01):g})"
    raise UserError(f"the {what} model did not converge; {hint}")


def fit_clv_auto(summary: pd.DataFrame, penalizer: float | None = None) -> ClvFit:
    """Fit BG/NBD on all customers and Gamma-Gamma on repeat customers with a positive spend:
    the unpenalised MLE by default, a small penalizer only where that does not converge."""
    if penalizer is not None and penalizer < 0:
        raise UserError(f"penalizer must be ≥ 0, not {penalizer}")
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    if len(repeat) < 2:
        raise UserError(
            f"only {len(repeat)} customer(s) bought more than once; the spend model needs ≥ 2"
        )
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    purchases = [summary["frequency"], summary["recency"], summary["T"]]
    bgnbd, pen_bg, note_bg = _fit_with_fallback(
        BetaGeoFitter, purchases, penalizer, "BG/NBD purchase"
    )
    # lifetimes penalises the raw squared parameters and, unlike BG/NBD's alpha, does not rescale
    # v (in currency units): fit on spend / median spend, so one penalizer means the same for any
    # currency, then scale v back (Gamma-Gamma is scale-equivariant: m / c ⇒ v / c).
    scale = float(repeat["monetary_value"].median())
    spend = [repeat["frequency"], repeat["monetary_value"] / scale]
    gg, pen_gg, note_gg = _fit_with_fallback(
        GammaGammaFitter, spend, penalizer, "Gamma-Gamma spend"
    )
    gg["v"] *= scale
    if gg["q"] <= 1:  # the mean spend (v p / (q - 1)) is infinite
        raise UserError(
            f"the Gamma-Gamma fit has q = {gg['q']:.3g} ≤ 1 (infinite mean spend); "
            "try a higher penalizer (e.g. --penalizer 0.01)"
        )
    return ClvFit(
        params=ClvParams(**bgnbd, **gg),
        penalizer_bgnbd=pen_bg,
        penalizer_gamma_gamma=pen_gg,
        notes=tuple(n for n in (note_bg, note_gg) if n),
    )


def fit_clv(summary: pd.DataFrame, penalizer: float | None = 0.0) -> ClvParams:
    """``fit_clv_auto``'s parameters (default: exactly the MLE, no fallback)."""
    return fit_clv_auto(summary, penalizer).params


def _fitters(params: ClvParams):
    """lifetimes fitters carrying ``params`` (their predict methods only read ``params_``)."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    bgf, ggf = BetaGeoFitter(), GammaGammaFitter()
    bgf.params_ = pd.Series({k: getattr(params, k) for k in ("r", "alpha", "a", "b")})
    bgf.predict = bgf.conditional_expected_number_of_purchases_up_to_time  # as fit() does
    ggf.params_ = pd.Series({k: getattr(params, k) for k in ("p", "q", "v")})
    return bgf, ggf


def _distinct_pairs(x: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code per row, frequency per pair, T per pair) of the distinct (frequency, T) pairs: in
    weeks they are a few thousand however many customers there are."""
    cx, ux = pd.factorize(x)
    ct, ut = pd.factorize(T)
    codes, pairs = pd.factorize(cx.astype(np.int64) * len(ut) + ct)
    return codes, ux[pairs // len(ut)], ut[pairs % len(ut)]


def _purchases_numerator(params: ClvParams, x: np.ndarray, T: np.ndarray, t) -> np.ndarray:
    """The numerator of lifetimes' ``conditional_expected_number_of_purchases_up_to_time`` (the
    same expressions in the same order, so the same numbers), on arrays that broadcast. It reads
    only (frequency, T, t): the Gauss hypergeometric terms are evaluated once per distinct pair."""
    from scipy.special import hyp2f1

    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    _a, _b, _c = r + x, b + x, a + b + x - 1
    _z = t / (alpha + T + t)
    _a, _b, _c, _z = np.broadcast_arrays(_a, _b, _c, _z)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ln_hyp = np.log(hyp2f1(_a, _b, _c, _z))
        # lifetimes' equivalent form where the first overflows, evaluated only there.
        bad = np.isinf(ln_hyp)
        if bad.any():
            a_, b_, c_, z_ = _a[bad], _b[bad], _c[bad], _z[bad]
            ln_hyp[bad] = np.log(hyp2f1(c_ - a_, c_ - b_, c_, z_)) + (c_ - a_ - b_) * np.log(1 - z_)
        first = (a + b + x - 1) / (a - 1)
        second = 1 - np.exp(ln_hyp + (r + x) * np.log((alpha + T) / (alpha + t + T)))
    return first * second


def _alive_denominator(params: ClvParams, x: np.ndarray, recency: np.ndarray, T: np.ndarray):
    """The denominator of lifetimes' expected purchases (the customer's "still alive" odds)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + recency)) ** (r + x)


def expected_purchases(params: ClvParams, t: float, x, recency, T) -> np.ndarray:
    """lifetimes' ``BetaGeoFitter.conditional_expected_number_of_purchases_up_to_time(t, …)``,
    its hypergeometric part evaluated once per distinct (frequency, T)."""
    x, recency, T = (np.asarray(v, dtype=float) for v in (x, recency, T))
    codes, px, pt = _distinct_pairs(x, T)
    numerator = _purchases_numerator(params, px, pt, float(t))[codes]
    return numerator / _alive_denominator(params, x, recency, T)


def probability_alive(params: ClvParams, x, recency, T) -> np.ndarray:
    """lifetimes' ``BetaGeoFitter.conditional_probability_alive``."""
    from scipy.special import expit

    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, recency, T = (np.asarray(v, dtype=float) for v in (x, recency, T))
    log_div = (r + x) * np.log((alpha + T) / (alpha + recency)) + np.log(
        a / (b + np.maximum(x, 1) - 1)
    )
    return np.where(x == 0, 1.0, expit(-log_div))


def expected_spend(params: ClvParams, x, monetary) -> np.ndarray:
    """lifetimes' ``GammaGammaFitter.conditional_expected_average_profit``."""
    p, q, v = params.p, params.q, params.v
    x, monetary = np.asarray(x, dtype=float), np.asarray(monetary, dtype=float)
    individual_weight = p * x / (p * x + q - 1)
    population_mean = v * p / (q - 1)
    return (1 - individual_weight) * population_mean + individual_weight * monetary


def discounted_clv(
    params: ClvParams, x, recency, T, monetary, months: int, monthly_rate: float
) -> np.ndarray:
    """lifetimes' ``GammaGammaFitter.customer_lifetime_value(freq="W")``: expected spend per month
    over ``months``, discounted monthly. A month's expected purchases are the difference of two
    cumulative expectations sharing the customer's denominator, so the discounted sum of the
    numerators' differences is taken once per distinct (frequency, T) and divided per customer."""
    x, recency, T = (np.asarray(v, dtype=float) for v in (x, recency, T))
    codes, px, pt = _distinct_pairs(x, T)
    ends = np.arange(1, months + 1) * WEEKS_PER_MONTH
    times = np.concatenate([[0.0], ends])
    numerators = _purchases_numerator(params, px[:, None], pt[:, None], times[None, :])
    discount = (1 + monthly_rate) ** (ends / WEEKS_PER_MONTH)
    spend = expected_spend(params, x, monetary)
    with np.errstate(invalid="ignore"):  # NaN where lifetimes gives NaN (overflowing inputs)
        per_pair = (np.diff(numerators, axis=1) / discount).sum(axis=1)
        return spend * per_pair[codes] / _alive_denominator(params, x, recency, T)


def predict_clv(params: ClvParams, customers: pd.DataFrame) -> pd.DataFrame:
    """``clv_3y`` (discounted, horizon from the rules), ``p_alive``, ``expected_purchases_90d``."""
    missing = [c for c in FEATURES if c not in customers.columns]
    if missing:
        raise UserError(f"CLV input needs columns {FEATURES}; missing {missing}")
    f, r, t, m = (customers[c].to_numpy(dtype=float, na_value=np.nan) for c in FEATURES)
    for column in (f, r, t, m):
        if np.isnan(column).any() or (column < 0).any():
            raise UserError("CLV input must be non-negative numbers without gaps")
    monthly_rate = (1 + params.annual_discount_rate) ** (1 / 12) - 1
    months = round(params.horizon_weeks / WEEKS_PER_MONTH)
    return pd.DataFrame(
        {
            "clv_3y": discounted_clv(params, f, r, t, m, months, monthly_rate),
            "p_alive": probability_alive(params, f, r, t),
            "expected_purchases_90d": expected_purchases(params, WEEKS_90_DAYS, f, r, t),
        },
        index=customers.index,
    )


def customer_segments(
    transactions: pd.DataFrame, scores: pd.DataFrame, as_of: datetime, rules: Rules = RULES
) -> pd.DataFrame:
    """RFM segment (history up to ``as_of``) and value tier (predicted yearly value = clv_3y over
    the horizon in years) per customer, both by ``crm_predict.core.rules``."""
    history = transactions[transactions["date"] <= as_of]
    per_customer = history.groupby("customer").agg(
        last=("date", "max"), orders=("date", "size"), spend=("amount", "sum")
    )
    per_customer = per_customer.reindex(scores.index)
    recency_days = (pd.Timestamp(as_of) - per_customer["last"]).dt.days
    yearly_value = scores["clv_3y"] / (rules.value.horizon_weeks / 52)
    return pd.DataFrame(
        {
            "rfm_segment": rfm_segment(recency_days, per_customer["orders"], per_customer["spend"]),
            "yearly_value": yearly_value,
            "value_tier": value_tier(yearly_value, rules.value),
        },
        index=scores.index,
    )


class ClvModel(mlflow.pyfunc.PythonModel):
    """Served CLV model: per customer ``frequency, recency, T, monetary_value`` (weeks) in,
    ``clv_3y, p_alive, expected_purchases_90d`` out."""

    def __init__(self, params: dict[str, float]):
        self.params = params  # plain floats: nothing library-specific is pickled

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_clv(ClvParams(**self.params), pd.DataFrame(model_input))


# --- Evaluation and training -----------------------------------------------------------------


def split_dates(transactions: pd.DataFrame, config: ClvConfig) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(calibration_end, observation_end): explicit, or the newest holdout fraction of the span."""
    first = transactions["date"].min().normalize()
    observation_end = pd.Timestamp(config.observation_end or transactions["date"].max()).normalize()
    if config.calibration_end is not None:
        calibration_end = pd.Timestamp(config.calibration_end).normalize()
    else:
        if not 0 < config.holdout_fraction < 1:
            raise UserError(f"holdout_fraction must be in (0, 1), not {config.holdout_fraction}")
        span = observation_end - first
        calibration_end = (observation_end - span * config.holdout_fraction).normalize()
    if not first < calibration_end < observation_end:
        raise UserError(
            f"calibration end {calibration_end.date()} must fall strictly between the first "
            f"transaction {first.date()} and the observation end {observation_end.date()}"
        )
    return calibration_end, observation_end


def evaluate_holdout(
    transactions: pd.DataFrame, config: ClvConfig
) -> tuple[dict[str, float], pd.DataFrame, ClvParams]:
    """Fit on the calibration period; MAE of predicted vs actual holdout purchases per customer,
    beside the naive baseline "each customer keeps buying at their calibration-period rate"."""
    metrics, holdout, fit = _evaluate_holdout(transactions, config)
    return metrics, holdout, fit.params


def _evaluate_holdout(
    transactions: pd.DataFrame, config: ClvConfig
) -> tuple[dict[str, float], pd.DataFrame, ClvFit]:
    from lifetimes.utils import calibration_and_holdout_data

    calibration_end, observation_end = split_dates(transactions, config)
    try:
        matrix = calibration_and_holdout_data(
            transactions,
            "customer",
            "date",
            calibration_period_end=calibration_end,
            observation_period_end=observation_end,
            monetary_value_col="amount",
            **_freq_args(config.freq),
        )
    except ValueError as exc:  # lifetimes: no transactions in the holdout period
        raise UserError(f"cannot split at {calibration_end.date()}: {exc}") from None
    calibration = matrix.rename(columns={f"{c}_cal": c for c in FEATURES})
    fit = fit_clv_auto(calibration, config.penalizer)
    params = fit.params
    bgf, _ = _fitters(params)
    duration = float(matrix["duration_holdout"].iloc[0])
    predicted = bgf.conditional_expected_number_of_purchases_up_to_time(
        duration, calibration["frequency"], calibration["recency"], calibration["T"]
    )
    # Naive: repeat purchases per week of customer age in calibration, continued through holdout.
    age = calibration["T"].where(calibration["T"] > 0)
    baseline = (calibration["frequency"] / age * duration).fillna(0.0)
    actual = matrix["frequency_holdout"]
    repeat = calibration[(calibration["frequency"] > 0) & (calibration["monetary_value"] > 0)]
    metrics = {
        "mae_purchases": float(np.mean(np.abs(predicted - actual))),
        "baseline_mae_purchases": float(np.mean(np.abs(baseline - actual))),
        "holdout_purchases_actual": float(actual.sum()),
        "holdout_purchases_predicted": float(predicted.sum()),
        "baseline_holdout_purchases": float(baseline.sum()),
        "holdout_weeks": duration,
        "n_holdout_customers": float(len(matrix)),
        # Gamma-Gamma assumes spend independent of frequency; a large |corr| is a warning sign.
        "freq_monetary_corr": float(repeat["frequency"].corr(repeat["monetary_value"]))
        if len(repeat) > 2
        else float("nan"),
    }
    metrics["mae_improvement_pct"] = 100 * (
        1 - metrics["mae_purchases"] / max(metrics["baseline_mae_purchases"], 1e-12)
    )
    holdout = calibration[FEATURES].assign(
        label=actual,
        duration_holdout=duration,
        predicted_purchases=predicted,
        baseline_purchases=baseline,
        event_timestamp=calibration_end,
    )
    holdout = holdout.rename_axis("entity_id").reset_index()
    return metrics, holdout, fit


def _calibration_plot(params: ClvParams, holdout: pd.DataFrame):
    """lifetimes' calibration-vs-holdout purchases plot (mean per calibration frequency)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or in CI
    from lifetimes.plotting import plot_calibration_purchases_vs_holdout_purchases

    bgf, _ = _fitters(params)
    matrix = holdout.rename(
        columns={c: f"{c}_cal" for c in FEATURES} | {"label": "frequency_holdout"}
    )
    ax = plot_calibration_purchases_vs_holdout_purchases(bgf, matrix, n=7)
    return ax.figure


def train_clv(
    client: MlflowClient,
    transactions: pd.DataFrame,
    config: ClvConfig = ClvConfig(),
    rules: Rules = RULES,
    feature_service: str = MODEL.feature_service,
    source: str = "dataframe",
) -> ClvResult:
    """Evaluate on a time holdout, refit on all data, log everything and register ``clv``.

    ``transactions`` has columns ``customer, date, amount`` (see ``transactions_frame``).
    """
    metrics, holdout, cal_fit = _evaluate_holdout(transactions, config)
    cal_params = cal_fit.params
    calibration_end, observation_end = split_dates(transactions, config)
    summary = customer_summary(transactions, observation_end, config.freq)
    fit = fit_clv_auto(summary, config.penalizer)
    params = replace(
        fit.params,
        horizon_weeks=rules.value.horizon_weeks,
        annual_discount_rate=rules.value.annual_discount_rate,
    )
    scores = predict_clv(params, summary)
    customers = summary.join(scores).join(
        customer_segments(transactions, scores, observation_end, rules)
    )
    metrics |= {
        "n_customers": float(len(summary)),
        "n_transactions": float(len(transactions)),
        "mean_clv_3y": float(scores["clv_3y"].mean()),
        "mean_p_alive": float(scores["p_alive"].mean()),
    }
    window = f"{transactions['date'].min().date()}..{observation_end.date()}"
    example = summary.head(5).reset_index(drop=True)
    logged = log_pyfunc_run(
        client,
        MODEL.name,
        ClvModel(asdict(params)),
        example,
        predict_clv(params, example),
        holdout=holdout,
        params={
            "penalizer": "auto" if config.penalizer is None else config.penalizer,
            "penalizer_bgnbd": fit.penalizer_bgnbd,
            "penalizer_gamma_gamma": fit.penalizer_gamma_gamma,
            "cal_penalizer_bgnbd": cal_fit.penalizer_bgnbd,
            "cal_penalizer_gamma_gamma": cal_fit.penalizer_gamma_gamma,
            "freq": config.freq,
            "calibration_end": calibration_end.date().isoformat(),
            "observation_end": observation_end.date().isoformat(),
            "horizon_weeks": params.horizon_weeks,
            "annual_discount_rate": params.annual_discount_rate,
            **{f"fit_{k}": round(getattr(params, k), 6) for k in PARAM_NAMES},
            **{f"cal_fit_{k}": round(getattr(cal_params, k), 6) for k in PARAM_NAMES},
        },
        metrics=metrics,
        tags={
            "feature_service": feature_service,
            "feature_names": json.dumps(FEATURES),
            "data_window": window,
            "entity": "customer",
            "source": source,
            "clv_fit": fit.describe(),
            "clv_fit_penalized": str(fit.penalized or cal_fit.penalized).lower(),
        },
        dicts={
            "rules.json": rules.as_dict(),
            "segments.json": {
                "rfm_segment": customers["rfm_segment"].value_counts().to_dict(),
                "value_tier": customers["value_tier"].value_counts().to_dict(),
            },
        },
        figures={
            "plots/calibration_vs_holdout_purchases.png": _calibration_plot(cal_params, holdout)
        },
        requirements=("lifetimes", "pandas", "numpy"),
        run_name=f"clv {window}",
    )
    return ClvResult(
        run_id=logged.run_id,
        model_version=logged.version,
        params=params,
        metrics=metrics,
        customers=customers,
        fit=replace(fit, params=params),
    )


def run_training(
    settings: Settings,
    client: MlflowClient,
    transactions_csv: Path | None = None,
    customer_col: str | None = None,
    date_col: str | None = None,
    amount_col: str | None = None,
    freq: Freq = "D",
    penalizer: float | None = None,
) -> ClvResult:
    """``crm-predict train clv``: the demo CRM's orders, or a user's transaction CSV."""
    columns = {"--customer-col": customer_col, "--date-col": date_col, "--amount-col": amount_col}
    config = ClvConfig(penalizer=penalizer, freq=freq, holdout_fraction=settings.holdout_fraction)
    rules = settings.load_rules()  # the rules file in effect: its horizon, tiers, and logged
    if transactions_csv is None:
        if any(columns.values()):
            raise UserError(f"{', '.join(columns)} go with --transactions CSV")
        from crm_predict.crm_store.db import store_session

        with store_session(settings.crm_url) as session:
            transactions = demo_transactions(session)
        return train_clv(client, transactions, config, rules, source="demo")
    missing = [flag for flag, value in columns.items() if not value]
    if missing:
        raise UserError(f"--transactions needs {', '.join(missing)}")
    frame = read_user_csv(transactions_csv, "transactions file")
    transactions = transactions_frame(frame, customer_col, date_col, amount_col)
    return train_clv(client, transactions, config, rules, source=f"csv:{transactions_csv.name}")


# --- Reports: the train command's fit line, the model card's fitted parameters -----------------


def fit_line(params: ClvParams, fit: ClvFit | None = None) -> str:
    """The fitted BG/NBD and Gamma-Gamma parameters, and how they were fitted."""
    bgnbd = ", ".join(f"{k}={getattr(params, k):.4g}" for k in ("r", "alpha", "a", "b"))
    spend = ", ".join(f"{k}={getattr(params, k):.4g}" for k in ("p", "q", "v"))
    how = f"; {fit.describe()}" if fit is not None else ""
    return f"BG/NBD {bgnbd}; Gamma-Gamma {spend}{how}"


def fit_card_lines(params: Mapping[str, str], tags: Mapping[str, str]) -> list[str]:
    """BG/NBD (r, α, a, b) and Gamma-Gamma (p, q, v) as a run logged them, and the fit."""
    if not any(f"fit_{k}" in params for k in PARAM_NAMES):
        return ["", "## Fitted parameters", "Not logged for this version."]
    value = {k: params.get(f"fit_{k}", "—") for k in PARAM_NAMES}
    return [
        "", "## Fitted parameters", "| model | parameters |", "|---|---|",
        "| BG/NBD | r = {r}, α = {alpha}, a = {a}, b = {b} |".format(**value),
        "| Gamma-Gamma | p = {p}, q = {q}, v = {v} |".format(**value),
        "", f"Fit: {tags.get('clv_fit', 'not logged')}.",
    ]  # fmt: skip


# --- Tags and tasks (the write-back's rules for this model) ----------------------------------


def tag_values(
    scored: pd.DataFrame,
    rules: Rules = RULES,
    rfm_medians: tuple[float, float, float] | None = None,
) -> dict[str, np.ndarray]:
    """Value tier (yearly spend), RFM segment (against population medians) and behaviour flags."""
    values: dict[str, np.ndarray] = {}
    if has(scored, "yearly_spend"):
        values[R.TAG_CLV_TIER] = R.value_tier(scored["yearly_spend"].fillna(0), rules.value)
    if has(scored, "recency_days", "frequency", "monetary"):
        values[R.TAG_RFM_SEGMENT] = R.rfm_segment(
            scored["recency_days"], scored["frequency"], scored["monetary"], medians=rfm_medians
        )
    if has(scored, "visits_30d"):
        values[R.TAG_HIGH_ACTIVITY] = high_activity(scored["visits_30d"], rules)
    if has(scored, "spend_last_3m", "spend_prior_3m"):
        values[R.TAG_POTENTIAL] = flag(
            R.is_potential(
                scored["spend_last_3m"].fillna(0), scored["spend_prior_3m"].fillna(0), rules.value
            )
        )
    return values


def tasks(scored: pd.DataFrame, now: datetime, rules: Rules = RULES) -> list[TaskSpec]:
    """No task rule reads this model's scores."""
    return []
