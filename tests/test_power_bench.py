"""The aiconfigurator-power protocol on a small slice of the shared copy: every part runs, scores power against
its baselines on the same rows, and a root with a second GPU's power tables gets the leave-one-GPU-out part."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.experiments import power_bench
from perfcast.experiments import presets
from perfcast.experiments.registry import RUNNERS, UNSEEN_HARDWARE, run
from perfcast.experiments.results import RunConfig

TABLES = [f"gb200/gemm/{lib}/gemm_perf.parquet" for lib in ("trtllm/1.3.0rc17", "vllm/0.22.0")] + [
    f"gb200/attention/{lib}/{phase}_attention_perf.parquet"
    for lib in ("trtllm/1.3.0rc17", "vllm/0.22.0") for phase in ("context", "generation")]


def _root(data_root: Path, dst: Path, every: int, second_gpu: bool) -> Path:
    for rel in TABLES:
        raw = pd.read_parquet(data_root / "aiconfigurator-power" / rel).iloc[::every]
        out = dst / "aiconfigurator-power" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        raw.to_parquet(out, index=False)
        if second_gpu and "gemm" in rel:
            # a crafted second GPU (the B200's name and its 1,000 W limit; GB200's readings scaled to it), only to
            # show that a root with more GPUs' power tables gets the leave-one-GPU-out part
            twin = raw.assign(device="NVIDIA B200", power=raw["power"] * 1000 / 1200, power_limit=1000.0)
            out = dst / "aiconfigurator-power" / rel.replace("gb200/", "b200_sxm/")
            out.parent.mkdir(parents=True, exist_ok=True)
            twin.to_parquet(out, index=False)
    (dst / "gpperf-cutlass").symlink_to(data_root / "gpperf-cutlass")
    return dst


@pytest.fixture()
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """The protocol's preset with small row budgets and models (the preset file itself is untouched)."""
    config = presets.preset(power_bench.PROTOCOL)
    fast = config.model_copy(update={
        "model": config.model.model_copy(update={"params": {"runtime": {"n_estimators": 40},
                                                            "correction": {"n_estimators": 40}}}),
        "benchmark": config.benchmark.model_copy(update={"options": {
            "train_rows": {"gemm": 800, "attention": 400}, "cross_rows": 800, "test_rows": 800}})})
    real = presets.preset
    monkeypatch.setattr(presets, "preset", lambda protocol: fast if protocol == power_bench.PROTOCOL else real(protocol))


@pytest.mark.slow
def test_every_part_runs_on_the_shared_layout(data_root: Path, tmp_path: Path, small: None) -> None:
    assert "aiconfigurator-power" in RUNNERS and "aiconfigurator-power" in UNSEEN_HARDWARE
    rows = run(["aiconfigurator-power"], RunConfig(_root(data_root, tmp_path, 60, second_gpu=False)))
    assert {r.protocol for r in rows} == {"aiconfigurator-power"}
    summary = [r for r in rows if r.summary]
    assert sorted(r.target for r in summary) == ["power_w (trtllm; unseen shapes)", "power_w (vllm; unseen shapes)"]
    shapes = [r for r in rows if "unseen shapes" in r.target and not r.summary]
    # per library: GEMM, attention context and generation, for power and energy
    assert len(shapes) == 2 * 3 * 2 and {r.task for r in shapes} == {"gemm", "attention"}
    for r in shapes:
        assert r.coverage is not None and 0 < r.ours < 1 and r.n > 0
        if r.target.startswith("power_w"):  # the model beats a constant share of the limit on unseen shapes
            assert r.ours < r.baselines[power_bench.CONST], r.target
    cross = [r for r in rows if "unseen GPU" in r.target]
    assert {r.device for r in cross} == {"rtx_4070", "gb200"}
    adapted = [r for r in rows if "adapted on K=" in r.target]
    assert len(adapted) == 2 * len(power_bench.ADAPT_K)  # both directions, every K
    assert all(r.coverage is not None and np.isfinite(r.ours) for r in adapted)
    libs = [r for r in rows if "->" in r.target and r not in adapted]
    assert {r.target.split("; ")[1].split(",")[0].rstrip(")") for r in libs} == {"trtllm -> vllm", "vllm -> trtllm"}
    assert all(power_bench.OTHER_LIB in r.baselines and r.coverage is None for r in libs)
    doc = json.dumps([r.as_json() for r in rows], allow_nan=False, default=float)
    assert '"target": "power_w (vllm; unseen shapes)"' in doc


@pytest.mark.slow
def test_a_root_with_two_gpus_leaves_each_out(data_root: Path, tmp_path: Path, small: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root(data_root, tmp_path, 200, second_gpu=True)
    from perfcast.experiments.results import workspace

    with workspace(root) as ws:
        rows = power_bench.unseen_gpus(ws, RunConfig(root))
    held = [r for r in rows if r.target.startswith("power_w (gemm; unseen GPU;") or
            r.target == "power_w (gemm; unseen GPU)"]
    assert sorted(r.device for r in held) == ["b200_sxm", "gb200"]
    for r in held:  # the twin's watts are GB200's x 1000/1200, which the limit-scaled baseline copies exactly
        assert r.baselines[power_bench.SCALED] == pytest.approx(0.0, abs=1e-9)
        assert np.isfinite(r.ours) and r.coverage is not None
