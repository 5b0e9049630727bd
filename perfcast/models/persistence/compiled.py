"""LightGBM regression forests walked by Numba-compiled code: the same sums, with less overhead per call.

Why our own walker: ``Booster.predict`` costs ~100 µs of call overhead for one row and walks trees through a
generic interface; a scheduler asking for one configuration, or for a 100k-row batch, waits on both. lleaves
(the LightGBM compiler) does not build on the llvmlite that numba needs, and numba is a dependency already.

The decisions are LightGBM's own (``Tree::NumericalDecision``, on the row as its dense-matrix reader passes it:
a value within 1e-35 of zero is 0.0): a NaN feature goes the node's default way when
the split learned a NaN bin and is read as 0.0 otherwise, every comparison is ``value <= threshold`` in
float64, and trees are summed in LightGBM's order, so results are bit-for-bit ``booster.predict`` (tests check
it on real models). Models this walker does not cover (categorical splits, linear trees, zero-as-missing,
several outputs per iteration, objectives whose output is transformed) are left to LightGBM:
:func:`compile_lightgbm` returns ``None`` for them (linear trees have their own walker,
:mod:`perfcast.models.persistence.compiled_linear`).

How it walks (chosen by measurement, benchmarks/PREDICT_SPEED.md and PREDICT_SPEED_BATCH.md): the rows first
code their features as small unsigned ints (per feature, the rank of the value among the forest's thresholds on
it), so a node compares two uint8s (uint16 past 254 thresholds) with LightGBM's float decision, NaN included.
Each node is one 64-bit record (its left child's slot, its column, its code) with the two children side by side,
so a step is two reads: ``next = left + (row's code > node's code)``; leaves lead to themselves, so each step
is branch-free and eight rows walk one tree together, their independent loads overlapping instead of each
waiting on a mispredicted branch; every second step they stop if all eight have reached leaves, else at the
tree's depth. A batch is walked in the order of its rows' codes on the most split columns, so the eight rows
in step mostly share their paths and stop together. Blocks of rows run in parallel (``prange``); a row's
trees are summed in the same order whatever its block, thread or neighbours. Everything is built from the
validated arrays at load time; the compiled code is numba's (``cache=True``, in :mod:`.kernels`, imported on
the first walk that needs it), never anything read from the model file. A fresh process's first small requests
are walked in NumPy instead, to the same sums (:mod:`.small_walk`), so loading a model and answering a few
configurations never imports numba.

A model file is input, not trusted code: before anything walks a tree, every index the walker reads (split
feature, children, leaves) is checked to be in range and every tree to be one acyclic tree, and a failure
raises :class:`~perfcast.models.persistence.errors.CorruptModelError` naming the file and the tree, so a damaged or crafted
file can neither read outside the arrays (a segfault in compiled code) nor send the walk round a cycle (a hang).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np

from perfcast.models.persistence.errors import CorruptModelError
from perfcast.models.persistence.small_walk import KERNELS, SmallWalk, use_numpy

#: objectives whose prediction is the raw sum of leaf values (no link function)
IDENTITY_OBJECTIVES = frozenset({"regression", "regression_l1", "huber", "fair", "quantile", "mape"})


class Layout(NamedTuple):
    """The arrays the walk reads (see :meth:`CompiledForest._layout`): how a row's features become codes, and the
    nodes as packed records."""

    used: np.ndarray
    starts: np.ndarray
    cuts: np.ndarray
    nan_code: np.ndarray
    key: np.ndarray
    roots: np.ndarray
    depth: np.ndarray
    node: np.ndarray
    leaf: np.ndarray
    value: np.ndarray


class _Uncovered(ValueError):
    """A forest too wide for the packed node records (left to LightGBM)."""


@dataclass(frozen=True, repr=False)
class CompiledForest:
    """A LightGBM forest as flat arrays: node ``i`` splits on ``feature[i]`` at ``threshold[i]``; a child index
    ``c < 0`` is leaf ``-c - 1``; ``roots[t]`` is tree ``t``'s first node (negative for a one-leaf tree).

    The walking layout (:meth:`_layout`) gives every node a slot, the two children of a split side by side and
    each leaf leading to itself, so a walk is a fixed number of branch-free steps."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    default_left: np.ndarray
    nan_as_missing: np.ndarray
    leaf_value: np.ndarray
    n_features: int
    layout: Layout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", self._layout())

    def __repr__(self) -> str:
        return f"CompiledForest({len(self.roots)} trees, {len(self.feature)} splits, {self.n_features} features)"

    def _layout(self) -> Layout:
        """The walk's arrays: codes for the features, and one 64-bit record per node slot.

        A row's features are coded once per walk (:func:`.kernels._code`) into columns: column ``j`` reads feature
        ``used[j]``, and ``cuts[starts[j]:starts[j + 1]]`` are the sorted distinct thresholds of the nodes that
        read it; a value's code is 1 + the number of them below it, and a node on the ``k``-th holds ``k + 1``,
        so ``value > threshold`` exactly when ``code > node's code``: LightGBM's float decisions on small ints,
        the whole block's codes in cache. A NaN's code is ``nan_code[j]``: nodes that send a NaN left read a
        column where it is 0, those that send it right one where it is above every cut, and splits that saw no
        NaN (LightGBM reads it as 0.0 there) one where it is 0.0's code; so no step tests for NaN.

        Slots are given level by level (children follow their parent within a tree, checked on load, so this
        ends), each split's two children side by side, then grouped by tree. A slot's record holds its left
        child's slot (bits 0-31), its column (32-47) and its code (48-63), so a step is one record and one code
        read: ``next = first child + (row's code > node's code)``. A leaf's record names itself with code
        0xFFFF, which no row's code exceeds, so it stays put. ``key`` lists the columns (most split on first)
        whose codes order a batch's rows before the walk (see :meth:`predict`)."""
        S, L, T = len(self.feature), len(self.leaf_value), len(self.roots)
        N = S + L
        as_node = lambda c: np.where(c >= 0, c, S - c - 1).astype(np.int64)  # noqa: E731 - leaf -l-1 -> S + l
        leaves = np.arange(S, N, dtype=np.int64)
        left = np.concatenate([as_node(self.left), leaves])  # a leaf's children: itself
        right = np.concatenate([as_node(self.right), leaves])
        roots = as_node(self.roots)
        tree, level = np.empty(N, dtype=np.int64), np.empty(N, dtype=np.int64)
        tree[roots], level[roots] = np.arange(T), 0
        given, frontier = [roots], roots
        while len(frontier := frontier[frontier < S]):  # the next level: each split's children, side by side
            kids = np.column_stack([left[frontier], right[frontier]]).ravel()
            tree[kids], level[kids] = np.repeat(tree[frontier], 2), np.repeat(level[frontier] + 1, 2)
            given.append(kids)
            frontier = kids
        at = np.concatenate(given)
        at = at[np.argsort(tree[at], kind="stable")]  # the node in each slot: a tree's nodes together
        slot = np.empty(N, dtype=np.int64)
        slot[at] = np.arange(N)
        depth = np.zeros(T, dtype=np.int32)
        np.maximum.at(depth, tree, level.astype(np.int32))

        mode = np.where(self.nan_as_missing, np.where(self.default_left, 1, 2), 0)  # NaN: as 0.0 / left / right
        keys, column = np.unique(self.feature.astype(np.int64) * 3 + mode, return_inverse=True)
        cuts = [np.unique(self.threshold[column == j]) for j in range(len(keys))]
        if N >= 2**32 or len(keys) > 0xFFFF or max((len(c) + 2 for c in cuts), default=0) > 0xFFFF:
            raise _Uncovered(f"{N} nodes, {len(keys)} columns: too many for 32-bit slots and 16-bit codes")
        code = np.full(N, 0xFFFF, dtype=np.int64)
        for j, c in enumerate(cuts):
            code[:S][column == j] = np.searchsorted(c, self.threshold[column == j]) + 1
        nan_code = [(np.searchsorted(c, 0.0) + 1, 0, len(c) + 1)[m] for c, m in zip(cuts, keys % 3, strict=True)]
        dtype = np.min_scalar_type(max((len(c) + 1 for c in cuts), default=0))
        col = np.append(column, np.zeros(L, dtype=np.int64))
        record = (slot[left[at]].astype(np.uint64) | (col[at].astype(np.uint64) << np.uint64(32))
                  | (code[at].astype(np.uint64) << np.uint64(48)))
        split_counts = np.bincount(column, minlength=len(keys))
        return Layout(
            used=(keys // 3).astype(np.uint32), starts=np.cumsum([0] + [len(c) for c in cuts]).astype(np.int64),
            cuts=np.concatenate(cuts or [np.empty(0)]), nan_code=np.asarray(nan_code, dtype=dtype),
            key=np.argsort(-split_counts, kind="stable")[: 64 // (8 * dtype.itemsize)].astype(np.int64),
            roots=slot[roots].astype(np.uint32), depth=depth, node=record, leaf=(at >= S).astype(np.uint8),
            value=np.where(at >= S, np.append(np.zeros(S), self.leaf_value)[at], 0.0))

    def predict(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """Sum of leaf values per row of the float64 matrix ``X`` (rows, :attr:`n_features`), each row's trees
        added in LightGBM's order whatever the threads.

        A batch of more than one block is coded first, then walked in the order of its rows' codes on the most
        split columns (:attr:`Layout.key`): neighbouring rows then mostly take the same paths, so the rows that
        walk a tree in step reach their leaves after about as many steps (benchmarks/PREDICT_SPEED_BATCH.md).
        The order changes which rows walk together, never a row's sum."""
        X = np.asarray(X, dtype=np.float64)
        if not (X.flags.c_contiguous or X.flags.f_contiguous):  # column-major (a frame's block) is read as it is
            X = np.ascontiguousarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) feature matrix, got shape {X.shape}")
        if use_numpy(len(X)):  # a fresh process's first small requests: no numba to load (see .small_walk)
            return self.small.predict(X)
        kernels = sys.modules.get(KERNELS)  # (an import statement per call costs a request more than its walk)
        if kernels is None:  # numba: imported on the first walk that needs it
            from perfcast.models.persistence import kernels
        return kernels.walk(self.layout, X, threads)

    @cached_property
    def small(self) -> SmallWalk:
        """The forest as :mod:`.small_walk` walks it (built on its first use)."""
        return SmallWalk.of(self)


def compile_lightgbm(text: str, source: str = "the LightGBM model text") -> CompiledForest | None:
    """The forest of a LightGBM model file's text as a :class:`CompiledForest`, or ``None`` when it uses what the
    walker lacks. Read from the text (as written by ``Booster.save_model``), which holds every threshold to 17
    digits: parsing it costs a few tens of ms where ``Booster.dump_model`` takes most of a second.

    Every tree is checked before anything walks it, also in a model then left to LightGBM (whose reader trusts
    the indices; see :func:`_checked`). Any failure raises :class:`CorruptModelError` naming ``source`` (the
    file) and the tree, so a crafted file can neither crash the process nor hang the walker.
    """
    arrays, covered = parse_lightgbm(text, source)
    if covered:
        return forest_from_arrays(arrays, source)
    _checked(arrays, arrays["sizes"], int(arrays["n_features"]), source, numeric=False)
    return None


#: the arrays of a parsed forest (:func:`parse_lightgbm`), as a bundle stores them beside the model's text
FOREST_ARRAYS = ("feature", "threshold", "decision", "left", "right", "leaf", "sizes", "n_features")


def parse_lightgbm(text: str, source: str) -> tuple[dict[str, np.ndarray], bool]:
    """The trees of a LightGBM model file's text as flat arrays (:data:`FOREST_ARRAYS`: each tree's arrays as
    LightGBM writes them, concatenated, with each tree's leaf count and the model's feature count), and whether
    the walker covers the model. Not yet checked: :func:`forest_from_arrays` checks them."""
    header, body, n_features, covered = read_header(text, source)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "decision", "left", "right", "leaf")}
    sizes: list[int] = []
    for t, block in enumerate(body.split("\nTree=") if body else []):
        tree = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        where = f"{source}, tree {t}"
        if tree.get("is_linear", "0") != "0" or tree.get("num_cat", "0") != "0":
            covered = False
        size = _int(tree.get("num_leaves", ""), where, "num_leaves")
        if size < 1:
            raise CorruptModelError(f"{where}: num_leaves is {size}; a tree has at least one leaf")
        parts["leaf"].append(_array(tree, "leaf_value", np.float64, size, where))
        sizes.append(size)
        if size > 1:
            decision = _array(tree, "decision_type", np.int64, size - 1, where)
            if (decision & 1).any() or ((decision >> 2) & 3 == 1).any():  # categorical, or zero as missing
                covered = False
            parts["decision"].append(decision)
            for key, side, dtype in (("split_feature", "feature", np.int64), ("threshold", "threshold", np.float64),
                                     ("left_child", "left", np.int64), ("right_child", "right", np.int64)):
                parts[side].append(_array(tree, key, dtype, size - 1, where))
    if "tree_sizes" in header and len(header["tree_sizes"].split()) != len(sizes):
        raise CorruptModelError(f"{source}: the LightGBM model file lists {len(header['tree_sizes'].split())} trees "
                                f"but holds {len(sizes)}; save or download the model again")
    flat = {k: np.concatenate(v) if v else np.empty(0, dtype=np.float64 if k in ("threshold", "leaf") else np.int64)
            for k, v in parts.items()}
    return {**flat, "sizes": np.asarray(sizes, dtype=np.int64), "n_features": np.asarray(n_features)}, covered


def forest_from_arrays(arrays: dict[str, np.ndarray], source: str) -> CompiledForest | None:
    """The :class:`CompiledForest` of parsed arrays (:func:`parse_lightgbm`, or a bundle's ``forest.npz`` of them),
    every index checked first (:func:`_checked`); ``None`` when it is too wide for the walker. Arrays that are not
    a parsed forest of the walker's kind raise :class:`CorruptModelError` naming ``source``."""
    missing = [k for k in FOREST_ARRAYS if k not in arrays]
    try:
        sizes, n_features = arrays["sizes"].astype(np.int64, casting="same_kind"), int(arrays["n_features"])
        flat = {k: arrays[k].astype(np.float64 if k in ("threshold", "leaf") else np.int64, casting="same_kind")
                for k in FOREST_ARRAYS[:6]}
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptModelError(f"{source} is not a parsed LightGBM forest ({f'no {missing}' if missing else err}); "
                                f"save or download the model again") from None
    splits = int((sizes - 1).sum())
    shapes = {k: v.shape for k, v in flat.items()} | {"sizes": sizes.shape, "n_features": arrays["n_features"].shape}
    decision = flat["decision"]
    if (sizes < 1).any() or shapes["leaf"] != (int(sizes.sum()),) or not 1 <= n_features <= np.iinfo(np.int32).max \
            or any(shapes[k] != (splits,) for k in ("feature", "threshold", "decision", "left", "right")) \
            or shapes["sizes"] != (len(sizes),) or shapes["n_features"] != () \
            or (decision & 1).any() or ((decision >> 2) & 3 == 1).any():
        raise CorruptModelError(f"{source} does not hold a forest the walker reads (array shapes {shapes}); save or "
                                f"download the model again")
    roots, left, right = _checked(flat, sizes, n_features, source, numeric=True)
    try:
        return CompiledForest(
            roots=roots.astype(np.int32), feature=flat["feature"].astype(np.int32), threshold=flat["threshold"],
            left=left.astype(np.int32), right=right.astype(np.int32), default_left=(decision & 2) != 0,
            nan_as_missing=((decision >> 2) & 3) == 2, leaf_value=flat["leaf"], n_features=n_features)
    except _Uncovered:
        return None


def read_header(text: str, source: str) -> tuple[dict[str, str], str, int, bool]:
    """A LightGBM model file's header (key -> value), the text of its trees, its feature count and whether its
    output is the plain sum of leaf outputs (one tree per iteration, no averaging, an identity objective)."""
    head, _, body = text.partition("\nTree=")
    body, end, _ = body.partition("\nend of trees")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    if not end or "max_feature_idx" not in header:
        raise CorruptModelError(f"{source} is not a complete LightGBM model file (no header or no 'end of trees' "
                                f"line); save or download the model again")
    n_features = _int(header["max_feature_idx"], source, "the header's max_feature_idx") + 1
    if not 1 <= n_features <= np.iinfo(np.int32).max:
        raise CorruptModelError(f"{source}: the header's max_feature_idx is {n_features - 1}, outside 0..2^31-2")
    covered = header.get("num_tree_per_iteration", "1") == "1" and "average_output" not in head.split() \
        and header.get("objective", "").split(" ")[0] in IDENTITY_OBJECTIVES
    return header, body, n_features, covered


def _int(text: str, where: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CorruptModelError(f"{where}: {what} is {text[:40]!r}, not an integer; the file is damaged: save or "
                                f"download the model again") from None


def _array(tree: dict[str, str], key: str, dtype: type, size: int, where: str) -> np.ndarray:
    """The whitespace-separated numbers of ``key``, which must be ``size`` of them."""
    try:
        values = np.array(tree[key].split(), dtype=dtype)
    except KeyError:
        raise CorruptModelError(f"{where} has no {key} line; the file is damaged: save or download the model "
                                f"again") from None
    except (ValueError, OverflowError) as err:
        raise CorruptModelError(f"{where}: {key} holds a value that is not a number ({err})") from None
    if len(values) != size:
        raise CorruptModelError(f"{where}: {key} has {len(values)} values, but num_leaves={size + (key != 'leaf_value')} "
                                f"needs {size}")
    return values


def _checked(flat: dict[str, np.ndarray], sizes: np.ndarray, n_features: int, source: str, numeric: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The forest's roots and children in forest-wide numbering (a child ``c < 0`` is leaf ``-c - 1``), after
    checking, over all trees at once and in int64 (before any narrowing cast), every index the walker reads.

    ``flat`` holds each tree's arrays concatenated, children numbered within their tree as LightGBM writes them
    (``c < 0``: leaf ``~c``), and ``sizes`` each tree's leaf count. A split child must be a split node *after*
    its parent in its own tree: LightGBM numbers a node when it splits a leaf its parent made, so real trees
    satisfy this, and with it no walk can cycle. A leaf child must be a leaf of its own tree, each split feature
    below ``n_features``, and every split node and leaf reached exactly once (from its parent or as a root), so
    each tree is one connected tree. Leaf values must be finite and numerical thresholds not NaN (LightGBM writes an infinite threshold
    for a split whose upper bin is open-ended).
    """
    splits = sizes - 1
    node_start = np.concatenate([[0], np.cumsum(splits)[:-1]]).astype(np.int64)
    leaf_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    tree = np.repeat(np.arange(len(sizes)), splits)
    local = np.arange(len(tree)) - node_start[tree]

    def fail(t: int, what: str) -> None:
        raise CorruptModelError(f"{source}, tree {t}: {what}; the file is damaged or was edited: save or download "
                                f"the model again")

    feature = flat["feature"]
    bad = np.flatnonzero((feature < 0) | (feature >= n_features))
    if bad.size:
        i = int(bad[0])
        fail(int(tree[i]), f"split node {int(local[i])} reads feature {int(feature[i])}, but the model has "
                           f"{n_features} features")
    children = []
    for side in ("left", "right"):
        child = flat[side]
        bad = np.flatnonzero(np.where(child >= 0, (child <= local) | (child >= splits[tree]), ~child >= sizes[tree]))
        if bad.size:
            i, c, n = int(bad[0]), int(child[bad[0]]), int(sizes[tree[bad[0]]])
            fail(int(tree[i]), f"{side}_child of node {int(local[i])} is " + (
                f"leaf {~c}, but the tree has {n} leaves" if c < 0 else
                f"node {c}, not a node after it (a cycle)" if c <= local[i] else
                f"node {c}, but the tree has {n - 1} split nodes"))
        children.append(np.where(child >= 0, child + node_start[tree], -(~child + leaf_start[tree]) - 1))
    roots = np.where(sizes > 1, node_start, -leaf_start - 1)
    every = np.concatenate([*children, roots])
    for name, reached, start in (("split node", np.bincount(every[every >= 0], minlength=len(tree)), node_start),
                                 ("leaf", np.bincount(-every[every < 0] - 1, minlength=len(flat["leaf"])), leaf_start)):
        bad = np.flatnonzero(reached != 1)
        if bad.size:
            i = int(bad[0])
            t = int(np.searchsorted(start, i, side="right")) - 1
            fail(t, f"{name} {i - int(start[t])} is reached {int(reached[i])} times, not once")
    for name, values, start, check in (("threshold", flat["threshold"], node_start, numeric),
                                       ("leaf_value", flat["leaf"], leaf_start, True)):
        bad = np.flatnonzero(np.isnan(values) if name == "threshold" else ~np.isfinite(values)) if check else []
        if len(bad):
            t = int(np.searchsorted(start, bad[0], side="right")) - 1
            fail(t, f"{name} {int(bad[0]) - int(start[t])} is {values[bad[0]]}, not a " + ("number" if name == "threshold" else "finite number"))
    return roots, *children


__all__ = ["CompiledForest", "CorruptModelError", "compile_lightgbm"]
