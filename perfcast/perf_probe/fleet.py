"""Fleet probing on Ray: every node of a Ray cluster measures its own hardware into one record store.

Why Ray: a performance team's fleet is many machines of different kinds; Ray already knows each node's
CPUs and GPUs, places a task on a chosen node, and retries a task whose worker died. perfcast adds only
the plan: one task per node for the CPU-side configurations (holding all of that node's CPUs, so nothing
else runs beside a measurement) and one task per GPU for the CUDA ones (one GPU each: Ray sets
``CUDA_VISIBLE_DEVICES``, so the task's ``cuda`` is its own GPU). Each task is the existing harness,
:func:`~perfcast.perf_probe.sweep.run_sweep`, writing every finished configuration to the shared store at
once; so a task that dies (a killed worker, a lost node) loses only the configuration in flight, and a
rerun (Ray's own retry, or the same command again) measures only what is missing.

The store must be reachable from every node under the same name: a shared filesystem path or a pyarrow
filesystem URI. ``--ray local`` starts a Ray on this machine, which then is the only node.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from perfcast.records.store import RecordStore
from perfcast.perf_probe.affordable import affordable_space
from perfcast.perf_probe.base import DeviceProbe
from perfcast.perf_probe.sweep import SweepResult, budget_share, run_sweep

#: ``--ray local``: start a Ray on this machine instead of joining a cluster
LOCAL = "local"
#: Ray's retries of a task whose worker process died (each retry resumes from the store)
MAX_RETRIES = 3


class FleetError(RuntimeError):
    """Ray is missing or the cluster cannot be reached; the message says what to do."""


@dataclass(frozen=True)
class Job:
    """One Ray task: the devices it measures on one node and the resources it holds while it does."""

    node_id: str
    node: str
    devices: tuple[str, ...]
    num_cpus: float
    num_gpus: float = 0

    @property
    def label(self) -> str:
        return f"{self.node} {'/'.join(self.devices)}"


@dataclass
class JobResult:
    """What one task did: the sweep results of its probes, or why the task failed (then a rerun resumes)."""

    job: Job
    sweeps: list[SweepResult] = field(default_factory=list)
    error: str | None = None
    host: str = ""


def plan(nodes: Sequence[Mapping[str, Any]]) -> list[Job]:
    """One CPU job per alive node (holding every CPU of it) and one job per GPU of it (``ray.nodes()`` rows)."""
    jobs: list[Job] = []
    for n in nodes:
        if not n.get("Alive", False):
            continue
        res = n.get("Resources", {})
        node_id, name = n["NodeID"], n.get("NodeManagerHostname") or n.get("NodeManagerAddress", n["NodeID"][:8])
        jobs.append(Job(node_id, name, ("cpu",), num_cpus=max(1.0, float(res.get("CPU", 1)))))
        jobs += [Job(node_id, f"{name} gpu{i}", ("cuda",), num_cpus=1, num_gpus=1)
                 for i in range(int(res.get("GPU", 0)))]
    return jobs


def _probe(name: str, devices: tuple[str, ...], kwargs: Mapping[str, Any]) -> Any | None:
    """The probe ``name`` restricted to ``devices``, or None when it measures none of them (a CPU-only
    probe in a GPU job)."""
    from perfcast.perf_probe import PROBES

    cls = PROBES[name]
    if issubclass(cls, DeviceProbe):
        return cls(devices=devices, **kwargs)
    return cls(**kwargs) if "cpu" in devices else None


def _on(devices: tuple[str, ...], configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The configurations that run on one of ``devices`` ("cuda:1" counts as "cuda": the job's own GPU)."""
    return [c for c in configs if str(c.get("device", "cpu")).split(":")[0] in devices]


def measure_node(store: str, devices: tuple[str, ...], probes: Sequence[tuple[str, dict[str, Any]]], quick: bool,
                 budget_s: float | None, configs: Mapping[str, Sequence[dict[str, Any]]]
                 ) -> tuple[str, list[SweepResult]]:
    """The body of one Ray task: each probe's sweep over ``devices`` of this node into ``store``, all of them
    within ``budget_s``, shared as one ``perfcast probe`` run shares it."""
    rs = RecordStore(store)
    out: list[SweepResult] = []
    t0 = time.monotonic()
    here = [(name, p) for name, kwargs in probes if (p := _probe(name, devices, kwargs)) is not None]
    for i, (name, probe) in enumerate(here):
        if budget_s is not None and budget_s - (time.monotonic() - t0) <= 0:
            continue
        todo, left_out = (_on(devices, configs[name]), []) if name in configs else affordable_space(probe, quick)
        left = budget_share(budget_s, time.monotonic() - t0, len(here) - i)  # after the estimate's calls, if any
        out.append(run_sweep(probe, rs, quick=quick, budget_s=left, configs=todo, progress=False))
        out[-1].left_out = left_out
        if out[-1].interrupted:
            break
    return socket.gethostname(), out


def store_location(store: str | os.PathLike[str] | None) -> str:
    """The store as every node must name it: a URI as given, a path made absolute (a worker's working
    directory is not the driver's), the default store when None."""
    if store is not None and "://" in str(store):
        return str(store)
    return str(Path(RecordStore(store).root).expanduser().resolve())


@contextmanager
def connect(address: str, num_cpus: int | None = None) -> Iterator[None]:
    """Ray connected to ``address`` for the block; ``local`` starts one here (with ``num_cpus`` CPUs, default
    every core) whose workers run at the driver's priority: Ray's default niceness of 15 starves them beside any
    other busy process, which slows a local run by orders of magnitude and leaves probes measuring a starved
    process. An existing session is reused."""
    try:
        import ray
    except ImportError:
        raise FleetError("Ray is not installed: pip install 'perfcast[fleet]'") from None
    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "num_cpus": num_cpus,
                              "_system_config": {"worker_niceness": 0}} if address == LOCAL else {}
    try:
        ray.init(address=None if address == LOCAL else address, log_to_driver=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise FleetError(f"cannot reach the Ray cluster at {address!r}: {err}. Give the head's address "
                         f"(host:6379, ray://host:10001, auto) or 'local'") from None
    try:
        yield
    finally:
        ray.shutdown()


def run_fleet(address: str, store: str | os.PathLike[str] | None, probes: Sequence[tuple[str, dict[str, Any]]], *,
              quick: bool = False, budget_s: float | None = None,
              configs: Mapping[str, Sequence[dict[str, Any]]] | None = None,
              max_retries: int = MAX_RETRIES) -> list[JobResult]:
    """Run ``probes`` ((name, constructor kwargs) pairs) on every node of the Ray cluster at ``address``.

    ``configs`` replaces a probe's own plan (name -> configurations); ``budget_s`` bounds each task.
    Returns one :class:`JobResult` per task, failed tasks included (their finished records are stored).
    """
    location = store_location(store)
    with connect(address):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(measure_node)
        jobs = plan(ray.nodes())
        refs = {task.options(num_cpus=j.num_cpus, num_gpus=j.num_gpus, max_retries=max_retries,
                             scheduling_strategy=NodeAffinitySchedulingStrategy(j.node_id, soft=False),
                             name=f"perfcast-probe {j.label}")
                .remote(location, j.devices, list(probes), quick, budget_s, dict(configs or {})): j for j in jobs}
        results = []
        for ref, job in refs.items():
            try:
                host, sweeps = ray.get(ref)
                results.append(JobResult(job, sweeps, host=host))
            except (ray.exceptions.RayError, ray.exceptions.RayTaskError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                results.append(JobResult(job, error=f"{type(err).__name__}: {first}"))
    return results


def table(results: Sequence[JobResult], title: str) -> Table:
    """One row per task and probe: what it measured, what was already stored, what failed or stopped it."""
    out = Table(title=title)
    for col in ("node", "probe", "measured", "records", "already done", "failed", "too slow here", "stopped by"):
        out.add_column(col)
    for r in results:
        if r.error is not None:
            out.add_row(r.job.label, "—", "", "", "", "", "", f"[red]task failed: {r.error}[/] (rerun to resume)")
        for s in r.sweeps:
            stop = "budget" if s.stopped_by_budget else "Ctrl-C" if s.interrupted else s.unavailable or "done"
            out.add_row(r.job.label, s.probe, str(s.measured), str(s.records), str(s.skipped_done),
                        str(len(s.failed)), str(len(s.left_out)), stop)
    return out
