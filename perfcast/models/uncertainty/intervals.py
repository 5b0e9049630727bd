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
* **scaled by hardware novelty** (opt-in, ``scale=True``): errors on unseen hardware grow with how unlike
  the trained hardware it is (:mod:`perfcast.models.uncertainty.novelty`, over the hardware columns the model reads), and
  a pooled quantile gives a near-twin of a trained GPU the same width as a device unlike any other (too wide
  for the one, too narrow for the other). So each calibration row also records its hardware's distance
  ``d`` to the nearest hardware its fold model was fitted on; a monotone (isotonic) fit of ``|log(y / ŷ)|``
  on ``d`` gives the expected error ``σ(d)`` (:class:`Spread`); the conformity score is
  ``|log(y / ŷ)| / σ(d)``, and an interval is ``ŷ·e^(±q·σ(d))`` with ``d`` measured against all training
  hardware. With device folds each fold also holds out a share (``seen_share``) of its fitting rows, so
  ``σ`` is anchored at ``d = 0`` (hardware seen, row not) and a device between "seen" and "unlike any" is
  interpolated rather than given the nearest extreme. It is a bet that novelty orders difficulty: it holds
  for GEMMs, SPEC processors and NeuSight's GPUs, not for aiconfigurator's attention kernels (the H100 and
  L40S are predicted worse than their spec-sheet distance suggests), so it stays a per-protocol choice.
* **folds like the test**: devices by default; :class:`ForwardFolds` for a future-hardware test holds out
  each of the latest periods with a model fitted on everything before it (a model is judged on next
  year's processors, which device folds drawn across all years do not mimic).

Why not MAPIE: its regressors take one target vector, whereas our pipelines fit several targets with NaN
where a target was not measured (one MAPIE object per target would refit the whole pipeline per target);
MAPIE 1.x fixes the confidence level at construction while ``predict_interval`` here takes any level from the
stored scores; the log-ratio score and the noise floor would be our code around it anyway; and a saved model
keeps only the sorted scores (plain numbers), not MAPIE objects holding every fold's estimator. The fold
machinery it would provide is scikit-learn's :class:`~sklearn.model_selection.GroupKFold`, used directly.
Why not crepes' normalised (Mondrian) regressors: their difficulty is a fixed function of the row, fitted
once, whereas novelty depends on which hardware each fold's model was fitted on, so the fold loop and the
distances would be ours anyway; the σ fit is scikit-learn's :class:`~sklearn.isotonic.IsotonicRegression`.

The saved, serving half (scores -> bounds) is :mod:`perfcast.models.uncertainty.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd
from perfcast.features.base import RecordFeatures
from perfcast.features.estimator_base import Regressor, check_fitted, clone, is_estimator, is_instance
from perfcast.models.uncertainty.calibration import (
    DEFAULT_LEVEL,
    NOISE_COLUMNS,
    IntervalCalibration,
    Spread,
    check_level,
)
from perfcast.models.uncertainty.novelty import HARDWARE_GROUPS, HardwareNovelty, hardware_columns

#: with fewer distinct devices than this, calibration folds hold out configurations instead
MIN_DEVICE_GROUPS = 2


class ForwardFolds:
    """Calibration folds for a future-hardware test: each of the latest ``n_folds`` periods (calendar years of
    ``column``) is held out and predicted by a model fitted on every earlier row, as the test predicts the
    period after the training data. Earlier rows calibrate nothing; they only train."""

    def __init__(self, column: str = "published_at", n_folds: int = 3):
        if int(n_folds) < 1:
            raise ValueError(f"ForwardFolds needs n_folds >= 1, got {n_folds!r}")
        self.column = column
        self.n_folds = int(n_folds)

    def __repr__(self) -> str:
        return f"ForwardFolds(column={self.column!r}, n_folds={self.n_folds})"

    def split(self, X: pd.DataFrame, y: Any = None, groups: Any = None):
        """Folds by the year of ``X[column]``, or of ``groups`` (one date per row) where X lacks the column
        (a model's input frame carries no publication date; ``perfcast train`` passes it as groups)."""
        if self.column in getattr(X, "columns", ()):
            raw = X[self.column]
        elif groups is not None and len(groups) == len(X):
            raw = pd.Series(np.asarray(groups))
        else:
            raise ValueError(f"ForwardFolds orders rows by {self.column!r}, which the training rows lack (pass "
                             f"their dates as groups)")
        dates = pd.to_datetime(raw, utc=True, errors="coerce")
        if dates.isna().any():
            raise ValueError(f"ForwardFolds: {int(dates.isna().sum())} training row(s) have no usable "
                             f"{self.column}; drop them or calibrate with device folds")
        year = dates.dt.year.to_numpy()
        periods = np.unique(year)
        if len(periods) < 2:
            raise ValueError(f"ForwardFolds needs rows from at least 2 years of {self.column}; all are {periods}")
        for p in periods[1:][-self.n_folds:]:
            yield np.flatnonzero(year < p), np.flatnonzero(year == p)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_folds


def calibration_groups(X: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Group labels for the calibration folds and what they are: devices when there are several, else
    configurations (identical input rows, i.e. repeats of one measurement, share a group)."""
    if "device_id" in X.columns:
        ids = X["device_id"].astype("string")
        if ids.notna().all() and ids.nunique() >= MIN_DEVICE_GROUPS:
            return ids.to_numpy(dtype=object), "device_id"
    return pd.util.hash_pandas_object(X, index=False).to_numpy(), "configuration"


def feature_step(estimator: Any) -> RecordFeatures | None:
    """The perfcast feature transformer at the head of ``estimator`` when its task has a hardware
    description (what novelty scaling reads), else None."""
    if is_instance(estimator, "sklearn.pipeline", "Pipeline") and isinstance(estimator.steps[0][1], RecordFeatures):
        step = estimator.steps[0][1]
        return step if step.task in HARDWARE_GROUPS else None
    return None


def read_columns(estimator: Any) -> set[str] | None:
    """The feature columns ``estimator`` reads: a ``columns`` selection (a hybrid's), else the union over
    its nested estimators (ensemble members, pipeline steps after the features); None when it, or a part
    of it, reads every column."""
    params = estimator.get_params(deep=False)
    if "columns" in params:
        return None if params["columns"] is None else set(params["columns"])
    if is_instance(estimator, "sklearn.pipeline", "Pipeline"):
        nested = [step for _, step in estimator.steps if not isinstance(step, RecordFeatures)]
    else:
        nested = [v for v in params.values() if is_estimator(v)]
        nested += [e for v in params.values() if isinstance(v, (list, tuple)) for e in v
                   if is_estimator(e)]
    found: set[str] = set()
    for part in nested:
        sub = read_columns(part)
        if sub is None:
            return None
        found |= sub
    return found if nested else None


def novelty_columns(estimator: Any, task: str) -> list[str]:
    """The hardware columns novelty compares: those ``estimator`` reads (a device differing only in columns the
    model never reads gets its twin's prediction, so it is as new to the model as its twin), or all of
    them when it reads none (its roofline baseline still reads the spec sheet)."""
    every = hardware_columns(task)
    read = read_columns(estimator)
    chosen = every if read is None else [c for c in every if c in read]
    return chosen or every


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


def _with_targets(estimator: Any, targets: list[str]) -> Any:
    """``estimator`` told to fit only ``targets`` (every nested ``targets`` parameter set)."""
    keys = [k for k in estimator.get_params(deep=True) if k == "targets" or k.endswith("__targets")]
    return estimator.set_params(**{k: list(targets) for k in keys}) if keys else estimator


def log_ratio_scores(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """|log(y / pred)| for measured rows; a non-positive or non-finite prediction scores inf (a miss)."""
    ok = np.isfinite(pred) & (pred > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, np.abs(np.log(y) - np.log(np.where(ok, pred, 1.0))), np.inf)


def with_seen_rows(folds: list[tuple[np.ndarray, np.ndarray]], keys: np.ndarray, share: float, seed: int
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Device folds that also hold out ``share`` of each fold's fitting rows (whole distinct ``keys``, i.e. a
    configuration on one device with its repeats, each key in at most one fold), so fold models are scored
    on hardware they have seen as well as on hardware they have not."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"seen_share must be a fraction in [0, 1), got {share!r}")
    if share == 0.0:
        return folds
    _, code = np.unique(keys, return_inverse=True)
    rng = np.random.default_rng(seed)
    n_codes = int(code.max()) + 1
    # each key draws one fold (it is held out there if its rows are fitted there) and a coin of P = share·k
    which = rng.integers(len(folds), size=n_codes)
    picked = rng.random(n_codes) < min(1.0, share * len(folds))
    out = []
    for i, (fit_idx, held_idx) in enumerate(folds):
        move = picked[code[fit_idx]] & (which[code[fit_idx]] == i)
        out.append((fit_idx[~move], np.concatenate([held_idx, fit_idx[move]])))
    return out


class ConformalRegressor(Regressor):
    """Wraps a (multi-target) regressor so every prediction has a calibrated interval.

    ``estimator`` is a perfcast pipeline (or any regressor taking a target DataFrame); with ``prefit`` it is
    already fitted and only the calibration folds are fitted here. ``predict`` is the estimator's;
    ``predict_interval(X, level)`` returns (lo, hi) shaped like ``predict``. ``cv`` replaces the device
    (GroupKFold) folds with another splitter, e.g. :class:`ForwardFolds`. ``scale`` divides scores by
    σ(hardware novelty) (needs a perfcast pipeline of a task with a hardware description; bounds then need
    the rows' features, see :meth:`IntervalCalibration.bounds`); with it, ``seen_share`` of each device
    fold's fitting rows is also held out to anchor σ at seen hardware (``random_state`` draws them). See
    the module docstring.
    """

    def __init__(self, estimator: Any, level: float = DEFAULT_LEVEL, n_splits: int = 5,
                 prefit: bool = False, targets: list[str] | None = None, cv: Any = None,
                 scale: bool = False, seen_share: float = 0.1, random_state: int = 0):
        self.estimator = estimator
        self.level = level
        self.n_splits = n_splits
        self.prefit = prefit
        self.targets = targets
        self.cv = cv
        self.scale = scale
        self.seen_share = seen_share
        self.random_state = random_state

    def _features(self) -> RecordFeatures | None:
        """The feature step novelty scaling reads (None: plain scores)."""
        if not self.scale:
            return None
        step = feature_step(self.estimator)
        if step is None:
            raise ValueError("scale=True needs a perfcast pipeline (make_model) of a gemm, attention or cpu_bench "
                             "task: novelty is measured on its hardware feature columns")
        return step

    def fit(self, X: pd.DataFrame, y: Any, *, groups: Any = None, noise: pd.DataFrame | None = None
            ) -> ConformalRegressor:
        """Score every row out of fold, then fit (or keep, with ``prefit``) the final estimator.

        ``groups`` overrides :func:`calibration_groups`; ``noise`` holds the rows' quality columns
        (``runtime_cv``), defaulting to ``X`` itself when it carries them.
        """
        check_level(self.level)
        Y = _target_frame(y, self.targets, len(X))
        targets = list(Y.columns)
        step = self._features()
        if step is not None:
            step = clone(step).fit(X)
            F = step.transform(X).reset_index(drop=True)
            novelty = HardwareNovelty.fit(F, novelty_columns(self.estimator, step.task))
        else:
            F = novelty = None
        folds, grouping = self._folds(X, Y, groups, F)
        oof = self._out_of_fold(X, Y, folds, F, novelty)
        # kept (not saved) so a zero-shot interval variant can be re-drawn from the same cross-fitted rows
        # without refitting the folds (perfcast.models.uncertainty.zero_shot)
        self.cross_fitted_ = CrossFitted(folds, oof.row, oof.pred)
        raw, distance = {}, {}
        for j, t in enumerate(targets):
            seen = Y[t].notna().to_numpy()[oof.row] & ~np.isnan(oof.pred[:, j])
            if not seen.any():
                raise ValueError(f"no calibration score for target {t!r}: no fold model could predict a row "
                                 f"where it was measured (is it measured on a single {grouping['by']} only?)")
            raw[t] = log_ratio_scores(Y[t].to_numpy()[oof.row[seen]], oof.pred[seen, j])
            distance[t] = oof.distance[seen]
        spread = {}
        if novelty is not None:
            for t in targets:
                ok = np.isfinite(raw[t])
                if ok.any() and np.ptp(distance[t][ok]) > 0:
                    spread[t] = Spread.fit(distance[t][ok], raw[t][ok])
            if len(spread) < len(targets):  # every calibration row of a target equally novel: nothing to scale by
                novelty, spread = None, {}
            else:
                grouping["scaled_by"] = "hardware novelty"
        scores = {t: np.sort(raw[t] / spread[t](distance[t]) if spread else raw[t]) for t in targets}
        source = X if noise is None else noise
        noise_median = {}
        for t in targets:
            col = NOISE_COLUMNS.get(t)
            vals = (pd.to_numeric(source[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
                    if col in getattr(source, "columns", ()) else np.array([]))
            measured = vals[np.isfinite(vals) & Y[t].notna().to_numpy()] if len(vals) else vals
            noise_median[t] = float(np.median(measured)) if len(measured) else np.nan
        self.calibration_ = IntervalCalibration(targets, scores, noise_median, float(self.level), grouping,
                                                novelty, spread)
        if self.prefit:
            from sklearn.utils.validation import check_is_fitted  # fitting only (any fitted estimator)

            check_is_fitted(self.estimator)
            self.estimator_ = self.estimator
        else:
            self.estimator_ = clone(self.estimator).fit(X, Y)
        self.features_ = step if novelty is not None else None
        self.targets_ = targets
        return self

    def _folds(self, X: pd.DataFrame, Y: pd.DataFrame, groups: Any, F: pd.DataFrame | None
               ) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
        """(fit rows, held rows) per calibration fold, and how they were drawn."""
        if self.cv is not None:
            folds = [(np.asarray(a), np.asarray(b)) for a, b in self.cv.split(X, Y, groups)]
            if not folds:
                raise ValueError(f"the calibration splitter {self.cv!r} produced no fold")
            return folds, {"by": repr(self.cv), "n_splits": len(folds)}
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
        n_folds = min(int(self.n_splits), n_groups)
        from sklearn.model_selection import GroupKFold  # fitting only: serving never imports the splitters

        folds = list(GroupKFold(n_splits=n_folds).split(X, groups=labels))
        grouping = {"by": kind, "n_groups": int(n_groups), "n_splits": int(n_folds)}
        if F is not None and kind != "configuration" and self.seen_share > 0:
            keys = pd.util.hash_pandas_object(F, index=False).to_numpy()
            folds = with_seen_rows(folds, keys, float(self.seen_share), self.random_state)
            grouping["seen_share"] = float(self.seen_share)
        return folds, grouping

    def _out_of_fold(self, X: pd.DataFrame, Y: pd.DataFrame, folds: list[tuple[np.ndarray, np.ndarray]],
                     F: pd.DataFrame | None, novelty: HardwareNovelty | None) -> _Scored:
        """Each held row's prediction by its fold model (NaN where the fold's training part measured none of
        a target, so no model for it could be fitted), and its hardware's distance to that fold's training
        hardware (0 without novelty)."""
        rows, preds, dists = [], [], []
        for fit_idx, held_idx in folds:
            Y_fit = Y.iloc[fit_idx]
            fold_targets = [t for t in Y.columns if Y_fit[t].notna().any()]
            pred = np.full((len(held_idx), Y.shape[1]), np.nan)
            if fold_targets:
                model = _with_targets(clone(self.estimator), fold_targets).fit(X.iloc[fit_idx], Y_fit[fold_targets])
                got = np.asarray(model.predict(X.iloc[held_idx]), dtype="float64").reshape(len(held_idx), -1)
                pred[:, [Y.columns.get_loc(t) for t in fold_targets]] = got
            rows.append(held_idx)
            preds.append(pred)
            dists.append(novelty.distance(F.iloc[held_idx], among=F.iloc[fit_idx]) if novelty is not None
                         else np.zeros(len(held_idx)))
        return _Scored(np.concatenate(rows), np.vstack(preds), np.concatenate(dists))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    def predict_with_interval(self, X: pd.DataFrame, level: float | None = None,
                              noise: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, lo, hi), each shaped like :meth:`predict`, with one pass of the model."""
        pred = np.asarray(self.predict(X), dtype="float64")
        shape = pred.shape
        cal = self.calibration_
        step = self.features_ if self.features_ is not None or cal.zero_shot is None else feature_step(self.estimator_)
        features = step.transform(X) if step is not None else None  # what scaled widths or a zero-shot rule read
        lo, hi = cal.bounds(pred.reshape(len(X), -1), cal.noise(X if noise is None else noise, len(X)), level,
                            features=features)
        return pred, lo.reshape(shape), hi.reshape(shape)

    def predict_interval(self, X: pd.DataFrame, level: float | None = None,
                         noise: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) at ``level`` (default: the fitted one), shaped like :meth:`predict`.

        ``noise`` holds the rows' measured ``runtime_cv`` (default: ``X``'s own column, if any).
        """
        _, lo, hi = self.predict_with_interval(X, level, noise)
        return lo, hi

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.multi_output = True
        return tags


@dataclass
class CrossFitted:
    """The calibration folds (fit rows, held rows) and each held entry's row and fold-model prediction (rows,
    targets): what the interval scores were made of, for re-drawing them another way."""

    folds: list[tuple[np.ndarray, np.ndarray]]
    row: np.ndarray
    pred: np.ndarray


@dataclass
class _Scored:
    """Out-of-fold predictions: the row each entry scores (a row may be held out by two folds: once with
    its device, once among the seen rows), the (entries, targets) predictions and the entries' novelty."""

    row: np.ndarray
    pred: np.ndarray
    distance: np.ndarray
