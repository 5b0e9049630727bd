"""k nearest neighbours on log features: the recipe for a new model, and a baseline that only interpolates.

Why this model: it predicts a row from the measured rows most like it and nothing else, so where it does well
the data is dense and a learned model adds little; where it does badly the model must extrapolate. Features
spanning decades (sizes, bandwidths, FLOPs) are compared on a log scale (signed ``log1p``, so zeros and
one-hot flags stay as they are), each standardised by its training spread so no unit dominates the distance;
the target is learned as log(y), whose error is the relative error perfcast is judged by. A missing feature
value sits at the training mean (it adds no distance).

The fitted state is plain arrays (the standardised training rows, their log targets, the scaling), saved
through the state protocol (:mod:`perfcast.models.persistence.state`); loading fits the same brute-force
neighbour search on the same arrays, so predictions are the same numbers.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.neighbors import KNeighborsRegressor
from sklearn.utils.validation import check_is_fitted

from perfcast.features import feature_groups


def log_features(A: np.ndarray) -> np.ndarray:
    """Signed ``log1p`` of every value (NaN kept)."""
    return np.sign(A) * np.log1p(np.abs(A))


#: feature groups the distance reads by default, where the task has them: the work (FLOPs, bytes, roofline times
#: on the row's device) and the dtype; a GEMM's alignment flags and raw spec-sheet numbers only add distance
DEFAULT_GROUPS: tuple[str, ...] = ("work", "dtype")


class KNNRegressor(RegressorMixin, BaseEstimator):
    """exp of the (distance-weighted) mean log target of the ``n_neighbors`` nearest training rows, the distance
    over the feature ``columns`` (None: all)."""

    def __init__(self, n_neighbors: int = 5, weights: str = "distance", columns: list[str] | None = None):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.columns = columns

    def _points(self, X: pd.DataFrame) -> np.ndarray:
        absent = [c for c in self.columns_ if c not in X.columns]
        if absent:
            raise ValueError(f"knn: the features lack column(s) {absent} it was trained on")
        Z = (log_features(X[self.columns_].to_numpy(dtype="float64")) - self.center_) / self.scale_
        return np.nan_to_num(Z, nan=0.0)

    def _search(self) -> KNeighborsRegressor:
        # brute force: exact, and the same neighbours (ties included) for the same arrays after loading
        k = min(int(self.n_neighbors), len(self.log_y_))
        return KNeighborsRegressor(n_neighbors=k, weights=self.weights, algorithm="brute").fit(self.points_, self.log_y_)

    def fit(self, X: pd.DataFrame, y: Any) -> KNNRegressor:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"knn reads named feature columns; got {type(X).__name__}")
        y = np.asarray(y, dtype="float64").ravel()
        if len(y) != len(X) or not len(y):
            raise ValueError(f"knn: X has {len(X)} rows but y has {len(y)}")
        if not (y > 0).all():
            raise ValueError(f"knn learns log(y): every target must be > 0 ({int((~(y > 0)).sum())} are not)")
        if int(self.n_neighbors) < 1:
            raise ValueError(f"knn: n_neighbors must be at least 1, got {self.n_neighbors}")
        self.columns_ = [str(c) for c in (X.columns if self.columns is None else self.columns)]
        absent = [c for c in self.columns_ if c not in X.columns]
        if absent:
            raise ValueError(f"knn: columns {absent} are not features of this task; it has {list(X.columns)}")
        L = log_features(X[self.columns_].to_numpy(dtype="float64"))
        with warnings.catch_warnings():  # an all-NaN column: centre 0, scale 1 (it adds no distance)
            warnings.simplefilter("ignore", RuntimeWarning)
            center, spread = np.nanmean(L, axis=0), np.nanstd(L, axis=0)
        self.center_ = np.nan_to_num(center, nan=0.0)
        self.scale_ = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
        self.log_y_ = np.log(y)
        self.points_ = np.nan_to_num((L - self.center_) / self.scale_, nan=0.0)
        self.neighbors_ = self._search()
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "neighbors_")
        return np.exp(self.neighbors_.predict(self._points(X)))

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self, "neighbors_")
        return ({"n_neighbors": int(self.n_neighbors), "weights": self.weights, "columns": self.columns_},
                {"center": self.center_, "scale": self.scale_, "points": self.points_, "log_y": self.log_y_})

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> KNNRegressor:
        out = cls(int(params["n_neighbors"]), str(params["weights"]), [str(c) for c in params["columns"]])
        out.columns_ = list(out.columns)
        out.center_, out.scale_ = arrays["center"], arrays["scale"]
        out.points_, out.log_y_ = arrays["points"], arrays["log_y"]
        out.neighbors_ = out._search()
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def knn_estimator(task: str, params: dict[str, Any]) -> KNNRegressor:
    """The registry's k-NN for ``task``: ``columns`` may name feature groups (default: :data:`DEFAULT_GROUPS` the
    task has, else every feature)."""
    groups = feature_groups(task)
    rest = dict(params)
    names = rest.pop("columns", None) or [g for g in DEFAULT_GROUPS if g in groups] or None
    columns = None if names is None else list(dict.fromkeys(c for n in names for c in groups.get(n, [n])))
    return KNNRegressor(**rest, columns=columns)
