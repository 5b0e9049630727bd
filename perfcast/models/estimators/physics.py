"""A physics term for adapting a model to a CPU's GEMMs from a few dozen rows: ``log(measured / base)`` as a
robust linear function of the shape's work, its traffic and its per-dimension blocking overheads.

Why: a base model trained on GPUs, reading a CPU's measured spec sheet, misses how a CPU GEMM's efficiency
falls with skinny dimensions (a BLAS kernel blocks m, n and k into register and cache tiles, so partial tiles
and packing cost grow like 1/m, 1/n, 1/k) and with the operands' sizes against the caches. These are smooth
trends over the whole shape range; the tree correction of :mod:`perfcast.models.estimators.adapt` needs more
rows than a quick probe gives to learn them, a linear model on these few columns does not. Huber loss, so one
preempted measurement on a busy machine does not tilt the line; the columns are standardised so its L2
penalty treats them alike. :mod:`perfcast.models.persistence.physics_adapted` fits it and keeps it only where
cross-validation on the adaptation rows supports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

#: the columns :func:`physics_matrix` builds (in order), for reports
COLUMNS: tuple[str, ...] = ("log flops", "log bytes", "1/m", "1/n", "1/k", "log A bytes", "log B bytes",
                            "log C bytes")
#: L2 penalty of the Huber fit on standardised columns
ALPHA = 1.0
#: folds of the cross-fitted predictions
FOLDS = 5


def physics_matrix(F: pd.DataFrame) -> np.ndarray:
    """(rows, len(COLUMNS)) from a GEMM feature frame (``log2_m/n/k/batch``, ``a/b/c_bytes``)."""
    m, n, k, batch = (np.exp2(F[f"log2_{d}"].to_numpy(dtype="float64")) for d in ("m", "n", "k", "batch"))
    a, b, c = (F[f"{x}_bytes"].to_numpy(dtype="float64") * size * batch
               for x, size in (("a", m * k), ("b", k * n), ("c", m * n)))
    return np.column_stack([np.log(2 * m * n * k * batch), np.log(a + b + c), 1 / m, 1 / n, 1 / k,
                            np.log(a), np.log(b), np.log(c)])


@dataclass(frozen=True)
class PhysicsTerm:
    """``log(measured / base) = intercept + coef . (physics_matrix(F) - center) / scale``."""

    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def log_ratio(self, F: pd.DataFrame) -> np.ndarray:
        return self.intercept + ((physics_matrix(F) - self.center) / self.scale) @ self.coef


def _fit(X: np.ndarray, r: np.ndarray) -> PhysicsTerm:
    center, scale = X.mean(axis=0), X.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant column (one batch size) gets no weight, not a NaN
    from sklearn.linear_model import HuberRegressor  # fitting only: loading a corrected model skips scikit-learn

    model = HuberRegressor(alpha=ALPHA, max_iter=1000).fit((X - center) / scale, r)
    return PhysicsTerm(center, scale, model.coef_.astype("float64"), float(model.intercept_))


def fit_physics(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[PhysicsTerm, np.ndarray]:
    """The term fitted on all rows, and its cross-fitted log ratios (each row's from a fit without its fold),
    which is what judging or correcting it further on the same rows must read."""
    X, r = physics_matrix(F), np.log(np.asarray(y, dtype="float64") / np.asarray(base, dtype="float64"))
    oof = np.empty(len(r))
    from sklearn.model_selection import KFold  # fitting only

    for fit_rows, held in KFold(min(FOLDS, len(r)), shuffle=True, random_state=seed).split(X):
        oof[held] = _fit(X[fit_rows], r[fit_rows]).log_ratio(F.iloc[held])
    return _fit(X, r), oof


class PhysicsCorrected:
    """A base estimator times ``exp`` of a :class:`PhysicsTerm`: what an adapted bundle's correction wraps."""

    #: the base estimator, saved in this estimator's own folder (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"inner": ""}

    def __init__(self, inner: Any, term: PhysicsTerm):
        self.inner = inner
        self.term = term

    def predict(self, F: pd.DataFrame) -> np.ndarray:
        base = np.asarray(self.inner.predict(F), dtype="float64").reshape(len(F))
        return base * np.exp(self.term.log_ratio(F))

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        t = self.term
        return {"intercept": t.intercept, "columns": list(COLUMNS)}, {"center": t.center, "scale": t.scale,
                                                                      "coef": t.coef}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> PhysicsCorrected:
        """The corrected model without its base (the persistence layer sets ``inner``)."""
        if list(params.get("columns", [])) != list(COLUMNS):
            raise ValueError(f"physics correction columns {params.get('columns')} are not this perfcast's "
                             f"{list(COLUMNS)}")
        return cls(None, PhysicsTerm(arrays["center"], arrays["scale"], arrays["coef"], float(params["intercept"])))
