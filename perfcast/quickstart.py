"""``perfcast quickstart``: the whole job in one command on any machine, with no downloaded data.

Probe this machine's GEMMs briefly, train a model on those measurements, evaluate it on shapes it never
saw (unseen-shape protocol), log the run and register the model in MLflow, and print what to do next.
Everything lands in one working directory, so running it twice resumes the probe and adds a new run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from perfcast.datasets.hardware_specs import ENV_VAR
from perfcast.datasets.store import RecordStore
from perfcast.perf_probe.cpu_kernels import CpuProbe
from perfcast.perf_probe.gemm import GemmProbe
from perfcast.perf_probe.peaks import DRAM_BYTES, device_key, probed_spec, write_spec_file
from perfcast.perf_probe.sweep import run_sweep
from perfcast.training.config import parse_config
from perfcast.training.train import TrainResult, train

MODEL_NAME = "quickstart-gemm"


@dataclass(frozen=True)
class QuickstartResult:
    """What quickstart produced: the store, the MLflow run and registered model, and its test metrics."""

    workdir: Path
    records: int
    train: TrainResult
    tracking_uri: str
    specs_path: Path
    elapsed_s: float


def run_quickstart(workdir: Path, *, budget_s: float = 240.0, console: Console | None = None) -> QuickstartResult:
    """Probe, train, evaluate, register; ``budget_s`` bounds the probe sweep (training adds ~30 s)."""
    console = console or Console()
    t0 = time.perf_counter()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    store = RecordStore(workdir / "store")
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"

    console.rule("[bold]1/3 probe this machine: memory bandwidth, then GEMMs")
    cpu = CpuProbe(max_time_s=0.3)
    dram = [c for c in cpu.space(quick=True) if c["benchmark"] == "stream" and c["variant"] == "single"
            and c["array_bytes"] >= DRAM_BYTES]
    bw = run_sweep(cpu, store, configs=dram)
    # one thread: on a shared machine, multi-threaded GEMMs wait on descheduled threads at every barrier,
    # which measures the neighbours, not the hardware; single-threaded runs stay reproducible
    gemm = GemmProbe(max_time_s=0.3)
    configs = list({gemm.key(c): c for c in ({**c, "n_threads": 1} for c in gemm.space(quick=True))}.values())
    # leave room for training: the GEMM sweep gets most of the budget, never all of it
    sweep = run_sweep(gemm, store, configs=configs, budget_s=max(10.0, budget_s - 45.0))
    n = len(store.read("gemm", columns_=["source"], filters={"source": "probe"}))
    console.print(f"measured {sweep.measured} GEMM configurations ({sweep.skipped_done} already stored); "
                  f"{n} GEMM records in {store.root}")
    if n < 20:
        raise RuntimeError(f"only {n} GEMM measurements: too few to train; raise the budget (now {budget_s:.0f} s)")
    # this CPU has no vendor sheet: its probed peaks and bandwidth become its spec entry
    hw_id = next(iter(sweep.hw_ids | bw.hw_ids))
    spec = probed_spec(store, hw_id)
    specs_path = write_spec_file(workdir / "hw_specs.yaml", {device_key(spec["device_name"]): spec})
    os.environ[ENV_VAR] = str(specs_path)
    console.print(f"spec sheet of this machine from its measurements: {specs_path}")

    console.rule("[bold]2/3 train and evaluate on unseen shapes")
    config = parse_config({
        "name": "quickstart",
        "task": "gemm",
        "targets": ["runtime_ms"],
        "data": {"store": str(store.root), "filters": {"source": ["probe"]}},
        "model": {"name": "hybrid", "params": {}},
        "eval": {"protocol": "unseen-shape"},
        "seed": 0,
        "tracking": {"uri": tracking_uri, "experiment": "quickstart", "registered_model_name": MODEL_NAME},
    }, source="quickstart")
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        step = bar.add_task("training", total=None)
        result = train(config, progress=lambda msg: bar.update(step, description=msg))
    return QuickstartResult(workdir, n, result, tracking_uri, specs_path, time.perf_counter() - t0)
