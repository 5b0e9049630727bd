"""Geometric-mean ensembles of positive regressors (seed bags, or models that see different features).

Why geometric: the members predict runtimes whose errors are multiplicative, and the mean of log
predictions is what the per-member log-space losses estimate; an arithmetic mean would let one member's
overestimate of a decade-spanning target dominate. Why at all: with only a handful of training devices,
boosted trees fitted with different row/column samples disagree most exactly where a test device lies
between training devices; averaging them halves that variance without changing the bias.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.estimator_base import Regressor, check_fitted, clone
from perfcast.models.estimators.rows import predict_rows


class GeometricEnsemble(Regressor):
    """Fits every estimator of ``estimators`` on the same rows; predicts the geometric mean of their outputs.

    ``seeds``: when given, each estimator enters once per seed, with every ``random_state`` parameter
    (nested ones included) set to that seed (a seed bag). ``target`` is passed on to members that take one.
    """

    #: the fitted members, saved as member0, member1, ... (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"estimators_": "member"}

    def __init__(self, estimators: list[Any], seeds: list[int] | None = None,
                 target: str = "runtime_ms"):
        self.estimators = estimators
        self.seeds = seeds
        self.target = target

    def _members(self) -> list[Any]:
        if not self.estimators:
            raise ValueError("an ensemble needs at least one estimator")
        if self.seeds is not None and not self.seeds:
            raise ValueError("seeds, when given, must list at least one seed")
        members = []
        for template in self.estimators:
            for seed in (self.seeds if self.seeds is not None else [None]):
                est = clone(template)
                if seed is not None:
                    est.set_params(**{k: seed for k in est.get_params(deep=True) if k.endswith("random_state")})
                if "target" in est.get_params(deep=False):
                    est.set_params(target=self.target)
                members.append(est)
        return members

    def fit(self, X: pd.DataFrame, y: Any) -> GeometricEnsemble:
        self.estimators_ = [est.fit(X, y) for est in self._members()]
        self.n_features_in_ = X.shape[1]
        if isinstance(X, pd.DataFrame):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if not isinstance(X, pd.DataFrame):  # members see what they were fitted on
            check_fitted(self, "estimators_")
            return self._mean([np.asarray(e.predict(X), dtype="float64").ravel() for e in self.estimators_])
        return self.predict_rows(X.to_numpy(dtype="float64"), tuple(X.columns))

    def predict_rows(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`predict` of feature rows ``A`` whose columns are ``names`` (:mod:`.rows`)."""
        check_fitted(self, "estimators_")
        return self._mean([predict_rows(e, A, names).ravel() for e in self.estimators_])

    @staticmethod
    def _mean(members: list[np.ndarray]) -> np.ndarray:
        if members and len(members) < 8 and all(len(m) == 1 for m in members):  # a request: Python floats
            one = [float(m[0]) for m in members]
            if not all(v > 0 for v in one):
                raise ValueError(f"a geometric ensemble needs positive member predictions; "
                                 f"{sum(not v > 0 for v in one)} are not")
            total = 0.0  # NumPy's sum of fewer than 8 values: left to right from 0.0, the same bits
            for v in np.log(one).tolist():  # logarithms and exponential still NumPy's (same ufunc loops)
                total += v
            return np.exp(np.array([total / len(one)]))
        preds = np.column_stack(members)
        if not (preds > 0).all():
            raise ValueError("a geometric ensemble needs positive member predictions; "
                             f"{int((preds <= 0).sum())} are not")
        return np.exp(np.log(preds).mean(axis=1))

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "estimators_")
        return {"target": self.target}, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> GeometricEnsemble:
        """An ensemble whose ``predict`` works once its ``estimators_`` are set (the persistence layer does)."""
        return cls([], target=str(params.get("target", "runtime_ms")))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
