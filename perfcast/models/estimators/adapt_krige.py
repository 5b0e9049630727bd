"""Kriging of the adaptation's cross-fitted residuals: the last, smooth stage of the adaptation's guard.

Why: the trees of the shape term step across the few measured sizes, and their leaves need rows; what they leave
on the K rows (each row's residual from a model fitted without it) is still correlated between neighbouring
configurations (the same dtype, nearby sizes), because a GPU's kernels change efficiency smoothly in log size. A
Gaussian-process mean over those residuals (a radial kernel on standardised log sizes, dtype flags and log base;
noise equal to the signal's variance, so one number, the length scale, shapes it) interpolates them to the
device's other configurations with no parameter to learn beyond the residuals themselves. Its length scale and
weight are chosen by the guard's folds on the K rows (weight 0, no kriging, unless a candidate cuts their error by
:data:`MIN_GAIN`), so it is used only where the rows support it. Everything is numbers (the K rows' standardised inputs and the solved weights), so a bundle
stores it as arrays and nothing in it is executed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from perfcast.features import feature_groups
from perfcast.models.estimators.adapt_stack import rescored

#: length scales (in standard deviations of each input) and weights the guard chooses among
LENGTH_SCALES: tuple[float, ...] = (0.5, 1.0, 2.0)
WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0)
#: noise variance over signal variance of the residuals' process (fixed: the K rows are too few to fit it)
NOISE_RATIO = 1.0
#: the least relative cut of the cross-validated mean APE for which the kriging is used by default: six candidates
#: chosen on the same folds would otherwise pick one that fits noise (residuals with no structure gain ~1% by chance)
MIN_GAIN = 0.02
#: fewest rows from which the kriging is offered
MIN_KRIGE_ROWS = 32
#: rows predicted per block: the rows x K kernel matrix and its step then stay in cache (a 100,000-row batch of
#: a K = 512 kriging: 128 rows measured fastest, benchmarks/PREDICT_SPEED.md)
BLOCK = 128


def krige_columns(F: pd.DataFrame, task: str) -> list[str]:
    """The inputs besides log(base): the shape group's log sizes and phase flags, the dtype group's flags."""
    groups = feature_groups(task)
    shape = [c for c in groups.get("shape", []) if c.startswith("log2_") or c in ("is_decode", "causal")]
    return [c for c in [*shape, *[c for c in groups.get("dtype", []) if c.startswith("dtype_")]] if c in F.columns]


def _inputs(A: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``A`` (NaN as 0) beside log(base); filled in place, as a one-row request pays for every numpy call."""
    X = np.empty((len(A), A.shape[1] + 1))
    X[:, :-1] = A
    if not np.isfinite(X[:, :-1]).all():
        X[:, :-1] = np.nan_to_num(A, nan=0.0)
    X[:, -1] = np.log(np.asarray(base, dtype="float64").ravel())
    return X


def _kernel(X: np.ndarray, Y: np.ndarray, length_scale: float) -> np.ndarray:
    d2 = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * X @ Y.T
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * length_scale ** 2))


@dataclass
class Kriging:
    """``weight`` x the Gaussian-process mean of the residuals at the K rows' standardised inputs ``points``."""

    columns: list[str]
    mean: np.ndarray
    scale: np.ndarray
    points: np.ndarray
    alpha: np.ndarray
    length_scale: float
    weight: float

    @classmethod
    def fit(cls, A: np.ndarray, base: np.ndarray, residuals: np.ndarray, columns: list[str], length_scale: float,
            weight: float) -> Kriging:
        """From the K rows' input columns ``A`` (named ``columns``), base predictions and residuals."""
        X = _inputs(A, base)
        mean, scale = X.mean(0), X.std(0)
        keep = scale > 0
        Z = (X[:, keep] - mean[keep]) / scale[keep]
        K = _kernel(Z, Z, length_scale) + NOISE_RATIO * np.eye(len(Z))
        alpha = np.linalg.solve(K, np.asarray(residuals, dtype="float64"))
        names = [*columns, "log_base"]
        return cls([n for n, k in zip(names, keep, strict=True) if k], mean[keep], scale[keep], Z, alpha,
                   float(length_scale), float(weight))

    def __post_init__(self) -> None:
        # per column-name tuple of the feature rows a request brings, where each input sits in them (never saved)
        self._at: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    def log_ratio(self, F: pd.DataFrame | None, base: np.ndarray, A: np.ndarray | None = None,
                  names: tuple[str, ...] | None = None) -> np.ndarray:
        """Per row, ``weight`` x the kriged residual (``F``, or feature rows ``A`` with column ``names``)."""
        base = np.asarray(base, dtype="float64").ravel()
        cols = [c for c in self.columns if c != "log_base"]
        if F is not None:
            X = F.reindex(columns=cols).to_numpy(dtype="float64")
        else:
            X = self._take(np.asarray(A, dtype="float64"), tuple(names or ()), cols)
        X = _inputs(X, base)
        if "log_base" not in self.columns:
            X = X[:, :-1]
        Z = (X - self.mean) / self.scale
        out = np.empty(len(Z))
        scale = -1.0 / (2.0 * self.length_scale ** 2)
        for i in range(0, len(Z), BLOCK):
            # elementwise only (no matrix product): each row's value is then the same bits whether it is predicted
            # alone or in a batch, as one-row serving promises (a BLAS product's summation order depends on the shape)
            z = Z[i:i + BLOCK]
            d2 = np.zeros((len(z), len(self.points)))
            step = np.empty_like(d2)
            for j in range(z.shape[1]):
                np.subtract(z[:, j, None], self.points[None, :, j], out=step)
                step *= step
                d2 += step
            d2 *= scale
            np.exp(d2, out=d2)
            d2 *= self.alpha
            out[i:i + BLOCK] = d2.sum(1)
        return self.weight * out

    def _take(self, A: np.ndarray, names: tuple[str, ...], cols: list[str]) -> np.ndarray:
        """The input columns ``cols`` of feature rows ``A`` named ``names`` (absent ones NaN)."""
        found = self._at.get(names)
        if found is None:
            at = {n: i for i, n in enumerate(names)}
            idx = np.array([at.get(c, -1) for c in cols], dtype=np.intp)
            found = self._at[names] = (np.maximum(idx, 0), idx < 0)
        X = A[:, found[0]]
        X[:, found[1]] = np.nan
        return X

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"columns": list(self.columns), "length_scale": self.length_scale, "weight": self.weight},
                {"krige_mean": self.mean, "krige_scale": self.scale, "krige_points": self.points,
                 "krige_alpha": self.alpha})

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Kriging:
        return cls([str(c) for c in params["columns"]], *(np.asarray(arrays[f"krige_{k}"], dtype="float64")
                                                          for k in ("mean", "scale", "points", "alpha")),
                   float(params["length_scale"]), float(params["weight"]))


def choose_kriging(F: pd.DataFrame, base: np.ndarray, residuals: np.ndarray, task: str,
                   folds: Sequence[tuple[np.ndarray, np.ndarray]], min_gain: float = MIN_GAIN
                   ) -> tuple[Kriging | None, dict[str, float], np.ndarray]:
    """(the kriging fitted on every row, or None; cross-validated mean APE per candidate; the chosen candidate's
    cross-fitted residuals). Each fold's residuals are kriged from the other folds' (``folds``: the guard's); the
    best candidate is used if it cuts the mean APE without kriging by the share ``min_gain``."""
    residuals = np.asarray(residuals, dtype="float64")
    if len(residuals) < MIN_KRIGE_ROWS:
        return None, {}, residuals
    columns = krige_columns(F, task)
    A = F[columns].to_numpy(dtype="float64")
    errors: dict[str, float] = {}
    best = ((1.0 - min_gain) * float(np.mean(np.abs(np.expm1(-residuals)))), 0.0, 0.0, residuals)
    for ls in LENGTH_SCALES:
        oof = np.empty(len(residuals))
        for fit_idx, held_idx in folds:
            oof[held_idx] = Kriging.fit(A[fit_idx], base[fit_idx], residuals[fit_idx], columns, ls, 1.0).log_ratio(
                None, base[held_idx], A[held_idx], tuple(columns))
        for w in WEIGHTS[1:]:
            left = residuals - w * oof
            errors[f"krige {ls:g} {w:g}"] = err = float(np.mean(np.abs(np.expm1(-left))))
            if round(err, 12) < round(best[0], 12):
                best = (err, ls, w, left)
    if not best[2]:
        return None, errors, residuals
    return Kriging.fit(A, base, residuals, columns, best[1], best[2]), errors, best[3]


def with_kriging(found: Any, F: pd.DataFrame, base: np.ndarray, task: str,
                 folds: Sequence[tuple[np.ndarray, np.ndarray]], min_gain: float = MIN_GAIN) -> Any:
    """``found`` (an :class:`~perfcast.models.estimators.adapt.Adaptation`) times the kriging of its cross-fitted
    residuals (``base``: the rows' base predictions, one of its inputs) when the guard's ``folds`` choose a weight
    above 0 (see :func:`choose_kriging`); the intervals are then recalibrated on the kriged residuals left."""
    model, errors, residuals = choose_kriging(F, np.asarray(base, dtype="float64"), found.residuals, task, folds,
                                              min_gain)
    cv_error = {**found.cv_error, **errors}
    return replace(found, cv_error=cv_error) if model is None else rescored(found, residuals, cv_error=cv_error,
                                                                            krige=model)
