"""Fleet probing on a local Ray: the same records as a direct run, none twice, and a killed worker loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from typer.testing import CliRunner

from perfcast.cli import app
from perfcast.records.store import RecordStore
from perfcast.perf_probe.cpu_kernels import CpuProbe
from perfcast.perf_probe.fleet import LOCAL, connect, plan, run_fleet
from perfcast.perf_probe.sweep import run_sweep

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[fleet]'")
pytestmark = pytest.mark.xdist_group("ray")  # one worker runs every local Ray cluster, one at a time

#: a tiny CPU plan: a few cheap kernels, each measured for at most 0.1 s
PLAN = ([{"benchmark": "latency", "variant": "single", "working_set_bytes": s, "stride_bytes": 64, "steps": 1 << 15}
         for s in (16 << 10, 128 << 10, 1 << 20, 4 << 20)]
        + [{"benchmark": "linpack", "variant": "single", "n": n} for n in (100, 200, 300, 400)]
        + [{"benchmark": "hash", "variant": "single", "algorithm": a, "bytes": 1 << 20} for a in ("blake2b", "sha256")]
        + [{"benchmark": "hpcg", "variant": "single", "grid": 16, "iterations": 50}])
KW = {"max_time_s": 0.1}
KEYS = ["hw_id", "params_json", "subtest"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (start-up takes seconds); fleet runs reuse it."""
    with connect(LOCAL, num_cpus=2):
        yield


def stored(path: Path) -> pd.DataFrame:
    return RecordStore(path).read("cpu_bench")


def test_plan_holds_a_whole_node_per_cpu_job_and_one_gpu_per_gpu_job():
    nodes = [{"NodeID": "a" * 56, "Alive": True, "NodeManagerHostname": "n1", "Resources": {"CPU": 64.0, "GPU": 2.0}},
             {"NodeID": "b" * 56, "Alive": False, "NodeManagerHostname": "dead", "Resources": {"CPU": 8.0}},
             {"NodeID": "c" * 56, "Alive": True, "NodeManagerHostname": "n2", "Resources": {"CPU": 16.0}}]
    jobs = plan(nodes)
    assert [(j.node, j.devices, j.num_cpus, j.num_gpus) for j in jobs] == [
        ("n1", ("cpu",), 64.0, 0), ("n1 gpu0", ("cuda",), 1, 1), ("n1 gpu1", ("cuda",), 1, 1),
        ("n2", ("cpu",), 16.0, 0)]
    here = plan(ray.nodes())  # the local Ray: one node, two CPUs, no GPU
    assert len(here) == 1 and here[0].devices == ("cpu",) and here[0].num_cpus == 2


def test_local_workers_run_at_the_drivers_priority():
    """Ray's default worker niceness (15) would leave local probes and protocols starved beside any busy process."""
    niceness = ray.get(ray.remote(lambda: os.nice(0)).remote())
    assert niceness == os.nice(0)


def test_ray_probe_stores_what_a_direct_run_stores_and_a_rerun_measures_nothing(tmp_path: Path):
    direct = run_sweep(CpuProbe(**KW), RecordStore(tmp_path / "direct"), configs=PLAN, progress=False)
    assert direct.measured == len(PLAN) and not direct.failed
    (res,) = run_fleet(LOCAL, tmp_path / "fleet", [("cpu", KW)], configs={"cpu": PLAN})
    assert res.error is None and res.sweeps[0].measured == len(PLAN) and not res.sweeps[0].failed
    a, b = stored(tmp_path / "direct"), stored(tmp_path / "fleet")
    assert len(a) == len(b) and not b.duplicated(KEYS).any()
    assert set(map(tuple, a[KEYS].to_numpy())) == set(map(tuple, b[KEYS].to_numpy()))  # same machine, same hw_id
    (again,) = run_fleet(LOCAL, tmp_path / "fleet", [("cpu", KW)], configs={"cpu": PLAN})
    assert again.sweeps[0].measured == 0 and again.sweeps[0].skipped_done == len(PLAN)
    assert len(stored(tmp_path / "fleet")) == len(b)


def _probe_workers() -> list[psutil.Process]:
    """This test's Ray worker processes executing a fleet probe task (the local Ray runs as our descendants;
    Ray titles a busy worker ``ray::<task name>``)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "ray::perfcast-probe" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:  # ended meanwhile
            continue
    return out


@pytest.mark.slow
def test_killing_the_worker_mid_probe_loses_no_record_and_the_rerun_resumes(tmp_path: Path):
    path = tmp_path / "fleet"
    results: list = []
    runner = threading.Thread(target=lambda: results.extend(
        run_fleet(LOCAL, path, [("cpu", KW)], configs={"cpu": PLAN}, max_retries=0)))
    runner.start()
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and done < 2:
        time.sleep(0.05)
        done = stored(path)["params_json"].nunique() if (path / "cpu_bench").is_dir() else 0
    workers = _probe_workers()
    assert len(workers) == 1, f"expected one probe task running, found {workers}"
    os.kill(workers[0].pid, signal.SIGKILL)
    runner.join(timeout=120)
    (killed,) = results
    assert killed.error is not None and not killed.sweeps  # the task died: no result came back
    kept = stored(path)
    n_kept = kept["params_json"].nunique()
    assert 2 <= n_kept < len(PLAN), "the kill came after the plan finished: nothing left to resume"
    assert not kept.duplicated(KEYS).any()

    (rerun,) = run_fleet(LOCAL, path, [("cpu", KW)], configs={"cpu": PLAN})
    sweep = rerun.sweeps[0]
    assert rerun.error is None and sweep.skipped_done == n_kept and sweep.measured == len(PLAN) - n_kept
    final = stored(path)
    assert final["params_json"].nunique() == len(PLAN) and not final.duplicated(KEYS).any()
    # every record stored before the kill is still there, unchanged
    assert set(kept["record_id"]) <= set(final["record_id"])


def test_probe_command_runs_on_ray_within_its_budget(tmp_path: Path):
    res = CliRunner().invoke(app, ["probe", "cpu", "--quick", "--ray", LOCAL, "--budget", "6s",
                                   "--store", str(tmp_path / "s")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "fleet probe on local" in res.output and "budget" in res.output
    assert len(stored(tmp_path / "s")) > 0
