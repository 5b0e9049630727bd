"""The Numba kernels that walk a :class:`~perfcast.models.persistence.compiled.CompiledForest`'s layout.

Why a module of their own: importing numba costs a fresh process a fifth of a second, and reading its cached
kernels on their first call more (benchmarks/PREDICT_SPEED.md, load section). :mod:`.compiled` reads and checks a
forest without numba and imports this module on the first walk that needs it, so loading a model does not pay for
it. The walk itself is described in :mod:`.compiled`; everything here is compiled by numba (``cache=True``) from
this file, never from anything read from a model file.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from perfcast.models.persistence.small_walk import ZERO

#: rows each parallel task walks together (every tree over a block keeps that tree in cache)
BLOCK = 256
#: cuts a feature's code is counted over (vector compares) once a binary search has narrowed them down
WINDOW = np.uintp(64)
#: rows that walk one tree in step (their loads overlap; 8 measured fastest, benchmarks/PREDICT_SPEED.md)
LANES = 8


def walk(lay, X: np.ndarray, threads: int) -> np.ndarray:  # noqa: ANN001 - a compiled.Layout (no import cycle)
    """Sum of leaf values per row of the checked float64 matrix ``X`` (see ``CompiledForest.predict``)."""
    if len(X) == 1:  # a request: one call, the row coded and walked inside it
        return np.asarray([_one(X, *lay)])  # a Layout's fields are _one's arguments, in order
    codes, keys = np.empty((len(X), len(lay.used)), dtype=lay.nan_code.dtype), np.empty(len(X), np.uint64)
    out = np.zeros(len(X))
    if len(X) <= BLOCK:  # a few rows: no thread pool, no ordering
        _code(X, 0, len(X), lay.used, lay.starts, lay.cuts, lay.nan_code, lay.key, codes, keys)
        _walk(codes, 0, len(X), lay.roots, lay.depth, lay.node, lay.leaf, lay.value, out)
        return out
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    _code_parallel(X, lay.used, lay.starts, lay.cuts, lay.nan_code, lay.key, codes, keys)
    order = np.argsort(keys, kind="stable")
    out[order] = _walk_parallel(codes[order], lay.roots, lay.depth, lay.node, lay.leaf, lay.value)
    return out


@njit(cache=True, nogil=True)
def _code(X, lo, hi, used, starts, cuts, nan_code, key, codes, keys):  # noqa: ANN001
    """Code rows ``lo:hi`` of ``X`` into ``codes`` (see :meth:`CompiledForest._layout`), and give each row its
    sort key: its codes of the ``key`` columns, most split first, as one integer."""
    one = np.uintp(1)
    for j in range(used.shape[0]):  # column by column: every row's search takes the same steps, so the
        f, first = np.uintp(used[j]), np.uintp(starts[j])  # loop branches are always guessed right
        size = np.uintp(starts[j + 1]) - first
        for r in range(lo, hi):
            v = X[np.uintp(r), f]
            v = 0.0 if abs(v) <= ZERO else v  # as LightGBM reads a dense row (see ZERO); NaN stays NaN
            a, n = first, size  # the first cut not below v: halve the range to at most WINDOW cuts (each
            while n > WINDOW:  # halving a select), then count the window's cuts below v (vector compares)
                half = n >> one
                a += half * np.uintp(cuts[a + half - one] < v)
                n -= half
            below = a - first + one
            for m in range(a, a + n):
                below += np.uintp(cuts[m] < v)
            codes[np.uintp(r), np.uintp(j)] = nan_code[j] if v != v else below
    bits = np.uint64(8 * codes.itemsize)
    for r in range(lo, hi):
        k = np.uint64(0)
        for j in key:
            k = (k << bits) | np.uint64(codes[r, j])
        keys[r] = k


@njit(cache=True, nogil=True)
def _walk(codes, lo, hi, roots, depth, node, leaf, value, out):  # noqa: ANN001
    """Add every tree's leaf value to ``out[lo:hi]`` for the coded rows ``codes[lo:hi]`` (tree by tree, in
    LightGBM's order), :data:`LANES` rows at a time through each tree.

    A step reads the node's record and the row's code on its column; the next slot is the left child's plus
    the comparison (``node`` packs both, see :meth:`CompiledForest._layout`). Indices are unsigned
    (``np.uintp``): numba then emits no negative-index wraparound per array read; the layout's indices are
    checked in range on load."""
    nodes = np.empty(LANES, dtype=np.uintp)
    low, col, cut = np.uint64(0xFFFFFFFF), np.uint64(32), np.uint64(48)
    for t in range(roots.shape[0]):
        i = lo
        while i + LANES <= hi:
            nodes[:] = roots[t]
            step = 0
            while step < depth[t]:  # two steps, then stop once every lane is at its leaf (a leaf leads to itself)
                for _ in range(2):
                    for j in range(LANES):
                        q = node[nodes[j]]
                        c = codes[np.uintp(i + j), np.uintp((q >> col) & np.uint64(0xFFFF))]
                        nodes[j] = np.uintp((q & low) + np.uint64(np.uint64(c) > (q >> cut)))
                step += 2
                done = np.uint8(1)
                for j in range(LANES):
                    done &= leaf[nodes[j]]
                if done:
                    break
            for j in range(LANES):
                out[i + j] += value[nodes[j]]
            i += LANES
        for r in range(i, hi):  # a row alone: branches (the CPU runs ahead on its guess), stopping at the leaf
            n = np.uintp(roots[t])
            while not leaf[n]:
                q = node[n]
                c = codes[np.uintp(r), np.uintp((q >> col) & np.uint64(0xFFFF))]
                n = np.uintp((q & low) + np.uint64(np.uint64(c) > (q >> cut)))
            out[r] += value[n]


@njit(cache=True, nogil=True)
def _one(X, used, starts, cuts, nan_code, key, roots, depth, node, leaf, value):  # noqa: ANN001
    """The sum of every tree's leaf value for the single row of ``X``: :func:`_code` of the row, then
    :func:`_walk_row`, in one call instead of two and three allocations."""
    codes, keys = np.empty((1, used.shape[0]), dtype=nan_code.dtype), np.empty(1, np.uint64)
    _code(X, 0, 1, used, starts, cuts, nan_code, key, codes, keys)
    return _walk_row(codes[0], roots, depth, node, leaf, value)


@njit(cache=True, nogil=True)
def _walk_row(codes, roots, depth, node, leaf, value):  # noqa: ANN001
    """The sum of every tree's leaf value for one coded row, added tree by tree from 0.0 as :func:`_walk` adds
    them. :data:`LANES` trees are walked in step, as many steps as the deepest of them takes (a leaf leads to
    itself): one tree after another, every step waits for the node the step before read, and a request's
    nodes are mostly not in cache; the lanes' reads overlap instead (benchmarks/PREDICT_SPEED.md)."""
    nodes = np.empty(LANES, dtype=np.uintp)
    low, col, cut = np.uint64(0xFFFFFFFF), np.uint64(32), np.uint64(48)
    total = 0.0
    t, trees = 0, roots.shape[0]
    while t + LANES <= trees:
        steps = 0
        for j in range(LANES):
            nodes[j] = roots[t + j]
            steps = max(steps, depth[t + j])
        for _ in range(steps):
            for j in range(LANES):
                q = node[nodes[j]]
                c = codes[np.uintp((q >> col) & np.uint64(0xFFFF))]
                nodes[j] = np.uintp((q & low) + np.uint64(np.uint64(c) > (q >> cut)))
        for j in range(LANES):
            total += value[nodes[j]]
        t += LANES
    for r in range(t, trees):  # the last trees alone, as _walk walks a row alone
        n = np.uintp(roots[r])
        while not leaf[n]:
            q = node[n]
            c = codes[np.uintp((q >> col) & np.uint64(0xFFFF))]
            n = np.uintp((q & low) + np.uint64(np.uint64(c) > (q >> cut)))
        total += value[n]
    return total


@njit(parallel=True, cache=True)
def _code_parallel(X, used, starts, cuts, nan_code, key, codes, keys):  # noqa: ANN001
    n = X.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        _code(X, b * BLOCK, min(n, b * BLOCK + BLOCK), used, starts, cuts, nan_code, key, codes, keys)


@njit(parallel=True, cache=True)
def _walk_parallel(codes, roots, depth, node, leaf, value):  # noqa: ANN001
    n = codes.shape[0]
    out = np.zeros(n)
    for b in prange((n + BLOCK - 1) // BLOCK):
        _walk(codes, b * BLOCK, min(n, b * BLOCK + BLOCK), roots, depth, node, leaf, value, out)
    return out



@njit(cache=True, nogil=True)
def sorted_runs_at(keys, values, bounds, key, out):  # noqa: ANN001
    """``out[j]``: the value at ``key`` in run ``j`` (``keys[bounds[j]:bounds[j + 1]]``, strictly increasing), NaN
    where the run lacks it: one configuration's residual on every training device of a sibling transfer, one
    binary search per device in one call (NumPy's ``searchsorted`` costs a call per device)."""
    for j in range(bounds.shape[0] - 1):
        a, b = bounds[j], bounds[j + 1]
        end = b
        while a < b:
            mid = (a + b) >> 1
            if keys[mid] < key:
                a = mid + 1
            else:
                b = mid
        out[j] = values[a] if a < end and keys[a] == key else np.nan


_NAN_BITS = np.uint64(0x7FF8000000000000)  # the NaN every NaN hashes as (pandas' canonical NaN)


@njit(cache=True, nogil=True)
def row_hash(bits):  # noqa: ANN001
    """pandas' ``combine_hash_arrays`` of ``hash_array`` of each value of one float64 row given as its bit
    patterns ``bits`` (NaN and -0.0 canonicalised): a sibling transfer's configuration key in one call, the same
    uint64 arithmetic as :func:`perfcast.models.estimators.transfer.hash_one` and ``combine_one``."""
    exponent, mantissa = np.uint64(0x7FF0000000000000), np.uint64(0x000FFFFFFFFFFFFF)
    out, mult, n = np.uint64(0x345678), np.uint64(1000003), bits.shape[0]
    for i in range(n):
        v = bits[i]
        if (v & exponent) == exponent and (v & mantissa) != np.uint64(0):
            v = _NAN_BITS
        elif v == np.uint64(0x8000000000000000):
            v = np.uint64(0)
        v ^= v >> np.uint64(30)
        v *= np.uint64(0xBF58476D1CE4E5B9)
        v ^= v >> np.uint64(27)
        v *= np.uint64(0x94D049BB133111EB)
        v ^= v >> np.uint64(31)
        out = (out ^ v) * mult
        mult += np.uint64(82520) + np.uint64(2) * np.uint64(n - i)
    return out + np.uint64(97531)
