"""Attention probe: its space, correct records with the backend that actually ran, wrong kernels rejected."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from perfcast.records.schema import validate
from perfcast.perf_probe import PROBES, attention
from perfcast.perf_probe.attention import (
    AttentionProbe,
    attention_flops,
    backend_of_op,
    check_attention,
    reference_attention,
)
from perfcast.perf_probe.base import KernelCheckError
from perfcast.perf_probe.hardware import cpu_fingerprint

FAST = {"max_time_s": 0.05, "warmup_s": 0.01}


def cfg(**kw):
    base = {"phase": "prefill", "batch": 2, "heads": 4, "kv_heads": 4, "seq_q": 37, "seq_kv": 37, "head_dim": 16,
            "causal": True, "dtype": "float32", "device": "cpu", "backend": "auto", "n_threads": 1}
    return {**base, **kw}


def test_registry_names_the_probe():
    assert PROBES["attention"] is AttentionProbe and AttentionProbe.task == "attention"


def test_quick_space_covers_phases_gqa_and_backends():
    space = AttentionProbe(devices=("cpu",)).space(quick=True)
    assert 40 <= len(space) <= 100  # a quick sweep: about a minute on 2 cores
    assert len({AttentionProbe.key(c) for c in space}) == len(space)
    prefill = [c for c in space if c["phase"] == "prefill"]
    decode = [c for c in space if c["phase"] == "decode"]
    assert prefill and decode
    assert all(c["seq_q"] == c["seq_kv"] for c in prefill)
    assert all(c["seq_q"] == 1 and not c["causal"] for c in decode)  # a new token sees the whole cache
    assert {c["causal"] for c in prefill} == {True, False}
    assert any(c["kv_heads"] < c["heads"] for c in prefill) and any(c["kv_heads"] < c["heads"] for c in decode)
    assert {c["backend"] for c in space} == {"auto", "math"}
    assert {c["dtype"] for c in space} == {"float32", "bfloat16"}
    full = AttentionProbe(devices=("cpu",)).space()
    assert len(full) > 10 * len(space)
    for c in space + full:
        attention._check_config({"n_threads": None, **c})  # every generated config is runnable as labelled


@pytest.mark.parametrize("phase", ["prefill", "decode"])
@pytest.mark.parametrize("kv_heads", [4, 1])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_runs_check_and_record_the_backend(phase, kv_heads, dtype):
    c = cfg(kv_heads=kv_heads, dtype=dtype)
    if phase == "decode":
        c.update(phase="decode", seq_q=1, seq_kv=50, causal=False)
    (rec,) = AttentionProbe(devices=("cpu",), **FAST).run(c)
    assert rec["backend"] in {"math", "flash"} and rec["kernel"].startswith("aten::")
    assert rec["n_threads"] == 1 and rec["runtime_ms"] > 0
    validate(pd.DataFrame([{**rec, **cpu_fingerprint(), "source": "probe"}]), "attention")


def test_forced_math_backend_is_what_runs():
    (rec,) = AttentionProbe(devices=("cpu",), **FAST).run(cfg(backend="math"))
    assert rec["backend"] == "math" and "math" in rec["kernel"]


@pytest.mark.parametrize("bad, message", [
    ({"backend": "sparse"}, "backend 'sparse'"),
    ({"dtype": "float8_e4m3fn"}, "dtype 'float8_e4m3fn'"),
    ({"heads": 6, "kv_heads": 4}, "not a multiple of kv_heads=4"),
    ({"phase": "decode"}, "decode needs seq_q=1"),
    ({"seq_kv": 64}, "prefill needs seq_q == seq_kv"),
])
def test_configs_it_cannot_run_as_labelled_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        AttentionProbe(devices=("cpu",)).run(cfg(**bad))


def test_backend_of_op_names():
    assert backend_of_op(["aten::scaled_dot_product_attention",
                          "aten::_scaled_dot_product_flash_attention_for_cpu"])[0] == "flash"
    assert backend_of_op(["aten::_scaled_dot_product_efficient_attention"])[0] == "efficient"
    assert backend_of_op(["aten::_scaled_dot_product_cudnn_attention"])[0] == "cudnn"
    assert backend_of_op(["aten::_scaled_dot_product_attention_math", "aten::bmm"]) == (
        "math", "aten::_scaled_dot_product_attention_math")
    assert backend_of_op(["aten::mul", "aten::bmm", "aten::_safe_softmax", "aten::bmm"])[0] == "math"
    with pytest.raises(ValueError, match="could not tell"):
        backend_of_op(["aten::scaled_dot_product_attention", "aten::bmm"])


def test_wrong_kernel_is_rejected_before_timing(monkeypatch):
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: real(*a, **k) * 1.05)
    monkeypatch.setattr(attention, "measure", lambda *a, **k: pytest.fail("a wrong kernel was timed"))
    with pytest.raises(KernelCheckError, match="attention .* is wrong"):
        AttentionProbe(devices=("cpu",)).run(cfg())


def test_reference_matches_torch_on_gqa_and_causal():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 8, 20, 16, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, 2, 20, 16, generator=g, dtype=torch.float64) for _ in range(2))
    rows = torch.tensor([0, 7, 19])
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert torch.allclose(reference_attention(q, k, v, True, rows), out[0][:, rows])
    assert check_attention(q, k, v, out, True, "float64") < 1e-12
    with pytest.raises(KernelCheckError):  # non-causal output where causal was asked
        check_attention(q, k, v, F.scaled_dot_product_attention(q, k, v, enable_gqa=True), True, "float64")


def test_attention_flops():
    full = attention_flops(1, 1, 100, 100, 64, False)
    assert full == 4 * 100 * 100 * 64
    assert attention_flops(1, 1, 100, 100, 64, True) / full == pytest.approx(101 / 200)
    assert attention_flops(2, 8, 1, 4096, 128, False) == 4 * 2 * 8 * 4096 * 128
    vec = attention_flops(pd.Series([1, 2]), 1, pd.Series([10, 10]), 10, 8, pd.Series([False, True]))
    assert vec.tolist() == [3200.0, 2 * 4 * 8 * 55]


def test_cuda_space_has_half_precision_long_contexts_and_no_thread_axis():
    probe = AttentionProbe(devices=("cuda",))
    space = probe.space(quick=True) + probe.space()
    assert {c["dtype"] for c in space} == {"float16", "bfloat16"}
    assert max(c["seq_kv"] for c in space) >= 32768
    for c in space:
        assert c["device"] == "cuda" and "n_threads" not in c
        attention._check_config({"n_threads": None, **c})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_cuda_attention_configs_run():
    probe = AttentionProbe(devices=("cuda",), **FAST)
    for c in probe.space(quick=True)[:3]:
        (rec,) = probe.run(c)
        assert rec["backend"] in {"flash", "efficient", "cudnn", "math"} and "n_threads" not in rec
