"""Sweep runner: spaces, immediate storage, resume after interruption (incl. kill -9), budget, summary."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numpy as np
import pytest

from perfcast.records.store import RecordStore
from perfcast.perf_probe.gemm import GemmProbe
from perfcast.perf_probe.hardware import cpu_fingerprint
from perfcast.perf_probe.space import grid, log_uniform_sample, thread_counts
import perfcast.perf_probe.sweep as sweep_module
from perfcast.perf_probe.sweep import run_sweep, stored_keys, summarize

FAST = {"max_time_s": 0.05, "warmup_s": 0.01}
#: measurements that never converge, so each one lasts its time cap (for the kill test)
CAPPED = {"max_time_s": 0.3, "warmup_s": 0.01, "rel_precision": 1e-9, "max_repeats": 10**9}


def configs(n: int) -> list[dict]:
    return [{"op": "matmul", "m": 16 + i, "n": 24, "k": 8, "batch": 1, "dtype": "float32", "layout": "nn",
             "backend": "torch", "device": "cpu", "n_threads": 1} for i in range(n)]


# ---------------------------------------------------------------- spaces
def test_grid_is_the_cartesian_product_onto_base():
    g = grid({"op": "x"}, a=[1, 2], b=["p", "q", "r"])
    assert len(g) == 6 and g[0] == {"op": "x", "a": 1, "b": "p"} and g[-1] == {"op": "x", "a": 2, "b": "r"}


@pytest.mark.parametrize("method", ["sobol", "lhs", "random"])
def test_log_uniform_sample_spreads_over_decades(method):
    s = log_uniform_sample(256, {"m": (1, 10_000)}, choices={"dtype": ["a", "b"]}, seed=7, method=method)
    m = np.array([c["m"] for c in s])
    assert m.min() >= 1 and m.max() <= 10_000
    # uniform in log: about a quarter of the samples per decade, median near the geometric middle (100)
    per_decade = np.histogram(np.log10(m), bins=[0, 1, 2, 3, 4.01])[0]
    assert (per_decade > 40).all(), per_decade
    assert 40 <= np.median(m) <= 250
    n_a = sum(c["dtype"] == "a" for c in s)
    assert 100 <= n_a <= 156  # categorical axis balanced
    assert s == log_uniform_sample(256, {"m": (1, 10_000)}, choices={"dtype": ["a", "b"]}, seed=7, method=method)


def test_log_uniform_sample_rejects_bad_input():
    with pytest.raises(ValueError, match="1 <= lo <= hi"):
        log_uniform_sample(4, {"m": (0, 10)})
    with pytest.raises(ValueError, match="unknown sampling method"):
        log_uniform_sample(4, {"m": (1, 10)}, method="grid")


def test_thread_counts_are_one_and_all_cores():
    tc = thread_counts()
    assert tc[0] == 1 and tc == sorted(set(tc)) and tc[-1] <= os.cpu_count()


# ---------------------------------------------------------------- runner
def test_sweep_stores_complete_records(store):
    probe = GemmProbe(devices=("cpu",), **FAST)
    res = run_sweep(probe, store, configs=configs(3), progress=False)
    assert (res.measured, res.skipped_done, res.failed, res.stopped_by_budget) == (3, 0, [], False)
    df = store.read("gemm")
    fp = cpu_fingerprint()
    assert len(df) == 3 and res.hw_ids == {fp["hw_id"]}
    assert (df["source"] == "probe").all() and (df["hw_id"] == fp["hw_id"]).all()
    assert (df["device_name"] == fp["device_name"]).all() and (df["cores"] == fp["cores"]).all()
    assert set(df["params_json"]) == {GemmProbe.key(c) for c in configs(3)}
    assert json.loads(df.loc[0, "software"])["torch"]
    assert df["collected_at"].notna().all() and df["probe_version"].str.startswith("gemm/").all()
    assert (df["runtime_ms"] > 0).all()


def test_interrupted_sweep_resumes_without_redoing_or_losing(store):
    probe = GemmProbe(devices=("cpu",), **FAST)
    real_run, calls = probe.run, []

    def run_then_ctrl_c(config):
        calls.append(config)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_run(config)

    probe.run = run_then_ctrl_c
    first = run_sweep(probe, store, configs=configs(6), progress=False)
    assert first.interrupted and first.measured == 3 and len(store.read("gemm")) == 3

    again = GemmProbe(devices=("cpu",), **FAST)
    ran = []
    real_again = again.run
    again.run = lambda c: ran.append(c) or real_again(c)
    second = run_sweep(again, store, configs=configs(6), progress=False)
    assert (second.skipped_done, second.measured, second.interrupted) == (3, 3, False)
    assert ran == configs(6)[3:]  # only what was missing
    df = store.read("gemm")
    assert len(df) == 6 and df["params_json"].is_unique
    third = run_sweep(GemmProbe(devices=("cpu",), **FAST), store, configs=configs(6), progress=False)
    assert (third.skipped_done, third.measured) == (6, 0)
    # a re-run that measures nothing still names the machine its configurations' records describe
    assert third.hw_ids == first.hw_ids == second.hw_ids == {cpu_fingerprint()["hw_id"]}


def test_a_failing_config_is_reported_and_the_rest_run(store):
    bad = {**configs(1)[0], "dtype": "float13"}
    res = run_sweep(GemmProbe(devices=("cpu",), **FAST), store, configs=[bad, *configs(2)], progress=False)
    assert res.measured == 2 and len(res.failed) == 1
    assert res.failed[0][0] == bad and "float13" in res.failed[0][1]
    assert len(store.read("gemm")) == 2


def test_budget_is_respected_and_the_rest_resumes(store, monkeypatch):
    """On a scripted clock (each configuration takes 0.4 s of it, whatever this machine's load), a 1.5 s budget
    measures exactly 3: after them 1.2 s are spent and the estimate (the median so far) says a 4th would end at 1.6 s,
    so it is not started. The real measurements and the store are untouched by the clock."""
    clock = {"now": 0.0}
    monkeypatch.setattr(sweep_module, "time", SimpleNamespace(monotonic=lambda: clock["now"], time=time.time))
    probe = GemmProbe(devices=("cpu",), **FAST)
    measure_one = probe.run

    def run(config):
        clock["now"] += 0.4
        return measure_one(config)

    probe.run = run
    res = run_sweep(probe, store, configs=configs(10), budget_s=1.5, progress=False)
    assert res.stopped_by_budget and res.measured == 3 and res.elapsed_s == pytest.approx(1.2)
    assert len(store.read("gemm")) == 3
    rest = run_sweep(GemmProbe(devices=("cpu",), **FAST), store, configs=configs(10), progress=False)
    assert rest.skipped_done == res.measured and rest.measured == 10 - res.measured


def test_unavailable_probe_is_skipped_with_its_reason(store):
    class NoDevice(GemmProbe):
        def available(self):
            return False, "no CUDA device"

    res = run_sweep(NoDevice(devices=("cpu",)), store, configs=configs(2), progress=False)
    assert res.unavailable == "no CUDA device" and res.measured == 0 and store.read("gemm").empty


def test_summary_reports_best_gflops(store):
    run_sweep(GemmProbe(devices=("cpu",), **FAST), store, configs=configs(3), progress=False)
    hw = cpu_fingerprint()["hw_id"]
    s = summarize(store, hw)
    df = store.read("gemm")
    best = (2 * df["m"] * df["n"] * df["k"] * df["batch"] / df["runtime_ms"] / 1e6).max()
    (row,) = s.itertuples()
    assert row.task == "gemm" and row.unit == "GFLOP/s" and row.records == 3 and "float32" in row.group
    assert math.isclose(row.best, best)
    assert summarize(store, "not-this-machine").empty


@pytest.mark.slow
def test_kill_9_mid_sweep_loses_at_most_the_config_in_flight(tmp_path):
    root = tmp_path / "store"
    cfgs = configs(12)
    script = textwrap.dedent(f"""
        import json, sys
        from perfcast.records.store import RecordStore
        from perfcast.perf_probe.gemm import GemmProbe
        from perfcast.perf_probe.sweep import run_sweep
        run_sweep(GemmProbe(devices=("cpu",), **{CAPPED!r}), RecordStore(sys.argv[1]),
                  configs=json.loads(sys.argv[2]), progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(root), json.dumps(cfgs)])
    store = RecordStore(root)
    deadline = time.monotonic() + 120
    try:
        while len(store.parts("gemm")) < 3:
            assert proc.poll() is None, "the sweep subprocess ended before it could be killed"
            assert time.monotonic() < deadline, "the sweep subprocess stored nothing in 120 s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    stored = store.read("gemm")
    assert 3 <= len(stored) < len(cfgs) and stored["params_json"].is_unique

    res = run_sweep(GemmProbe(devices=("cpu",), **FAST), store, configs=cfgs, progress=False)
    assert res.skipped_done == len(stored) and res.measured == len(cfgs) - len(stored)
    final = store.read("gemm")
    assert len(final) == len(cfgs) and final["params_json"].is_unique
    assert set(stored["record_id"]) <= set(final["record_id"])  # nothing stored before the kill was lost
    assert len(stored_keys(store, "gemm")) == len(cfgs)
