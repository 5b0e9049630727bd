"""CPU benchmark kernels — STREAM, memory latency, Linpack, HPCG-like CG, integer throughput — as a probe.

Why these: they are the numbers that characterise a CPU for a performance model — bandwidth and
load-to-use latency per cache level, dense FP64 throughput, sparse memory-bound FP64 throughput, and
integer throughput — measured with the shared harness (``timing.measure``) so they land in the same
``cpu_bench`` table as published STREAM/SPEC results. Each configuration yields records with its natural
``score``/``score_unit`` and the harness's ``runtime_ms`` (median per call) and noise columns.

Scores come from the median time, except STREAM, which follows STREAM's own convention and reports the
best (minimum-time) rate: interference from other work only ever slows a bandwidth kernel down, so the
fastest repeat is the least disturbed one. The statistic is part of each configuration (``score_from``),
so it is in ``params_json``.

Threads: ``variant`` "single" is one thread, "all" is every physical core (``space.thread_counts``).
NumPy ufuncs are single-threaded, so all-thread STREAM runs the same loops as numba ``prange`` kernels
on numba's OpenMP layer — the structure of STREAM's reference ``#pragma omp parallel for`` (static
split, persistent pool, fork/join in microseconds). Python threads over array slices would pay tens of
microseconds of dispatch per call, which swamps cache-resident sizes; even OpenMP's microseconds rival
an L1-sized kernel, so all-thread STREAM starts at ``ALL_THREAD_MIN_ARRAY``. A parallel region waits for
its slowest thread, so all-thread numbers suffer most when other work shares the cores. The integer
kernels release the GIL, so their all-thread variant splits the buffer into one contiguous chunk per
thread (rate-style, like SPECrate copies). The CG runs scipy's CSR SpMV, which is serial, so it has only
a single-thread variant.

Every kernel that computes something is checked after it is timed (HPL's scaled residual, the CG error
bound, sortedness, zlib round trip): a fast wrong answer is not a measurement.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange
from scipy.linalg import lu_factor, lu_solve
from scipy.linalg.blas import daxpy

from perfcast.perf_probe.base import KernelCheckError, Probe
from perfcast.perf_probe.power import power_meter
from perfcast.perf_probe.space import thread_counts
from perfcast.perf_probe.timing import Timing, measure, threads

KIB, MIB = 1 << 10, 1 << 20
#: cache-line size the pointer chase strides by (64 B on x86 and most Arm server cores)
LINE_BYTES = 64
#: HPL's pass threshold on the scaled residual
HPL_THRESHOLD = 16.0
#: HPCG runs CG in sets of 50 iterations
CG_ITERATIONS = 50
#: below this relative A-norm error, double-precision CG stagnates on rounding, whatever the theory says
CG_ROUNDING_FLOOR = 1e-10
#: STREAM subtest -> arrays the kernel touches (STREAM's byte-counting convention, 8 B per element each)
STREAM_ARRAYS = {"copy": 2, "scale": 2, "add": 3, "triad": 3}
STREAM_SCALAR = 3.0
#: smallest array for all-thread STREAM: below it the per-call fork/join (~1-2 us when the cores are free)
#: rivals the kernel itself, so the rate would measure the threading runtime rather than bandwidth
ALL_THREAD_MIN_ARRAY = 256 * KIB
#: dependent loads per timed call: ~20-50 ms at DRAM latency, ~0.25 ms in L1 (the harness batches short calls)
CHASE_STEPS = 1 << 17
#: benchmark -> configuration keys it needs (``CpuProbe.space()`` shows them in use)
REQUIRED_KEYS = {"stream": ("array_bytes",), "latency": ("working_set_bytes", "steps"), "linpack": ("n",),
                 "hpcg": ("grid", "iterations"), "hash": ("algorithm", "bytes"), "sort": ("keys",),
                 "compress": ("level", "bytes")}
BENCHMARKS = tuple(REQUIRED_KEYS)


# ---------------------------------------------------------------- STREAM
@njit(parallel=True, cache=True)
def _copy_par(a: np.ndarray, c: np.ndarray) -> None:
    for i in prange(a.size):
        c[i] = a[i]


@njit(parallel=True, cache=True)
def _scale_par(c: np.ndarray, b: np.ndarray, s: float) -> None:
    for i in prange(c.size):
        b[i] = s * c[i]


@njit(parallel=True, cache=True)
def _add_par(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    for i in prange(a.size):
        c[i] = a[i] + b[i]


@njit(parallel=True, cache=True)
def _triad_par(b: np.ndarray, c: np.ndarray, a: np.ndarray, s: float) -> None:
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


def stream_kernels(a: np.ndarray, b: np.ndarray, c: np.ndarray, scalar: float,
                   parallel: bool) -> dict[str, Callable[[], Any]]:
    """STREAM's four kernels on float64 arrays, as no-argument calls.

    copy ``c = a``, scale ``b = s c``, add ``c = a + b``, triad ``a = b + s c``. Serial: NumPy ufuncs
    writing through ``out=`` (no temporaries; triad is two passes, as NumPy cannot fuse). Parallel: numba
    ``prange`` loops over the thread count numba is set to.
    """
    if parallel:
        return {"copy": lambda: _copy_par(a, c), "scale": lambda: _scale_par(c, b, scalar),
                "add": lambda: _add_par(a, b, c), "triad": lambda: _triad_par(b, c, a, scalar)}

    def triad() -> None:
        np.multiply(c, scalar, out=a)
        np.add(a, b, out=a)

    return {"copy": lambda: np.copyto(c, a), "scale": lambda: np.multiply(c, scalar, out=b),
            "add": lambda: np.add(a, b, out=c), "triad": triad}


# ---------------------------------------------------------------- memory latency
def chase_ring(nbytes: int, rng: np.random.Generator) -> np.ndarray:
    """An int64 array of ``nbytes`` whose first slot of each cache line holds the slot of the next line.

    The lines form one random cycle through the whole set (a uniformly random cyclic permutation — the
    distribution Sattolo's algorithm samples, built here in one vectorised step: visit the lines in a
    random order and link each to the next), so a chase touches every line once per lap, each access a
    new line, in an order no prefetcher predicts.
    """
    slots = LINE_BYTES // 8
    lines = nbytes // LINE_BYTES
    if lines < 2:
        raise ValueError(f"a pointer chase needs at least 2 cache lines ({2 * LINE_BYTES} B), got {nbytes} B")
    order = rng.permutation(lines)
    ring = np.zeros(lines * slots, dtype=np.int64)
    ring[order * slots] = np.roll(order, -1) * slots
    return ring


@njit(cache=True)
def chase(ring: np.ndarray, pos: np.ndarray, steps: int) -> int:
    """Follow ``steps`` dependent loads from ``pos[0]``; store where it ended (so the loop is live)."""
    i = pos[0]
    for _ in range(steps):
        i = ring[i]
    pos[0] = i
    return i


# ---------------------------------------------------------------- Linpack
def hpl_residual(a: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """HPL's scaled residual ``‖Ax−b‖∞ / (ε (‖A‖∞ ‖x‖∞ + ‖b‖∞) n)``: O(1) for a backward-stable solve."""
    eps = np.finfo(np.float64).eps
    r = np.linalg.norm(a @ x - b, np.inf)
    norms = np.linalg.norm(a, np.inf) * np.linalg.norm(x, np.inf) + np.linalg.norm(b, np.inf)
    scale = eps * norms * a.shape[0]
    return float(r / scale)


def check_solve(a: np.ndarray, x: np.ndarray, b: np.ndarray) -> float:
    """The scaled residual of ``x`` for ``Ax = b``, raising KernelCheckError past HPL's threshold."""
    res = hpl_residual(a, x, b)
    if not res <= HPL_THRESHOLD:  # also catches NaN
        raise KernelCheckError(
            f"Linpack solve of order {a.shape[0]} failed HPL's check: scaled residual {res:.3g} > "
            f"{HPL_THRESHOLD:g}; the LAPACK/BLAS build gives wrong answers, so the timing is not recorded"
        )
    return res


def linpack_flops(n: int) -> float:
    """HPL's operation count for LU factorisation plus the triangular solves."""
    return 2 / 3 * n**3 + 2 * n**2


# ---------------------------------------------------------------- HPCG-like CG
def poisson27(nx: int) -> sp.csr_array:
    """HPCG's matrix on an ``nx``³ grid: 26 on the diagonal, −1 for each of up to 26 grid neighbours.

    ``kron(T, T, T)`` with ``T`` the tridiagonal all-ones matrix has a 1 wherever two points are within
    one step in every axis, so ``27 I − kron(T, T, T)`` is exactly the 27-point stencil.
    """
    if nx < 2:
        raise ValueError(f"the 27-point grid needs nx >= 2, got {nx}")
    t = sp.diags_array([np.ones(nx - 1), np.ones(nx), np.ones(nx - 1)], offsets=[-1, 0, 1])
    k = sp.kron(sp.kron(t, t), t)
    return (27 * sp.eye_array(nx**3) - k).tocsr()


def cg_error_bound(nx: int, iterations: int) -> float:
    """Upper bound on CG's A-norm error reduction for :func:`poisson27`: ``2 ((√κ−1)/(√κ+1))^k``.

    The eigenvalues are known in closed form: ``T`` has ``1 + 2 cos(jπ/(nx+1))``, the Kronecker product
    has their triple products (extremes at the extreme factors), and ``A`` has 27 minus those.
    """
    lam = 1 + 2 * np.cos(np.arange(1, nx + 1) * np.pi / (nx + 1))
    ext = np.array([lam.min(), lam.max()])
    prods = np.prod(np.stack(np.meshgrid(ext, ext, ext)).reshape(3, -1), axis=0)
    kappa = (27 - prods.min()) / (27 - prods.max())
    rho = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    return max(2 * rho**iterations, CG_ROUNDING_FLOOR)


def conjugate_gradient(a: sp.csr_array, b: np.ndarray, x: np.ndarray, r: np.ndarray, p: np.ndarray,
                       iterations: int) -> None:
    """Unpreconditioned CG from ``x = 0`` for a fixed number of iterations, in place in ``x``, ``r``, ``p``.

    Each iteration: one SpMV (2 nnz flops), two dot products and three vector updates (10 n flops).
    """
    x.fill(0.0)
    np.copyto(r, b)
    np.copyto(p, b)
    rr = float(r @ r)
    for _ in range(iterations):
        ap = a @ p
        alpha = rr / float(p @ ap)
        daxpy(p, x, a=alpha)
        daxpy(ap, r, a=-alpha)
        rr_new = float(r @ r)
        np.multiply(p, rr_new / rr, out=p)
        np.add(p, r, out=p)
        rr = rr_new


def cg_flops(nnz: int, n: int, iterations: int) -> float:
    """Floating-point operations of :func:`conjugate_gradient`."""
    return iterations * (2.0 * nnz + 10.0 * n)


def check_cg(a: sp.csr_array, x: np.ndarray, x_true: np.ndarray, nx: int, iterations: int) -> float:
    """CG's A-norm error reduction from ``x = 0``, raising KernelCheckError above the theoretical bound."""
    e, e0 = x - x_true, x_true
    ratio = math.sqrt(float(e @ (a @ e)) / float(e0 @ (a @ e0)))
    bound = cg_error_bound(nx, iterations)
    if not ratio <= bound:
        raise KernelCheckError(
            f"CG on the {nx}^3 27-point Poisson matrix did not converge: A-norm error reduced to {ratio:.3g} "
            f"after {iterations} iterations, but CG guarantees <= {bound:.3g}; the timing is not recorded"
        )
    return ratio


# ---------------------------------------------------------------- integer throughput
def text_corpus(nbytes: int, rng: np.random.Generator) -> np.ndarray:
    """``nbytes`` of text-like bytes: Zipf-distributed words from a random 4096-word vocabulary.

    Random bytes would not compress (zlib would only copy); real text has repeats for LZ77 to find and
    a skewed alphabet for Huffman coding, which is what compression speed depends on.
    """
    lengths = rng.integers(3, 12, 4096)  # 2-10 letters and a trailing space
    vocab = rng.integers(ord("a"), ord("z") + 1, int(lengths.sum()), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    vocab[starts + lengths - 1] = ord(" ")
    ids = (rng.zipf(1.3, nbytes // 3 + 1) - 1) % len(lengths)  # >= nbytes even if every word is shortest
    ends = np.cumsum(lengths[ids])
    ids = ids[: np.searchsorted(ends, nbytes) + 1]
    lens = lengths[ids]
    # byte j of the output is byte (j - start of its word in the output) of its word in the vocabulary
    gather = np.repeat(starts[ids] - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
    return vocab[gather[:nbytes]]


def _over_chunks(func: Callable[[np.ndarray], Any], data: np.ndarray, n_threads: int,
                 pool: ThreadPoolExecutor | None) -> Callable[[], list[Any]]:
    """``func`` over ``data`` in this thread, or over one contiguous chunk per thread of ``pool``."""
    if pool is None:
        return lambda: [func(data)]
    chunks = np.array_split(data, n_threads)
    return lambda: list(pool.map(func, chunks))


def _hash(name: str) -> Callable[[np.ndarray], bytes]:
    def digest(buf: np.ndarray) -> bytes:
        h = hashlib.new(name)
        h.update(buf)  # update() releases the GIL for large buffers (the constructor may not)
        return h.digest()

    return digest


# ---------------------------------------------------------------- the probe
@contextmanager
def _thread_count(n: int) -> Iterator[int]:
    """``timing.threads`` (BLAS, OpenMP, torch) plus numba's own pool, which threadpoolctl does not reach."""
    before = numba.get_num_threads()
    with threads(n):
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            yield n
        finally:
            numba.set_num_threads(before)


def _variants() -> list[str]:
    return ["single", "all"] if thread_counts()[-1] > 1 else ["single"]


def _geometric(lo: int, hi: int, per_octave: int, multiple: int) -> list[int]:
    """Sizes from ``lo`` to ``hi`` spaced ``per_octave`` per doubling, rounded to ``multiple``."""
    k = round(per_octave * math.log2(hi / lo))
    sizes = np.round(lo * 2.0 ** (np.arange(k + 1) / per_octave) / multiple) * multiple
    return sorted(set(sizes.astype(int).tolist()))


class CpuProbe(Probe):
    """Classic CPU benchmark kernels: bandwidth, latency, dense and sparse FP64, integer throughput."""

    name = "cpu"
    task = "cpu_bench"

    def __init__(self, seed: int = 0, **measure_kw: Any):
        """``measure_kw`` goes to ``timing.measure`` (e.g. ``max_time_s``, ``rel_precision``).

        ``max_time_s`` defaults to 1 s per kernel, half the harness's 2 s, so the quick sweep stays near a
        minute on a busy machine; a quiet kernel meets the precision target sooner.
        """
        self.seed = seed
        self.measure_kw = {"max_time_s": 1.0, **measure_kw}
        self._meter = power_meter("cpu")
        self._run = {"stream": self._stream, "latency": self._latency, "linpack": self._linpack,
                     "hpcg": self._hpcg, "hash": self._hash, "sort": self._sort, "compress": self._compress}

    def space(self, quick: bool = False) -> list[dict[str, Any]]:
        """Quick: every kernel at a few sizes (one per cache level); full: dense size sweeps."""
        variants = _variants()
        if quick:
            arrays = [8 * KIB, 64 * KIB, 512 * KIB, 4 * MIB, 32 * MIB]
            chases = [16 * KIB, 128 * KIB, 1 * MIB, 4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB]
            orders, grids = [500, 1500], [16, 32]
            hashes, algorithms, keys, texts = [16 * MIB], ["blake2b"], [1 << 20], [1 * MIB]
        else:
            arrays = _geometric(4 * KIB, 128 * MIB, 2, LINE_BYTES)
            chases = _geometric(4 * KIB, 1024 * MIB, 2, LINE_BYTES)
            orders, grids = _geometric(128, 6144, 2, 16), [16, 24, 32, 48, 64, 96]
            hashes, algorithms = [1 * MIB, 16 * MIB, 256 * MIB], ["blake2b", "sha256"]
            keys, texts = [1 << 16, 1 << 20, 1 << 24], [256 * KIB, 4 * MIB]
        cfgs = [{"benchmark": "stream", "variant": v, "array_bytes": s, "score_from": "min_time"}
                for s in arrays for v in variants if v == "single" or s >= ALL_THREAD_MIN_ARRAY]
        cfgs += [{"benchmark": "latency", "variant": "single", "working_set_bytes": s, "stride_bytes": LINE_BYTES,
                  "steps": CHASE_STEPS} for s in chases]
        cfgs += [{"benchmark": "linpack", "variant": v, "n": n} for n in orders for v in variants]
        cfgs += [{"benchmark": "hpcg", "variant": "single", "grid": g, "iterations": CG_ITERATIONS} for g in grids]
        cfgs += [{"benchmark": "hash", "variant": v, "algorithm": alg, "bytes": s}
                 for alg in algorithms for s in hashes for v in variants]
        cfgs += [{"benchmark": "sort", "variant": v, "keys": k} for k in keys for v in variants]
        cfgs += [{"benchmark": "compress", "variant": v, "level": 6, "bytes": s} for s in texts for v in variants]
        return cfgs

    def run(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        bench = config.get("benchmark")
        if bench not in self._run:
            raise ValueError(f"unknown cpu benchmark {bench!r} in config {config}; expected one of {list(BENCHMARKS)}")
        missing = [k for k in REQUIRED_KEYS[bench] if k not in config]
        if missing:
            raise ValueError(f"cpu benchmark {bench!r} needs config key(s) {missing}, got {config}; "
                             "CpuProbe().space() lists complete configurations")
        variant = config.get("variant", "single")
        if variant not in ("single", "all"):
            raise ValueError(f"variant must be 'single' or 'all', got {variant!r} in config {config}")
        n_threads = 1 if variant == "single" else thread_counts()[-1]
        rng = np.random.default_rng(self.seed)
        with _thread_count(n_threads):
            return self._run[bench](config, n_threads, rng)

    # -- helpers
    def _measure(self, fn: Callable[[], Any], setup: Callable[[], Any] | None = None) -> Timing:
        """Prime ``fn`` once (numba compiles, pages fault in: never timed), then time it with the harness.

        With a ``setup`` (inputs the kernel consumes, e.g. a matrix LU overwrites), each sample is one
        call (``min_sample_ms=0``), because the harness runs ``setup`` once per sample, not per call.
        """
        if setup is not None:
            setup()
        fn()
        kw = {"min_sample_ms": 0.0} if setup is not None else {}
        return measure(fn, device="cpu", setup=setup, meter=self._meter, **{**kw, **self.measure_kw})

    @staticmethod
    def _record(config: dict[str, Any], timing: Timing, n_threads: int, *, subtest: str, working_set: float,
                score: float, unit: str, **extra: Any) -> dict[str, Any]:
        return {"benchmark": config["benchmark"], "subtest": subtest, "variant": config.get("variant", "single"),
                "n_threads": n_threads, "working_set_bytes": float(working_set), "score": float(score),
                "score_unit": unit, **timing.to_record(), **{f"x_{k}": v for k, v in extra.items()}}

    # -- kernels
    def _stream(self, config: dict[str, Any], n_threads: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        n = int(config["array_bytes"]) // 8
        stat = config.get("score_from", "min_time")
        if stat not in ("min_time", "median_time"):
            raise ValueError(f"STREAM score_from must be 'min_time' or 'median_time', got {stat!r}")
        a, b, c = np.full(n, 1.0), np.full(n, 2.0), np.full(n, 0.0)  # written (not calloc'd): pages mapped now
        out = []
        for subtest, fn in stream_kernels(a, b, c, STREAM_SCALAR, parallel=n_threads > 1).items():
            t = self._measure(fn)
            nbytes = STREAM_ARRAYS[subtest] * 8 * n
            best = t.min_ms if stat == "min_time" else t.median_ms
            out.append(self._record(config, t, n_threads, subtest=subtest, working_set=nbytes,
                                    score=nbytes / (best * 1e-3) / 1e9, unit="GB/s"))
        return out

    def _latency(self, config: dict[str, Any], n_threads: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        if config.get("stride_bytes", LINE_BYTES) != LINE_BYTES:
            raise ValueError(f"the pointer chase strides by whole {LINE_BYTES}-byte lines; "
                             f"got stride_bytes={config['stride_bytes']}")
        nbytes, steps = int(config["working_set_bytes"]), int(config["steps"])
        ring, pos = chase_ring(nbytes, rng), np.zeros(1, dtype=np.int64)
        t = self._measure(lambda: chase(ring, pos, steps))
        return [self._record(config, t, n_threads, subtest="random_line", working_set=ring.nbytes,
                             score=t.median_ms * 1e6 / steps, unit="ns")]

    def _linpack(self, config: dict[str, Any], n_threads: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        n = int(config["n"])
        a = np.asfortranarray(rng.random((n, n)) - 0.5)  # HPL's matrix: uniform in [-0.5, 0.5)
        b = rng.random(n) - 0.5
        work = np.empty_like(a, order="F")
        sol: list[np.ndarray] = []

        def solve() -> None:  # factor in place (work is Fortran-ordered float64), so no copy is timed
            sol[:] = [lu_solve(lu_factor(work, overwrite_a=True, check_finite=False), b, check_finite=False)]

        t = self._measure(solve, setup=lambda: np.copyto(work, a))
        res = check_solve(a, sol[0], b)
        return [self._record(config, t, n_threads, subtest="lu_solve_fp64", working_set=a.nbytes + 2 * b.nbytes,
                             score=linpack_flops(n) / (t.median_ms * 1e-3) / 1e9, unit="GFLOP/s",
                             matrix_n=n, hpl_residual=res)]

    def _hpcg(self, config: dict[str, Any], n_threads: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        if n_threads != 1:
            raise ValueError("hpcg runs scipy's serial CSR SpMV: only variant 'single' is meaningful")
        nx, iters = int(config["grid"]), int(config["iterations"])
        a = poisson27(nx)
        x_true = np.ones(a.shape[0])
        b = a @ x_true  # HPCG's right-hand side: the exact solution is all ones
        x, r, p = np.empty_like(b), np.empty_like(b), np.empty_like(b)
        t = self._measure(lambda: conjugate_gradient(a, b, x, r, p, iters))
        reduction = check_cg(a, x, x_true, nx, iters)
        matrix_bytes = a.data.nbytes + a.indices.nbytes + a.indptr.nbytes
        return [self._record(config, t, n_threads, subtest="cg_27pt_fp64", working_set=matrix_bytes + 5 * b.nbytes,
                             score=cg_flops(a.nnz, a.shape[0], iters) / (t.median_ms * 1e-3) / 1e9,
                             unit="GFLOP/s", grid=nx, nnz=a.nnz, iterations=iters,
                             residual_rel=float(np.linalg.norm(b - a @ x) / np.linalg.norm(b)),
                             error_reduction=reduction)]

    def _hash(self, config: dict[str, Any], n_threads: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        alg, nbytes = config["algorithm"], int(config["bytes"])
        if alg not in hashlib.algorithms_available:
            raise ValueError(f"hash algorithm {alg!r} is not in this Python's hashlib; "
                             f"choose one of {sorted(hashlib.algorithms_available)}")
        data = rng.integers(0, 256, nbytes, dtype=np.uint8)
        with _pool(n_threads) as pool:
            t = self._measure(_over_chunks(_hash(alg), data, n_threads, pool))
        return [self._record(config, t, n_threads, subtest=alg, working_set=nbytes,
                             score=nbytes / (t.median_ms * 1e-3) / 1e9, unit="GB/s")]

    def _sort(self, config: dict[str, Any], n_threads: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        k = int(config["keys"])
        keys = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, k, dtype=np.int64)
        work = np.empty_like(keys)
        with _pool(n_threads) as pool:
            fn = _over_chunks(np.ndarray.sort, work, n_threads, pool)
            t = self._measure(fn, setup=lambda: np.copyto(work, keys))
            chunks = np.array_split(work, n_threads)
        if not all(np.all(ch[:-1] <= ch[1:]) for ch in chunks):
            raise KernelCheckError(f"np.sort left {k} int64 keys unsorted; the timing is not recorded")
        return [self._record(config, t, n_threads, subtest="int64", working_set=keys.nbytes,
                             score=k / (t.median_ms * 1e-3) / 1e6, unit="Mkeys/s")]

    def _compress(self, config: dict[str, Any], n_threads: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        level, nbytes = int(config["level"]), int(config["bytes"])
        data = text_corpus(nbytes, rng)
        out: list[bytes] = []

        def compress(buf: np.ndarray) -> bytes:
            return zlib.compress(buf, level)

        with _pool(n_threads) as pool:
            run = _over_chunks(compress, data, n_threads, pool)

            def compress_all() -> None:
                out[:] = run()

            t = self._measure(compress_all)
        if b"".join(zlib.decompress(z) for z in out) != data.tobytes():
            raise KernelCheckError(f"zlib level {level} round trip of {nbytes} B did not give the input back")
        return [self._record(config, t, n_threads, subtest=f"zlib-{level}", working_set=nbytes,
                             score=nbytes / (t.median_ms * 1e-3) / 1e6, unit="MB/s",
                             compression_ratio=nbytes / sum(len(z) for z in out))]


@contextmanager
def _pool(n_threads: int) -> Iterator[ThreadPoolExecutor | None]:
    """A thread pool for the all-thread variant, kept across repeats so its start-up is never timed."""
    if n_threads == 1:
        yield None
        return
    with ThreadPoolExecutor(n_threads, thread_name_prefix="cpu-kernel") as pool:
        yield pool
