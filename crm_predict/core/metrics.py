"""Classifier quality on a holdout, one definition for training (what is logged) and the registry
(what compare and the champion gate recompute): AUC, Brier, ECE, lift at 10 %."""

from __future__ import annotations

import numpy as np


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over equal-width probability bins, weighted by the share of rows in each bin."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    ece = 0.0
    for b in np.unique(which):
        mask = which == b
        ece += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(ece)


def lift_at(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate among the top ``fraction`` scores divided by the overall positive rate."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if len(y) == 0 or y.mean() == 0:
        return float("nan")
    k = max(1, int(np.ceil(len(y) * fraction)))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean() / y.mean())


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC (NaN with one class), Brier, ECE and lift at 10 %."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {
        "auc": auc,
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_at_10": lift_at(y, p, 0.1),
    }


def holdout_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """What training logs: :func:`classification_metrics` plus PR-AUC and log loss (on
    probabilities kept off 0 and 1, so log loss stays finite)."""
    from sklearn.metrics import average_precision_score, log_loss

    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return classification_metrics(y, p) | {
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }
