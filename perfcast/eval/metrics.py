"""Accuracy metrics as the performance-prediction papers report them.

Why our own thin layer: papers quote the absolute percentage error |p - t| / t as a mean, a median or a
90th percentile, and R² sometimes on log values (runtimes span decades, where plain R² only sees the
largest rows); schedulers care about rank order (Spearman). Every function takes (y_true, y_pred),
skips rows whose truth is NaN (not measured), and refuses predictions that are not finite.
APE metrics return fractions (0.1557, not 15.57).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import r2_score


def _pairs(y_true: Any, y_pred: Any, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Aligned 1-D float arrays of the measured rows; clear errors for mismatched or invalid input."""
    t = np.asarray(y_true, dtype="float64").ravel()
    p = np.asarray(y_pred, dtype="float64").ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    seen = ~np.isnan(t)
    t, p = t[seen], p[seen]
    if not len(t):
        raise ValueError("no measured (non-NaN) y_true values to score")
    if not np.isfinite(p).all():
        raise ValueError(f"{int((~np.isfinite(p)).sum())} prediction(s) are NaN or infinite")
    if positive and not (t > 0).all():
        raise ValueError(f"percentage errors need y_true > 0; {int((t <= 0).sum())} value(s) are not")
    return t, p


def ape(y_true: Any, y_pred: Any) -> np.ndarray:
    """Absolute percentage error of each measured row, |p - t| / t (a fraction)."""
    t, p = _pairs(y_true, y_pred, positive=True)
    return np.abs(p - t) / t


def mape(y_true: Any, y_pred: Any) -> float:
    """Mean absolute percentage error (fraction)."""
    return float(np.mean(ape(y_true, y_pred)))


def median_ape(y_true: Any, y_pred: Any) -> float:
    """Median absolute percentage error (fraction)."""
    return float(np.median(ape(y_true, y_pred)))


def p90_ape(y_true: Any, y_pred: Any) -> float:
    """90th percentile of the absolute percentage error (fraction)."""
    return float(np.percentile(ape(y_true, y_pred), 90))


def r2(y_true: Any, y_pred: Any, log: bool = False) -> float:
    """Coefficient of determination, on log values when ``log`` (then both must be positive)."""
    t, p = _pairs(y_true, y_pred, positive=log)
    if log:
        if not (p > 0).all():
            raise ValueError(f"log R² needs positive predictions; {int((p <= 0).sum())} are not")
        t, p = np.log(t), np.log(p)
    return float(r2_score(t, p))


def spearman(y_true: Any, y_pred: Any) -> float:
    """Spearman rank correlation: do predictions order the rows as the measurements do?"""
    t, p = _pairs(y_true, y_pred)
    return float(spearmanr(t, p).statistic)


METRICS = {"mape": mape, "median_ape": median_ape, "p90_ape": p90_ape, "r2": r2, "spearman": spearman}
