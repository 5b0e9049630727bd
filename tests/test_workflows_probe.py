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

    # the run's start, the CPU probe's check and its share; every later reading is past the budget
    ticks = iter([0.0, 0.0, 0.0])
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


def test_the_budget_is_shared_so_one_large_sweep_cannot_starve_the_probes_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`perfcast probe all --budget 3m` once spent it all in the GEMM sweep (617 configurations on this CPU) and
    skipped attention and CPU. Each probe now gets an equal share of what is left, and a probe that finishes early
    leaves its unspent share to those after it. A scripted clock and a sweep that records its budget (the real
    sweeps' stop rule is tests/test_sweep's)."""
    import perfcast.workflows.probe as probe_run
    from perfcast.perf_probe.sweep import SweepResult

    now = [0.0]
    monkeypatch.setattr(probe_run, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    spends = {"gemm": None, "attention": 10.0, "cpu": None}  # None: the sweep runs until its budget stops it
    given: dict[str, float] = {}

    def sweep(probe, store, *, quick=False, budget_s=None, configs=None):  # noqa: ANN001, ANN202
        given[probe.name] = budget_s
        now[0] += budget_s if spends[probe.name] is None else spends[probe.name]
        return SweepResult(probe.name, stopped_by_budget=spends[probe.name] is None)

    monkeypatch.setattr(probe_run, "run_sweep", sweep)
    runs = run_probes(["gemm", "attention", "cpu"], RecordStore(tmp_path / "store"), quick=True, budget_s=180.0)
    assert [r.probe for r in runs] == ["gemm", "attention", "cpu"]
    assert given["gemm"] == pytest.approx(60.0) and given["attention"] == pytest.approx(60.0)
    assert given["cpu"] == pytest.approx(110.0)  # its own 60 s and the 50 s attention left unspent
    assert now[0] == pytest.approx(180.0)  # the whole budget, no more


def test_every_probe_of_a_budgeted_run_measures_on_this_machine(tmp_path: Path) -> None:
    """A short budget for three probes, measured for real: each probe stores records (the first one no longer
    takes the whole budget). 15 s, so one slow measurement on a busy machine cannot outlast every share."""
    store = RecordStore(tmp_path / "store")
    runs = run_probes(["gemm", "attention", "cpu"], store, quick=True, budget_s=15.0, max_time_s=0.05)
    assert [r.probe for r in runs] == ["gemm", "attention", "cpu"]
    assert all(r.measured >= 1 and not r.store_error for r in runs), runs
    assert all(len(store.read(t)) for t in ("gemm", "attention", "cpu_bench"))
