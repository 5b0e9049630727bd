"""benchmarks/adapt_plan_pick.py: the per-GPU plan pick of rounds 16c (GEMM) and 20a (attention), on the recorded
protocol rows those rounds judged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.test_bigger_root import benchmark_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> str:
    monkeypatch.setattr(sys, "argv", ["adapt_plan_pick.py", *argv])
    benchmark_script("adapt_plan_pick").main()
    return capsys.readouterr().out


def test_gemm_pick_reproduces_round_16c(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = run(capsys, monkeypatch, str(BENCH / "results_adapt_s17grow_gemm.json"),
              str(BENCH / "results_adapt_s19r_gemm.json"))
    # ANALYSIS_adapt.md round 16c's table, K = 32 / 128 / 512
    assert "| 32 | all | 13.40 | 14.01 | 14.16 | +0.761 | 1 of 8 |" in out
    assert "| 128 | all | 9.84 | 9.70 | 10.04 | +0.203 | 6 of 8 |" in out
    assert "| 512 | all | 6.86 | 6.88 | 7.01 | +0.151 | 1 of 8 |" in out
    assert out.rstrip().endswith("not met")


def test_attention_pick_reads_both_phases(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = run(capsys, monkeypatch, str(BENCH / "results_adapt_s18k_attention.json"),
              str(BENCH / "results_adapt_s23r_attention.json"), "--part", "attention")
    lines = [line.split(" | ") for line in out.splitlines() if line.startswith("| 512 | ") and " of 8 |" in line]
    by_phase = {cells[1]: [float(c) for c in cells[2:5]] for cells in lines}
    assert set(by_phase) == {"all", "context", "generation"}
    # a GPU's value is the mean of its two phases, so each mean over GPUs is the mean of the two phases' means
    for column in range(3):
        assert by_phase["all"][column] == pytest.approx(
            (by_phase["context"][column] + by_phase["generation"][column]) / 2, abs=0.011)
    # every left-out GPU has one row per phase at each K > 0
    per_gpu = [line for line in out.splitlines() if line.startswith("| 128 | ") and "->" in line]
    assert len(per_gpu) == 16 and {line.split(" | ")[2] for line in per_gpu} == {"context", "generation"}
