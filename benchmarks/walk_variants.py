"""How fast could an exact walk of the default forest be? The shipped walker beside the alternatives it was chosen
over, on the same coded batch (issue 18's batch target; results in benchmarks/PREDICT_SPEED_BATCH.md).

Codes the batch's feature rows as :mod:`perfcast.models.persistence.compiled` does, then times, in ns per tree
and row (median of ``--repeat`` runs, CPU time of this process, and wall time):

* ``shipped``: the walker as serving runs it (8 rows in step, rows ordered by their codes), 1 and 2 threads;
* ``shipped, rows unordered``: the same walk in the batch's own row order (what the ordering buys);
* ``bitvector``: QuickScorer's exit-leaf bitvectors in Numba, every node of a tree compared for a group of rows
  with no dependent loads (LLVM does not vectorise it: numba emits no AVX-512 gathers or compares for it);
* ``avx512 gather``: 16 rows per AVX-512 register walking a tree in step, each step two 16-way gathers (the
  node record, then the row's code), written in C with intrinsics and compiled here with ``gcc -march=native``;
  only when gcc and AVX-512 are there.

Each variant's sums are compared with LightGBM's ``Booster.predict`` on the same rows, bit for bit.

    python benchmarks/walk_variants.py [--bundle PATH|gemm] [--batch 100000] [--repeat 5]
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numba
import numpy as np
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_speed import arguments, gemm_batch, median, on_bundle  # noqa: E402 - a sibling script

from perfcast.models.persistence import compiled, kernels  # noqa: E402
from perfcast.predictor import Predictor  # noqa: E402

GROUP = 32  # rows per bitvector group (8 and 32 measured alike)

GATHER_C = r"""
#include <immintrin.h>
#include <stdint.h>
/* rec: per slot (rel. left child << 16) | (column << 8) | code, a leaf 0xFF; codes: 64 bytes per row */
void walk(const uint32_t *rec, const int32_t *start, const int32_t *depth, const double *value,
          const uint8_t *codes, int T, int N, double *out) {
  const __m512i lane = _mm512_setr_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15), ff = _mm512_set1_epi32(0xFF);
  for (int lo = 0; lo + 256 <= N; lo += 256)
    for (int t = 0; t < T; t++) {
      const int *base = (const int *)(rec + start[t]);
      for (int r = lo; r < lo + 256; r += 32) {
        __m512i n[2], off[2];
        for (int g = 0; g < 2; g++) {
          n[g] = _mm512_setzero_si512();
          off[g] = _mm512_slli_epi32(_mm512_add_epi32(_mm512_set1_epi32(r + 16 * g), lane), 6);
        }
        for (int s = 0; s < depth[t]; s++) {
          __mmask16 live = 0;
          for (int g = 0; g < 2; g++) {
            __m512i q = _mm512_i32gather_epi32(n[g], base, 4), code = _mm512_and_si512(q, ff);
            __m512i col = _mm512_and_si512(_mm512_srli_epi32(q, 8), ff);
            live |= _mm512_cmpneq_epi32_mask(code, ff);
            __m512i c = _mm512_and_si512(_mm512_i32gather_epi32(_mm512_add_epi32(off[g], col), codes, 1), ff);
            __m512i l = _mm512_srli_epi32(q, 16);
            n[g] = _mm512_mask_add_epi32(l, _mm512_cmpgt_epu32_mask(c, code), l, _mm512_set1_epi32(1));
          }
          if (!live) break;
        }
        for (int g = 0; g < 2; g++) {
          __m512i a = _mm512_add_epi32(n[g], _mm512_set1_epi32(start[t]));
          double *o = out + r + 16 * g;
          _mm512_storeu_pd(o, _mm512_add_pd(_mm512_loadu_pd(o),
                                            _mm512_i32gather_pd(_mm512_castsi512_si256(a), value, 8)));
          _mm512_storeu_pd(o + 8, _mm512_add_pd(_mm512_loadu_pd(o + 8),
                                                _mm512_i32gather_pd(_mm512_extracti64x4_epi64(a, 1), value, 8)));
        }
      }
    }
}
"""


def bitvectors(forest: compiled.CompiledForest) -> tuple[np.ndarray, ...]:
    """Per split node (tree by tree): its coded column, its code and the mask that clears its left subtree's
    leaves; per tree its first node and first leaf, the leaves in left-to-right order."""
    lay = forest.layout
    mode = np.where(forest.nan_as_missing, np.where(forest.default_left, 1, 2), 0)
    _, column = np.unique(forest.feature.astype(np.int64) * 3 + mode, return_inverse=True)
    code = np.empty(len(column), dtype=np.int64)
    for j in range(len(lay.used)):
        cuts = lay.cuts[lay.starts[j]:lay.starts[j + 1]]
        code[column == j] = np.searchsorted(cuts, forest.threshold[column == j]) + 1
    cols, codes, masks, node_start, leaves = [], [], [], [0], []

    def visit(n: int, order: list[int], left_masks: dict[int, int]) -> int:
        if n < 0:
            order.append(-n - 1)
            return 1 << (len(order) - 1)
        lm = visit(int(forest.left[n]), order, left_masks)
        left_masks[n] = lm
        return lm | visit(int(forest.right[n]), order, left_masks)

    for root in forest.roots:
        order, left_masks = [], {}
        visit(int(root), order, left_masks)
        for n in sorted(left_masks):
            cols.append(column[n]), codes.append(code[n]), masks.append(~left_masks[n] & (2**64 - 1))
        node_start.append(len(cols))
        leaves.extend(order)
    leaf_start = np.concatenate([[0], np.cumsum(np.diff(node_start) + 1)])
    return (np.asarray(node_start, np.int64), np.asarray(cols, np.int64), np.asarray(codes, lay.nan_code.dtype),
            np.asarray(masks, np.uint64), leaf_start, forest.leaf_value[np.asarray(leaves, np.int64)])


@njit(parallel=True, cache=True)
def bitvector_walk(codes_t, node_start, cols, codes, masks, leaf_start, values):  # noqa: ANN001
    """QuickScorer on ``codes_t`` (columns, rows): a row's exit leaf is the lowest bit left after clearing, at
    every node it passes right of, the node's left subtree."""
    n = codes_t.shape[1]
    out = np.zeros(n)
    every = np.uint64(0xFFFFFFFFFFFFFFFF)
    for b in prange(n // 256):
        bits = np.empty(GROUP, np.uint64)
        for t in range(node_start.shape[0] - 1):  # trees outer: a tree stays in cache for the block's groups
            for r in range(b * 256, b * 256 + 256, GROUP):
                bits[:] = every
                for k in range(node_start[t], node_start[t + 1]):
                    c, v, m = cols[k], codes[k], masks[k]
                    for j in range(GROUP):
                        bits[j] &= m if codes_t[c, r + j] > v else every
                for j in range(GROUP):
                    out[r + j] += values[leaf_start[t] + trailing_zeros(bits[j])]
    return out


def gather_walk(lay: compiled.Layout, codes: np.ndarray) -> Callable[[], np.ndarray] | None:
    """The AVX-512 walk of the ordered ``codes`` as a callable, or None without gcc, AVX-512 or 8-bit codes."""
    if "avx512f" not in Path("/proc/cpuinfo").read_text() or codes.shape[1] > 64 or codes.dtype != np.uint8:
        return None
    start = np.append(lay.roots.astype(np.int64), len(lay.node))
    tree = np.repeat(np.arange(len(lay.roots)), np.diff(start))
    left = (lay.node & np.uint64(0xFFFFFFFF)).astype(np.int64) - start[tree]
    col, code = (lay.node >> np.uint64(32)) & np.uint64(0xFFFF), lay.node >> np.uint64(48)
    if left.max() >= 2**16 or col.max() >= 2**8 or code[code != 0xFFFF].max(initial=0) >= 0xFF:
        return None
    rec = ((left.astype(np.uint32) << 16) | (col.astype(np.uint32) << 8) | np.minimum(code, 0xFF).astype(np.uint32))
    padded = np.zeros((len(codes) // 256 * 256, 64), np.uint8)
    padded[:, :codes.shape[1]] = codes[: len(padded)]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "walk.c").write_text(GATHER_C)
        try:
            subprocess.run(["gcc", "-O2", "-march=native", "-shared", "-fPIC", "-o", f"{tmp}/walk.so", f"{tmp}/walk.c"],
                           check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        lib = ctypes.CDLL(f"{tmp}/walk.so")
    arrays = (rec, start.astype(np.int32), lay.depth.astype(np.int32), lay.value, padded)

    def walk() -> np.ndarray:
        out = np.zeros(len(padded))
        lib.walk(*(a.ctypes.data_as(ctypes.c_void_p) for a in arrays), ctypes.c_int(len(lay.roots)),
                 ctypes.c_int(len(padded)), out.ctypes.data_as(ctypes.c_void_p))
        return out
    return walk


def run(bundle: Path, root: Path, rows: int, repeat: int) -> None:
    p = Predictor.load(bundle)
    path = max(bundle.rglob("lightgbm.txt"), key=lambda q: q.stat().st_size)
    text = path.read_text()
    forest = compiled.compile_lightgbm(text, str(path))
    F = p.model.features.transform(p._records(gemm_batch(root, rows)))
    booster = lgb.Booster(model_str=text)
    X = F[booster.feature_name()].to_numpy(dtype="float64")
    lay, T = forest.layout, len(forest.roots)
    n = len(X) // 256 * 256
    codes, keys = np.empty((len(X), len(lay.used)), lay.nan_code.dtype), np.empty(len(X), np.uint64)
    kernels._code_parallel(X, lay.used, lay.starts, lay.cuts, lay.nan_code, lay.key, codes, keys)
    order = np.argsort(keys, kind="stable")[:n]
    ordered, expected = codes[order], booster.predict(X[order])
    codes_t, bits = np.ascontiguousarray(ordered.T), bitvectors(forest)
    variants: list[tuple[str, int, Callable[[], np.ndarray] | None]] = [
        ("shipped", 1, lambda: kernels._walk_parallel(ordered, lay.roots, lay.depth, lay.node, lay.leaf, lay.value)),
        ("shipped", 2, lambda: kernels._walk_parallel(ordered, lay.roots, lay.depth, lay.node, lay.leaf, lay.value)),
        ("shipped, rows unordered", 1, lambda: kernels._walk_parallel(codes[:n], lay.roots, lay.depth, lay.node,
                                                                        lay.leaf, lay.value)),
        ("bitvector (Numba)", 1, (lambda: bitvector_walk(codes_t, *bits)) if np.diff(bits[4]).max() <= 64 else None),
        ("avx512 gather (C)", 1, gather_walk(lay, ordered)),
    ]
    print(f"{path}: {T} trees, batch of {n:,} rows, {len(lay.used)} coded columns ({lay.nan_code.dtype})")
    print("| walk | threads | ns per tree-row (CPU) | ns per tree-row (wall) | rows/s (wall) | = Booster.predict |")
    print("|---|---|---|---|---|---|")
    for name, threads, fn in variants:
        if fn is None:
            print(f"| {name} | {threads} | not available here | | | |")
            continue
        numba.set_num_threads(threads)
        same = np.array_equal(fn(), booster.predict(X[:n]) if "unordered" in name else expected)
        wall, cpu = median(fn, repeat)
        print(f"| {name} | {threads} | {cpu / n / T * 1e9:.2f} | {wall / n / T * 1e9:.2f} | {n / wall:,.0f} "
              f"| {'yes' if same else 'NO'} |")


def main() -> None:
    args = arguments(__doc__, "'gemm'").parse_args()
    on_bundle(args, lambda bundle: run(bundle, args.data_root, args.batch, args.repeat))


if __name__ == "__main__":
    main()
