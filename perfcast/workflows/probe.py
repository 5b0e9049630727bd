"""Probing this machine: each named probe swept in turn under one time budget, then what was measured.

Why here and not in the CLI: the budget shared across probes, the adaptation plan and the stop rules are
behaviour a test (or a notebook) calls directly; ``perfcast probe`` only parses options and prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from perfcast.perf_probe import PROBES
from perfcast.perf_probe.affordable import affordable_space
from perfcast.perf_probe.cpu_kernels import CpuProbe
from perfcast.perf_probe.peaks import bandwidth_configs
from perfcast.perf_probe.sweep import SweepResult, budget_share, run_sweep, summarize
from perfcast.records.store import RecordStore

#: per-measurement time cap of a quick run (precision-limited repeats still stop earlier)
QUICK_MAX_TIME_S = 0.5


def probe_options(quick: bool, max_time_s: float | None = None) -> dict[str, Any]:
    """The options every probe of a run is built with: ``max_time_s`` caps each measurement's repeats (a
    quick run's default :data:`QUICK_MAX_TIME_S`; otherwise each probe's own default)."""
    if max_time_s is not None and not max_time_s > 0:
        raise ValueError(f"max_time_s must be a positive number of seconds, got {max_time_s!r}")
    if max_time_s is None and quick:
        max_time_s = QUICK_MAX_TIME_S
    return {} if max_time_s is None else {"max_time_s": max_time_s}


def run_probes(names: Sequence[str], store: RecordStore, *, quick: bool = False, budget_s: float | None = None,
               count: int | None = None, max_time_s: float | None = None, on_skip: Callable[[str], None] | None = None,
               on_result: Callable[[str, SweepResult], None] | None = None) -> list[SweepResult]:
    """Sweep the probes ``names`` into ``store`` one after another, sharing ``budget_s`` seconds (each probe an
    equal share of what is left, :func:`~perfcast.perf_probe.sweep.budget_share`).

    ``count``: measure only the adaptation plan of that many configurations per device (GEMM and attention probes),
    and, where a plan runs on the CPU, its memory bandwidth (what `perfcast adapt` needs of a device without a sheet);
    ``max_time_s``: the cap on each measurement's repeats (:func:`probe_options`).
    A probe the spent budget leaves no time for is skipped (``on_skip``); each finished sweep is reported to
    ``on_result``; an interrupted sweep or one whose store failed ends the run. Every store is checked for
    writes before anything is measured (a :class:`~perfcast.records.store.StoreError` otherwise).
    """
    for name in names:
        store.check_writable(PROBES[name].task)
    t0 = time.perf_counter()
    runs = []
    for i, name in enumerate(names):
        if budget_s is not None and budget_s - (time.perf_counter() - t0) <= 0:
            if on_skip is not None:
                on_skip(name)
            continue
        probe = PROBES[name](**probe_options(quick, max_time_s))
        configs, left_out = affordable_space(probe, quick)
        left = budget_share(budget_s, time.perf_counter() - t0, len(names) - i)  # after the estimate's calls
        if count is not None and probe.task in ("gemm", "attention"):
            from perfcast.perf_probe.plan import plan_configs

            configs = plan_configs(configs if configs is not None else probe.space(quick=quick), probe.task, count)
        res = run_sweep(probe, store, quick=quick, budget_s=left, configs=configs)
        res.left_out = left_out
        runs.append(res)
        if on_result is not None:
            on_result(name, res)
        if res.interrupted or res.store_error:
            break
        if count is not None and any(c.get("device", "cpu") == "cpu" for c in configs or []) and not any(
                r.probe == CpuProbe.name for r in runs):
            # a CPU has no vendor sheet: `perfcast adapt` reads its memory bandwidth from these (stored once)
            cpu = CpuProbe(**probe_options(quick, max_time_s))
            left = budget_share(budget_s, time.perf_counter() - t0, len(names) - i)
            runs.append(run_sweep(cpu, store, budget_s=left, configs=bandwidth_configs(cpu)))
            if on_result is not None:
                on_result(cpu.name, runs[-1])
            if runs[-1].interrupted or runs[-1].store_error:
                break
    return runs


def measured_summary(store: RecordStore, runs: Sequence[SweepResult]) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The best throughput per group on the hardware the ``runs`` probed, and the power source of its last
    GEMM record (None when it has none)."""
    hw_ids = set().union(*(r.hw_ids for r in runs)) if runs else set()
    if not hw_ids:
        return pd.DataFrame(), None
    summary = summarize(store, hw_ids)
    power = store.read("gemm", columns_=["power_source", "power_note"], filters={"hw_id": list(hw_ids)})
    return summary, (None if power.empty else dict(power.iloc[-1]))
