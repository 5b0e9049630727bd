"""Round 16d's nested blend score (benchmarks/k0_blend_nested.py): the blend's arithmetic and the criterion's count."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    """benchmarks/k0_blend_nested.py (a script beside its siblings, not a package module)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import k0_blend_nested

    return k0_blend_nested


def test_blend_is_geometric_and_keeps_the_base_without_a_latency() -> None:
    m = _script()
    pred, near = np.array([1.0, 4.0, 2.0]), np.array([4.0, np.nan, 0.0])
    got = m.blend(pred, near, 0.5)
    assert got == pytest.approx([2.0, 4.0, 2.0])  # sqrt(1 * 4); no latency or a non-positive one: the base
    assert m.blend(pred, near, 0.0) == pytest.approx(pred)
    # λ = 1 scales the base by the nearest GPU's measured / predicted ratio, to the power w
    ratio = m.ratio_blend(pred, np.array([4.0, 9.0, np.nan]), np.array([1.0, 1.0, 1.0]), 0.5)
    assert ratio == pytest.approx([2.0, 12.0, 2.0])


def _run(gain: float, w: float, sibling: bool = False) -> dict:
    variants = _script().VARIANTS
    part = {"chosen_w": w, "gain_pt": gain, "mean": {"lone": [0.3, 0.3 - gain / 100], "all": [0.2, 0.2 - gain / 100]}}
    test = {"per_w": [0.2, 0.25], "at_chosen": 0.25 if w else 0.2}
    return {"sibling_in_training": sibling, "parts": {"": dict.fromkeys(variants, part)},
            "test_report": {"parts": {"": dict.fromkeys(variants, test)}}}


def test_verdict_counts_only_gpus_without_a_sibling_with_w_above_zero_and_half_a_point() -> None:
    m = _script()
    runs = {"a": _run(0.6, 0.1), "b": _run(0.6, 0.1), "c": _run(0.6, 0.1), "d": _run(0.4, 0.1), "e": _run(0.0, 0.0),
            "s": _run(5.0, 0.5, sibling=True)}
    got = m.verdict({"left_out": runs})["gemm lambda0"]
    assert got["passed"] == ["a", "b", "c"] and got["of"] == 5 and not got["worth_building"]
    runs["d"] = _run(0.5, 0.2)
    assert m.verdict({"left_out": runs})["gemm lambda0"]["worth_building"]
