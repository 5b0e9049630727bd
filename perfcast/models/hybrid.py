"""The hybrid model: the roofline baseline times a learned efficiency, log(measured / roofline).

Why: across devices, runtime spans many decades but the *efficiency* (how far below the roofline a
kernel runs) is a bounded, smooth function of shape, tiling and architecture. Learning that ratio with a
gradient-boosting model lets the analytical part carry the extrapolation (bigger shapes, a faster GPU
from its spec sheet) and the trees only the correction, which is why it is the default for
cross-hardware work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from perfcast.models.roofline import baseline
from perfcast.models.trees import tree_model


class HybridRegressor(RegressorMixin, BaseEstimator):
    """Fits ``estimator`` (default: LightGBM) to log(y / baseline) of ``target``; predicts baseline x exp(fit)."""

    def __init__(self, target: str = "runtime_ms", estimator: RegressorMixin | None = None):
        self.target = target
        self.estimator = estimator

    def fit(self, X: pd.DataFrame, y: Any) -> HybridRegressor:
        y = np.asarray(y, dtype="float64").ravel()
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if not (y > 0).all():
            raise ValueError(f"the hybrid model learns log({self.target} / roofline): every target must be > 0 "
                             f"({int((~(y > 0)).sum())} are not; missing measurements must be dropped first)")
        base = baseline(X, self.target)
        self.estimator_ = clone(self.estimator) if self.estimator is not None else tree_model("lightgbm")
        self.estimator_.fit(X, np.log(y / base))
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        return baseline(X, self.target) * np.exp(self.estimator_.predict(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
