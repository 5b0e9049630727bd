"""The round 16e script's leave-one-GPU-out scale pick and its scaled bounds."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "sibling_k0_width", Path(__file__).resolve().parents[1] / "benchmarks" / "sibling_k0_width.py")
width = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(width)


def test_pick_uses_only_the_other_gpus():
    cov = {"a": {0.8: 0.90, 1.0: 0.99}, "b": {0.8: 0.70, 1.0: 0.91}, "c": {0.8: 0.72, 1.0: 0.89}}
    # a's own coverage is exactly 90% at 0.8, but its pick is read off b and c, nearest 90% at 1.0; b's off a and
    # c: 0.8 is 0 and 0.18 away (mean 0.09), 1.0 is 0.09 and 0.01 away (mean 0.05)
    assert width.pick_scales(cov) == {"a": 1.0, "b": 1.0, "c": 1.0}
    cov["b"] = {0.8: 0.90, 1.0: 0.99}
    assert width.pick_scales(cov)["c"] == 0.8


def test_pick_ties_take_the_wider_scale():
    cov = {"a": {0.8: 0.5, 1.0: 0.5}, "b": {0.8: 0.88, 1.0: 0.92}}
    assert width.pick_scales(cov)["a"] == 1.0


def test_pick_refuses_a_single_gpu():
    with pytest.raises(ValueError, match="only GPU"):
        width.pick_scales({"a": {1.0: 0.9}})


def test_scaled_bounds_shrink_log_half_widths():
    pred, lo, hi = np.array([2.0]), np.array([1.0]), np.array([8.0])
    a, b = width.scaled_bounds(pred, lo, hi, 0.5)
    assert np.allclose(a, 2.0 / np.sqrt(2.0)) and np.allclose(b, 4.0)
    assert np.allclose(width.scaled_bounds(pred, lo, hi, 1.0), (lo, hi))


def _part(cov_by_scale, n=100):
    return {"n": n, "per_scale": {str(s): {"coverage": c, "half_width": 0.1 * s} for s, c in cov_by_scale.items()}}


def test_verdict_applies_the_pick_and_the_band():
    too_wide = {0.8: 0.91, 1.0: 0.99}
    gemm = {"left_out": {d: {"parts": {"gemm": _part(too_wide)}} for d in ("a", "b", "c")}}
    attn = {"left_out": {d: {"parts": {"context": _part(too_wide), "generation": _part(too_wide)}}
                         for d in ("a", "b", "c")}}
    got = width.verdict([gemm, attn])
    assert set(got["picked"]["gemm"].values()) == {0.8}
    assert got["criterion_met"] and got["all_in_band"]
    assert got["mean_abs_dev_picked"] < got["mean_abs_dev_now"]
    assert got["secondary_pooled_attention"]["picked"] == {"a": 0.8, "b": 0.8, "c": 0.8}
    gemm["left_out"]["a"]["parts"]["gemm"] = _part({0.8: 0.75, 1.0: 0.95})  # a's own rows fall out of the band
    assert not width.verdict([gemm, attn])["criterion_met"]
