"""LightGBM regression forests walked by Numba-compiled code: the same sums, with less overhead per call.

Why our own walker: ``Booster.predict`` costs ~100 µs of call overhead for one row and walks trees through a
generic interface; a scheduler asking for one configuration, or for a 100k-row batch, waits on both. lleaves
(the LightGBM compiler) does not build on the llvmlite that numba needs, and numba is a dependency already.

The decisions are LightGBM's own (``Tree::NumericalDecision``): a NaN feature goes the node's default way when
the split learned a NaN bin and is read as 0.0 otherwise, every comparison is ``value <= threshold`` in
float64, and trees are summed in LightGBM's order, so results are bit-for-bit ``booster.predict`` (tests check
it on real models). Models this walker does not cover (categorical splits, linear trees, zero-as-missing,
several outputs per iteration, objectives whose output is transformed) are left to LightGBM:
:func:`compile_lightgbm` returns ``None`` for them.

How it walks (chosen by measurement, benchmarks/PREDICT_SPEED.md): each block of rows first codes its features
as small unsigned ints (per feature, the rank of the value among the forest's thresholds on it), so a node
compares two uint8s (uint16 past 254 thresholds) with LightGBM's float decision, NaN included; leaves are nodes
that lead to themselves, so each step is branch-free (the next node is ``children[2 * node + (code > node's
code)]``) and eight rows walk one tree together, their independent loads overlapping instead of each waiting on
a mispredicted branch; every second step they stop if all eight have reached leaves, else at the tree's depth.
Blocks of rows run in parallel (``prange``). Everything is built from the validated arrays at load time; the
compiled code is numba's (``cache=True``), never anything read from the model file.

A model file is input, not trusted code: before anything walks a tree, every index the walker reads (split
feature, children, leaves) is checked to be in range and every tree to be one acyclic tree, and a failure
raises :class:`~perfcast.models.persistence.errors.CorruptModelError` naming the file and the tree, so a damaged or crafted
file can neither read outside the arrays (a segfault in compiled code) nor send the walk round a cycle (a hang).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from perfcast.models.persistence.errors import CorruptModelError

#: objectives whose prediction is the raw sum of leaf values (no link function)
IDENTITY_OBJECTIVES = frozenset({"regression", "regression_l1", "huber", "fair", "quantile", "mape"})
#: rows each parallel task walks together (every tree over a block keeps that tree in cache)
BLOCK = 256
#: rows that walk one tree in step (their loads overlap; 8 measured fastest, benchmarks/PREDICT_SPEED.md)
LANES = 8


class Layout(NamedTuple):
    """The arrays the walk reads, in :func:`_walk`'s argument order (see :meth:`CompiledForest._layout`)."""

    used: np.ndarray
    starts: np.ndarray
    cuts: np.ndarray
    nan_code: np.ndarray
    roots: np.ndarray
    depth: np.ndarray
    children: np.ndarray
    column: np.ndarray
    code: np.ndarray
    value: np.ndarray
    splits: np.uintp


@dataclass(frozen=True, repr=False)
class CompiledForest:
    """A LightGBM forest as flat arrays: node ``i`` splits on ``feature[i]`` at ``threshold[i]``; a child index
    ``c < 0`` is leaf ``-c - 1``; ``roots[t]`` is tree ``t``'s first node (negative for a one-leaf tree).

    The walking layout (:meth:`_layout`) renumbers leaf ``l`` as node ``S + l`` (``S`` split nodes) that leads to
    itself, with each tree's depth, so a walk is a fixed number of branch-free steps."""

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
        """The walk's arrays
        over split nodes then leaves (a node at or past ``splits`` is a leaf), its nodes comparing small ints.

        A row's features are coded once per walk (:func:`_walk`) into columns: column ``j`` reads feature
        ``used[j]``, and ``cuts[starts[j]:starts[j + 1]]`` are the sorted distinct thresholds of the nodes that
        read it; a value's code is 1 + the number of them below it, and a node on the ``k``-th holds ``k + 1``,
        so ``value > threshold`` exactly when ``code > node's code``: LightGBM's float decisions on small ints,
        the whole block's codes in cache. A NaN's code is ``nan_code[j]``: nodes that send a NaN left read a
        column where it is 0, those that send it right one where it is above every cut, and splits that saw no
        NaN (LightGBM reads it as 0.0 there) one where it is 0.0's code; so no step tests for NaN. A tree's depth
        is its deepest leaf's: children follow their parent within a tree (checked on load), and each node has
        one parent, so depths settle in depth-many passes."""
        S, L = len(self.feature), len(self.leaf_value)
        leaves = np.arange(S, S + L, dtype=np.int32)
        node = lambda c: np.where(c >= 0, c, S - c - 1).astype(np.int32)  # noqa: E731 - leaf -l-1 -> S + l
        children = np.empty(2 * (S + L), dtype=np.int32)
        children[0:2 * S:2], children[1:2 * S:2] = node(self.left), node(self.right)
        children[2 * S::2] = children[2 * S + 1::2] = leaves
        roots = node(self.roots)
        depth = np.zeros(S + L, dtype=np.int32)
        tree = np.full(S + L, -1, dtype=np.int32)
        tree[roots] = np.arange(len(roots), dtype=np.int32)
        while True:  # every node's depth and tree, one level further per pass
            deeper, owner = depth.copy(), tree.copy()
            deeper[children[:2 * S]] = np.repeat(depth[:S] + 1, 2)
            owner[children[:2 * S]] = np.repeat(tree[:S], 2)
            if np.array_equal(deeper, depth) and np.array_equal(owner, tree):
                break
            depth, tree = deeper, owner
        tree_depth = np.zeros(len(roots), dtype=np.int32)
        np.maximum.at(tree_depth, tree[S:], depth[S:])
        mode = np.where(self.nan_as_missing, np.where(self.default_left, 1, 2), 0)  # NaN: as 0.0 / left / right
        keys, column = np.unique(self.feature.astype(np.int64) * 3 + mode, return_inverse=True)
        cuts = [np.unique(self.threshold[column == j]) for j in range(len(keys))]
        code = np.zeros(S, dtype=np.int64)
        for j, c in enumerate(cuts):
            code[column == j] = np.searchsorted(c, self.threshold[column == j]) + 1
        nan_code = [(np.searchsorted(c, 0.0) + 1, 0, len(c) + 1)[m] for c, m in zip(cuts, keys % 3, strict=True)]
        dtype = np.min_scalar_type(max((len(c) + 1 for c in cuts), default=0))
        return Layout(
            used=(keys // 3).astype(np.uint32), starts=np.cumsum([0] + [len(c) for c in cuts]).astype(np.int64),
            cuts=np.concatenate(cuts or [np.empty(0)]), nan_code=np.asarray(nan_code, dtype=dtype),
            roots=roots.astype(np.uint32), depth=tree_depth, children=children.astype(np.uint32),
            column=np.append(column, np.zeros(L, dtype=np.int64)).astype(np.uint32),
            code=np.append(code, np.zeros(L, dtype=np.int64)).astype(dtype),
            value=np.append(np.zeros(S), self.leaf_value), splits=np.uintp(S))

    def predict(self, X: np.ndarray, threads: int = 1) -> np.ndarray:
        """Sum of leaf values per row of the float64 matrix ``X`` (rows, :attr:`n_features`)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) feature matrix, got shape {X.shape}")
        codes = np.empty((len(X), len(self.layout.used)), dtype=self.layout.code.dtype)
        if threads <= 1 or len(X) <= BLOCK:
            out = np.zeros(len(X))
            for lo in range(0, len(X), BLOCK):  # block by block, as the parallel walk: a block stays in cache
                _walk(X, codes, lo, min(len(X), lo + BLOCK), *self.layout, out)
            return out
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        return _walk_parallel(X, codes, *self.layout)


def compile_lightgbm(text: str, source: str = "the LightGBM model text") -> CompiledForest | None:
    """The forest of a LightGBM model file's text as a :class:`CompiledForest`, or ``None`` when it uses what the
    walker lacks. Read from the text (as written by ``Booster.save_model``), which holds every threshold to 17
    digits: parsing it costs a few tens of ms where ``Booster.dump_model`` takes most of a second.

    Every tree is checked before anything walks it, also in a model then left to LightGBM (whose reader trusts
    the indices; see :func:`_checked`). Any failure raises :class:`CorruptModelError` naming ``source`` (the
    file) and the tree, so a crafted file can neither crash the process nor hang the walker.
    """
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
    roots, left, right = _checked(flat, np.asarray(sizes, dtype=np.int64), n_features, source, numeric=covered)
    if not covered:
        return None
    decision = flat["decision"]
    return CompiledForest(
        roots=roots.astype(np.int32), feature=flat["feature"].astype(np.int32), threshold=flat["threshold"],
        left=left.astype(np.int32), right=right.astype(np.int32), default_left=(decision & 2) != 0,
        nan_as_missing=((decision >> 2) & 3) == 2, leaf_value=flat["leaf"], n_features=n_features)


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


@njit(cache=True, nogil=True)
def _walk(X, codes, lo, hi, used, starts, cuts, nan_code, roots, depth, children, column, code, value, splits,
          out):  # noqa: ANN001
    """Code rows ``lo:hi`` of ``X`` into ``codes`` (see :meth:`CompiledForest._layout`), then add every tree's
    leaf value to ``out[lo:hi]`` (tree by tree, in LightGBM's order), :data:`LANES` rows at a time through each
    tree.

    Indices are unsigned (``np.uintp``): numba then emits no negative-index wraparound per array read, which
    halves the time of a step (benchmarks/PREDICT_SPEED.md); the layout's indices are checked in range on load."""
    for r in range(lo, hi):
        for j in range(used.shape[0]):
            v = X[r, used[j]]
            a, b = starts[j], starts[j + 1]  # the first cut not below v: a binary search
            while a < b:
                m = (a + b) >> 1
                if cuts[m] < v:
                    a = m + 1
                else:
                    b = m
            codes[r, j] = nan_code[j] if v != v else a - starts[j] + 1
    nodes = np.empty(LANES, dtype=np.uintp)
    two = np.uintp(2)
    for t in range(roots.shape[0]):
        i = lo
        while i + LANES <= hi:
            nodes[:] = roots[t]
            step = 0
            while step < depth[t]:  # two steps, then stop once every lane is at its leaf (a leaf leads to itself)
                for _ in range(2):
                    for j in range(LANES):
                        node = nodes[j]
                        nodes[j] = children[two * node + np.uintp(codes[np.uintp(i + j), column[node]] > code[node])]
                step += 2
                lowest = nodes[0]
                for j in range(1, LANES):
                    lowest = min(lowest, nodes[j])
                if lowest >= splits:
                    break
            for j in range(LANES):
                out[i + j] += value[nodes[j]]
            i += LANES
        for r in range(i, hi):  # a row alone: branches (the CPU runs ahead on its guess), stopping at the leaf
            node = np.uintp(roots[t])
            while node < splits:
                node = np.uintp(children[two * node + np.uintp(codes[np.uintp(r), column[node]] > code[node])])
            out[r] += value[node]


@njit(parallel=True, cache=True)
def _walk_parallel(X, codes, used, starts, cuts, nan_code, roots, depth, children, column, code, value,
                   splits):  # noqa: ANN001
    n = X.shape[0]
    out = np.zeros(n)
    for b in prange((n + BLOCK - 1) // BLOCK):
        _walk(X, codes, b * BLOCK, min(n, b * BLOCK + BLOCK), used, starts, cuts, nan_code, roots, depth, children,
              column, code, value, splits, out)
    return out


__all__ = ["CompiledForest", "CorruptModelError", "compile_lightgbm"]
