"""Seeded tiny data for the CLV and next-best-time tests (shared with the CLI tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_transactions(n_customers: int = 150, seed: int = 3) -> pd.DataFrame:
    """Buy-till-you-die customers: weekly purchase chance, a dropout chance after each purchase,
    Gamma-Gamma spend (per-customer scale drawn from a gamma)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-06")
    rows = []
    for customer in range(n_customers):
        week = int(rng.integers(0, 30))
        rate, dropout, nu = rng.uniform(0.05, 0.5), rng.uniform(0.02, 0.3), rng.gamma(4, 1 / 100)
        rows.append((customer, start + pd.Timedelta(weeks=week), rng.gamma(6, 1 / nu)))
        while week < 80:
            week += 1
            if rng.random() < rate:
                rows.append(
                    (customer, start + pd.Timedelta(weeks=week, hours=10), rng.gamma(6, 1 / nu))
                )
                if rng.random() < dropout:
                    break
    return pd.DataFrame(rows, columns=["cust", "when", "value"])


MONDAY = pd.Timestamp("2025-01-06")
TUE_09, WED_14, THU_20, SAT_15, MON_10 = 33, 62, 92, 135, 10
SEGMENT_BEST = {"office": TUE_09, "evening": THU_20, "weekend": SAT_15}
SEGMENT_SIZE = {"office": 40, "evening": 30, "weekend": 30}
OWN_BEST_CONTACT, THIN_CONTACT = 1000, 1001


def segment_rate(segment: str, slot: int) -> float:
    """Broad planted windows (office: weekdays 9-16, evening: weekdays 18-22, weekend: Sat/Sun
    10-18) answered at 0.4, 0.05 elsewhere, and 0.7 in each segment's best slot."""
    day, hour = divmod(slot, 24)
    window = {
        "office": day < 5 and 9 <= hour <= 16,
        "evening": day < 5 and 18 <= hour <= 22,
        "weekend": day >= 5 and 10 <= hour <= 18,
    }[segment]
    return 0.7 if slot == SEGMENT_BEST[segment] else 0.4 if window else 0.05


def planted_events(seed: int = 11, attempts: int = 250) -> pd.DataFrame:
    """Attempts at uniformly random slots over 30 weeks, answered at the segment's planted rate;
    each contact also answers at 0.7 within an hour of a habitual hour of their own; evening people answer the
    phone more, the others email; meetings always take place.
    Contact 1000 (office) has a long history and its own best slot (Wed 14:00 at 0.9); contact
    1001 (evening) has a single attempt, answered Monday 10:00."""
    rng = np.random.default_rng(seed)
    rows, contact = [], 0
    for segment, size in SEGMENT_SIZE.items():
        for _ in range(size):
            slots = rng.integers(0, 168, attempts)
            phone = rng.random(attempts) < 0.4
            habit = int(rng.integers(1, 23))  # a personal habit too: hours habit-1 … habit+1
            rate = np.array(
                [0.7 if abs(s % 24 - habit) <= 1 else segment_rate(segment, int(s)) for s in slots]
            )
            rate *= np.where((segment == "evening") == phone, 1.2, 0.7)
            for slot, by_phone, answered, week in zip(
                slots,
                phone,
                rng.random(attempts) < rate,
                rng.integers(0, 30, attempts),
                strict=True,
            ):
                rows.append(
                    (
                        contact,
                        segment,
                        int(slot),
                        "phone" if by_phone else "email",
                        bool(answered),
                        int(week),
                    )
                )
            contact += 1
    for _ in range(1000):
        slot = int(rng.integers(0, 168))
        p = 0.9 if slot == WED_14 else segment_rate("office", slot)
        rows.append(
            (OWN_BEST_CONTACT, "office", slot, "email", rng.random() < p, int(rng.integers(0, 30)))
        )
    rows.append((THIN_CONTACT, "evening", MON_10, "email", True, 3))
    for c in range(20):  # meetings always take place: no information about answering
        rows.append(
            (c, "office", int(rng.integers(0, 168)), "meeting", True, int(rng.integers(0, 30)))
        )
    frame = pd.DataFrame(rows, columns=["who", "seg", "slot", "via", "answered", "week"])
    minutes = rng.integers(0, 60, len(frame))
    frame["at"] = (
        MONDAY
        + pd.to_timedelta(frame["week"] * 168 + frame["slot"], unit="h")
        + pd.to_timedelta(minutes, unit="m")
    )
    return frame.drop(columns=["slot", "week"])
