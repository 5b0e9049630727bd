"""GEMM probe: its space, correct records, rejection of wrong kernels, and no harness overhead."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd
import pytest
import torch

from perfcast.records.schema import validate
from perfcast.perf_probe import PROBES, gemm
from perfcast.perf_probe.base import KernelCheckError
from perfcast.perf_probe.gemm import (
    GemmProbe,
    check_product,
    cuda_dtypes,
    gemm_flops,
)
from perfcast.perf_probe.hardware import cpu_fingerprint
from perfcast.perf_probe.space import thread_counts
from perfcast.perf_probe.timing import threads

FAST = {"max_time_s": 0.05, "warmup_s": 0.01}


def cfg(**kw):
    base = {"op": "matmul", "m": 33, "n": 17, "k": 9, "batch": 1, "dtype": "float32", "layout": "nn",
            "backend": "torch", "device": "cpu", "n_threads": 1}
    return {**base, **kw}


def test_registry_names_the_probe():
    assert PROBES["gemm"] is GemmProbe and GemmProbe.name == "gemm" and GemmProbe.task == "gemm"


def test_quick_space_covers_the_axes():
    space = GemmProbe(devices=("cpu",)).space(quick=True)
    assert 60 <= len(space) <= 120  # a quick sweep: about a minute on 2 cores
    assert len({GemmProbe.key(c) for c in space}) == len(space)  # no configuration twice
    sizes = {c["m"] for c in space} | {c["n"] for c in space} | {c["k"] for c in space}
    assert min(sizes) <= 64 and 1024 <= max(sizes) <= 4096
    assert any(s % 2 for s in sizes)  # odd sizes, not only powers of two
    assert {c["dtype"] for c in space} == {"float32", "float64", "bfloat16"}
    assert {c["layout"] for c in space} == {"nn", "nt", "tn", "tt"}
    assert {c["backend"] for c in space} == {"torch", "numpy"}
    assert {c["n_threads"] for c in space} == set(thread_counts())
    assert any(c["batch"] > 1 for c in space)
    full = GemmProbe(devices=("cpu",)).space()
    assert len(full) > 5 * len(space) and full == GemmProbe(devices=("cpu",)).space()  # deterministic
    for c in space + full:
        gemm._check_config(c)  # every generated config is runnable as labelled


@pytest.mark.parametrize("backend, dtype", [("torch", "float32"), ("torch", "float64"), ("torch", "bfloat16"),
                                            ("numpy", "float32"), ("numpy", "float64")])
@pytest.mark.parametrize("layout", ["nn", "nt", "tn", "tt"])
def test_every_layout_and_dtype_is_correct_and_recorded(backend, dtype, layout):
    probe = GemmProbe(devices=("cpu",), **FAST)
    (rec,) = probe.run(cfg(backend=backend, dtype=dtype, layout=layout, batch=3))
    assert (rec["m"], rec["n"], rec["k"], rec["batch"], rec["layout"], rec["backend"]) == (33, 17, 9, 3, layout,
                                                                                             backend)
    assert rec["n_threads"] == 1 and rec["runtime_ms"] > 0 and rec["n_repeats"] >= 5
    out = validate(pd.DataFrame([{**rec, **cpu_fingerprint(), "source": "probe"}]), "gemm")
    assert out.loc[0, "runtime_ms"] == rec["runtime_ms"]


def test_wrong_torch_kernel_is_rejected_before_timing(monkeypatch):
    real = torch.matmul

    def off_by_one_percent(a, b, out=None):
        return real(a, b, out=out).mul_(1.01)

    monkeypatch.setattr(torch, "matmul", off_by_one_percent)
    monkeypatch.setattr(gemm, "measure", lambda *a, **k: pytest.fail("a wrong kernel was timed"))
    with pytest.raises(KernelCheckError, match="relative error .* exceeds"):
        GemmProbe(devices=("cpu",)).run(cfg(m=64, n=64, k=64))


def test_wrong_numpy_kernel_is_rejected(monkeypatch):
    real = np.matmul
    monkeypatch.setattr(np, "matmul", lambda a, b, out=None: real(b, a, out=out))  # operands swapped
    monkeypatch.setattr(gemm, "measure", lambda *a, **k: pytest.fail("a wrong kernel was timed"))
    with pytest.raises(KernelCheckError, match="float64"):
        GemmProbe(devices=("cpu",)).run(cfg(m=48, n=48, k=48, backend="numpy"))


@pytest.mark.parametrize("bad, message", [
    ({"dtype": "tf32"}, "not available for backend 'torch' on 'cpu'"),  # CUDA-only: would be float32 mislabelled
    ({"dtype": "float16", "backend": "numpy"}, "use one of \\['float32', 'float64'\\]"),
    ({"backend": "cutlass"}, "use 'torch'"),
    ({"layout": "nx"}, "layout 'nx'"),
])
def test_configs_it_cannot_run_as_labelled_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        GemmProbe(devices=("cpu",)).run(cfg(**bad))


def test_check_product_tolerances_by_dtype():
    a, b = torch.randn(200, 300, dtype=torch.float64), torch.randn(300, 100, dtype=torch.float64)
    assert check_product(a, b, a @ b, "float64") < 1e-13
    ab = a.bfloat16(), b.bfloat16()
    assert check_product(*ab, ab[0] @ ab[1], "bfloat16") < 3e-2
    with pytest.raises(KernelCheckError):
        check_product(a.float(), b.float(), (a @ b).float() * 1.001, "float32")
    with pytest.raises(KernelCheckError):  # NaN is never within tolerance
        check_product(a, b, torch.full((200, 100), float("nan"), dtype=torch.float64), "float64")


def test_flops_and_cuda_dtypes():
    assert gemm_flops(2, 3, 4, 5) == 240
    assert gemm_flops(pd.Series([1, 2]), 3, 4).tolist() == [24, 48]
    assert cuda_dtypes((7, 5)) == ("float32", "float16")
    assert "bfloat16" in cuda_dtypes((8, 0)) and "float8_e4m3fn" not in cuda_dtypes((8, 6))
    assert "float8_e4m3fn" in cuda_dtypes((9, 0))


def test_cuda_space_logic_for_a_hopper_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    probe = GemmProbe(devices=("cuda",))
    quick, full = probe.space(quick=True), probe.space()
    assert {c["dtype"] for c in quick} == {"float32", "float16", "tf32", "bfloat16", "float8_e4m3fn"}
    fp8 = [c for c in full if c["dtype"] == "float8_e4m3fn"]
    assert len(fp8) > 50
    assert all(c["layout"] == "nt" and c["n"] % 16 == 0 and c["k"] % 16 == 0 and c["batch"] == 1 for c in fp8)
    for c in quick + full:
        assert c["device"] == "cuda" and "n_threads" not in c
        gemm._check_config(c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_cuda_gemm_configs_run():
    probe = GemmProbe(devices=("cuda",), **FAST)
    for c in probe.space(quick=True)[:4]:
        (rec,) = probe.run(c)
        assert rec["runtime_ms"] > 0 and "n_threads" not in rec


def _bare_loop_ms(a, b, n=15):
    torch.matmul(a, b)
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        torch.matmul(a, b)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times)


def test_probe_adds_no_overhead_over_a_bare_matmul_loop():
    """Probe GFLOP/s >= 90 % of a bare torch.matmul loop on the same shape, measured alternately (best of 3
    rounds: the machine is shared, so one round can be disturbed)."""
    n = 512
    a, b = torch.randn(n, n), torch.randn(n, n)
    probe = GemmProbe(devices=("cpu",))
    ratios = []
    with threads(1):
        for _ in range(3):
            bare = _bare_loop_ms(a, b)
            (rec,) = probe.run(cfg(m=n, n=n, k=n))
            ratios.append(bare / rec["runtime_ms"])  # probe GFLOP/s / bare GFLOP/s
            if ratios[-1] >= 0.9:
                break
    assert max(ratios) >= 0.9, f"probe throughput / bare loop = {ratios}"
    flops = gemm_flops(n, n, n)
    assert flops / rec["runtime_ms"] / 1e6 > 1.0  # GFLOP/s: a sane, positive rate
