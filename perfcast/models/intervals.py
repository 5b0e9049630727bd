"""Calibrated prediction intervals: cross-conformal scores of log-ratio residuals, grouped like the test.

Why this construction:

* **relative**: runtimes span decades and errors are multiplicative, so the conformity score is
  ``|log(y / ŷ)|`` and an interval is ``ŷ·e^-q .. ŷ·e^q`` (never negative, as wide in % for 10 µs as for 10 s).
* **grouped**: calibration residuals come from models that never saw the row's *device* (or, with a single
  device, the row's configuration and its repeats). That is the situation the unseen-hardware protocol and a
  user asking about new hardware put the model in; residuals on seen devices would be far too small.
* **cross-conformal ("CV", base method)**: the training rows are split into ``n_splits`` GroupKFold folds;
  each row is scored by the fold model that did not see its group, and the final model is fitted on every
  row. ``q`` at level ℓ is the ⌈(n+1)ℓ⌉-th smallest of the n scores (split-conformal's finite-sample rank).
  Every row calibrates, which matters when a dataset has only five or eight devices.
* **noise floor**: a measurement repeats only to within its run-to-run noise, so no interval is narrower
  than ``ŷ·(1 ± z·cv)`` with ``z`` the normal quantile of the level and ``cv`` the record's measured
  coefficient of variation (``runtime_cv``) or, where a record has none, the training median.

Why not MAPIE: its regressors take one target vector, whereas our pipelines fit several targets with NaN
where a target was not measured (one MAPIE object per target would refit the whole pipeline per target);
MAPIE 1.x fixes the confidence level at construction while ``predict_interval`` here takes any level from the
stored scores; the log-ratio score and the noise floor would be our code around it anyway; and a saved model
keeps only the sorted scores (plain numbers), not MAPIE objects holding every fold's estimator. The fold
machinery it would provide is scikit-learn's :class:`~sklearn.model_selection.GroupKFold`, used directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import GroupKFold
from sklearn.utils.validation import check_is_fitted

DEFAULT_LEVEL = 0.9
#: target -> the quality column holding its measured run-to-run coefficient of variation
NOISE_COLUMNS: dict[str, str] = {"runtime_ms": "runtime_cv"}
#: with fewer distinct devices than this, calibration folds hold out configurations instead
MIN_DEVICE_GROUPS = 2


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ⌈(n+1)·level⌉-th smallest of the sorted ``scores`` (inf when n is too small for the level)."""
    check_level(level)
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    return float(scores[rank - 1]) if 1 <= rank <= n else math.inf


def check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"interval level must be a fraction in (0, 1), e.g. 0.9 for 90%; got {level!r}")


@dataclass
class IntervalCalibration:
    """What a fitted interval model keeps: per target, the sorted conformity scores and the noise median.

    It is plain numbers (saved as JSON and ``.npy``), shared by :class:`ConformalRegressor` and the
    :class:`~perfcast.predictor.Predictor` so both turn predictions into the same bounds.
    """

    targets: list[str]
    #: target -> sorted |log(y / ŷ_out-of-fold)| (inf where a fold model predicted <= 0)
    scores: dict[str, np.ndarray]
    #: target -> median measured coefficient of variation of the training rows (NaN when none was measured)
    noise_median: dict[str, float]
    level: float = DEFAULT_LEVEL
    #: how the calibration folds were drawn (for the model card): column, number of groups and folds
    grouping: dict[str, Any] = field(default_factory=dict)

    def quantiles(self, level: float | None = None) -> np.ndarray:
        """Per target, the log-ratio half-width q at ``level`` (default: the calibrated one)."""
        lvl = self.level if level is None else level
        return np.array([conformal_quantile(self.scores[t], lvl) for t in self.targets])

    def noise(self, records: pd.DataFrame | None, n_rows: int) -> np.ndarray:
        """(n_rows, targets) relative noise: the records' own measured cv, else the training median."""
        out = np.empty((n_rows, len(self.targets)))
        for j, t in enumerate(self.targets):
            own = np.full(n_rows, np.nan)
            col = NOISE_COLUMNS.get(t)
            if records is not None and col in records.columns:
                own = pd.to_numeric(records[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            out[:, j] = np.where(np.isfinite(own), own, self.noise_median.get(t, np.nan))
        return out

    def bounds(self, pred: np.ndarray, noise: np.ndarray, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) for a (rows, targets) prediction matrix and matching relative ``noise`` (NaN = unknown)."""
        lvl = self.level if level is None else level
        q = self.quantiles(lvl)
        floor = NormalDist().inv_cdf(0.5 + lvl / 2) * np.nan_to_num(noise, nan=0.0)
        with np.errstate(over="ignore"):
            lo = pred * np.clip(np.minimum(np.exp(-q), 1.0 - floor), 0.0, None)
            hi = pred * np.maximum(np.exp(q), 1.0 + floor)
        return lo, hi

    def to_json(self) -> dict[str, Any]:
        """Everything but the score arrays (saved beside as ``.npy``)."""
        return {"targets": self.targets, "level": self.level, "grouping": self.grouping,
                "noise_median": {t: (None if np.isnan(v) else v) for t, v in self.noise_median.items()},
                "n_scores": {t: int(len(s)) for t, s in self.scores.items()}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], scores: Mapping[str, np.ndarray]) -> IntervalCalibration:
        noise = {t: (np.nan if v is None else float(v)) for t, v in doc["noise_median"].items()}
        return cls(list(doc["targets"]), {t: np.asarray(scores[t], dtype="float64") for t in doc["targets"]},
                   noise, float(doc["level"]), dict(doc.get("grouping", {})))


def calibration_groups(X: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Group labels for the calibration folds and what they are: devices when there are several, else
    configurations (identical input rows, i.e. repeats of one measurement, share a group)."""
    if "device_id" in X.columns:
        ids = X["device_id"].astype("string")
        if ids.notna().all() and ids.nunique() >= MIN_DEVICE_GROUPS:
            return ids.to_numpy(dtype=object), "device_id"
    return pd.util.hash_pandas_object(X, index=False).to_numpy(), "configuration"


def _target_frame(y: Any, targets: list[str] | None, n_rows: int) -> pd.DataFrame:
    if isinstance(y, pd.DataFrame):
        frame = y if targets is None else y[targets]
    elif isinstance(y, pd.Series):
        frame = y.to_frame(y.name or (targets or ["y"])[0])
    else:
        arr = np.asarray(y, dtype="float64").reshape(n_rows, -1)
        names = targets or [f"y{i}" for i in range(arr.shape[1])]
        frame = pd.DataFrame(arr, columns=names)
    if len(frame) != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {len(frame)}")
    return frame.apply(pd.to_numeric, errors="coerce").astype("float64").reset_index(drop=True)


def _with_targets(estimator: BaseEstimator, targets: list[str]) -> BaseEstimator:
    """``estimator`` told to fit only ``targets`` (every nested ``targets`` parameter set)."""
    keys = [k for k in estimator.get_params(deep=True) if k == "targets" or k.endswith("__targets")]
    return estimator.set_params(**{k: list(targets) for k in keys}) if keys else estimator


def log_ratio_scores(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """|log(y / pred)| for measured rows; a non-positive or non-finite prediction scores inf (a miss)."""
    ok = np.isfinite(pred) & (pred > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, np.abs(np.log(y) - np.log(np.where(ok, pred, 1.0))), np.inf)


class ConformalRegressor(RegressorMixin, BaseEstimator):
    """Wraps a (multi-target) regressor so every prediction has a calibrated interval.

    ``estimator`` is a perfcast pipeline (or any regressor taking a target DataFrame); with ``prefit`` it is
    already fitted and only the calibration folds are fitted here. ``predict`` is the estimator's;
    ``predict_interval(X, level)`` returns (lo, hi) shaped like ``predict``. See the module docstring.
    """

    def __init__(self, estimator: BaseEstimator, level: float = DEFAULT_LEVEL, n_splits: int = 5,
                 prefit: bool = False, targets: list[str] | None = None):
        self.estimator = estimator
        self.level = level
        self.n_splits = n_splits
        self.prefit = prefit
        self.targets = targets

    def fit(self, X: pd.DataFrame, y: Any, *, groups: Any = None, noise: pd.DataFrame | None = None
            ) -> ConformalRegressor:
        """Score every row out of fold, then fit (or keep, with ``prefit``) the final estimator.

        ``groups`` overrides :func:`calibration_groups`; ``noise`` holds the rows' quality columns
        (``runtime_cv``), defaulting to ``X`` itself when it carries them.
        """
        check_level(self.level)
        Y = _target_frame(y, self.targets, len(X))
        targets = list(Y.columns)
        if groups is None:
            labels, kind = calibration_groups(X)
        else:
            labels, kind = np.asarray(groups), "given"
            if labels.shape != (len(X),):
                raise ValueError(f"groups must have one label per row of X ({len(X)}), got shape {labels.shape}")
        n_groups = len(pd.unique(labels))
        if n_groups < 2:
            raise ValueError(f"interval calibration needs at least 2 groups of rows to hold out; the {len(X)} "
                             f"training rows form {n_groups} {kind} group(s)")
        folds = min(int(self.n_splits), n_groups)
        oof = self._out_of_fold(X, Y, labels, folds)
        scores = {}
        for j, t in enumerate(targets):
            seen = Y[t].notna().to_numpy() & ~np.isnan(oof[:, j])
            if not seen.any():
                raise ValueError(f"no calibration score for target {t!r}: no fold model could predict a row "
                                 f"where it was measured (is it measured on a single {kind} only?)")
            scores[t] = np.sort(log_ratio_scores(Y[t].to_numpy()[seen], oof[seen, j]))
        source = X if noise is None else noise
        noise_median = {}
        for t in targets:
            col = NOISE_COLUMNS.get(t)
            vals = (pd.to_numeric(source[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
                    if col in getattr(source, "columns", ()) else np.array([]))
            measured = vals[np.isfinite(vals) & Y[t].notna().to_numpy()] if len(vals) else vals
            noise_median[t] = float(np.median(measured)) if len(measured) else np.nan
        self.calibration_ = IntervalCalibration(
            targets, scores, noise_median, float(self.level),
            {"by": kind, "n_groups": int(n_groups), "n_splits": int(folds)})
        if self.prefit:
            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
        else:
            self.estimator_ = clone(self.estimator).fit(X, Y)
        self.targets_ = targets
        return self

    def _out_of_fold(self, X: pd.DataFrame, Y: pd.DataFrame, labels: np.ndarray, folds: int) -> np.ndarray:
        """(rows, targets) predictions of each row by the fold model that did not see its group (NaN where
        the fold's training part measured none of a target, so no model for it could be fitted)."""
        oof = np.full(Y.shape, np.nan)
        for fit_idx, held_idx in GroupKFold(n_splits=folds).split(X, groups=labels):
            Y_fit = Y.iloc[fit_idx]
            fold_targets = [t for t in Y.columns if Y_fit[t].notna().any()]
            if not fold_targets:
                continue
            model = _with_targets(clone(self.estimator), fold_targets).fit(X.iloc[fit_idx], Y_fit[fold_targets])
            pred = np.asarray(model.predict(X.iloc[held_idx]), dtype="float64").reshape(len(held_idx), -1)
            cols = [Y.columns.get_loc(t) for t in fold_targets]
            oof[np.ix_(held_idx, cols)] = pred
        return oof

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    def predict_interval(self, X: pd.DataFrame, level: float | None = None,
                         noise: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) at ``level`` (default: the fitted one), shaped like :meth:`predict`.

        ``noise`` holds the rows' measured ``runtime_cv`` (default: ``X``'s own column, if any).
        """
        pred = np.asarray(self.predict(X), dtype="float64")
        shape = pred.shape
        cal = self.calibration_
        lo, hi = cal.bounds(pred.reshape(len(X), -1), cal.noise(X if noise is None else noise, len(X)), level)
        return lo.reshape(shape), hi.reshape(shape)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.multi_output = True
        return tags

