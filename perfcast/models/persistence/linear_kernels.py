"""The Numba kernels of :mod:`perfcast.models.persistence.compiled_linear` (LightGBM forests with linear leaves).

Why a module of their own: importing numba and reading its cached kernels costs a fresh process more than a few
requests do, so :class:`~perfcast.models.persistence.compiled_linear.LinearForest` walks its first small requests in
NumPy and imports this module only when it needs the kernels (as :mod:`.small_walk` does for the tree walker).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from perfcast.models.persistence.kernels import BLOCK


def walk(X: np.ndarray, args: tuple[np.ndarray, ...], threads: int) -> np.ndarray:
    """Each row's sum over the trees (``args``: the forest's arrays in :func:`_walk`'s order)."""
    out = np.zeros(len(X))
    if len(X) <= BLOCK:  # a request: no thread pool
        _walk(X, 0, len(X), *args, out)
    else:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        _walk_parallel(X, *args, out)
    return out


@njit(cache=True, nogil=True)
def _walk(X, lo, hi, roots, feature, threshold, left, right, nan_way, leaf_value, const, coef_start, coef_feature,
          coef_value, out):  # noqa: ANN001
    """Add every tree's leaf output to ``out[lo:hi]`` for rows ``X[lo:hi]`` (tree by tree, LightGBM's order)."""
    for r in range(lo, hi):
        total = 0.0
        for t in range(roots.shape[0]):
            n = roots[t]
            while n >= 0:
                v = X[r, feature[n]]
                if v != v:
                    way = nan_way[n]
                    if way == 1:
                        n = left[n]
                        continue
                    if way == 2:
                        n = right[n]
                        continue
                    v = 0.0
                n = left[n] if v <= threshold[n] else right[n]
            leaf = -n - 1
            value = const[leaf]
            for i in range(coef_start[leaf], coef_start[leaf + 1]):
                x = X[r, coef_feature[i]]
                if x != x:  # a NaN among the leaf's features: LightGBM falls back to the constant leaf value
                    value = leaf_value[leaf]
                    break
                value += coef_value[i] * x
            total += value
        out[r] += total


@njit(parallel=True, cache=True)
def _walk_parallel(X, roots, feature, threshold, left, right, nan_way, leaf_value, const, coef_start, coef_feature,
                   coef_value, out):  # noqa: ANN001
    n = X.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        _walk(X, b * BLOCK, min(n, b * BLOCK + BLOCK), roots, feature, threshold, left, right, nan_way, leaf_value,
              const, coef_start, coef_feature, coef_value, out)
