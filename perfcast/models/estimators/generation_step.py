"""A learned level step for processors of a generation newer than any the model was fitted on.

Why: on SPEC CPU2017 a new CPU generation (Ice Lake / Milan, Sapphire Rapids / Genoa) scores more per core x
GHz x bandwidth than any law fitted on the older ones gives it, and the models predict it too low
(benchmarks/ANALYSIS_cpu.md, round C1). The spec columns do not explain that step, and a per-generation
slope in the power law extrapolates it badly (the generation is numbered per family and grows with the core
count). :class:`GenerationStep` instead measures, at fit time, how far off the wrapped model is on a generation
it has not seen: it holds out every family's latest generation, fits on the rest, and takes the mean log ratio
of score to prediction on the held-out rows (each family weighed alike). Rows of a later generation than the
latest one of their family are then multiplied by ``exp(step)``; every other row is predicted as the wrapped
model predicts it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from perfcast.features.estimator_base import Regressor, check_fitted, clone


class GenerationStep(Regressor):
    """``estimator`` times a step learned on held-out latest generations, for rows of a newer generation.

    Parameters
    ----------
    estimator : the regressor wrapped (fitted on a feature DataFrame and positive targets).
    family, generation : the feature columns naming a processor family (a code) and its generation.
    min_rows : a family's held-out generation counts toward the step only with at least this many rows.
    """

    def __init__(self, estimator: Any = None, family: str = "family_code", generation: str = "cpu_generation",
                 min_rows: int = 20):
        self.estimator = estimator
        self.family = family
        self.generation = generation
        self.min_rows = min_rows

    def _keys(self, X: pd.DataFrame, where: str) -> tuple[np.ndarray, np.ndarray]:
        absent = [c for c in (self.family, self.generation) if c not in X.columns]
        if absent:
            raise ValueError(f"GenerationStep.{where}: X lacks column(s) {absent}; it needs the processor family "
                             f"and generation features (perfcast.features.cpu)")
        return (X[self.family].to_numpy(dtype="float64"), X[self.generation].to_numpy(dtype="float64"))

    def fit(self, X: pd.DataFrame, y: Any) -> GenerationStep:
        if self.estimator is None:
            raise ValueError("GenerationStep needs an estimator to wrap")
        fam, gen = self._keys(X, "fit")
        Y = np.asarray(y, dtype="float64")
        target = Y.reshape(len(X), -1)[:, 0]
        known = ~np.isnan(fam) & ~np.isnan(gen)
        frame = pd.DataFrame({"family": fam[known], "generation": gen[known]})
        self.latest_ = frame.groupby("family")["generation"].max().to_dict()
        earliest = frame.groupby("family")["generation"].min().to_dict()
        # a family's latest generation is held out only where the family has an earlier one left to learn from
        held = known & np.array([k and g == self.latest_[f] and earliest[f] < g
                                 for k, f, g in zip(known, fam, gen)], dtype=bool)
        self.step_, self.step_families_ = 0.0, 0
        if held.any() and (~held).any():
            inner = clone(self.estimator).fit(X[~held], Y[~held])
            ratio = np.log(target[held] / np.asarray(inner.predict(X[held]), dtype="float64").reshape(-1))
            per_family = pd.Series(ratio).groupby(fam[held]).agg(["mean", "size"])
            kept = per_family[per_family["size"] >= int(self.min_rows)]
            self.step_ = float(kept["mean"].mean()) if len(kept) else 0.0
            self.step_families_ = int(len(kept))
        self.estimator_ = clone(self.estimator).fit(X, Y)
        return self

    def newer(self, X: pd.DataFrame) -> np.ndarray:
        """Rows whose generation is later than the latest one fitted of their (fitted) family."""
        check_fitted(self, "latest_")
        fam, gen = self._keys(X, "predict")
        latest = np.array([self.latest_.get(f, np.nan) for f in fam], dtype="float64")
        return ~np.isnan(latest) & (gen > latest)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_fitted(self, "estimator_")
        pred = np.asarray(self.estimator_.predict(X), dtype="float64")
        scale = np.where(self.newer(X), np.exp(self.step_), 1.0)
        return pred * (scale if pred.ndim == 1 else scale[:, None])

