"""One model per target: how every registry model fits several targets that are measured on different rows.

Why its own module: the registry wraps every estimator in it and the normaliser's factory builds it too, so
it sits below both (the registry imports the normaliser).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from perfcast.features.estimator_base import Regressor, check_fitted, clone
from perfcast.models.estimators.log_target import log_space


#: a target whose 99th/1st percentile ratio reaches this spans "decades" and is learned in log space
LOG_SPAN = 10.0


def _rows(X: Any, mask: np.ndarray) -> Any:
    return X.loc[mask] if isinstance(X, pd.DataFrame) else np.asarray(X)[mask]


class PerTargetRegressor(Regressor):
    """One clone of ``estimator`` per target, each fitted on the rows where its target is measured.

    ``log_target``: "auto" learns log(y) for a target whose values are all positive and span a decade or
    more (see :data:`LOG_SPAN`), True always, False never (for estimators that set their own scale, such
    as the hybrid). An estimator with a ``target`` parameter is told which target it fits. ``joint``
    fits a single clone on the whole (rows x targets) matrix, NaN included, for estimators that mask
    missing targets themselves. ``predict`` returns (n,) for one target, (n, n_targets) otherwise.
    """

    def __init__(self, estimator: Any, targets: list[str] | None = None, log_target: str | bool = "auto",
                 joint: bool = False):
        self.estimator = estimator
        self.targets = targets
        self.log_target = log_target
        self.joint = joint

    def _target_frame(self, y: Any, n_rows: int) -> pd.DataFrame:
        """``y`` as a float DataFrame with one column per target (named, in ``targets`` order)."""
        if isinstance(y, pd.DataFrame):
            names = list(self.targets) if self.targets is not None else list(y.columns)
            absent = [t for t in names if t not in y.columns]
            if absent:
                raise ValueError(f"y lacks target column(s) {absent}; it has {list(y.columns)}")
            frame = y[names]
        else:
            arr = np.asarray(y, dtype="float64")
            arr = arr.reshape(len(arr), -1) if arr.ndim == 1 else arr
            names = list(self.targets) if self.targets is not None else (
                [y.name] if isinstance(y, pd.Series) and y.name else [f"y{i}" for i in range(arr.shape[1])])
            if arr.ndim != 2 or arr.shape[1] != len(names):
                raise ValueError(f"y has shape {arr.shape}, expected {len(names)} column(s) for targets {names}")
            frame = pd.DataFrame(arr, columns=names)
        if len(frame) != n_rows:
            raise ValueError(f"X has {n_rows} rows but y has {len(frame)}")
        frame = frame.apply(pd.to_numeric, errors="coerce").astype("float64").reset_index(drop=True)
        empty = [t for t in frame.columns if frame[t].notna().sum() == 0]
        if empty:
            raise ValueError(f"target(s) {empty} have no measured (non-NaN) value to learn from")
        return frame

    def _use_log(self, y: np.ndarray) -> bool:
        if self.log_target in (True, False):
            return bool(self.log_target)
        if self.log_target != "auto":
            raise ValueError(f"log_target must be 'auto', True or False, got {self.log_target!r}")
        if not (y > 0).all():
            return False
        lo, hi = np.percentile(y, [1, 99])
        return hi / lo >= LOG_SPAN

    def _one(self, target: str, y: np.ndarray) -> Any:
        est = clone(self.estimator)
        if "target" in est.get_params(deep=False):
            est.set_params(target=target)
        if self._use_log(y):
            est = log_space(est)
        return est

    def fit(self, X: Any, y: Any) -> PerTargetRegressor:
        Y = self._target_frame(y, len(X))
        self.targets_ = list(Y.columns)
        if self.joint:
            self.estimators_ = [clone(self.estimator).fit(X, Y.to_numpy())]
            return self._fitted(X)
        self.estimators_ = []
        for t in self.targets_:
            seen = Y[t].notna().to_numpy()
            y_t = Y.loc[seen, t].to_numpy()
            self.estimators_.append(self._one(t, y_t).fit(_rows(X, seen), y_t))
        return self._fitted(X)

    def _fitted(self, X: Any) -> PerTargetRegressor:
        self.n_features_in_ = X.shape[1]
        if isinstance(X, pd.DataFrame):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_fitted(self, "estimators_")
        if self.joint:
            pred = np.asarray(self.estimators_[0].predict(X), dtype="float64").reshape(len(X), -1)
        else:
            pred = np.column_stack([np.asarray(e.predict(X), dtype="float64").ravel() for e in self.estimators_])
        return pred[:, 0] if pred.shape[1] == 1 else pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.multi_output = True
        return tags
