"""A NumPy walk of a :class:`~perfcast.models.persistence.compiled.CompiledForest` for the first few small requests.

Why two walkers: the Numba kernels (:mod:`.kernels`) are the fast path, but a fresh process pays for them once:
importing numba and reading its cached kernels on their first call cost more CPU than a ``perfcast predict`` of a
few configurations does in all (benchmarks/PREDICT_SPEED.md, load section). So a process walks its first
requests of at most :data:`SMALL` rows here, all trees of a row at once in NumPy, and switches to the kernels
once it has walked :data:`TIER_UP` rows this way (a long-lived process: the one-off cost is then worth paying)
or at its first larger batch. Both walks make LightGBM's decisions on the forest's own arrays and add a row's
trees in LightGBM's order, so a row's prediction is the same number, bit for bit, whichever walks it (tests
check it on real models and at, beside and past every threshold).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the largest request walked in NumPy (its cost grows with the rows; the kernels' barely does)
SMALL = 16
#: rows a process walks in NumPy before it loads the kernels: a row costs ~0.1 ms more here per forest than
#: there, so a short script never pays for numba and a long-lived process soon stops paying the difference
TIER_UP = 256
#: LightGBM's ``kZeroThreshold`` (a float 1e-35 widened to double): ``Booster.predict`` reads a dense row through
#: ``RowPairFunctionFromDenseMatric``, which keeps only values beyond it (or NaN), so smaller ones count as 0.0
ZERO = float(np.float32(1e-35))
#: the module of the Numba kernels (imported on the first walk that needs it)
KERNELS = "perfcast.models.persistence.kernels"
_walked = 0


def use_numpy(rows: int) -> bool:
    """Whether a request of ``rows`` rows is walked here: small, and the process has not loaded the kernels and
    has walked fewer than :data:`TIER_UP` rows here (counted, so call it once per walk)."""
    global _walked
    if rows > SMALL or KERNELS in sys.modules or _walked >= TIER_UP:
        return False
    _walked += rows
    return True


@dataclass(frozen=True)
class SmallWalk:
    """The forest's nodes as arrays over splits then leaves (``S + l`` is leaf ``l``); a leaf leads to itself
    whatever the value, so every row steps through all its trees ``depth`` times with no test for a leaf."""

    feature: np.ndarray
    threshold: np.ndarray
    nan_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int

    @classmethod
    def of(cls, forest: Any) -> SmallWalk:
        """From a checked :class:`~perfcast.models.persistence.compiled.CompiledForest` (its children in range,
        its trees acyclic: the loop over levels ends)."""
        S, L = len(forest.feature), len(forest.leaf_value)
        node = lambda c: np.where(c >= 0, c, S - c.astype(np.int64) - 1).astype(np.intp)  # noqa: E731 - leaf l -> S + l
        leaves = np.arange(S, S + L, dtype=np.intp)
        left = np.concatenate([node(forest.left), leaves])
        right = np.concatenate([node(forest.right), leaves])
        roots = node(forest.roots)
        depth, frontier = 0, roots[roots < S]
        while len(frontier):
            frontier = np.concatenate([left[frontier], right[frontier]])
            frontier = frontier[frontier < S]
            depth += 1
        # LightGBM: a NaN goes the learned way where the split saw missing values, else it is read as 0.0
        nan_left = np.where(forest.nan_as_missing, forest.default_left, 0.0 <= forest.threshold)
        return cls(feature=np.concatenate([forest.feature, np.zeros(L, np.int32)]).astype(np.intp),
                   threshold=np.concatenate([forest.threshold, np.full(L, np.inf)]),
                   nan_left=np.concatenate([nan_left, np.ones(L, bool)]), left=left, right=right,
                   value=np.concatenate([np.zeros(S), forest.leaf_value]), roots=roots, depth=depth)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Sum of leaf values per row of the float64 matrix ``X``: LightGBM's ``value <= threshold`` per node,
        and the trees added left to right from 0.0 (a cumulative sum is that sequence of additions)."""
        X = np.where(np.abs(X) <= ZERO, 0.0, X)  # as LightGBM reads a dense row (see ZERO); NaN stays NaN
        rows = np.arange(len(X))[:, None]
        at = np.broadcast_to(self.roots, (len(X), len(self.roots)))
        for _ in range(self.depth):
            x = X[rows, self.feature[at]]
            go_left = np.where(np.isnan(x), self.nan_left[at], x <= self.threshold[at])
            at = np.where(go_left, self.left[at], self.right[at])
        values = np.concatenate([np.zeros((len(X), 1)), self.value[at]], axis=1)
        return np.cumsum(values, axis=1)[:, -1]
