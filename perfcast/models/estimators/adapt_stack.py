"""A model of the K rows alone, stacked with the corrected base model: one more candidate of the adaptation's guard.

Why: with a few hundred rows of a GPU unlike every training GPU, a small roofline x efficiency model fitted on
those rows alone (the ``K rows alone`` baseline of :mod:`perfcast.experiments.adapt_bench`) can be as good as
the corrected base model, and their errors differ, so a geometric mean of the two can beat both. The weight is
chosen by the same cross-fitted predictions on the K rows as the rest of the guard (weight 0, the correction
alone, wins ties), so the stack is used only where the rows support it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.models.estimators.roofline import NEEDS

#: the model of the K rows alone: a small hybrid, as strongly regularised as the adaptation's shape term
ALONE_PARAMS: dict[str, Any] = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 8, "min_child_samples": 5,
                                "reg_lambda": 5.0, "verbose": -1, "n_jobs": 1}
#: the weights of the K-rows model the guard chooses among (0: the corrected base model alone)
WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: fewest adaptation rows from which the stack is offered (with fewer, a model of the rows alone is far off and
#: five weights chosen on so few cross-fitted rows would mostly fit noise)
MIN_STACK_ROWS = 100


def can_stack(F: pd.DataFrame, target: str, n_rows: int) -> bool:
    """Whether the K-rows model can be offered: enough rows, and features with the roofline's columns."""
    return n_rows >= MIN_STACK_ROWS and target in NEEDS and all(c in F.columns for c in NEEDS[target])


def fit_alone(F: pd.DataFrame, y: np.ndarray, target: str, seed: int) -> Any:
    """The hybrid (roofline x learned efficiency) fitted on the rows ``F`` and their measurements ``y`` only."""
    from perfcast.models.estimators.hybrid import HybridRegressor
    from perfcast.models.estimators.trees import tree_model  # fitting only: a loaded bundle needs no xgboost

    return HybridRegressor(target, tree_model("lightgbm", {**ALONE_PARAMS, "random_state": seed})).fit(F, y)


def choose_weight(log_y: np.ndarray, corrected_oof: np.ndarray, alone_oof: np.ndarray
                  ) -> tuple[float, dict[float, float], np.ndarray]:
    """(weight, cross-validated mean APE per weight, the chosen stack's log residuals) from out-of-fold log
    predictions of the corrected base model and of the K-rows model; the least weight wins ties."""
    errors, residuals = {}, {}
    for w in WEIGHTS:
        residuals[w] = log_y - ((1.0 - w) * corrected_oof + w * alone_oof)
        errors[w] = float(np.mean(np.abs(np.expm1(-residuals[w]))))
    best = min(WEIGHTS, key=lambda w: (round(errors[w], 12), w))
    return best, errors, residuals[best]


def cross_fitted_alone(F: pd.DataFrame, y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]], target: str,
                       seed: int) -> np.ndarray:
    """Each row's log prediction by the K-rows model fitted on the other folds."""
    out = np.empty(len(y))
    for fit_idx, held_idx in folds:
        model = fit_alone(F.iloc[fit_idx], y[fit_idx], target, seed)
        out[held_idx] = np.log(np.asarray(model.predict(F.iloc[held_idx]), dtype="float64").ravel())
    return out


def stacked(pred: np.ndarray, alone: Any, weight: float, F: pd.DataFrame) -> np.ndarray:
    """``pred`` (the corrected base model's) times the K-rows model's over it to the power ``weight``."""
    if alone is None or weight <= 0.0:
        return pred
    return blend(pred, np.asarray(alone.predict(F), dtype="float64").ravel(), weight)


def blend(pred: np.ndarray, own: np.ndarray, weight: float) -> np.ndarray:
    """The geometric mean of ``pred`` and the K-rows model's ``own`` with weight ``weight`` on ``own``."""
    return pred ** (1.0 - weight) * own ** weight


@dataclass(frozen=True)
class SharedAlone:
    """The model of every adaptation row alone, offered to the guard of a subset of them (an attention phase's own
    guard, :func:`~perfcast.models.estimators.adapt.by_phase`): why, a phase's own rows may be too few for a model
    of their own (:data:`MIN_STACK_ROWS`) while all K rows are not. ``oof``: each row's log prediction by the model
    fitted on the folds that did not hold it, so a subset's stacking weight is chosen on rows the model never saw."""

    oof: np.ndarray
    model: Any

    @classmethod
    def fit(cls, F: pd.DataFrame, y: np.ndarray, target: str, seed: int,
            folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> SharedAlone | None:
        """The K-rows model of rows ``F`` and its cross-fitted predictions on ``folds`` (None: it cannot be
        offered, :func:`can_stack`)."""
        if not can_stack(F, target, len(y)):
            return None
        return cls(cross_fitted_alone(F, y, folds, target, seed), fit_alone(F, y, target, seed))

    def of(self, rows: np.ndarray) -> SharedAlone:
        """The same model, its cross-fitted predictions of the rows selected by the mask ``rows`` only."""
        return SharedAlone(self.oof[rows], self.model)


def with_stack(found: Any, F: pd.DataFrame, y: np.ndarray, target: str, seed: int,
               folds: Sequence[tuple[np.ndarray, np.ndarray]], shared: SharedAlone | None = None) -> Any:
    """``found`` (an :class:`~perfcast.models.estimators.adapt.Adaptation`) stacked with a model of the rows ``F``
    alone when their cross-fitted predictions (``folds``: the guard's) choose a weight above 0; the intervals are
    then recalibrated on the stack's cross-fitted residuals. ``shared``: stack that model (fitted on a larger set of
    rows holding these, its cross-fitted predictions of these rows) instead of one of these rows alone."""
    if shared is None and not can_stack(F, target, len(y)):
        return found
    log_y = np.log(y)
    alone_oof = cross_fitted_alone(F, y, folds, target, seed) if shared is None else shared.oof
    weight, errors, residuals = choose_weight(log_y, log_y - found.residuals, alone_oof)
    cv_error = {**found.cv_error, **{f"stack {w:g}": v for w, v in errors.items() if w}}
    if not weight:
        return replace(found, cv_error=cv_error)
    alone = fit_alone(F, y, target, seed) if shared is None else shared.model
    return rescored(found, residuals, cv_error=cv_error, alone=alone, alone_weight=weight)


def rescored(found: Any, residuals: np.ndarray, **changes: Any) -> Any:
    """``found`` (an adaptation) with ``changes``, its cross-fitted residuals now ``residuals`` and its intervals
    recalibrated on them."""
    cal = found.calibration
    return replace(found, residuals=residuals, scores=np.abs(residuals),
                   calibration=replace(cal, scores={t: np.sort(np.abs(residuals)) for t in cal.targets}), **changes)
