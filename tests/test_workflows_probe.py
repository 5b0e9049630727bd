"""`run_probes`: the probe run behind `perfcast probe`, on this machine's real kernels."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from perfcast.records.store import RecordStore, StoreError
from perfcast.workflows.probe import measured_summary, run_probes


def test_a_spent_budget_skips_the_remaining_probes_and_what_ran_is_summarised(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's clock jumps past the budget once the CPU sweep is done (a fake clock: the real one would make
    the outcome depend on the machine's load), so the GEMM probe is skipped; the CPU sweep measured for real, on
    the first configurations of its quick space (the whole quick sweep runs in tests/test_cli_probe.py)."""
    import perfcast.workflows.probe as probe_run
    from perfcast.perf_probe.cpu_kernels import CpuProbe

    quick_space = CpuProbe.space
    monkeypatch.setattr(CpuProbe, "space", lambda self, quick=False: quick_space(self, quick)[:3])

    ticks = iter([0.0, 0.0])  # the run's start and the CPU probe's check; every later reading is past the budget
    # the module's own name for the clock only: the timing harness keeps the real one
    monkeypatch.setattr(probe_run, "time", SimpleNamespace(perf_counter=lambda: next(ticks, 1e9)))
    store = RecordStore(tmp_path / "store")
    skipped: list[str] = []
    finished: list[str] = []
    runs = run_probes(["cpu", "gemm"], store, quick=True, budget_s=60.0, on_skip=skipped.append,
                      on_result=lambda name, res: finished.append(name))
    assert finished == ["cpu"] and skipped == ["gemm"]
    (res,) = runs
    assert res.measured >= 1 and not res.store_error
    stored = store.read("cpu_bench")
    assert len(stored) == res.records > 0 and set(stored["hw_id"]) == res.hw_ids and res.measured == 3
    summary, power = measured_summary(store, runs)
    assert not summary.empty and power is None  # no GEMM measured, so no GEMM power source to report
    assert measured_summary(store, [])[0].empty


def test_an_unwritable_store_fails_before_anything_is_measured(tmp_path: Path) -> None:
    """A file where the GEMM folder belongs: the run refuses before measuring the CPU (listed first)."""
    store = RecordStore(tmp_path / "store")
    (tmp_path / "store").mkdir(exist_ok=True)
    (tmp_path / "store" / "gemm").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot be written"):
        run_probes(["cpu", "gemm"], store, quick=True)
    assert not store.parts("cpu_bench")
