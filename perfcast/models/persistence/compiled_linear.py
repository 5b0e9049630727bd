"""LightGBM forests with linear leaves (``linear_tree``) predicted by Numba-compiled code.

Why: the adaptation's ``smooth`` shape term (:mod:`perfcast.models.estimators.adapt`) is such a forest, and
:mod:`perfcast.models.persistence.compiled`'s walker covers piecewise-constant leaves only. Left to
``Booster.predict``, an adapted bundle pays LightGBM's call overhead per request and its generic tree walk per
batch; this module gives the same numbers through a plain compiled walk.

What a linear leaf predicts is LightGBM's own (``Tree::Predict`` with ``is_linear``): the leaf's ``leaf_const``
plus, in the order the model file lists them, each coefficient of ``leaf_coeff`` times the feature named in
``leaf_features``; when any of those features is NaN, the leaf's constant ``leaf_value`` instead. Splits decide
as in the compiled walker (a NaN goes the node's default way when the split learned a NaN bin, else is read as
0.0; ``value <= threshold`` in float64), and each row's trees are summed in LightGBM's order, so the result is
``booster.predict`` to rounding (tests check it on real adaptation models, NaN inputs included).

A model file is input, not trusted code: the tree structure is checked by the same code as the compiled walker's
(:func:`~perfcast.models.persistence.compiled.compile_lightgbm`), and every leaf's feature indices and
coefficients here, before anything walks it; a failure raises
:class:`~perfcast.models.persistence.errors.CorruptModelError` naming the file and the tree.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from perfcast.models.persistence.compiled import _array, _checked, _int, read_header
from perfcast.models.persistence.errors import CorruptModelError
from perfcast.models.persistence.small_walk import use_numpy

#: the module of this walk's Numba kernels (imported on the first walk that needs it, as the tree walker's)
LINEAR_KERNELS = "perfcast.models.persistence.linear_kernels"


@dataclass(frozen=True, repr=False)
class LinearForest:
    """A LightGBM forest with linear leaves as flat arrays: the tree structure as in
    :class:`~perfcast.models.persistence.compiled.CompiledForest` (a child ``c < 0`` is leaf ``-c - 1``), and
    per leaf ``l`` its constant ``const[l]``, the fallback ``leaf_value[l]`` and its terms
    ``coef_feature[coef_start[l]:coef_start[l + 1]]`` / ``coef_value[...]``."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    #: per split: 0 = a NaN is read as 0.0, 1 = a NaN goes left, 2 = right
    nan_way: np.ndarray
    leaf_value: np.ndarray
    const: np.ndarray
    coef_start: np.ndarray
    coef_feature: np.ndarray
    coef_value: np.ndarray
    n_features: int

    def __repr__(self) -> str:
        return (f"LinearForest({len(self.roots)} trees, {len(self.feature)} splits, {len(self.coef_value)} "
                f"leaf coefficients, {self.n_features} features)")

    def predict(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """Sum over trees (in LightGBM's order) of each row's leaf output, for the float64 matrix ``X``
        (rows, :attr:`n_features`)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) feature matrix, got shape {X.shape}")
        if use_numpy(len(X)):  # a fresh process's first small requests: no numba to load (see .small_walk)
            return self._small(X)
        kernels = sys.modules.get(LINEAR_KERNELS)
        if kernels is None:
            from perfcast.models.persistence import linear_kernels as kernels
        return kernels.walk(X, self.kernel_args, self.key, threads)

    @cached_property
    def key(self) -> int:
        """The column the forest splits on most (a batch is walked in its order, see :mod:`.linear_kernels`)."""
        return int(np.argmax(np.bincount(self.feature, minlength=self.n_features)))

    @cached_property
    def kernel_args(self) -> tuple[Any, ...]:
        """The kernels' layout (:mod:`.linear_kernels`' ``_walk`` arguments after the rows), made once per forest:
        per tree its root and depth; nodes are the splits then the leaves (leaf ``l`` is node ``S + l``), each
        with its column, threshold, whether a NaN goes right and its two children side by side
        (``child[2 n]`` left, ``child[2 n + 1]`` right); a leaf's children are itself, so a tree's rows may take
        its depth in steps with no test for a leaf. A NaN goes the learned way where the split learned one
        (``nan_way``), else is read as 0.0: right when ``0.0 <= threshold`` fails. Per leaf its first term and
        count; the term arrays end with a leaf's most terms of spare slots (feature 0, coefficient 0.0, never
        added), so a lane reading another lane's count of terms stays inside them."""
        S, L = len(self.feature), len(self.leaf_value)
        node = lambda c: np.where(c >= 0, c, S - c - 1).astype(np.uintp)  # noqa: E731 - leaf l -> S + l
        leaves = np.arange(S, S + L, dtype=np.uintp)
        child = np.empty(2 * (S + L), dtype=np.uintp)
        child[0::2] = np.concatenate([node(self.left), leaves])
        child[1::2] = np.concatenate([node(self.right), leaves])
        roots = node(self.roots)
        level, tree = np.zeros(S + L, dtype=np.int64), np.zeros(S + L, dtype=np.int64)
        tree[roots] = np.arange(len(roots))
        for _ in range(S):  # each node's level and tree from its parent's (a tree is acyclic, checked on load)
            before = level.copy()
            for side in (0, 1):
                level[child[side:2 * S:2]], tree[child[side:2 * S:2]] = level[:S] + 1, tree[:S]
            if np.array_equal(level, before):
                break
        depth = np.zeros(len(roots), dtype=np.int64)
        np.maximum.at(depth, tree, level)
        count = np.diff(self.coef_start)
        spare = int(count.max(initial=0))
        nan_right = np.where(self.nan_way == 2, True, np.where(self.nan_way == 1, False, ~(0.0 <= self.threshold)))
        return (roots, depth, np.concatenate([self.feature, np.zeros(L, np.int64)]).astype(np.uintp),
                np.concatenate([self.threshold, np.full(L, np.inf)]),
                np.concatenate([nan_right, np.zeros(L, bool)]).astype(np.uintp), child, S, self.leaf_value,
                self.const, self.coef_start[:-1], count, np.concatenate([self.coef_feature, np.zeros(spare, np.int64)]),
                np.concatenate([self.coef_value, np.zeros(spare)]))

    def _small(self, X: np.ndarray) -> np.ndarray:
        """:meth:`predict` in NumPy for a few rows, every tree of a row at once: the kernels' decisions and
        additions in their order (each leaf's terms one by one, the trees added left to right from 0.0), so the
        same bits."""
        n, rows = len(X), np.arange(len(X))[:, None]
        at = np.broadcast_to(self.roots, (n, len(self.roots))).copy()
        while (active := at >= 0).any():
            node = np.where(active, at, 0)
            v = X[rows, self.feature[node]]
            nan, way = np.isnan(v), self.nan_way[node]
            go_left = np.where(nan & (way == 1), True,
                               np.where(nan & (way == 2), False, np.where(nan, 0.0, v) <= self.threshold[node]))
            at = np.where(active, np.where(go_left, self.left[node], self.right[node]), at)
        leaf = -at - 1
        value, start = self.const[leaf], self.coef_start[leaf]
        count = self.coef_start[leaf + 1] - start
        fallback = np.zeros(at.shape, dtype=bool)
        for i in range(int(count.max(initial=0))):
            has = i < count
            term = np.where(has, start + i, 0)
            x = X[rows, self.coef_feature[term]]
            fallback |= has & np.isnan(x)  # a NaN among the leaf's features: the constant leaf value
            value = np.where(has & ~fallback, value + self.coef_value[term] * x, value)
        value = np.where(fallback, self.leaf_value[leaf], value)
        out = np.zeros(n)
        out += np.cumsum(np.concatenate([np.zeros((n, 1)), value], axis=1), axis=1)[:, -1]
        return out


def compile_linear_lightgbm(text: str, source: str = "the LightGBM model text") -> LinearForest | None:
    """The forest of a LightGBM model file's text whose trees have linear leaves (``is_linear=1``; trees without
    are read as linear leaves without terms) as a :class:`LinearForest`, or ``None`` when it uses what this walk
    lacks (categorical splits, zero-as-missing, several outputs per iteration, a transformed objective).
    Damaged or crafted files raise :class:`CorruptModelError` naming ``source`` and the tree."""
    header, body, n_features, covered = read_header(text, source)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "decision", "left", "right", "leaf",
                                                          "const", "count", "coef_feature", "coef_value")}
    sizes: list[int] = []
    for t, block in enumerate(body.split("\nTree=") if body else []):
        tree = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        where = f"{source}, tree {t}"
        size = _int(tree.get("num_leaves", ""), where, "num_leaves")
        if size < 1:
            raise CorruptModelError(f"{where}: num_leaves is {size}; a tree has at least one leaf")
        covered &= tree.get("num_cat", "0") == "0"
        leaf = _array(tree, "leaf_value", np.float64, size, where)
        parts["leaf"].append(leaf)
        sizes.append(size)
        if size > 1:
            decision = _array(tree, "decision_type", np.int64, size - 1, where)
            covered &= not ((decision & 1).any() or ((decision >> 2) & 3 == 1).any())
            parts["decision"].append(decision)
            for key, side, dtype in (("split_feature", "feature", np.int64), ("threshold", "threshold", np.float64),
                                     ("left_child", "left", np.int64), ("right_child", "right", np.int64)):
                parts[side].append(_array(tree, key, dtype, size - 1, where))
        _leaf_terms(tree, size, leaf, n_features, where, parts)
    if "tree_sizes" in header and len(header["tree_sizes"].split()) != len(sizes):
        raise CorruptModelError(f"{source}: the LightGBM model file lists {len(header['tree_sizes'].split())} trees "
                                f"but holds {len(sizes)}; save or download the model again")
    flat = {k: np.concatenate(v) if v else np.empty(0, dtype=np.int64 if k in ("feature", "decision", "left", "right",
                                                                              "count", "coef_feature") else np.float64)
            for k, v in parts.items()}
    roots, left, right = _checked(flat, np.asarray(sizes, dtype=np.int64), n_features, source, numeric=covered)
    if not covered:
        return None
    decision = flat["decision"]
    nan_way = np.where(((decision >> 2) & 3) == 2, np.where((decision & 2) != 0, 1, 2), 0)
    return LinearForest(
        roots=roots.astype(np.int64), feature=flat["feature"], threshold=flat["threshold"], left=left.astype(np.int64),
        right=right.astype(np.int64), nan_way=nan_way.astype(np.int8), leaf_value=flat["leaf"], const=flat["const"],
        coef_start=np.concatenate([[0], np.cumsum(flat["count"])]).astype(np.int64),
        coef_feature=flat["coef_feature"], coef_value=flat["coef_value"], n_features=n_features)


def _leaf_terms(tree: dict[str, str], size: int, leaf: np.ndarray, n_features: int, where: str,
                parts: dict[str, list[np.ndarray]]) -> None:
    """Append one tree's leaf constants, term counts, term features and coefficients to ``parts`` (a tree without
    linear leaves: its leaf values, no terms), after checking them."""
    if tree.get("is_linear", "0") == "0":
        parts["const"].append(leaf)
        parts["count"].append(np.zeros(size, dtype=np.int64))
        return
    const = _array(tree, "leaf_const", np.float64, size, where)
    count = _array(tree, "num_features", np.int64, size, where)
    if (count < 0).any():
        raise CorruptModelError(f"{where}: num_features holds a negative count; save or download the model again")
    total = int(count.sum())
    feature = _array(tree, "leaf_features", np.int64, total, where)
    coeff = _array(tree, "leaf_coeff", np.float64, total, where)
    if ((feature < 0) | (feature >= n_features)).any():
        raise CorruptModelError(f"{where}: leaf_features names a feature outside 0..{n_features - 1}; the file is "
                                f"damaged or was edited: save or download the model again")
    if not (np.isfinite(const).all() and np.isfinite(coeff).all()):
        raise CorruptModelError(f"{where}: leaf_const or leaf_coeff holds a value that is not a finite number; the "
                                f"file is damaged or was edited: save or download the model again")
    for key, values in (("const", const), ("count", count), ("coef_feature", feature), ("coef_value", coeff)):
        parts[key].append(values)


__all__ = ["LinearForest", "compile_linear_lightgbm"]
