"""Data checks run on a classifier's training table before any model is fitted or logged.

Four checks, in this order, each on the feature columns still in play:

- constant: one value (blanks aside) — dropped;
- identifier: an integer-like column unique per row and either monotone in row order or spanning
  about one number per row (a key), or a text column mostly unique (an email, a name) — dropped;
- near-duplicate: |Pearson r| above ``DUPLICATE_CORRELATION`` with an earlier numeric column, or
  the same partition of rows as an earlier column (identical after factorize) — the later one of
  the pair is dropped, both are named;
- target leakage: a column that alone separates the training labels almost perfectly (univariate
  AUC ≥ ``LEAKAGE_AUC``) — stops the run unless leakage is allowed explicitly.

The table is expected time-ordered (oldest first) where it has a time: categorical columns are
scored by their per-category label rate computed out of fold over contiguous blocks of rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from crm_predict.core.errors import UserError

# A single honest CRM feature rarely separates outcomes beyond AUC 0.9 (the demo's best, the
# recency of a customer for churn, is below that); a column at 0.97 or more is almost always
# filled from the outcome itself (a closing stage, a "converted at" date, a status).
LEAKAGE_AUC = 0.97
# Text with more than this share of distinct values among its present ones is a name, an
# email or a key, not a category.
IDENTIFIER_TEXT_SHARE = 0.90
# An integer key spans about one number per row; a count or an amount spans far more.
IDENTIFIER_SPAN_PER_ROW = 1.5
# Two numeric columns this correlated carry the same information.
DUPLICATE_CORRELATION = 0.999
# "Identical after factorize" is tested on columns with at most this share of distinct values.
PARTITION_MAX_SHARE = 0.5
# Out-of-fold blocks for the per-category label rate of a categorical column.
CATEGORY_FOLDS = 5
# Below this many rows uniqueness says nothing about a column.
MIN_ROWS_FOR_IDENTIFIER = 20

CHECKS = ("constant", "identifier", "near_duplicate", "leakage")


@dataclass(frozen=True)
class Finding:
    """One column one check flagged: what was measured and what was done about it."""

    column: str
    check: str  # one of CHECKS
    value: str  # the measurement, e.g. "AUC 1.000", "100% distinct", "r=1.0000 with amount"
    action: str  # "dropped", "stopped", "kept (--allow-leakage)"
    score: float | None = None  # the number behind ``value`` (AUC, share, |r|)
    other: str | None = None  # the column a near-duplicate duplicates


@dataclass
class DataChecks:
    """The outcome of :func:`check_table`: the findings and the features left to train on."""

    rows: int
    features: list[str]
    findings: list[Finding] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    allow_leakage: bool = False
    seconds: float = 0.0

    @property
    def dropped(self) -> list[str]:
        return [f.column for f in self.findings if f.action == "dropped"]

    @property
    def leaks(self) -> list[Finding]:
        return [f for f in self.findings if f.check == "leakage"]

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "thresholds": {
                "leakage_auc": LEAKAGE_AUC,
                "identifier_text_share": IDENTIFIER_TEXT_SHARE,
                "identifier_span_per_row": IDENTIFIER_SPAN_PER_ROW,
                "duplicate_correlation": DUPLICATE_CORRELATION,
            },
            "excluded": self.excluded,
            "allow_leakage": self.allow_leakage,
            "findings": [asdict(f) for f in self.findings],
            "dropped": self.dropped,
            "features": self.features,
            "seconds": round(self.seconds, 4),
        }


# --- Column parsing (the preprocessor's view of a column) ------------------------------------


TRUE_TOKENS = frozenset({"yes", "y", "true", "t", "1", "1.0"})
FALSE_TOKENS = frozenset({"no", "n", "false", "f", "0", "0.0"})
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "-"})


def clean_text(series: pd.Series) -> pd.Series:
    """Stripped strings with every missing token turned into NaN (works on any object column)."""
    text = series.astype(object).where(series.notna(), None)
    text = text.map(lambda v: None if v is None else str(v).strip())
    return text.where(~text.str.lower().isin(MISSING_TOKENS), None)


def parse_boolean(series: pd.Series) -> pd.Series | None:
    """1.0/0.0/NaN when every present value is yes/no, true/false, y/n or 1/0; else None."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(float)
    if pd.api.types.is_numeric_dtype(series):
        # What the text path gives for numbers ("1", "0.0" are tokens), without a string per value.
        values = series.astype(float)
        present = values.dropna().to_numpy()
        if not len(present) or not np.isin(present, (0.0, 1.0)).all() or np.signbit(present).any():
            return None
        return values
    lowered = clean_text(series).str.lower()
    present = lowered.dropna()
    if present.empty or not present.isin(TRUE_TOKENS | FALSE_TOKENS).all():
        return None
    return lowered.map(lambda v: np.nan if v is None else float(v in TRUE_TOKENS)).astype(float)


def parse_numeric(series: pd.Series, min_share: float = 0.95) -> pd.Series | None:
    """Floats when at least ``min_share`` of the present values parse as numbers; else None."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(float)
    if pd.api.types.is_numeric_dtype(series):
        return series.astype(float).replace([np.inf, -np.inf], np.nan)
    text = clean_text(series)
    present = text.notna().sum()
    numbers = pd.to_numeric(text, errors="coerce").astype(float)
    if present and numbers.notna().sum() / present >= min_share:
        return numbers.replace([np.inf, -np.inf], np.nan)
    return None


def column_kind(series: pd.Series, numeric_share: float = 0.95) -> tuple[str, pd.Series]:
    """How the model sees a column: ("boolean" | "numeric", floats), ("categorical", stripped
    text with NaN) or ("ignored", the series) for datetimes, which the preprocessor drops."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return "ignored", series
    values = parse_boolean(series)
    if values is not None:
        return "boolean", values
    values = parse_numeric(series, numeric_share)
    if values is not None:
        return "numeric", values
    return "categorical", clean_text(series)


# --- Univariate separation -------------------------------------------------------------------


def separation(score: np.ndarray, y: np.ndarray) -> float:
    """How well a score alone ranks the 0/1 labels, either way round: max(AUC, 1 − AUC)."""
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return 0.5
    value = float(roc_auc_score(y, score))
    return max(value, 1.0 - value)


def numeric_separation(values: np.ndarray, y: np.ndarray) -> float:
    """Separation of a numeric column; a blank ranks below or above every value, whichever
    separates better (a blank that only losers have is a leak too)."""
    missing = np.isnan(values)
    if not missing.any():
        return separation(values, y)
    if missing.all():
        return 0.5
    low, high = np.nanmin(values) - 1.0, np.nanmax(values) + 1.0
    return max(
        separation(np.where(missing, low, values), y),
        separation(np.where(missing, high, values), y),
    )


def out_of_fold_rate(codes: np.ndarray, y: np.ndarray, folds: int = CATEGORY_FOLDS) -> np.ndarray:
    """Each row's category label rate computed on the other contiguous blocks of rows (the
    overall rate of those blocks for a category they never saw)."""
    n = len(codes)
    n_codes = int(codes.max()) + 1 if n else 0
    rate = np.empty(n)
    total_count = np.bincount(codes, minlength=n_codes).astype(float)
    total_pos = np.bincount(codes, weights=y, minlength=n_codes)
    for block in np.array_split(np.arange(n), max(1, min(folds, n))):
        if not len(block):
            continue
        count = total_count - np.bincount(codes[block], minlength=n_codes)
        pos = total_pos - np.bincount(codes[block], weights=y[block], minlength=n_codes)
        rest = n - len(block)
        prior = (y.sum() - y[block].sum()) / rest if rest else 0.5
        mine = codes[block]
        seen = count[mine] > 0
        rate[block] = np.where(seen, pos[mine] / np.maximum(count[mine], 1), prior)
    return rate


def categorical_separation(text: pd.Series, y: np.ndarray) -> float:
    """Separation of a categorical column by its out-of-fold per-category label rate."""
    codes, _ = pd.factorize(text.fillna("\0missing"), sort=False)
    return separation(out_of_fold_rate(codes.astype(np.int64), y), y)


# --- The checks ------------------------------------------------------------------------------


def _is_identifier(kind: str, values: pd.Series, n: int) -> tuple[bool, str, float]:
    present = values.dropna()
    if n < MIN_ROWS_FOR_IDENTIFIER or present.empty:
        return False, "", 0.0
    distinct = present.nunique()
    share = distinct / len(present)
    if kind == "categorical":
        return share > IDENTIFIER_TEXT_SHARE, f"{share:.0%} distinct text", share
    numbers = present.to_numpy(dtype=float)
    if distinct < len(present) or not np.all(numbers == np.round(numbers)):
        return False, "", share
    step = np.diff(numbers)
    monotone = bool(np.all(step > 0) or np.all(step < 0))
    span = (numbers.max() - numbers.min() + 1) / len(present)
    if monotone:
        return True, "unique integers, monotone in row order", 1.0
    if span <= IDENTIFIER_SPAN_PER_ROW:
        return True, f"unique integers spanning {span:.2f} per row", 1.0
    return False, "", share


def _duplicates(
    parsed: dict[str, tuple[str, pd.Series]], columns: Sequence[str]
) -> list[tuple[str, str, str, float]]:
    """(later, earlier, how, score) for each column that duplicates an earlier one."""
    found: list[tuple[str, str, str, float]] = []
    taken: set[str] = set()
    by_partition: dict[bytes, str] = {}
    for column in columns:
        codes, uniques = pd.factorize(parsed[column][1], sort=False, use_na_sentinel=True)
        # Two columns of (nearly) all-distinct values always share a partition; they are
        # compared by correlation only.
        if len(uniques) > PARTITION_MAX_SHARE * len(codes):
            continue
        # The same partition of rows, whatever the labels: first-appearance codes are equal.
        key = codes.astype(np.int64).tobytes()
        if key in by_partition:
            found.append((column, by_partition[key], f"identical to {by_partition[key]}", 1.0))
            taken.add(column)
        else:
            by_partition[key] = column
    numeric = [c for c in columns if parsed[c][0] != "categorical" and c not in taken]
    if len(numeric) > 1:
        table = pd.DataFrame({c: parsed[c][1].to_numpy(dtype=float) for c in numeric})
        corr = table.corr(min_periods=3).abs().to_numpy()
        for j, column in enumerate(numeric):
            if column in taken:
                continue
            for i in range(j):
                if numeric[i] in taken or not corr[i, j] > DUPLICATE_CORRELATION:
                    continue
                found.append(
                    (column, numeric[i], f"|r|={corr[i, j]:.4f} with {numeric[i]}", corr[i, j])
                )
                taken.add(column)
                break
    return found


def check_table(
    frame: pd.DataFrame,
    features: Sequence[str],
    label: str,
    *,
    allow_leakage: bool = False,
    excluded: Sequence[str] = (),
) -> DataChecks:
    """Run every check on ``frame[features]`` against the 0/1 ``frame[label]`` (rows oldest
    first); a leak raises UserError naming the columns unless ``allow_leakage``."""
    started = time.perf_counter()
    y = frame[label].to_numpy(dtype=float)
    n = len(frame)
    findings: list[Finding] = []
    parsed = {c: column_kind(frame[c]) for c in features}
    remaining = [c for c in features if parsed[c][0] != "ignored"]

    def drop(column: str, check: str, value: str, score: float, other: str | None = None):
        findings.append(Finding(column, check, value, "dropped", round(float(score), 6), other))
        remaining.remove(column)

    for column in list(remaining):
        distinct = parsed[column][1].nunique(dropna=True)
        if distinct <= 1:
            drop(column, "constant", "no values" if distinct == 0 else "one value", distinct)
    for column in list(remaining):
        flagged, value, share = _is_identifier(*parsed[column], n)
        if flagged:
            drop(column, "identifier", value, share)
    for column, other, value, score in _duplicates(parsed, remaining):
        drop(column, "near_duplicate", value, score, other)

    leaks: list[Finding] = []
    for column in remaining:
        kind, values = parsed[column]
        if kind != "categorical":
            score = numeric_separation(values.to_numpy(dtype=float), y)
        else:
            score = categorical_separation(values, y)
        if score >= LEAKAGE_AUC:
            action = "kept (--allow-leakage)" if allow_leakage else "stopped"
            leaks.append(Finding(column, "leakage", f"AUC {score:.3f}", action, round(score, 6)))
    findings += leaks
    checks = DataChecks(
        rows=n,
        features=remaining,
        findings=findings,
        excluded=list(excluded),
        allow_leakage=allow_leakage,
        seconds=time.perf_counter() - started,
    )
    if leaks and not allow_leakage:
        named = ", ".join(f"{f.column} (AUC {f.score:.3f})" for f in leaks)
        names = ",".join(f.column for f in leaks)
        raise UserError(
            f"target leakage: {named} alone separate(s) the training labels (AUC ≥ "
            f"{LEAKAGE_AUC}); such a column is usually filled after the outcome. Nothing was "
            f"trained or logged. Drop it with --exclude {names}, or train anyway with "
            "--allow-leakage"
        )
    return checks


def apply_exclusions(
    frame: pd.DataFrame, exclude: Sequence[str], reserved: dict[str, str | None]
) -> pd.DataFrame:
    """``frame`` without the ``exclude`` columns; an unknown name, or the target, id or time
    column (``reserved``: role → column), is a UserError naming it and the available columns."""
    exclude = list(dict.fromkeys(str(c).strip() for c in exclude if str(c).strip()))
    if not exclude:
        return frame
    columns = [str(c) for c in frame.columns]
    unknown = [c for c in exclude if c not in columns]
    if unknown:
        raise UserError(
            f"--exclude column(s) {', '.join(unknown)} not found; the table has: "
            f"{', '.join(columns)}"
        )
    roles = {column: role for role, column in reserved.items() if column is not None}
    clash = [f"{c} (the {roles[c]} column)" for c in exclude if c in roles]
    if clash:
        raise UserError(f"--exclude cannot remove {', '.join(clash)}; it is never a feature")
    return frame.drop(columns=exclude)


def parse_exclude(text: str | None) -> list[str]:
    """``"a, b,c"`` → ``["a", "b", "c"]`` (the --exclude option's value)."""
    if not text:
        return []
    return [part.strip() for part in text.split(",") if part.strip()]
