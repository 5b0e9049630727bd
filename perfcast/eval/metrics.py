"""Accuracy metrics as the performance-prediction papers report them.

Why our own thin layer: papers quote the absolute percentage error |p - t| / t as a mean, a median or a
90th percentile, and R² sometimes on log values (runtimes span decades, where plain R² only sees the
largest rows); schedulers care about rank order (Spearman); a prediction interval is judged by how often
it holds the truth (coverage) and how wide it is. Every function takes (y_true, y_pred) or (y_true, lo, hi),
skips rows whose truth is NaN (not measured), and refuses predictions that are not finite.
APE metrics return fractions (0.1557, not 15.57). :func:`summary` gives all of them at once and
:func:`breakdown` the per-group view (per device, per op, per size bucket).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ConstantInputWarning, spearmanr
from sklearn.metrics import r2_score

#: R² is taken on log values when the measured values span more than this many decades
LOG_R2_DECADES = 2.0
#: the group label of rows whose breakdown column is missing
MISSING_GROUP = "(missing)"


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
    """Spearman rank correlation: do predictions order the rows as the measurements do?

    NaN when either side is constant (no order to compare).
    """
    t, p = _pairs(y_true, y_pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(t, p).statistic)


METRICS = {"mape": mape, "median_ape": median_ape, "p90_ape": p90_ape, "r2": r2, "spearman": spearman}


# ------------------------------------------------------------------------------------------- intervals
def _bounds(lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
    """Aligned 1-D float interval bounds; clear errors for mismatched, NaN or inverted ones.

    Infinite bounds are allowed: a conformal interval is unbounded when too few calibration rows back its level.
    """
    a = np.asarray(lo, dtype="float64").ravel()
    b = np.asarray(hi, dtype="float64").ravel()
    if a.shape != b.shape:
        raise ValueError(f"lo has {a.size} values but hi has {b.size}")
    missing = int(np.isnan(a).sum() + np.isnan(b).sum())
    if missing:
        raise ValueError(f"{missing} interval bound(s) are NaN")
    if (a > b).any():
        raise ValueError(f"{int((a > b).sum())} interval(s) have lo > hi")
    return a, b


def coverage(y_true: Any, lo: Any, hi: Any) -> float:
    """Fraction of measured rows whose truth lies in [lo, hi]: a calibrated 90 % interval gives about 0.9."""
    a, b = _bounds(lo, hi)
    t = np.asarray(y_true, dtype="float64").ravel()
    if t.shape != a.shape:
        raise ValueError(f"y_true has {t.size} values but the intervals {a.size}")
    seen = ~np.isnan(t)
    if not seen.any():
        raise ValueError("no measured (non-NaN) y_true values to score")
    return float(np.mean((t[seen] >= a[seen]) & (t[seen] <= b[seen])))


def mean_width(lo: Any, hi: Any, relative: bool = True) -> float:
    """Mean interval width: in the target's unit, or (``relative``) as a fraction of the interval's midpoint,
    so 0.2 means ±10 % about the centre whatever the row's magnitude (the comparable number across rows).
    Infinite when any interval is unbounded."""
    a, b = _bounds(lo, hi)
    if not a.size:
        raise ValueError("no intervals to measure")
    return float(np.mean(_relative_widths(a, b) if relative else b - a))


def _relative_widths(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(hi - lo) / midpoint of each interval (inf for an unbounded one); refuses intervals centred at or
    below zero."""
    mid = (lo + hi) / 2
    if not (mid > 0).all():
        raise ValueError(f"relative width needs positive intervals; {int((mid <= 0).sum())} midpoint(s) are not")
    bounded = np.isfinite(lo) & np.isfinite(hi)
    return np.where(bounded, (hi - lo) / np.where(bounded, mid, 1.0), np.inf)


# -------------------------------------------------------------------------------------------- summaries
def spans_decades(y_true: Any, decades: float = LOG_R2_DECADES) -> bool:
    """Whether the measured (positive) values span more than ``decades`` powers of ten."""
    t = np.asarray(y_true, dtype="float64").ravel()
    t = t[~np.isnan(t)]
    return bool(len(t) and (t > 0).all() and np.log10(t.max() / t.min()) > decades)


def summary(y_true: Any, y_pred: Any, lo: Any = None, hi: Any = None) -> dict[str, float | bool]:
    """Every metric of one target: ``n``, the APEs, ``r2``, ``spearman`` (and ``coverage``, ``mean_width``
    when an interval is given), on the measured rows.

    ``r2`` is on log values when the truth spans more than :data:`LOG_R2_DECADES` decades and every
    prediction is positive (``r2_log_scale`` says which); on a plain scale the largest rows would decide
    it alone. R² and Spearman need two rows and are NaN below that.
    """
    if (lo is None) != (hi is None):
        raise ValueError("give both lo and hi (an interval), or neither")
    t, p = _pairs(y_true, y_pred, positive=True)
    out: dict[str, float | bool] = {"n": float(len(t)), "mape": mape(t, p), "median_ape": median_ape(t, p),
                                    "p90_ape": p90_ape(t, p)}
    log = spans_decades(t) and bool((p > 0).all())
    out["r2"] = r2(t, p, log=log) if len(t) > 1 else float("nan")
    out["r2_log_scale"] = log
    out["spearman"] = spearman(t, p) if len(t) > 1 else float("nan")
    if lo is not None:
        out["coverage"] = coverage(y_true, lo, hi)
        seen = ~np.isnan(np.asarray(y_true, dtype="float64").ravel())
        out["mean_width"] = mean_width(*(np.asarray(v, dtype="float64").ravel()[seen] for v in (lo, hi)))
    return out


def flatten(summaries: dict[str, dict[str, float | bool]], prefix: str = "") -> dict[str, float]:
    """Per-target :func:`summary` dicts as the one flat key scheme training, tuning, evaluation and the CLI
    log and read: ``{prefix}{target}_{metric}``, R² as ``r2_log`` when it was taken on log values. Undefined
    (NaN) and unbounded (infinite width) values are left out."""
    out: dict[str, float] = {}
    for target, s in summaries.items():
        for name, value in s.items():
            if name == "r2_log_scale" or not np.isfinite(value):
                continue
            key = "r2_log" if name == "r2" and s.get("r2_log_scale") else name
            out[f"{prefix}{target}_{key}"] = float(value)
    return out


def scores(measured: pd.DataFrame, predicted: Any, prefix: str = "", lo: Any = None, hi: Any = None
           ) -> dict[str, float]:
    """:func:`summary` of every target (a column of ``measured``, matching column of ``predicted`` and of the
    interval bounds), flattened by :func:`flatten`, with ``{prefix}n`` (rows) and ``{prefix}{target}_n``
    (measured rows: a target measured on fewer than two rows gets only its count)."""
    n_rows = len(measured)
    pred = np.asarray(predicted, dtype="float64").reshape(n_rows, -1)
    bounds = None if lo is None else [np.asarray(b, dtype="float64").reshape(n_rows, -1) for b in (lo, hi)]
    out: dict[str, float] = {f"{prefix}n": float(n_rows)}
    summaries = {}
    for j, target in enumerate(measured.columns):
        y = measured[target].to_numpy(dtype="float64")
        ok = ~np.isnan(y)
        out[f"{prefix}{target}_n"] = float(ok.sum())
        if ok.sum() >= 2:
            interval = () if bounds is None else (bounds[0][ok, j], bounds[1][ok, j])
            summaries[target] = summary(y[ok], pred[ok, j], *interval)
    return out | flatten(summaries, prefix)


def _si(x: float, digits: int = 3) -> str:
    """Compact engineering notation: 1.2e9 -> '1.2G', 3500 -> '3.5k', 0.5 -> '0.5'."""
    for factor, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.{digits}g}{suffix}"
    return f"{x:.{digits}g}"


def size_buckets(size: Any, n_buckets: int = 4, unit: str = "") -> pd.Series:
    """Quantile buckets of a work size (FLOPs, bytes), labelled by the range of values each holds
    ("1.2G–34G FLOP"); an ordered categorical, smallest first. Ties can merge buckets; NaN stays NaN."""
    s = pd.Series(size, dtype="float64") if not isinstance(size, pd.Series) else size.astype("float64")
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be at least 1, got {n_buckets}")
    codes = pd.qcut(s, n_buckets, labels=False, duplicates="drop")
    ranges = s.groupby(codes).agg(["min", "max"])
    suffix = f" {unit}" if unit else ""
    for digits in range(3, 18):  # more digits only where close buckets would otherwise read alike
        labels = {c: f"{_si(r['min'], digits)}–{_si(r['max'], digits)}{suffix}" for c, r in ranges.iterrows()}
        if len(set(labels.values())) == len(labels):
            break
    names = [labels[c] for c in sorted(labels)]
    return pd.Series(pd.Categorical(codes.map(labels), categories=names, ordered=True), index=s.index)


def _labels(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Group labels (text, :data:`MISSING_GROUP` for missing) and their order: a categorical's own order,
    otherwise sorted."""
    text = values.astype(str).where(values.notna().to_numpy(), MISSING_GROUP)
    if isinstance(values.dtype, pd.CategoricalDtype):
        order = [str(c) for c in values.cat.categories]
    else:
        order = sorted(set(text) - {MISSING_GROUP})
    return text, order + [MISSING_GROUP]


def breakdown(df: pd.DataFrame, y_true: Any, y_pred: Any, by: Sequence[str], lo: Any = None, hi: Any = None
              ) -> pd.DataFrame:
    """APE metrics per group of each ``by`` column of ``df`` (rows aligned with y_true / y_pred).

    One row per (``by``, ``group``) with ``n`` (measured rows), ``mape``, ``median_ape``, ``p90_ape``, and
    ``coverage`` / ``mean_width`` when an interval is given; for each ``by`` the n's add up to the measured
    rows. Rows whose ``by`` value is missing form the group :data:`MISSING_GROUP`. Groups keep a
    categorical column's order (a size bucket's run smallest first), others are sorted.
    """
    absent = [c for c in by if c not in df.columns]
    if absent:
        raise ValueError(f"breakdown: column(s) {absent} are not in the frame; it has {list(df.columns)}")
    t = np.asarray(y_true, dtype="float64").ravel()
    if len(t) != len(df):
        raise ValueError(f"breakdown: the frame has {len(df)} rows but y_true has {len(t)}")
    if (lo is None) != (hi is None):
        raise ValueError("give both lo and hi (an interval), or neither")
    seen = ~np.isnan(t)
    scores = pd.DataFrame({"ape": ape(t, y_pred)})
    if lo is not None:
        a, b = _bounds(lo, hi)
        if a.shape != t.shape:
            raise ValueError(f"breakdown: y_true has {t.size} values but the intervals {a.size}")
        scores["covered"] = (t[seen] >= a[seen]) & (t[seen] <= b[seen])
        scores["width"] = _relative_widths(a[seen], b[seen])
    rows = df[seen]
    parts = []
    for col in by:
        labels, order = _labels(rows[col].reset_index(drop=True))
        grouped = scores.groupby(labels, sort=False)
        stats = grouped["ape"].agg(["size", "mean", "median"]).set_axis(["n", "mape", "median_ape"], axis=1)
        stats["p90_ape"] = grouped["ape"].quantile(0.9)
        if lo is not None:
            stats["coverage"] = grouped["covered"].mean()
            stats["mean_width"] = grouped["width"].mean()
        stats = stats.reindex([g for g in order if g in stats.index])
        parts.append(stats.rename_axis("group").reset_index().assign(by=col))
    out = pd.concat(parts, ignore_index=True)
    return out[["by", "group", *[c for c in out.columns if c not in ("by", "group")]]]
