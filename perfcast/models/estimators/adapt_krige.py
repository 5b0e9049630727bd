"""Kriging of the adaptation's cross-fitted residuals: the last, smooth stage of the adaptation's guard.

Why: the trees of the shape term step across the few measured sizes, and their leaves need rows; what they leave
on the K rows (each row's residual from a model fitted without it) is still correlated between neighbouring
configurations (the same dtype, nearby sizes), because a GPU's kernels change efficiency smoothly in log size. A
Gaussian-process mean over those residuals (a radial kernel on standardised log sizes, dtype flags and log base;
noise equal to the signal's variance, so one number, the length scale, shapes it) interpolates them to the
device's other configurations with no parameter to learn beyond the residuals themselves. Its length scale and
weight are chosen by the guard's folds on the K rows (weight 0, no kriging, unless a candidate cuts their error by
:data:`MIN_GAIN`), so it is used only where the rows support it. A :class:`KrigeRule` also offers other length
scales and more coordinates, each stretched by a factor the same folds choose. Everything is numbers (the K rows'
standardised inputs and the solved weights), so a bundle stores it as arrays and nothing in it is executed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import product
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd
from threadpoolctl import threadpool_limits

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


@dataclass(frozen=True)
class KrigeRule:
    """The kriging offered as a plain ``krige`` share offers it (``share``: see :func:`choose_kriging`'s
    ``min_gain``), but with its length scales chosen among ``length_scales`` and each feature column of
    ``stretches`` a coordinate too, its standardised value multiplied by a factor the same folds choose among the
    column's factors (0: not used, as the plain kriging; larger: rows that differ in it share less). Why: the
    kriging's own coordinates have the query dtype's flags but not the KV cache's dtype, so an fp8-KV decode
    kernel's residual is interpolated from bf16-KV neighbours of the same sizes, whose code path errs differently;
    a fixed isotropic coordinate gained little on the K rows (benchmarks/ANALYSIS_adapt.md, rounds 14b and 15a),
    so how far apart the KV dtypes are is left to the folds, where they agree and where they do not."""

    share: float
    stretches: tuple[tuple[str, tuple[float, ...]], ...] = ()
    length_scales: tuple[float, ...] = LENGTH_SCALES

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.stretches)


def krige_rule(share: float | None, inputs: dict[str, Sequence[float]] | None, scales: Sequence[float] | None,
               task: str) -> float | KrigeRule | None:
    """A setting's ``krige`` share, as a :class:`KrigeRule` when it names ``krige_inputs`` (feature columns of
    ``task``, each with the factors its folds choose among) or ``krige_scales`` (the length scales offered)."""
    if not inputs and not scales:
        return share
    where = f"krige_inputs = {inputs!r}, krige_scales = {scales!r}"
    if share is None:
        raise ValueError(f"{where}: a setting with them needs krige (the share), e.g. krige = -1.0")
    if not isinstance(inputs or {}, dict):
        raise ValueError(f"{where}: krige_inputs maps each feature column to the factors its folds choose among, "
                         "e.g. { kv_bytes = [0.0, 1.0, 3.0] }")
    unknown = sorted(set(inputs or {}) - {c for cols in feature_groups(task).values() for c in cols})
    if unknown:
        raise ValueError(f"{where}: {unknown} are not {task} feature columns; name columns of "
                         f"perfcast.features.feature_groups({task!r})")
    stretches = tuple((str(c), _numbers(fs)) for c, fs in (inputs or {}).items())
    if not all(fs and all(f >= 0 for f in fs) for _, fs in stretches):
        raise ValueError(f"{where}: each column needs a list of one or more finite factors >= 0 (0: not used)")
    lengths = _numbers(scales) if scales else LENGTH_SCALES
    if not lengths or not all(s > 0 for s in lengths):
        raise ValueError(f"{where}: krige_scales needs a list of finite length scales > 0 (in standard deviations "
                         "of each input)")
    return KrigeRule(float(share), stretches, lengths)


def _numbers(values: Any) -> tuple[float, ...]:
    """``values`` as finite floats; an empty tuple if they are not a list of them (the caller says what is wrong)."""
    if isinstance(values, (str, bytes)):
        return ()
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return ()
    return out if all(np.isfinite(out)) else ()


def krige_columns(F: pd.DataFrame, task: str, inputs: Sequence[str] = ()) -> list[str]:
    """The inputs besides log(base): the shape group's log sizes and phase flags, the dtype group's flags (and the
    columns ``inputs``, of a :class:`KrigeRule`)."""
    groups = feature_groups(task)
    shape = [c for c in groups.get("shape", []) if c.startswith("log2_") or c in ("is_decode", "causal")]
    own = [*shape, *[c for c in groups.get("dtype", []) if c.startswith("dtype_")]]
    return [c for c in dict.fromkeys([*own, *inputs]) if c in F.columns]


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
            weight: float, stretch: np.ndarray | None = None) -> Kriging:
        """From the K rows' input columns ``A`` (named ``columns``), base predictions and residuals; ``stretch``:
        a factor per column on its standardised value (0: not used; it is kept in ``scale``, so nothing new is
        saved)."""
        X = _inputs(A, base)
        mean, scale = X.mean(0), X.std(0)
        keep = scale > 0
        if stretch is not None:
            factor = np.append(np.asarray(stretch, dtype="float64"), 1.0)
            keep &= factor > 0
            scale = np.where(keep, scale / np.where(keep, factor, 1.0), scale)
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
                   folds: Sequence[tuple[np.ndarray, np.ndarray]], min_gain: float | KrigeRule = MIN_GAIN
                   ) -> tuple[Kriging | None, dict[str, float], np.ndarray]:
    """(the kriging fitted on every row, or None; cross-validated mean APE per candidate; the chosen candidate's
    cross-fitted residuals). Each fold's residuals are kriged from the other folds' (``folds``: the guard's); the
    best candidate is used if it cuts the mean APE without kriging by the share ``min_gain`` (a
    :class:`KrigeRule`: its share, and its length scales and stretched columns are candidates too)."""
    residuals = np.asarray(residuals, dtype="float64")
    if len(residuals) < MIN_KRIGE_ROWS:
        return None, {}, residuals
    rule = min_gain if isinstance(min_gain, KrigeRule) else KrigeRule(float(min_gain))
    columns = krige_columns(F, task, rule.inputs)
    A = F[columns].to_numpy(dtype="float64")
    errors: dict[str, float] = {}
    best = ((1.0 - rule.share) * float(np.mean(np.abs(np.expm1(-residuals)))), 0.0, 0.0, None, residuals)
    candidates = _stretches(rule, columns, _inputs(A, base).std(0))
    for ls in rule.length_scales:
        for stretch, label in candidates:
            oof = np.empty(len(residuals))
            for fit_idx, held_idx in folds:
                oof[held_idx] = Kriging.fit(A[fit_idx], base[fit_idx], residuals[fit_idx], columns, ls, 1.0,
                                            stretch).log_ratio(None, base[held_idx], A[held_idx], tuple(columns))
            for w in WEIGHTS[1:]:
                left = residuals - w * oof
                errors[f"krige {ls:g} {w:g}{label}"] = err = float(np.mean(np.abs(np.expm1(-left))))
                if round(err, 12) < round(best[0], 12):
                    best = (err, ls, w, stretch, left)
    if not best[2]:
        return None, errors, residuals
    return Kriging.fit(A, base, residuals, columns, best[1], best[2], best[3]), errors, best[4]


def _stretches(rule: KrigeRule, columns: list[str], spread: np.ndarray) -> list[tuple[np.ndarray | None, str]]:
    """Every combination of the rule's factors over ``columns`` (None and no label for a rule without stretched
    columns, so a plain kriging's numbers and names stay as they were); a column with no ``spread`` on these rows
    is not a coordinate whatever its factor, so only its first factor is tried."""
    if not rule.stretches:
        return [(None, "")]
    at = {c: i for i, c in enumerate(columns)}
    offered = [(c, fs if c in at and spread[at[c]] > 0 else fs[:1]) for c, fs in rule.stretches]
    out = []
    for combo in product(*(fs for _, fs in offered)):
        factor = np.ones(len(columns))
        for (c, _), f in zip(offered, combo, strict=True):
            if c in at:
                factor[at[c]] = f
        out.append((factor, "".join(f" {c} x{f:g}" for (c, _), f in zip(offered, combo, strict=True))))
    return out


def with_kriging(found: Any, F: pd.DataFrame, base: np.ndarray, task: str,
                 folds: Sequence[tuple[np.ndarray, np.ndarray]], min_gain: float | KrigeRule = MIN_GAIN) -> Any:
    """``found`` (an :class:`~perfcast.models.estimators.adapt.Adaptation`) times the kriging of its cross-fitted
    residuals (``base``: the rows' base predictions, one of its inputs) when the guard's ``folds`` choose a weight
    above 0 (see :func:`choose_kriging`); the intervals are then recalibrated on the kriged residuals left."""
    with threadpool_limits(1):  # hundreds of small solves: BLAS threads on a shared machine only wait on each other
        model, errors, residuals = choose_kriging(F, np.asarray(base, dtype="float64"), found.residuals, task, folds,
                                                  min_gain)
    cv_error = {**found.cv_error, **errors}
    return replace(found, cv_error=cv_error) if model is None else rescored(found, residuals, cv_error=cv_error,
                                                                            krige=model)
