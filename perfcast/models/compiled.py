"""LightGBM regression forests walked by Numba-compiled code: the same sums, with less overhead per call.

Why our own walker: ``Booster.predict`` costs ~100 µs of call overhead for one row and walks trees through a
generic interface; a scheduler asking for one configuration, or for a 100k-row batch, waits on both. lleaves
(the LightGBM compiler) does not build on the llvmlite that numba needs, and numba is a dependency already.

The walk is LightGBM's own (``Tree::NumericalDecision``): a NaN feature goes the node's default way when the
split learned a NaN bin and is read as 0.0 otherwise, every comparison is ``value <= threshold`` in float64,
and trees are summed in LightGBM's order, so results are bit-for-bit ``booster.predict`` (tests check it on
real models). Models this walker does not cover (categorical splits, linear trees, zero-as-missing, several
outputs per iteration, objectives whose output is transformed) are left to LightGBM: :func:`compile_lightgbm`
returns ``None`` for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

#: objectives whose prediction is the raw sum of leaf values (no link function)
IDENTITY_OBJECTIVES = frozenset({"regression", "regression_l1", "huber", "fair", "quantile", "mape"})
#: rows each parallel task walks together (every tree over a block keeps that tree in cache)
BLOCK = 256


@dataclass(frozen=True, repr=False)
class CompiledForest:
    """A LightGBM forest as flat arrays: node ``i`` splits on ``feature[i]`` at ``threshold[i]``; a child index
    ``c < 0`` is leaf ``-c - 1``; ``roots[t]`` is tree ``t``'s first node (negative for a one-leaf tree)."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray
    nan_as_missing: np.ndarray
    leaf_value: np.ndarray
    n_features: int

    def __repr__(self) -> str:
        return f"CompiledForest({len(self.roots)} trees, {len(self.feature)} splits, {self.n_features} features)"

    def predict(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """Sum of leaf values per row of the float64 matrix ``X`` (rows, :attr:`n_features`)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) feature matrix, got shape {X.shape}")
        args = (self.roots, self.feature, self.threshold, self.left, self.right, self.default_left,
                self.nan_as_missing, self.leaf_value)
        if threads <= 1 or len(X) <= BLOCK:
            out = np.zeros(len(X))
            _walk(X, 0, len(X), *args, out)
            return out
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        return _walk_parallel(X, *args)


def compile_lightgbm(text: str) -> CompiledForest | None:
    """The forest of a LightGBM model file's text as a :class:`CompiledForest`, or ``None`` when it uses what the
    walker lacks. Read from the text (as written by ``Booster.save_model``), which holds every threshold to 17
    digits: parsing it costs a few tens of ms where ``Booster.dump_model`` takes most of a second."""
    head, _, body = text.partition("\nTree=")
    body, end, _ = body.partition("\nend of trees")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if not end or "max_feature_idx" not in header:
        raise ValueError("not a complete LightGBM model file (no header or no 'end of trees' line)")
    if header.get("num_tree_per_iteration", "1") != "1" or "average_output" in head.split() \
            or header.get("objective", "").split(" ")[0] not in IDENTITY_OBJECTIVES:
        return None
    roots: list[int] = []
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "decision", "left", "right", "leaf")}
    n_nodes = n_leaves = 0
    for block in body.split("\nTree=") if body else []:
        tree = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if tree.get("is_linear", "0") != "0" or tree.get("num_cat", "0") != "0":
            return None
        leaf = np.array(tree["leaf_value"].split(), dtype=np.float64)
        if int(tree["num_leaves"]) == 1:
            roots.append(-(n_leaves + 1))
        else:
            roots.append(n_nodes)
            decision = np.array(tree["decision_type"].split(), dtype=np.int64)
            if (decision & 1).any() or ((decision >> 2) & 3 == 1).any():  # categorical, or zero as missing
                return None
            parts["feature"].append(np.array(tree["split_feature"].split(), dtype=np.int32))
            parts["threshold"].append(np.array(tree["threshold"].split(), dtype=np.float64))
            parts["decision"].append(decision)
            for side in ("left", "right"):
                child = np.array(tree[f"{side}_child"].split(), dtype=np.int64)  # < 0: leaf ~child
                parts[side].append(np.where(child >= 0, child + n_nodes, -(~child + n_leaves) - 1))
            n_nodes += len(decision)
        parts["leaf"].append(leaf)
        n_leaves += len(leaf)
    if "tree_sizes" in header and len(header["tree_sizes"].split()) != len(roots):
        raise ValueError(f"the LightGBM model file lists {len(header['tree_sizes'].split())} trees but holds "
                         f"{len(roots)}")
    flat = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
    decision = flat["decision"].astype(np.int64)
    return CompiledForest(
        roots=np.asarray(roots, dtype=np.int32), feature=flat["feature"].astype(np.int32),
        threshold=flat["threshold"].astype(np.float64), left=flat["left"].astype(np.int32),
        right=flat["right"].astype(np.int32), default_left=(decision & 2) != 0,
        nan_as_missing=((decision >> 2) & 3) == 2, leaf_value=flat["leaf"].astype(np.float64),
        n_features=int(header["max_feature_idx"]) + 1)


@njit(cache=True, nogil=True)
def _walk(X, lo, hi, roots, feature, threshold, left, right, default_left, nan_as_missing, leaf_value, out):  # noqa: ANN001
    """Add every tree's leaf value to ``out[lo:hi]`` (tree by tree over the block, in LightGBM's order)."""
    for t in range(roots.shape[0]):
        root = roots[t]
        for i in range(lo, hi):
            node = root
            while node >= 0:
                v = X[i, feature[node]]
                if v != v:  # NaN: the learned default way, or read as 0.0 when the split saw no NaN
                    if nan_as_missing[node]:
                        node = left[node] if default_left[node] else right[node]
                        continue
                    v = 0.0
                node = left[node] if v <= threshold[node] else right[node]
            out[i] += leaf_value[-node - 1]


@njit(parallel=True, cache=True)
def _walk_parallel(X, roots, feature, threshold, left, right, default_left, nan_as_missing, leaf_value):  # noqa: ANN001
    n = X.shape[0]
    out = np.zeros(n)
    for b in prange((n + BLOCK - 1) // BLOCK):
        _walk(X, b * BLOCK, min(n, b * BLOCK + BLOCK), roots, feature, threshold, left, right, default_left,
              nan_as_missing, leaf_value, out)
    return out


__all__ = ["CompiledForest", "compile_lightgbm"]
