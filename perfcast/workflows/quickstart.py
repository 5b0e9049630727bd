"""``perfcast quickstart``: what perfcast does, in one command, on any machine, with no downloaded data.

1. The built-in models (:mod:`perfcast.builtin`) predict well-known GEMM and attention kernels on several GPUs,
   with 90% intervals, beside their measured accuracy on GPUs they never trained on (rows shipped with them).
2. This machine is probed with a fixed plan of single-threaded CPU GEMMs (a count, so a busy machine measures
   the same plan more slowly; a time cap warns instead of refusing), a model is fitted to it, and the
   built-in model's answer (before) and the fitted model's (after) are compared on shapes it did not measure,
   with the measurement noise beside the error so a noisy machine is not mistaken for a bad model.
3. The run is logged to MLflow and the model registered where the follow-up commands look by default (the
   tracking URI ``perfcast train`` uses, the default record store), and the next commands are printed
   unwrapped and written to a file so they work when pasted.

Library warnings, logging and foreign progress bars go to a log file (``verbose`` shows them instead).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from perfcast.records.hardware_specs import ENV_VAR
from perfcast.records.store import RecordStore
from perfcast.perf_probe.cpu_kernels import CpuProbe
from perfcast.perf_probe.gemm import GemmProbe
from perfcast.perf_probe.peaks import DRAM_BYTES, device_key, probed_spec, write_spec_file
from perfcast.perf_probe.sweep import run_sweep

MODEL_NAME = "quickstart-gemm"
#: configurations of the fixed probe plan (``quick``: the README's and the tests' shorter plan)
PLAN_SIZE, QUICK_PLAN_SIZE = 60, 36
#: probing longer than this prints a warning (the plan is still measured in full)
TIME_CAP_S = 180.0
#: how far a typical shape's median repeat may sit above its fastest before the machine counts as too noisy:
#: ``runtime_cv`` (std/mean over the repeats) is inflated by a few preempted repeats even when the median,
#: which the errors are measured against, is stable; a median far above the minimum means it is not
NOISY_SPREAD = 0.10
#: GEMMs shown with the built-in model: a square benchmark GEMM and an LLM's prefill and decode projections
SHOW_GEMMS: list[tuple[str, dict[str, Any]]] = [
    ("4096³ GEMM", {"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16"}),
    ("Llama-3-8B MLP up, prefill 8k tokens", {"m": 8192, "n": 14336, "k": 4096, "dtype": "bf16"}),
    ("Llama-3-8B MLP up, decode 16 tokens", {"m": 16, "n": 14336, "k": 4096, "dtype": "bf16"}),
]
SHOW_ATTENTION: list[tuple[str, dict[str, Any]]] = [
    ("Llama-3-8B attention, prefill 4k", {"phase": "prefill", "batch": 1, "heads": 32, "kv_heads": 8, "seq_q": 4096,
                                          "seq_kv": 4096, "head_dim": 128, "dtype": "bf16", "kv_dtype": "bf16"}),
    ("Llama-3-8B attention, decode 64x4k", {"phase": "decode", "batch": 64, "heads": 32, "kv_heads": 8, "seq_q": 1,
                                            "seq_kv": 4096, "head_dim": 128, "dtype": "bf16", "kv_dtype": "bf16"}),
]
#: trained GPUs and two known only by their spec sheets
SHOW_DEVICES: tuple[str, ...] = ("a100_sxm", "h100_sxm", "l40s", "h200_sxm", "b200_sxm")
#: the example shape of the printed next steps (a shape the plan measures on every CPU)
EXAMPLE = {"m": 512, "n": 512, "k": 512, "dtype": "float32"}


@dataclass(frozen=True)
class Probed:
    """What the probe step measured on this machine."""

    hw_id: str
    device_id: str
    measured: int
    records: int
    elapsed_s: float
    specs_path: Path


@dataclass(frozen=True)
class Fitted:
    """The model fitted to this machine and how it compares with the built-in model on unmeasured shapes."""

    run_id: str
    version: int | None
    n_train: int
    comparison: Any  # DataFrame: one row per held-out shape
    before_mape: float
    after_mape: float
    noise_cv: float
    #: median over the shapes of (median repeat / fastest repeat - 1)
    spread: float


# ============================================================================================ output hygiene
@contextlib.contextmanager
def quiet(log_path: Path, verbose: bool) -> Iterator[None]:
    """Route warnings, logging and what libraries print to stderr (MLflow, tqdm bars) into ``log_path``."""
    if verbose:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"))
    with log_path.open("a", encoding="utf-8") as log, warnings.catch_warnings(), contextlib.redirect_stderr(log):
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        own = [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)]
        own = [(lg, lg.handlers[:], lg.propagate) for lg in own if isinstance(lg, logging.Logger) and lg.handlers]
        for logger, _, _ in own:  # libraries that print through their own handlers
            logger.handlers[:] = []
            logger.propagate = True
        warnings.simplefilter("default")
        warnings.showwarning = lambda msg, cat, file, line, *_: log.write(
            f"{cat.__name__}: {msg} ({file}:{line})\n")
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        try:
            yield
        finally:
            root.handlers[:], root.level = saved[0], saved[1]
            for logger, handlers, propagate in own:
                logger.handlers[:], logger.propagate = handlers, propagate
            if saved[2] is None:
                os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
            else:
                os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = saved[2]


# ================================================================================================ 1. built-in
def showcase() -> Any:
    """The built-in models' predictions of :data:`SHOW_GEMMS` and :data:`SHOW_ATTENTION` on :data:`SHOW_DEVICES`."""
    import pandas as pd

    from perfcast.builtin import trained_devices
    from perfcast.predictor import Predictor

    frames = []
    for task, kernels in (("gemm", SHOW_GEMMS), ("attention", SHOW_ATTENTION)):
        predictor = Predictor.builtin(task)
        trained = set(trained_devices(task))
        rows = [{**cfg, "device": dev} for _, cfg in kernels for dev in SHOW_DEVICES]
        out = predictor.predict(pd.DataFrame(rows))
        frames.append(pd.DataFrame({
            "kernel": [name for name, _ in kernels for _ in SHOW_DEVICES],
            "gpu": [r["device"] + ("" if r["device"] in trained else " (sheet only)") for r in rows],
            "runtime_ms": out["runtime_ms"], "lo": out["runtime_ms_lo"], "hi": out["runtime_ms_hi"],
            "in_distribution": out["in_distribution"]}))
    return pd.concat(frames, ignore_index=True)


def print_builtin(console: Console) -> None:
    """Step 1: the built-in models' answers, and how they scored on GPUs they never saw."""
    from perfcast.builtin import accuracy_rows
    from perfcast.experiments.builtin_models import N_ESTIMATORS

    table = Table(title="built-in models (no training): runtime with its 90% interval")
    for col in ("kernel", "GPU", "runtime", "90% interval", "in distribution"):
        table.add_column(col, justify="right" if col in ("runtime", "90% interval") else "left")
    for row in showcase().itertuples(index=False):
        table.add_row(row.kernel, row.gpu, _ms(row.runtime_ms), f"{_ms(row.lo)} – {_ms(row.hi)}",
                      "yes" if row.in_distribution else "no")
    console.print(table)
    rows = [r for r in accuracy_rows() if r["n_estimators"] == N_ESTIMATORS]
    if not rows:
        console.print("[yellow]no leave-one-GPU-out accuracy is shipped with these models")
        return
    acc = Table(title="their accuracy on GPUs they never trained on (each left out of training in turn)")
    for col in ("task", "GPU left out", "data", "mean APE", "median APE", "90% coverage", "rows"):
        acc.add_column(col, justify="left" if col in ("task", "GPU left out", "data") else "right")
    for r in rows:
        acc.add_row(r["task"], r["device"], r["source"], f"{r['mape']:.1%}", f"{r['median_ape']:.1%}",
                    f"{r['coverage']:.0%}", f"{r['n']:,}")
    console.print(acc)


def _ms(value: float) -> str:
    return f"{value:.3g} ms" if value >= 0.01 else f"{value * 1000:.3g} µs"


# ================================================================================================== 2. probe
def plan(size: int) -> list[dict[str, Any]]:
    """The fixed probe plan: ``size`` single-threaded CPU GEMMs from the quick sweep, spread evenly over it.

    One thread: on a shared machine, multi-threaded GEMMs wait on descheduled threads at every barrier, which
    measures the neighbours, not the hardware."""
    gemm = GemmProbe()
    configs = list({gemm.key(c): c for c in ({**c, "n_threads": 1} for c in gemm.space(quick=True))}.values())
    if size >= len(configs):
        return configs
    step = len(configs) / size
    return [configs[int(i * step)] for i in range(size)]


def probe_machine(store: RecordStore, size: int, cap_s: float, console: Console) -> Probed:
    """Measure memory bandwidth and the fixed GEMM plan (resuming what the store has), and write this CPU's
    measured spec sheet beside the store."""
    t0 = time.perf_counter()
    cpu = CpuProbe(max_time_s=0.3)
    dram = [c for c in cpu.space(quick=True) if c["benchmark"] == "stream" and c["variant"] == "single"
            and c["array_bytes"] >= DRAM_BYTES]
    bw = run_sweep(cpu, store, configs=dram)
    sweep = run_sweep(GemmProbe(max_time_s=0.3), store, configs=plan(size))
    elapsed = time.perf_counter() - t0
    if elapsed > cap_s:
        console.print(f"[yellow]warning:[/] probing took {elapsed:.0f} s, more than the {cap_s:.0f} s expected: this "
                      f"machine is busy or slow; the plan was measured in full, but expect noisy measurements")
    failed = [err for _, err in sweep.failed]
    if failed:
        console.print(f"[yellow]warning:[/] {len(failed)} GEMM configuration(s) failed (first: {failed[0].splitlines()[0]})")
    hw_id = next(iter(sweep.hw_ids | bw.hw_ids))
    spec = probed_spec(store, hw_id)
    device_id = device_key(spec["device_name"])
    specs_path = write_spec_file(store.root.parent / "hw_specs.yaml", {device_id: spec})
    os.environ[ENV_VAR] = str(specs_path)
    records = len(store.read("gemm", columns_=["source"], filters={"source": "probe", "hw_id": hw_id}))
    console.print(f"measured {sweep.measured} GEMM configurations ({sweep.skipped_done} already stored) in "
                  f"{elapsed:.0f} s; this CPU's spec sheet from its measurements: {specs_path}")
    return Probed(hw_id, device_id, sweep.measured, records, elapsed, specs_path)


# ==================================================================================================== 3. fit
def training_config(store: RecordStore, hw_id: str, tracking_uri: str) -> Any:
    """The run that fits a model to this machine's probe GEMMs, judged on shapes it did not measure."""
    from perfcast.training.config import parse_config

    return parse_config({
        "name": "quickstart",
        "task": "gemm",
        "targets": ["runtime_ms"],
        "data": {"store": str(store.root), "filters": {"source": ["probe"], "hw_id": [hw_id], "n_threads": [1]}},
        "model": {"name": "hybrid", "params": {}},
        "eval": {"protocol": "unseen-shape"},
        "seed": 0,
        "tracking": {"uri": tracking_uri, "experiment": "quickstart", "registered_model_name": MODEL_NAME},
    }, source="quickstart")


def fit_to_machine(config: Any, progress: Any) -> Any:
    """Fit a model to this machine's measured GEMMs: a hybrid trained on the probed rows, logged and registered
    by the config. This is the one place that decides how quickstart learns this machine, so adapting the
    built-in model instead (:meth:`perfcast.Predictor.adapt`) replaces only this call."""
    from perfcast.training.train import train

    return train(config, progress=progress)


def compare(config: Any, result: Any, device_id: str) -> Fitted:
    """Before (the built-in model, from this CPU's measured sheet) and after (the fitted model) on the shapes
    the fit held out, with each shape's measured run-to-run variation."""
    import numpy as np
    import pandas as pd

    from perfcast.records.schema import columns
    from perfcast.predictor import Predictor
    from perfcast.training.train import load_records, split_records

    test = split_records(load_records(config.data, config.task).frame, config.eval, config.seed,
                         list(config.targets)).test
    config_columns = [c for c, col in columns("gemm").items() if col.group == "config" and c in test.columns]
    shapes = test[config_columns].assign(device_id=device_id)
    measured = test["runtime_ms"].to_numpy(dtype="float64")
    before = Predictor.builtin("gemm").predict(shapes)["runtime_ms"].to_numpy(dtype="float64")
    after = Predictor.load(result.model_uri).predict(shapes)["runtime_ms"].to_numpy(dtype="float64")
    cv = test["runtime_cv"].to_numpy(dtype="float64")
    spread = measured / test["runtime_min_ms"].to_numpy(dtype="float64") - 1
    table = pd.DataFrame({"m": test["m"], "n": test["n"], "k": test["k"], "dtype": test["dtype"],
                          "measured_ms": measured, "noise_cv": cv, "spread": spread,
                          "before_ms": before, "before_ape": np.abs(before - measured) / measured,
                          "after_ms": after, "after_ape": np.abs(after - measured) / measured})
    def typical(a: np.ndarray) -> float:
        return float(np.nanmedian(a)) if np.isfinite(a).any() else float("nan")

    return Fitted(result.run_id, result.registered_version, result.n_train, table,
                  float(table["before_ape"].mean()), float(table["after_ape"].mean()), typical(cv), typical(spread))


def print_comparison(fitted: Fitted, console: Console) -> None:
    """Before/after per held-out shape and on average, with the noise floor beside the error."""
    t = fitted.comparison.sort_values(["dtype", "m", "n", "k"])
    table = Table(title=f"{len(t)} shapes this machine measured but the fit never saw "
                        f"(fitted on {fitted.n_train})")
    for col in ("m×n×k", "dtype", "measured", "noise (cv)", "median/min", "built-in (before)", "fitted (after)"):
        table.add_column(col, justify="left" if col in ("m×n×k", "dtype") else "right")
    for r in t.itertuples(index=False):
        table.add_row(f"{r.m}×{r.n}×{r.k}", str(r.dtype), _ms(r.measured_ms), f"{r.noise_cv:.1%}", f"+{r.spread:.1%}",
                      f"{_ms(r.before_ms)} ({r.before_ape:.0%} off)", f"{_ms(r.after_ms)} ({r.after_ape:.1%} off)")
    console.print(table)
    console.print(f"mean APE on unmeasured shapes: built-in model {fitted.before_mape:.1%} -> fitted "
                  f"{fitted.after_mape:.1%}. Noise: the repeats of a shape vary by {fitted.noise_cv:.1%} (median "
                  f"runtime_cv, std/mean, outliers included); the median each error is measured against sits "
                  f"{fitted.spread:.1%} above the fastest repeat (median over the shapes)", highlight=False)
    if fitted.spread > NOISY_SPREAD:
        console.print(f"[yellow]warning:[/] this machine is too noisy to measure well: a typical shape's median "
                      f"run is {fitted.spread:.0%} slower than its fastest, so errors of that size are noise, not "
                      f"the model. Other processes are competing for the CPU; run quickstart again when it is "
                      f"quieter.")


# ============================================================================================== next steps
def next_steps(tracking_uri: str, version: int | None, specs_path: Path, device_id: str) -> tuple[list[str], list[str]]:
    """(shell commands, three Python lines) that find what quickstart made when pasted in this directory."""
    from perfcast.training.tracking import DEFAULT_TRACKING_URI

    uri = f"models:/{MODEL_NAME}/{version}"
    sets = " ".join(f"--set {k}={v}" for k, v in {**EXAMPLE, "device": device_id}.items())
    via = "" if tracking_uri == DEFAULT_TRACKING_URI or os.environ.get("MLFLOW_TRACKING_URI") else \
        f" --tracking-uri {tracking_uri}"
    shell = [f"mlflow ui --backend-store-uri {tracking_uri}",
             f"{ENV_VAR}={specs_path} perfcast predict {uri}{via} {sets}",
             "perfcast predict --set m=4096 --set n=4096 --set k=4096 --set dtype=bf16 --set device=h100_sxm",
             "perfcast data ls"]
    config = {**EXAMPLE, "device": device_id}
    python = [f"import os; os.environ[{ENV_VAR!r}] = {str(specs_path)!r}",
              f"from perfcast import Predictor; p = Predictor.load({uri!r})",
              f"print(p.predict({config!r}))"]
    return shell, python


def print_next_steps(shell: list[str], python: list[str], path: Path, console: Console) -> None:
    """The commands, unwrapped and unindented (soft wrap: the terminal folds them, the text stays one line)."""
    path.write_text("# perfcast quickstart: next steps (run from this directory)\n" + "\n".join(shell)
                    + "\n\n# Python\n" + "\n".join(python) + "\n", encoding="utf-8")
    console.print(f"\nNext (run from this directory; also written to {path}):", highlight=False, soft_wrap=True)
    for line in shell:
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    console.print("\nPython:", highlight=False)
    for line in python:
        console.print(line, soft_wrap=True, highlight=False, markup=False)


# ===================================================================================================== all
@dataclass(frozen=True)
class QuickstartResult:
    """What quickstart produced."""

    probed: Probed
    fitted: Fitted
    tracking_uri: str
    next_steps_path: Path
    log_path: Path
    elapsed_s: float


def run_quickstart(store: RecordStore | None = None, *, quick: bool = False, cap_s: float = TIME_CAP_S,
                   verbose: bool = False, console: Console | None = None) -> QuickstartResult:
    """All three steps; MLflow runs go where ``perfcast train`` sends them (``$MLFLOW_TRACKING_URI`` or
    ``sqlite:///mlflow.db`` here), records into ``store`` (default: ``$PERFCAST_STORE`` or ``~/.perfcast/store``)."""
    from perfcast.training.tracking import tracking_uri as resolve_uri

    console = console or Console(file=sys.stdout)
    t0 = time.perf_counter()
    store = store or RecordStore()
    log_path = store.root.parent / "quickstart.log"
    uri = resolve_uri()
    with quiet(log_path, verbose):
        console.rule("[bold]1/3 built-in models: GPU kernels predicted from spec sheets")
        print_builtin(console)

        console.rule("[bold]2/3 this machine: probe a fixed plan of CPU GEMMs, fit a model to it")
        probed = probe_machine(store, QUICK_PLAN_SIZE if quick else PLAN_SIZE, cap_s, console)
        config = training_config(store, probed.hw_id, uri)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            step = bar.add_task("fitting", total=None)
            result = fit_to_machine(config, lambda msg: bar.update(step, description=msg))
            bar.update(step, description="comparing with the built-in model on unmeasured shapes")
            fitted = compare(config, result, probed.device_id)
        print_comparison(fitted, console)

        console.rule("[bold]3/3 logged to MLflow")
        console.print(f"run {fitted.run_id} in {uri}; model registered as {MODEL_NAME} version {fitted.version}; "
                      f"records in {store.root}; library messages in {log_path}", highlight=False)
        shell, python = next_steps(uri, fitted.version, probed.specs_path, probed.device_id)
        path = Path("perfcast-next-steps.txt").resolve()
        print_next_steps(shell, python, path, console)
    return QuickstartResult(probed, fitted, uri, path, log_path, time.perf_counter() - t0)
