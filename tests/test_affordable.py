"""A full sweep leaves out the configurations one call of which would take too long here: the ladder's logic through
a probe with a known rate, then the real GEMM probe on this CPU, and README's adaptation flow run on it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from perfcast.cli import app
from perfcast.perf_probe import affordable as afford
from perfcast.perf_probe.base import DeviceProbe
from perfcast.perf_probe.gemm import GemmProbe
from perfcast.records.store import RecordStore


class Ladder(DeviceProbe):
    """A probe whose one call takes ``n**3 / rate`` seconds (the 'slow' kernel's rate falls with its size past
    n = 64, as bfloat16's does on a CPU without it), recording every call it is asked to time."""

    name = "ladder"
    task = "gemm"
    shape_keys = ("n",)

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        super().__init__(devices=("cpu",))
        self.calls: list[dict[str, Any]] = []
        self.rng = np.random.default_rng(seed)
        self.noise = noise

    def device_space(self, device: str, quick: bool) -> list[dict[str, Any]]:
        sizes = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 4096]
        return [{"device": device, "kernel": kernel, "n": n} for kernel in ("fast", "slow", "broken") for n in sizes]

    def run(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        raise AssertionError("the estimate never measures")

    def work(self, config: dict[str, Any]) -> float:
        return float(config["n"]) ** 3

    def true_seconds(self, config: dict[str, Any]) -> float:
        rate = 1e9 if config["kernel"] == "fast" else 1e8 * min(1.0, (64 / config["n"]) ** 0.5)
        return self.work(config) / rate

    def call_ms(self, config: dict[str, Any]) -> float:
        self.calls.append(config)
        if config["kernel"] == "broken":
            raise RuntimeError("no such kernel here")
        return 1e3 * self.true_seconds(config) * (1 + self.noise * self.rng.uniform(-1, 1))


def test_configurations_over_the_limit_are_left_out_and_never_called() -> None:
    probe = Ladder()
    space = probe.space()
    fit = afford.affordable(probe, space, max_call_s=1.0)
    assert [c for c in space if c in fit.kept or any(c is d for d, _ in fit.left_out)] == space  # nothing lost
    by_kernel = {k: {c["n"] for c in fit.kept if c["kernel"] == k} for k in ("fast", "slow", "broken")}
    # fast: 1e9 per s, so n^3 <= 1e9 (n <= 1000) fits; rounding the rate down to 2^29 keeps n <= 812
    assert max(by_kernel["fast"]) == 768
    assert min(c["n"] for c, _ in fit.left_out if c["kernel"] == "fast") == 1024
    # slow: its rate falls with the size; the ladder times it up to a quarter of the limit, so the rate it extrapolates
    # from is that of sizes near the ones it decides on: 512 (true call 4.3 s) is left out, 256 (0.34 s) kept
    assert max(by_kernel["slow"]) == 256
    assert all(probe.true_seconds(c) <= 1.0 for c in fit.kept if c["kernel"] != "broken")
    # a kernel that cannot run here keeps its configurations: the sweep reports their failure as for any other
    assert by_kernel["broken"] == {c["n"] for c in space if c["kernel"] == "broken"}
    for cfg, seconds in fit.left_out:
        assert seconds > 1.0 and seconds == pytest.approx(probe.work(cfg) / fit.rates[probe.rate_group(cfg)])
    # every call the ladder made was one its rate so far put within the limit, and none took over the limit
    assert max(probe.true_seconds(c) for c in probe.calls if c["kernel"] != "broken") <= 1.0
    assert sum(c["kernel"] == "broken" for c in probe.calls) == 1  # its smallest configuration only


def test_timing_noise_does_not_change_what_is_kept() -> None:
    """Rates are rounded down to powers of two: timings up to 20% apart keep the same configurations when no rate
    sits near a power of two (one that does can move a step: benchmarks/PROBE_LIMIT.md)."""
    kept = [[(c["kernel"], c["n"]) for c in afford.affordable(Ladder(0.2, seed), Ladder().space(), 1.0).kept]
            for seed in range(5)]
    assert all(k == kept[0] for k in kept)


def test_a_probe_without_estimates_keeps_its_space_and_a_bad_limit_is_refused() -> None:
    class Plain(Ladder):
        def work(self, config: dict[str, Any]) -> None:
            return None

    probe = Plain()
    assert afford.affordable(probe, probe.space(), 1.0).kept == probe.space() and not probe.calls
    with pytest.raises(ValueError, match="max_call_s"):
        afford.affordable(probe, probe.space(), 0)


def test_the_real_gemm_space_on_this_cpu() -> None:
    """The full CPU GEMM space, timed for real with a small limit: what is left out is what its group's measured
    rate puts over the limit, and a group's largest configurations go before its smallest."""
    probe = GemmProbe()
    space = probe.space(quick=False)
    fit = afford.affordable(probe, space, max_call_s=0.05)
    assert fit.left_out and len(fit.kept) + len(fit.left_out) == len(space)
    assert all(rate is not None and rate > 0 for rate in fit.rates.values())
    for cfg in fit.kept:
        assert probe.work(cfg) / fit.rates[probe.rate_group(cfg)] <= 0.05
    for group, rate in fit.rates.items():
        kept = [probe.work(c) for c in fit.kept if probe.rate_group(c) == group]
        out = [probe.work(c) for c, _ in fit.left_out if probe.rate_group(c) == group]
        assert not kept or not out or max(kept) < min(out)
    # 4096^3 in float32 (1.4e11 FLOPs) in 50 ms would need 2.7 TFLOP/s of this CPU's cores
    assert any(c["m"] == c["n"] == c["k"] == 4096 and c["dtype"] == "float32" for c, _ in fit.left_out)


@pytest.mark.slow
def test_the_readme_adaptation_flow_runs_on_this_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's `perfcast probe gemm --plan adapt --budget N` then `perfcast adapt builtin:gemm` on this CPU (a budget
    of 6, and a limit of a quarter second per call, to keep the test short): the plan is drawn from what one call
    fits the limit of, the run says how many configurations it left out, it measures the CPU's memory bandwidth
    (a CPU has no vendor sheet), and the built-in GPU model adapts to the CPU from those rows."""
    monkeypatch.setattr(afford, "MAX_CALL_S", 0.25)
    monkeypatch.chdir(tmp_path)
    # `perfcast adapt` names the sheet it measured in the process environment: set (then removed) here, so the
    # teardown restores the variable as it was (a delenv of an absent variable records nothing)
    monkeypatch.setenv("PERFCAST_HW_SPECS", "")
    monkeypatch.delenv("PERFCAST_HW_SPECS")
    res = CliRunner().invoke(app, ["probe", "gemm", "--plan", "adapt", "--budget", "6", "--max-time", "0.05s",
                                   "--store", "here"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    left = re.search(r"gemm: (\d+) configuration\(s\) left out: one call would take over 0.25 s here", res.output)
    assert left and int(left.group(1)) > 0
    assert "too slow here" in res.output
    store = RecordStore(tmp_path / "here")
    records = store.read("gemm")
    assert len(records) == 6 and set(records["device_kind"]) == {"cpu"}
    # nothing measured took the minutes per call the unfiltered space drew on this CPU (2048^3 bfloat16: ~60 s)
    assert (records["runtime_min_ms"] < 60_000 * 0.25).all()
    stream = store.read("cpu_bench")
    assert set(stream["benchmark"]) == {"stream"} and "triad" in set(stream["subtest"])
    res = CliRunner().invoke(app, ["adapt", "builtin:gemm", "--store", "here", "--out", "model-here", "--tracking-uri",
                                   "sqlite:///mlflow.db", "--registered-name", "gemm-here"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "adapted to" in res.output and "from 6 measurements" in res.output
    sheet = yaml.safe_load((tmp_path / "model-here.hw_specs.yaml").read_text())
    (entry,) = sheet["devices"].values()
    assert entry["mem_bw_gbs"] > 0 and entry["peak_tflops_fp32"] > 0
