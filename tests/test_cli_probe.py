"""`perfcast probe all --quick` end to end on this machine: real measurements, stored, resumable. It is also the
suite's one run of the whole quick CPU sweep: every configuration of it measured, every kernel and thread variant.
Each measurement is capped with `--max-time` (the suite checks the sweep, not the precision of its numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import perfcast.perf_probe.attention as attention_probe
import perfcast.perf_probe.cpu_kernels as cpu_probe
import perfcast.perf_probe.gemm as gemm_probe
from perfcast.cli import app
from perfcast.perf_probe.cpu_kernels import BENCHMARKS, CpuProbe
from perfcast.perf_probe.space import thread_counts
from perfcast.records.schema import validate
from perfcast.records.store import RecordStore

runner = CliRunner()


@pytest.mark.slow
def test_probe_all_quick_stores_validated_records_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    caps: list[float] = []
    for module in (gemm_probe, attention_probe, cpu_probe):
        def spy(*args, _measure=module.measure, **kw):  # noqa: ANN002, ANN003, ANN202
            caps.append(kw["max_time_s"])
            return _measure(*args, **kw)
        monkeypatch.setattr(module, "measure", spy)
    store = tmp_path / "store"
    argv = ["probe", "all", "--quick", "--max-time", "0.1s", "--store", str(store)]
    res = runner.invoke(app, argv, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert len(caps) >= 200 and set(caps) == {0.1}  # every measurement of every probe got the cap
    assert "best measured on this hardware" in res.output and "power source:" in res.output
    rs = RecordStore(store)
    frames = {t: rs.read(t) for t in ("gemm", "attention", "cpu_bench")}
    assert all(len(df) for df in frames.values())
    assert sum(len(df) for df in frames.values()) >= 200
    for task, df in frames.items():
        validate(df, task)  # still valid as read back
        assert (df["source"] == "probe").all() and df["hw_id"].nunique() == 1
        for col in ("device_name", "cores", "n_repeats", "runtime_cv", "runtime_min_ms", "software",
                    "probe_version", "params_json", "collected_at", "power_source"):
            assert df[col].notna().all(), (task, col)
        assert (df["runtime_min_ms"] <= df["runtime_ms"]).all()
        # power is either measured (positive) or missing with a reason: never 0
        assert ((df["power_w"] > 0) | (df["power_w"].isna() & df["power_note"].notna())).all()
    # the quick CPU sweep ran every configuration of its space (none failed), so every kernel and variant
    cpu = frames["cpu_bench"]
    assert set(cpu["params_json"]) == {CpuProbe.key(c) for c in CpuProbe().space(quick=True)}
    assert set(cpu["benchmark"]) == set(BENCHMARKS)
    assert set(cpu["variant"]) == ({"single", "all"} if thread_counts()[-1] > 1 else {"single"})
    # a second run finds everything done and measures nothing again
    before = {t: len(df) for t, df in frames.items()}
    res = runner.invoke(app, argv, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert {t: len(rs.read(t)) for t in before} == before
