"""Small helpers the models' tag and task rules share (``training/<model>.py``: ``tag_values``,
``tasks``): tag values are text, a missing column skips its rule."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from crm_predict.core import rules as R

# A tag value saying "not this model's to set here": no row is written, the stored tag stays.
LEAVE = "\x00leave"


def flag(values: np.ndarray) -> np.ndarray:
    return np.where(np.asarray(values, dtype=bool), "true", "false").astype(object)


def has(scored: pd.DataFrame, *columns: str) -> bool:
    return all(c in scored.columns for c in columns)


def optional_id(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def optional_timestamp(value) -> datetime | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()


def high_activity(visits: pd.Series, rules: R.Rules) -> np.ndarray:
    return flag(R.is_high_activity(pd.to_numeric(visits, errors="coerce").fillna(0), rules.value))
