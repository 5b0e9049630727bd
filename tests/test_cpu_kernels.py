"""CPU benchmark kernels, checked against this machine's own measurements and against independent references.

Other work shares this 2-core machine, so comparisons are made within one test run (probe and reference
measured back to back) and a failed comparison is retried: interference only ever slows a kernel.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numba
import numpy as np
import pandas as pd
import pytest
from scipy.sparse.linalg import cg as scipy_cg

from perfcast.records.schema import validate
from perfcast.perf_probe.base import KernelCheckError
from perfcast.perf_probe.cpu_kernels import (
    ALL_THREAD_MIN_ARRAY,
    BENCHMARKS,
    CHASE_STEPS,
    HPL_THRESHOLD,
    KIB,
    LINE_BYTES,
    MIB,
    STREAM_ARRAYS,
    CpuProbe,
    cg_error_bound,
    cg_flops,
    chase,
    chase_ring,
    check_cg,
    check_solve,
    conjugate_gradient,
    hpl_residual,
    linpack_flops,
    poisson27,
    stream_kernels,
    text_corpus,
)
from perfcast.perf_probe.space import thread_counts

ATTEMPTS = 3
SMALL = {  # one cheap configuration of every kernel
    "stream": {"benchmark": "stream", "variant": "single", "array_bytes": 8 * KIB, "score_from": "min_time"},
    "latency": {"benchmark": "latency", "variant": "single", "working_set_bytes": 16 * KIB,
                "stride_bytes": LINE_BYTES, "steps": 1 << 16},
    "linpack": {"benchmark": "linpack", "variant": "single", "n": 300},
    "hpcg": {"benchmark": "hpcg", "variant": "single", "grid": 12, "iterations": 50},
    "hash": {"benchmark": "hash", "variant": "single", "algorithm": "blake2b", "bytes": 1 * MIB},
    "sort": {"benchmark": "sort", "variant": "all", "keys": 1 << 16},
    "compress": {"benchmark": "compress", "variant": "single", "level": 6, "bytes": 256 * KIB},
}


@pytest.fixture(scope="module")
def probe() -> CpuProbe:
    return CpuProbe(max_time_s=0.3)


@pytest.fixture(scope="module")
def small(probe: CpuProbe) -> dict[str, list[dict[str, Any]]]:
    """Records of every kernel at a small size, measured once for the tests below."""
    return {name: probe.run(cfg) for name, cfg in SMALL.items()}


def _retry(attempt: Callable[[], tuple[bool, str]]) -> None:
    """Pass if any of ATTEMPTS measurements satisfies the condition; report every attempt otherwise."""
    seen = []
    for _ in range(ATTEMPTS):
        ok, what = attempt()
        if ok:
            return
        seen.append(what)
    pytest.fail("condition failed in every attempt:\n  " + "\n  ".join(seen))


# ---------------------------------------------------------------- STREAM
def _bare_triad_gbs(n: int, reps: int = 15) -> float:
    """Best-of-``reps`` NumPy triad ``a = b + 3 c`` with ``out=``, counted as STREAM counts (3 x 8 B / element)."""
    a, b, c = np.zeros(n), np.full(n, 2.0), np.full(n, 1.0)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        np.multiply(c, 3.0, out=a)
        np.add(a, b, out=a)
        best = min(best, time.perf_counter_ns() - t0)
    return 24 * n / best


def test_stream_triad_matches_bare_numpy_at_dram_size(probe: CpuProbe) -> None:
    array_bytes = 32 * MIB  # 3 x 32 MiB: past every per-core cache
    cfg = {"benchmark": "stream", "variant": "single", "array_bytes": array_bytes, "score_from": "min_time"}
    # DRAM bandwidth here flips between two levels ~2x apart for seconds at a time (other tenants, and the other
    # test worker), for the probe and bare NumPy alike, so both keep their best rate over interleaved rounds
    # (STREAM's best-of convention) until both have seen the fast level and agree; on a busy machine that can take
    # more than 8 rounds (a suite run saw the probe stay at its slow level for 6), so rounds go on for up to a minute
    best_probe = best_bare = 0.0
    seen = []
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline or len(seen) < 8:
        best_bare = max(best_bare, _bare_triad_gbs(array_bytes // 8))
        best_probe = max(best_probe, next(r["score"] for r in probe.run(cfg) if r["subtest"] == "triad"))
        best_bare = max(best_bare, _bare_triad_gbs(array_bytes // 8))
        seen.append(f"probe {best_probe:.2f} vs bare NumPy {best_bare:.2f} GB/s")
        if abs(best_probe / best_bare - 1) <= 0.10:
            break
    else:
        pytest.fail(f"STREAM triad never within 10% of a bare NumPy triad in {len(seen)} rounds: " + "; ".join(seen))
    recs = {r["subtest"]: r for r in probe.run(cfg)}
    assert set(recs) == set(STREAM_ARRAYS)
    for sub, rec in recs.items():  # STREAM's byte counting, and the rate from the best time
        assert rec["working_set_bytes"] == STREAM_ARRAYS[sub] * array_bytes
        assert rec["score"] == pytest.approx(rec["working_set_bytes"] / (rec["runtime_min_ms"] * 1e6))
        assert rec["score_unit"] == "GB/s" and rec["n_threads"] == 1


def test_parallel_stream_kernels_compute_what_numpy_computes() -> None:
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(10_001) for _ in range(3)]
    for sub in STREAM_ARRAYS:
        serial, parallel = [x.copy() for x in init], [x.copy() for x in init]
        stream_kernels(*serial, 3.0, parallel=False)[sub]()
        stream_kernels(*parallel, 3.0, parallel=True)[sub]()
        for s, p in zip(serial, parallel):
            np.testing.assert_allclose(p, s, rtol=1e-15, err_msg=sub)
        assert any(not np.array_equal(s, x) for s, x in zip(serial, init)), f"{sub} wrote nothing"


# ---------------------------------------------------------------- memory latency
def test_chase_ring_is_one_cycle_over_every_line() -> None:
    nbytes = 64 * KIB
    ring = chase_ring(nbytes, np.random.default_rng(1))
    lines = nbytes // LINE_BYTES
    assert ring.nbytes == nbytes
    slot, visited = 0, []
    for _ in range(lines):
        visited.append(slot)
        slot = int(ring[slot])
    assert slot == 0, "the cycle must close after exactly one lap"
    assert sorted(visited) == list(range(0, nbytes // 8, LINE_BYTES // 8)), "every line once, one per line"
    pos = np.zeros(1, dtype=np.int64)
    assert chase(ring, pos, 1000) == visited[1000 % lines] == pos[0]
    with pytest.raises(ValueError, match="at least 2 cache lines"):
        chase_ring(LINE_BYTES, np.random.default_rng(1))


def test_latency_rises_with_working_set_and_dram_is_far_slower_than_l1(probe: CpuProbe) -> None:
    sizes = [16 * KIB, 1 * MIB, 16 * MIB, 256 * MIB]  # L1, L2, beyond L2 (and the TLB), DRAM

    def attempt() -> tuple[bool, str]:
        ns = []
        for s in sizes:
            (rec,) = probe.run({"benchmark": "latency", "variant": "single", "working_set_bytes": s,
                                "stride_bytes": LINE_BYTES, "steps": CHASE_STEPS})
            assert rec["score_unit"] == "ns" and rec["working_set_bytes"] == s
            ns.append(rec["score"])  # from the median time: robust to preempted repeats
        rising = all(b >= 0.9 * max(ns[: i + 1]) for i, b in enumerate(ns[1:]))
        return rising and ns[-1] >= 5 * ns[0], "ns per access " + ", ".join(
            f"{s // KIB} KiB: {v:.2f}" for s, v in zip(sizes, ns))

    _retry(attempt)


def test_jit_compilation_is_never_timed(probe: CpuProbe) -> None:
    ring, pos, steps = chase_ring(16 * KIB, np.random.default_rng(0)), np.zeros(1, np.int64), 1 << 16
    t0 = time.perf_counter()
    numba.njit(chase.py_func)(ring, pos, 1)  # what one compilation of the kernel costs here
    compile_ms = (time.perf_counter() - t0) * 1e3
    fresh = numba.njit(chase.py_func)  # same kernel, not compiled yet
    timing = probe._measure(lambda: fresh(ring, pos, steps))
    assert timing.times_ms.max() < compile_ms / 3, (timing.times_ms.max(), compile_ms)


# ---------------------------------------------------------------- Linpack
def test_linpack_passes_hpl_check_and_a_corrupted_solve_is_caught(small: dict[str, Any]) -> None:
    (rec,) = small["linpack"]
    n = SMALL["linpack"]["n"]
    assert rec["x_hpl_residual"] <= HPL_THRESHOLD
    assert rec["score"] == pytest.approx(linpack_flops(n) / (rec["runtime_ms"] * 1e6))
    assert rec["working_set_bytes"] >= 8 * n * n and rec["score_unit"] == "GFLOP/s"

    rng = np.random.default_rng(5)
    a, b = rng.random((n, n)) - 0.5, rng.random(n) - 0.5
    x = np.linalg.solve(a, b)
    assert check_solve(a, x, b) <= HPL_THRESHOLD
    bad = x.copy()
    bad[n // 2] *= 1 + 1e-7  # one component wrong in the 7th digit
    assert hpl_residual(a, bad, b) > 10 * HPL_THRESHOLD
    with pytest.raises(KernelCheckError, match="scaled residual"):
        check_solve(a, bad, b)


# ---------------------------------------------------------------- HPCG-like CG
def test_poisson27_is_hpcgs_stencil() -> None:
    nx = 4
    a = poisson27(nx).toarray()
    idx = np.indices((nx, nx, nx)).reshape(3, -1).T  # (i, j, k) of each row, row-major like kron
    near = np.abs(idx[:, None, :] - idx[None, :, :]).max(axis=2) <= 1
    expected = np.where(near, -1.0, 0.0) + 27 * np.eye(nx**3)
    np.testing.assert_array_equal(a, expected)
    assert np.count_nonzero(a) == (3 * nx - 2) ** 3


def test_cg_error_bound_uses_the_true_condition_number() -> None:
    nx, k = 6, 20
    ev = np.linalg.eigvalsh(poisson27(nx).toarray())
    kappa = ev.max() / ev.min()
    rho = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    assert cg_error_bound(nx, k) == pytest.approx(2 * rho**k, rel=1e-9)


def test_cg_matches_scipy_and_converges(small: dict[str, Any]) -> None:
    a = poisson27(8)
    b = a @ np.ones(a.shape[0])
    x, r, p = (np.empty_like(b) for _ in range(3))
    conjugate_gradient(a, b, x, r, p, 7)
    ref, _ = scipy_cg(a, b, rtol=0.0, atol=0.0, maxiter=7)
    np.testing.assert_allclose(x, ref, rtol=1e-10)
    with pytest.raises(KernelCheckError, match="did not converge"):
        check_cg(a, np.zeros_like(b), np.ones_like(b), 8, 50)

    (rec,) = small["hpcg"]
    cfg = SMALL["hpcg"]
    assert rec["x_error_reduction"] <= cg_error_bound(cfg["grid"], cfg["iterations"])
    assert rec["x_residual_rel"] < 1e-4
    n = cfg["grid"] ** 3
    assert rec["x_nnz"] == (3 * cfg["grid"] - 2) ** 3
    assert rec["score"] == pytest.approx(cg_flops(rec["x_nnz"], n, cfg["iterations"]) / (rec["runtime_ms"] * 1e6))


# ---------------------------------------------------------------- integer throughput
def test_text_corpus_is_compressible_text() -> None:
    text = text_corpus(100_000, np.random.default_rng(0))
    assert text.size == 100_000 and text.dtype == np.uint8
    assert set(np.unique(text).tolist()) <= set(range(ord("a"), ord("z") + 1)) | {ord(" ")}
    assert 0.1 < np.mean(text == ord(" ")) < 0.4


def test_integer_kernels_report_rates_from_the_median(small: dict[str, Any]) -> None:
    (h,) = small["hash"]
    assert (h["subtest"], h["score_unit"]) == ("blake2b", "GB/s")
    assert h["score"] == pytest.approx(h["working_set_bytes"] / (h["runtime_ms"] * 1e6))
    (s,) = small["sort"]
    assert (s["subtest"], s["score_unit"], s["variant"]) == ("int64", "Mkeys/s", "all")
    assert s["n_threads"] == thread_counts()[-1]
    assert s["score"] == pytest.approx(SMALL["sort"]["keys"] / (s["runtime_ms"] * 1e3))
    (z,) = small["compress"]
    assert (z["subtest"], z["score_unit"]) == ("zlib-6", "MB/s")
    assert z["score"] == pytest.approx(z["working_set_bytes"] / (z["runtime_ms"] * 1e3))
    assert 1.5 < z["x_compression_ratio"] < 20


# ---------------------------------------------------------------- records and space
def _as_stored(records: list[dict[str, Any]], cfgs: list[dict[str, Any]]) -> pd.DataFrame:
    """Records with the columns the sweep runner adds by hand (identity, hardware, params)."""
    df = pd.DataFrame(records)
    return df.assign(source="probe", hw_id="test-cpu", device_name="test cpu", device_kind="cpu",
                     params_json=[CpuProbe.key(c) for c in cfgs])


def test_records_validate_against_the_cpu_bench_schema(small: dict[str, Any]) -> None:
    recs = [r for name in SMALL for r in small[name]]
    cfgs = [SMALL[name] for name in SMALL for _ in small[name]]
    out = validate(_as_stored(recs, cfgs), "cpu_bench")
    assert len(out) == len(recs) == 10  # 4 STREAM subtests + one record per other kernel
    assert set(out["benchmark"]) == set(BENCHMARKS)
    assert (out["score"] > 0).all() and (out["runtime_ms"] > 0).all()


def test_space_covers_every_kernel_and_the_cache_hierarchy() -> None:
    probe = CpuProbe()
    quick, full = probe.space(quick=True), probe.space()
    for space in (quick, full):
        assert {c["benchmark"] for c in space} == set(BENCHMARKS)
        keys = [CpuProbe.key(c) for c in space]
        assert len(set(keys)) == len(keys)
    lat = [c["working_set_bytes"] for c in full if c["benchmark"] == "latency"]
    assert min(lat) <= 4 * KIB and max(lat) >= 256 * MIB
    arr = [c["array_bytes"] for c in full if c["benchmark"] == "stream"]
    assert 2 * min(arr) <= 16 * KIB and 2 * max(arr) >= 256 * MIB
    par = [c["array_bytes"] for c in full if c["benchmark"] == "stream" and c["variant"] == "all"]
    assert min(par, default=ALL_THREAD_MIN_ARRAY) >= ALL_THREAD_MIN_ARRAY  # not fork/join-bound
    for bench in BENCHMARKS:
        assert sum(c["benchmark"] == bench for c in full) >= sum(c["benchmark"] == bench for c in quick)
    assert len(full) > 3 * len(quick)


def test_bad_configurations_are_rejected_with_the_reason(probe: CpuProbe) -> None:
    with pytest.raises(ValueError, match="unknown cpu benchmark 'dhrystone'"):
        probe.run({"benchmark": "dhrystone"})
    with pytest.raises(ValueError, match="variant must be 'single' or 'all'"):
        probe.run({**SMALL["sort"], "variant": "both"})
    with pytest.raises(ValueError, match=r"needs config key\(s\) \['n'\]"):
        probe.run({"benchmark": "linpack", "variant": "single", "size": 100})
    with pytest.raises(ValueError, match="not in this Python's hashlib"):
        probe.run({**SMALL["hash"], "algorithm": "nohash"})
