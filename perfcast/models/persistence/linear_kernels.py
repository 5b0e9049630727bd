"""The Numba kernels of :mod:`perfcast.models.persistence.compiled_linear` (LightGBM forests with linear leaves).

Why a module of their own: importing numba and reading its cached kernels costs a fresh process more than a few
requests do, so :class:`~perfcast.models.persistence.compiled_linear.LinearForest` walks its first small requests in
NumPy and imports this module only when it needs the kernels (as :mod:`.small_walk` does for the tree walker).

The walk (the arrays of ``LinearForest.kernel_args``): nodes are the splits then the leaves, a leaf leading to
itself; a step reads the node's column and threshold and goes to ``child[2 n + right]`` (no branch on a comparison
the CPU cannot guess), :data:`LANES` walks in step so their loads overlap: in a batch, rows in step through one
tree, trees outer and rows inner over a block of rows (the tree stays in cache); a row alone goes down one tree
after another (a request's nodes are mostly out of cache, and the CPU runs ahead on its guesses). The lanes' leaves' linear models are read as many terms as the most of them has, a term past a leaf's own
leaving its value as it is (a select, not a branch on how many terms a leaf has or on a NaN). A row's leaf outputs
are added in tree order from 0.0 either way, and each leaf's terms in the file's order, so a row's value is the
same bits alone or in a batch (and the NumPy walk's for a few rows).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from perfcast.models.persistence.kernels import BLOCK, LANES


def walk(X: np.ndarray, args: tuple[np.ndarray, ...], key: int, threads: int) -> np.ndarray:
    """Each row's sum over the trees (``args``: the layout's arrays in :func:`_walk`'s order). A batch is walked
    in the order of its column ``key`` (the forest's most split): rows in step then mostly take the same paths,
    so their group stops sooner and reads fewer terms in vain (benchmarks/PREDICT_SPEED.md)."""
    if len(X) == 1:  # a request: one call (its sum added to 0.0, as a batch's rows are)
        return np.zeros(1) + _row(X, 0, *args)
    out = np.zeros(len(X))
    if len(X) <= BLOCK:  # a few rows: no thread pool, no ordering
        _walk(X, 0, len(X), *args, out)
        return out
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    order = np.argsort(X[:, key], kind="stable")
    walked = np.zeros(len(X))
    _walk_parallel(X[order], *args, walked)
    out[order] = walked
    return out


@njit(cache=True, nogil=True, inline="always")
def _leaves(X, rows, nodes, lanes, splits, leaf_value, const, term_start, term_count, term_feature, term_value,
            values):  # noqa: ANN001
    """``values[j]``: the output of leaf node ``nodes[j]`` for row ``rows[j]``, each of the ``lanes`` lanes: the
    leaf's constant plus its terms in the file's order, or its ``leaf_value`` when a term's feature is NaN
    (LightGBM's fallback). Every lane reads the lanes' most terms, those past its leaf's count left unused (the
    term arrays end with that many spare slots)."""
    terms = 0
    for j in range(lanes):
        terms = max(terms, term_count[np.intp(nodes[j]) - splits])
    for j in range(lanes):
        leaf = np.intp(nodes[j]) - splits
        r, first, count = rows[j], term_start[leaf], term_count[leaf]
        value, bad = const[leaf], False
        for k in range(terms):
            x = X[r, term_feature[first + k]]
            use = k < count
            bad |= use & (x != x)
            value = value + term_value[first + k] * x if use else value
        values[j] = leaf_value[leaf] if bad else value


@njit(cache=True, nogil=True)
def _walk(X, lo, hi, roots, depth, feature, threshold, nan_right, child, splits, leaf_value, const, term_start,
          term_count, term_feature, term_value, out):  # noqa: ANN001
    """Add every tree's leaf output to ``out[lo:hi]`` for rows ``X[lo:hi]`` (each row's trees summed in
    LightGBM's order from 0.0, then added to ``out``): :data:`LANES` rows in step per tree, the last rows alone
    (:func:`_row`). Node indices are unsigned (``np.uintp``): numba then emits no negative-index wraparound per
    read; the layout's indices are checked in range on load."""
    total = np.zeros(hi - lo)
    nodes, rows, values = np.empty(LANES, dtype=np.uintp), np.empty(LANES, dtype=np.intp), np.empty(LANES)
    two, full = np.uintp(2), lo + (hi - lo) // LANES * LANES
    for t in range(roots.shape[0]):
        for i in range(lo, full, LANES):
            for j in range(LANES):
                nodes[j], rows[j] = roots[t], i + j
            step = 0
            while step < depth[t]:  # two steps, then stop once every lane is at its leaf (a leaf leads to itself)
                for _ in range(2):
                    for j in range(LANES):
                        n = nodes[j]
                        v = X[rows[j], feature[n]]
                        nodes[j] = child[two * n + (np.uintp(v > threshold[n]) | (np.uintp(v != v) & nan_right[n]))]
                step += 2
                done = True
                for j in range(LANES):
                    done &= nodes[j] >= splits
                if done:
                    break
            _leaves(X, rows, nodes, LANES, splits, leaf_value, const, term_start, term_count, term_feature,
                    term_value, values)
            for j in range(LANES):
                total[i + j - lo] += values[j]
    for r in range(full, hi):
        total[r - lo] = _row(X, r, roots, depth, feature, threshold, nan_right, child, splits, leaf_value, const,
                             term_start, term_count, term_feature, term_value)
    for r in range(lo, hi):
        out[r] += total[r - lo]


@njit(cache=True, nogil=True)
def _row(X, r, roots, depth, feature, threshold, nan_right, child, splits, leaf_value, const, term_start,
         term_count, term_feature, term_value):  # noqa: ANN001
    """Row ``r``'s sum over the trees, added in tree order from 0.0 as :func:`_walk` adds them: one tree after
    another down to its leaf (for a request this measured faster than trees in step, which take as many steps as
    the deepest of them; ``depth`` is unused here), each leaf's terms in the file's order."""
    two, inner, total = np.uintp(2), np.uintp(splits), 0.0
    for t in range(roots.shape[0]):
        n = np.uintp(roots[t])
        while n < inner:
            v = X[r, feature[n]]
            n = child[two * n + (np.uintp(v > threshold[n]) | (np.uintp(v != v) & nan_right[n]))]
        leaf = np.intp(n) - splits
        value = const[leaf]
        for i in range(term_start[leaf], term_start[leaf] + term_count[leaf]):
            x = X[r, term_feature[i]]
            if x != x:  # a NaN among the leaf's features: LightGBM falls back to the constant leaf value
                value = leaf_value[leaf]
                break
            value += term_value[i] * x
        total += value
    return total


@njit(parallel=True, cache=True)
def _walk_parallel(X, roots, depth, feature, threshold, nan_right, child, splits, leaf_value, const, term_start,
                   term_count, term_feature, term_value, out):  # noqa: ANN001
    n = X.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        _walk(X, b * BLOCK, min(n, b * BLOCK + BLOCK), roots, depth, feature, threshold, nan_right, child, splits,
              leaf_value, const, term_start, term_count, term_feature, term_value, out)
