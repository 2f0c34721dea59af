"""Tiny seeded training tables in the training-set contract's shape, with a known oracle.

Each outcome is drawn from a latent probability (``oracle_p``) that leans on signals the model's
baseline ignores, so a model that learns beats the baseline even on a few hundred rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _frame(rng: np.random.Generator, n: int, logit: np.ndarray, features: dict) -> pd.DataFrame:
    p = 1 / (1 + np.exp(-logit))
    start = pd.Timestamp("2024-07-01")
    stamps = start + pd.to_timedelta(np.sort(rng.uniform(0, 700, n)), unit="D")
    order = rng.permutation(n)  # rows arrive shuffled; the split must sort by time itself
    frame = pd.DataFrame(
        {
            "entity_id": np.arange(1, n + 1),
            "event_timestamp": stamps.floor("s"),
            **features,
            "gender": rng.choice(["f", "m"], n),
            "label": (rng.uniform(size=n) < p).astype(int),
            "oracle_p": p,
        }
    )
    return frame.iloc[order].reset_index(drop=True)


def lead_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    source = rng.choice(["web", "referral", "event", "ads"], n)
    industry = rng.choice(["software", "finance", "retail", "energy"], n)
    decision_maker = rng.integers(0, 2, n)
    visits = rng.poisson(3, n)
    pricing = rng.poisson(0.5, n)
    whitepapers = rng.poisson(0.4, n)
    trials = rng.binomial(1, 0.2, n)
    idle = rng.exponential(20, n)
    logit = -1.2 + 2.5 * (source == "referral") - 2.0 * (source == "ads") - 0.06 * idle
    logit += 0.4 * trials + 0.3 * decision_maker
    rule = (
        20 * np.isin(industry, ["software", "finance"]) + 30 * decision_maker + 5 * visits
        + 20 * pricing + 30 * whitepapers + 50 * trials - 15 * (idle >= 30)
    )  # fmt: skip
    return _frame(
        rng,
        n,
        logit,
        {
            "lead_source": source,
            "industry": industry,
            "is_decision_maker": decision_maker,
            "site_visits_90d": visits,
            "pricing_views_90d": pricing,
            "whitepapers_90d": whitepapers,
            "trials_90d": trials,
            "days_since_last_interaction": idle,
            "rule_score": rule.astype(float),
        },
    )


def deal_frame(n: int = 400, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stage = rng.choice(["qualify", "propose", "negotiate", "commit"], n)
    idle = rng.exponential(8, n)
    activities = rng.poisson(4, n)
    sentiment = rng.uniform(-1, 1, n)
    amount = rng.lognormal(9, 1, n)
    stage_effect = pd.Series(stage).map(
        {"qualify": -0.6, "propose": 0, "negotiate": 0.3, "commit": 0.6}
    )
    logit = stage_effect.to_numpy() - 0.25 * idle + 0.35 * activities + 1.5 * sentiment - 0.5
    return _frame(
        rng,
        n,
        logit,
        {
            "stage": stage,
            "days_idle": idle,
            "activities_30d": activities,
            "ticket_sentiment_90d": sentiment,
            "amount": amount,
        },
    )


def churn_frame(n: int = 400, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    recency = rng.exponential(40, n)
    orders_90d = rng.poisson(2, n)
    opens = rng.poisson(3, n)
    region = rng.choice(["north", "south", "east", "west"], n)
    logit = 0.01 * recency - 1.2 * orders_90d - 0.5 * opens + 1.0 * (region == "south") + 1.5
    return _frame(
        rng,
        n,
        logit,
        {
            "rfm_recency_days": recency,
            "orders_90d": orders_90d,
            "email_opens_30d": opens,
            "region": region,
        },
    )


def telco_csv(n: int = 300, seed: int = 3) -> pd.DataFrame:
    """A messy customer export: text booleans, Yes/No target, blanks in a numeric column."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n, p=[0.5, 0.3, 0.2])
    monthly = rng.uniform(20, 110, n).round(2)
    total = (monthly * tenure).round(2).astype(str)
    total[tenure == 0] = " "  # new customers have no total yet, as in real exports
    logit = 1.0 - 0.06 * tenure + 1.5 * (contract == "Month-to-month") + 0.015 * monthly - 1.5
    churned = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "customerID": [f"C{i:05d}" for i in range(n)],
            "gender": rng.choice(["Female", "Male"], n),
            "SeniorCitizen": rng.integers(0, 2, n),
            "Partner": rng.choice(["Yes", "No"], n),
            "PaperlessBilling": rng.choice(["True", "False"], n),
            "tenure": tenure,
            "Contract": contract,
            "MonthlyCharges": monthly,
            "TotalCharges": total,
            "signup": (
                pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 1500, n), "D")
            ).strftime("%Y-%m-%d"),
            "Churn": np.where(churned, "Yes", "No"),
        }
    )
