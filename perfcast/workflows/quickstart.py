"""``perfcast quickstart``: what perfcast does, in one command, on any machine, with no downloaded data.

1. The built-in models predict GPU kernels (:mod:`perfcast.workflows.quickstart_builtin`).
2. This machine is probed: its memory bandwidth and peak GEMM give this CPU a measured spec sheet; then, from
   one candidate space (:func:`candidates`: single-threaded float32 GEMMs of about 0.2-2 ms, the space whose
   measurements repeat on a shared machine), a seeded random share is held out, and an adaptation plan of the
   rest is chosen by :mod:`perfcast.perf_probe.plan` from the built-in model's predictions on that sheet (a
   count; when the time budget would not fit it all, the plan's tail is left out, with a warning). The
   built-in GEMM model is adapted to the plan's measurements (:func:`perfcast.workflows.adapt.adapt_from_store`
   with a physics term for CPU GEMMs, :mod:`perfcast.models.persistence.physics_adapted`), and its answer before
   and after is compared on the held-out shapes, beside the noise floor (the same shapes measured twice) so a
   noisy machine is not mistaken for a bad model. Why the built-in GPU model is the base: it is the zero-shot
   prior a new device starts from (issue 13's flow), it never saw this machine, so "before" is an honest
   spec-sheet-only answer, while the adaptation's cross-validated guard keeps only the correction the rows
   support. Every setting here was chosen on a pilot measurement of the whole space (benchmarks/QUICKSTART.md),
   never on a run's held-out shapes.
3. The adaptation is logged to MLflow (with the before/after figures) and the adapted model registered where
   the follow-up commands look by default (the tracking URI ``perfcast train`` uses, the default record
   store), and the next commands are printed unwrapped and written to a file so they work when pasted.

Library warnings, logging and foreign progress bars go to a log file (``verbose`` shows them instead:
:mod:`perfcast.workflows.quickstart_output`). Each phase's wall and CPU seconds are shown
(:mod:`perfcast.workflows.quickstart_clock`), and the adaptation plan's probing gives way to the time budget.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
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
from perfcast.perf_probe.space import log_uniform_sample
from perfcast.perf_probe.peaks import bandwidth_configs, device_key, probed_spec, write_spec_file
from perfcast.perf_probe.sweep import run_sweep
from perfcast.workflows.quickstart_builtin import ms_text, print_builtin
from perfcast.workflows.quickstart_clock import PhaseClock, probe_budget
from perfcast.workflows.quickstart_output import next_steps, print_next_steps, quiet

MODEL_NAME = "quickstart-gemm"
#: the candidate space (:func:`candidates`): 2*m*n*k FLOPs (about 0.2-2 ms single-threaded on a current
#: core), each of m, n, k in DIM_RANGE; SPACE_SIZE shapes kept of SPACE_DRAWS seeded draws
FLOP_RANGE = (1.5e7, 1.5e8)
DIM_RANGE = (16, 4096)
SPACE_DRAWS, SPACE_SIZE = 1024, 120
#: what the output calls the space (the predictions judged are of this space only)
SPACE_TEXT = "single-threaded float32 torch GEMMs of 1.5e7-1.5e8 FLOPs"
#: shapes adapted on (peaks included) and held out to judge the adaptation (``quick``: the tests' shorter plan)
ADAPT_SIZE, HELD_OUT = 40, 20
QUICK_ADAPT_SIZE, QUICK_HELD_OUT = 24, 12
#: seed of the held-out draw and of the plan's clustering
HOLDOUT_SEED = 0
#: quickstart's default time budget: the adaptation plan's probing stops early (fewer shapes adapted on, with
#: a warning) when the rest would not fit (:func:`perfcast.workflows.quickstart_clock.probe_budget`)
BUDGET_S = 300.0
#: the plan's shapes measured whatever the budget (the peaks and the plan's first shapes): adapted on the
#: first 28 of 40 the held-out error stayed near the whole plan's, on 12-24 it rose to 10-19%
#: (benchmarks/QUICKSTART.md); the quick plan (24) is never cut
MIN_ADAPT = 28
#: the machine counts as too noisy to measure when two measurements of the same held-out shapes (their fastest
#: repeats, taken minutes apart) differ by more than this on average: errors below that are not resolvable
NOISY_REPEAT = 0.05
#: what quickstart measures per shape: repeats of up to MAX_TIME_S after a warm-up of up to WARMUP_S; the
#: fastest repeat of these repeats as well as of three times as many (pilot, benchmarks/QUICKSTART.md)
MAX_TIME_S, WARMUP_S = 0.1, 0.05


@dataclass(frozen=True)
class Probed:
    """This machine as the sheet-measuring probes found it."""

    hw_id: str
    device_id: str
    measured: int
    elapsed_s: float
    specs_path: Path


@dataclass(frozen=True)
class Judged:
    """The adapted model and how it compares with the built-in model on the held-out shapes."""

    run_id: str | None
    version: int | None
    n_adapt: int
    #: the correction the adaptation kept (none / level / shape / fine)
    mode: str
    comparison: Any  # DataFrame: one row per held-out shape
    #: before/after mean APE and 90% coverage (:func:`perfcast.workflows.adapt.before_after`)
    summary: dict[str, float]
    #: median ``runtime_cv`` (std/mean of the repeats) over the held-out shapes
    noise_cv: float
    #: median over the shapes of (median repeat / fastest repeat - 1): how much the neighbours slowed the repeats
    spread: float
    #: the noise floor: mean APE between two measurements of the held-out shapes (their fastest repeats)
    repeat_ape: float


# ================================================================================================== 2. probe
def candidates() -> list[dict[str, Any]]:
    """The shapes quickstart may measure (and is judged on): a seeded log-uniform spread of
    single-threaded float32 ``torch.matmul`` shapes whose work lies in :data:`FLOP_RANGE`.

    Why this space and no wider: on a shared 2-core machine a microsecond kernel's median is set by the timer,
    Python's call overhead and cache state more than by the shapes, and a kernel of tens of milliseconds is
    preempted in every repeat; one backend and one dtype, because a model reads neither the BLAS library nor
    its per-dtype code paths from the features. Multi-threaded GEMMs wait on descheduled threads at every
    barrier, which measures the neighbours, not the hardware."""
    base = {"op": "matmul", "batch": 1, "layout": "nn", "backend": "torch", "device": "cpu", "dtype": "float32",
            "n_threads": 1}
    lo, hi = FLOP_RANGE
    drawn = log_uniform_sample(SPACE_DRAWS, {"m": DIM_RANGE, "n": DIM_RANGE, "k": DIM_RANGE}, base=base, seed=0)
    inside = [c for c in drawn if lo <= 2 * _flops(c) <= hi]
    return list({GemmProbe.key(c): c for c in inside}.values())[:SPACE_SIZE]


def _flops(config: dict[str, Any]) -> float:
    return float(config["m"]) * config["n"] * config["k"] * config.get("batch", 1)


def peak_configs(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dtype of ``configs`` the square GEMM of the space's largest work: what this CPU's measured spec sheet
    takes its peaks from (so the sheet, and the plan that reads it, exist before the plan is chosen)."""
    side = round((FLOP_RANGE[1] / 2) ** (1 / 3))
    by_dtype = {c["dtype"]: c for c in configs}
    return [{**c, "m": side, "n": side, "k": side} for c in by_dtype.values()]


def measure_sheet(store: RecordStore, peaks: list[dict[str, Any]], console: Console) -> Probed:
    """Measure memory bandwidth and the peak GEMMs (resuming what the store has), and write this CPU's
    measured spec sheet beside the store (named in ``$PERFCAST_HW_SPECS`` for this process)."""
    t0 = time.perf_counter()
    cpu = CpuProbe(max_time_s=0.3)
    bw = run_sweep(cpu, store, configs=bandwidth_configs(cpu))
    sweep = run_sweep(gemm_probe(), store, configs=peaks)
    if not (sweep.hw_ids | bw.hw_ids):
        raise RuntimeError(f"no GEMM could be measured on this machine: {sweep.unavailable or sweep.failed}")
    hw_id = next(iter(sweep.hw_ids | bw.hw_ids))
    # the peaks' rows only (fastest repeats: what quickstart adapts and judges on), so a re-run on a store that now
    # holds the plan's rows too draws the same sheet, and so the same plan
    spec = probed_spec(store, hw_id, timing="runtime_min_ms", keys={GemmProbe.key(c) for c in peaks})
    device_id = device_key(spec["device_name"])
    specs_path = write_spec_file(store.root.parent / "hw_specs.yaml", {device_id: spec})
    os.environ[ENV_VAR] = str(specs_path)
    gemms = "1 peak GEMM" if len(peaks) == 1 else f"{len(peaks)} peak GEMMs"
    console.print(f"this CPU's spec sheet from {gemms} and its memory bandwidth: {specs_path}", highlight=False)
    return Probed(hw_id, device_id, sweep.measured, time.perf_counter() - t0, specs_path)


@dataclass(frozen=True)
class Shapes:
    """Which shapes quickstart measures: the adaptation rows (the peaks, then the adaptation plan) and a seeded
    random draw of the candidates held out of the adaptation, to judge it on."""

    adapt: list[dict[str, Any]]
    held_out: list[dict[str, Any]]


def choose_shapes(configs: list[dict[str, Any]], peaks: list[dict[str, Any]], base: Any, device_id: str,
                  size: int, held_out: int, seed: int = HOLDOUT_SEED) -> Shapes:
    """Hold ``held_out`` candidates out first (seeded, so the judged shapes do not depend on the plan), then let
    the adaptation plan (:func:`perfcast.perf_probe.plan.plan_configs`) choose ``size`` - peaks among the rest,
    reading the base model's 90% interval width on this CPU's measured sheet (widest: least sure)."""
    import numpy as np
    import pandas as pd

    from perfcast.perf_probe.plan import plan_configs

    gemm = GemmProbe()
    peak_keys = {gemm.key(c) for c in peaks}
    rest = [c for c in configs if gemm.key(c) not in peak_keys]
    rng = np.random.default_rng(seed)
    held_at = set(rng.choice(len(rest), size=min(held_out, len(rest)), replace=False).tolist())
    held = [c for i, c in enumerate(rest) if i in held_at]
    pool = [c for i, c in enumerate(rest) if i not in held_at]
    got = base.predict(pd.DataFrame(pool).drop(columns="device").assign(device_id=device_id))
    width = ((got["runtime_ms_hi"] - got["runtime_ms_lo"]) / got["runtime_ms"]).to_numpy(dtype="float64")
    return Shapes(peaks + plan_configs(pool, "gemm", max(size - len(peaks), 0), width=width, seed=seed), held)


def gemm_probe() -> GemmProbe:
    """The GEMM probe at quickstart's timing (:data:`MAX_TIME_S`, :data:`WARMUP_S`)."""
    return GemmProbe(max_time_s=MAX_TIME_S, warmup_s=WARMUP_S)


@dataclass(frozen=True)
class Measured:
    """The stored rows of the shapes quickstart measured, and how the measuring went."""

    adapt: Any  # DataFrame: the adaptation rows (stored records, in the plan's order)
    held: Any  # DataFrame: the held-out rows
    #: the held-out rows' second fastest repeats, aligned with ``held`` (the noise floor: :func:`remeasure`)
    again: Any


def measure_shapes(store: RecordStore, shapes: Shapes, hw_id: str, budget_s: float, clock: PhaseClock,
                   console: Console, min_rows: int = MIN_ADAPT) -> Measured:
    """Measure the held-out shapes, the adaptation plan (its first ``min_rows`` shapes whatever the
    budget, the rest while :func:`~perfcast.workflows.quickstart_clock.probe_budget` allows), then the held-out
    ones once more (resuming what the store has)."""
    t0 = time.perf_counter()
    with clock.phase("2 probe held-out shapes"):
        sweeps = [run_sweep(gemm_probe(), store, configs=shapes.held_out)]
    held_s = time.perf_counter() - t0
    with clock.phase("2 probe adaptation plan"):
        sweeps.append(run_sweep(gemm_probe(), store, configs=shapes.adapt[:min_rows]))
        allowed = probe_budget(budget_s, clock, later_wall_s=held_s)
        sweeps.append(run_sweep(gemm_probe(), store, configs=shapes.adapt[min_rows:], budget_s=allowed))
    failed = [err for sweep in sweeps for _, err in sweep.failed]
    if failed:
        console.print(f"[yellow]warning:[/] {len(failed)} GEMM configuration(s) failed (first: {failed[0].splitlines()[0]})")
    rows = store.read("gemm", filters={"source": "probe", "hw_id": hw_id})
    rows = rows[_measured(rows["runtime_ms"])].drop_duplicates("params_json", keep="last").set_index(
        "params_json", drop=False)
    gemm = GemmProbe()

    def pick(configs: list[dict[str, Any]]) -> Any:
        keys = [k for k in (gemm.key(c) for c in configs) if k in rows.index]
        return rows.loc[keys].reset_index(drop=True)

    adapt, held = pick(shapes.adapt), pick(shapes.held_out)
    skipped = len(shapes.adapt) - len(adapt) - len(failed)
    console.print(f"measured {sum(s.measured for s in sweeps)} GEMM configurations "
                  f"({sum(s.skipped_done for s in sweeps)} already stored) in {time.perf_counter() - t0:.0f} s: "
                  f"{len(adapt)} to adapt on, {len(held)} held out to judge it", highlight=False)
    if sweeps[-1].stopped_by_budget:
        console.print(f"[yellow]warning:[/] the {budget_s:.0f} s time budget left {skipped} of the plan's "
                      f"{len(shapes.adapt)} shapes unmeasured: this machine is busy or slow, so the adaptation "
                      f"has fewer rows (a longer --budget measures them all)", highlight=False, soft_wrap=True)
    with clock.phase("2 re-measure held-out shapes (noise floor)"):
        again = remeasure(held)
    return Measured(adapt, held, again)


def remeasure(held: Any) -> Any:
    """Each held-out row's configuration measured again (not stored): its fastest repeat, aligned with ``held``.
    Two measurements of the same shapes apart in time are the error no model of them can go below."""
    import json

    import numpy as np

    probe = gemm_probe()
    return np.array([probe.run(json.loads(key))[0]["runtime_min_ms"] for key in held["params_json"]],
                    dtype="float64")


def fastest(rows: Any) -> Any:
    """The records with ``runtime_ms`` set to their fastest repeat: what quickstart adapts and judges on.

    Why not the median (what a record's ``runtime_ms`` holds): on a shared machine the median of a
    millisecond kernel's repeats measures how often the neighbours preempted it (it varied 2-4x between two
    measurements of the same shapes, benchmarks/QUICKSTART.md), while the fastest repeat is the kernel on this
    hardware, undisturbed, and repeats within a few percent; on a quiet machine the two are the same."""
    return rows.assign(runtime_ms=rows["runtime_min_ms"])


def _measured(values: Any) -> Any:
    """Rows whose measurement is a positive number (a failed or missing one is not judged)."""
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").gt(0).fillna(False).to_numpy(dtype=bool)


# ================================================================================================== 3. adapt
def adapt_to_machine(store: RecordStore, adapt_rows: Any, device_id: str, tracking_uri: str, clock: PhaseClock
                     ) -> Any:
    """Adapt the built-in GEMM model to this CPU's adaptation rows (:func:`perfcast.workflows.adapt.adapt_from_store`:
    level, shape correction and intervals, each kept only where cross-validation on the rows supports it),
    write the bundle beside the store, log it to MLflow and register it as :data:`MODEL_NAME`."""
    from functools import partial

    from perfcast.builtin import bundle_path
    from perfcast.workflows.adapt import adapt_from_store

    out = store.root.parent / "quickstart-models" / time.strftime("%Y%m%dT%H%M%S")
    return adapt_from_store(bundle_path("gemm"), store, out, device=device_id, records=fastest(adapt_rows),
                            tracking_uri=tracking_uri, experiment="quickstart", registered_name=MODEL_NAME,
                            adapter=partial(with_physics, clock=clock))


def with_physics(base: Any, records: Any, *, seed: int = 0, donors: Any = None, clock: PhaseClock | None = None
                 ) -> Any:
    """``base`` adapted by :func:`perfcast.models.persistence.physics_adapted.adapt_with_physics`: the ordinary
    correction, or a physics term of the GEMM's shape under it when that cross-validates better on the rows."""
    from perfcast.models.persistence.physics_adapted import adapt_with_physics
    from perfcast.predictor import Predictor

    with clock.phase("3 adapt (candidates' cross-validation, fit)") if clock else contextlib.nullcontext():
        donor_rows = None if donors is None or not len(donors) else base._records(donors)
        return Predictor(adapt_with_physics(base.model, base._records(records), seed=seed, donors=donor_rows))


def compare(base: Any, outcome: Any, held: Any, again: Any) -> Judged:
    """Before (the built-in model on this CPU's measured sheet) and after (adapted) on the held-out shapes'
    fastest repeats, each beside its measured noise (``again``: the same shapes measured a second time);
    logged to the adaptation's MLflow run."""
    import numpy as np
    import pandas as pd

    from perfcast.workflows.adapt import before_after

    judged_rows = fastest(held)
    measured = judged_rows["runtime_ms"].to_numpy(dtype="float64")
    before = base.predict(judged_rows)["runtime_ms"].to_numpy(dtype="float64")
    after = outcome.predictor.predict(judged_rows)["runtime_ms"].to_numpy(dtype="float64")
    cv = held["runtime_cv"].to_numpy(dtype="float64")
    spread = held["runtime_ms"].to_numpy(dtype="float64") / measured - 1
    repeat = np.abs(np.asarray(again, dtype="float64") / measured - 1)
    table = pd.DataFrame({"m": held["m"], "n": held["n"], "k": held["k"], "batch": held["batch"],
                          "dtype": held["dtype"], "measured_ms": measured, "remeasured_ms": again,
                          "repeat_ape": repeat, "noise_cv": cv, "spread": spread,
                          "before_ms": before, "before_ape": np.abs(before / measured - 1),
                          "after_ms": after, "after_ape": np.abs(after / measured - 1)})
    summary = before_after(base, outcome.predictor, judged_rows)

    def typical(a: np.ndarray) -> float:
        return float(np.nanmedian(a)) if np.isfinite(a).any() else float("nan")

    judged = Judged(outcome.run_id, outcome.registered_version, outcome.rows, str(outcome.report["mode"]), table,
                    summary, typical(cv), typical(spread), float(np.nanmean(repeat)))
    if outcome.run_id is not None:
        import mlflow

        with mlflow.start_run(run_id=outcome.run_id):
            mlflow.log_metrics({f"heldout_{k}": v for k, v in summary.items()} | {
                "heldout_rows": len(table), "heldout_median_runtime_cv": judged.noise_cv,
                "heldout_median_spread": judged.spread, "heldout_repeat_mape": judged.repeat_ape,
                "heldout_before_median_ape": float(table["before_ape"].median()),
                "heldout_after_median_ape": float(table["after_ape"].median())})
            mlflow.log_table(table, "quickstart_heldout.json")
    return judged


def print_comparison(judged: Judged, console: Console) -> None:
    """Before/after per held-out shape and on average, with the measured noise beside the error."""
    t = judged.comparison.sort_values(["dtype", "m", "n", "k", "batch"])
    table = Table(title=f"{len(t)} shapes this machine measured but the adaptation never saw "
                        f"(adapted on {judged.n_adapt}; correction kept: {judged.mode})")
    for col in ("m×n×k", "measured", "re-measured", "median/min", "built-in (before)", "adapted (after)"):
        table.add_column(col, justify="left" if col == "m×n×k" else "right")
    for r in t.itertuples(index=False):
        batch = f"{r.batch}×" if r.batch > 1 else ""
        table.add_row(f"{batch}{r.m}×{r.n}×{r.k}", ms_text(r.measured_ms), f"{r.repeat_ape:.1%} off", f"+{r.spread:.0%}",
                      f"{ms_text(r.before_ms)} ({r.before_ape:.0%} off)", f"{ms_text(r.after_ms)} ({r.after_ape:.1%} off)")
    console.print(table)
    s = judged.summary
    console.print(f"on {len(t)} held-out {SPACE_TEXT} (their fastest repeat): mean APE built-in model "
                  f"{s['before_mape']:.1%} -> adapted {s['after_mape']:.1%} (median APE {t['before_ape'].median():.1%}"
                  f" -> {t['after_ape'].median():.1%}); 90% interval coverage {s['before_coverage']:.0%} -> "
                  f"{s['after_coverage']:.0%}. Noise floor: measured twice, the same shapes differ by "
                  f"{judged.repeat_ape:.1%} (mean APE); the neighbours put the median repeat {judged.spread:.0%} above "
                  f"the fastest (median over the shapes; runtime_cv {judged.noise_cv:.0%})", highlight=False,
                  soft_wrap=True)
    if not judged.repeat_ape <= NOISY_REPEAT:
        console.print(f"[yellow]warning:[/] this machine is too noisy to measure well: two measurements of the same "
                      f"shapes differ by {judged.repeat_ape:.0%} on average (limit {NOISY_REPEAT:.0%}), so errors of "
                      f"that size are noise, not the model. Other processes are competing for the CPU; run quickstart "
                      f"again when it is quieter.", highlight=False)


# ===================================================================================================== all
@dataclass(frozen=True)
class QuickstartResult:
    """What quickstart produced (the measured rows are kept so a caller can check what was judged on what)."""

    probed: Probed
    shapes: Shapes
    adapt_rows: Any  # DataFrame: the stored records adapted on
    held_rows: Any  # DataFrame: the stored records of the held-out shapes
    judged: Judged
    model_path: Path
    tracking_uri: str
    next_steps_path: Path
    log_path: Path
    #: wall and CPU seconds per phase
    clock: PhaseClock
    elapsed_s: float


def run_quickstart(store: RecordStore | None = None, *, quick: bool = False, budget_s: float = BUDGET_S,
                   min_rows: int = MIN_ADAPT, verbose: bool = False, console: Console | None = None,
                   clock: PhaseClock | None = None) -> QuickstartResult:
    """All three steps within ``budget_s`` seconds (the adaptation plan's probing gives way, down to its first
    ``min_rows`` shapes; ``clock``: one started earlier, e.g. at process start); MLflow runs go where ``perfcast train`` sends them
    (``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db`` here), records into ``store`` (default:
    ``$PERFCAST_STORE`` or ``~/.perfcast/store``)."""
    from perfcast.predictor import Predictor
    from perfcast.training.tracking import tracking_uri as resolve_uri

    console = console or Console(file=sys.stdout)
    clock = clock or PhaseClock()
    store = store or RecordStore()
    log_path = store.root.parent / "quickstart.log"
    uri = resolve_uri()
    size, held_out = (QUICK_ADAPT_SIZE, QUICK_HELD_OUT) if quick else (ADAPT_SIZE, HELD_OUT)
    with quiet(log_path, verbose):
        console.rule("[bold]1/3 built-in models: GPU kernels predicted from spec sheets")
        with clock.phase("1 built-in predictions and accuracy"):
            print_builtin(console)

        console.rule("[bold]2/3 this machine: probe an adaptation plan of CPU GEMMs, adapt the built-in model to it")
        with clock.phase("2 spec sheet (bandwidth, peak GEMM)"):
            configs = candidates()
            peaks = peak_configs(configs)
            probed = measure_sheet(store, peaks, console)
        with clock.phase("2 plan (held-out draw, adaptation plan)"):
            base = Predictor.builtin("gemm")
            shapes = choose_shapes(configs, peaks, base, probed.device_id, size, held_out)
        console.print(f"candidate space: {len(configs)} {SPACE_TEXT}; {len(shapes.held_out)} held out, "
                      f"{len(shapes.adapt)} to adapt on (the plan)", highlight=False)
        got = measure_shapes(store, shapes, probed.hw_id, budget_s, clock, console, min_rows)
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            step = bar.add_task("adapting the built-in model to this machine's measurements", total=None)
            with clock.phase("3 bundle and MLflow logging"):
                outcome = adapt_to_machine(store, got.adapt, probed.device_id, uri, clock)
            bar.update(step, description="comparing with the built-in model on held-out shapes")
            with clock.phase("3 compare on held-out shapes, log them"):
                judged = compare(base, outcome, got.held, got.again)
        print_comparison(judged, console)

        console.rule("[bold]3/3 logged to MLflow")
        console.print(f"run {judged.run_id} in {uri}; adapted model registered as {MODEL_NAME} version "
                      f"{judged.version} (bundle {outcome.path}); records in {store.root}; library messages in "
                      f"{log_path}", highlight=False)
        console.print(clock.table())
        shell, python = next_steps(uri, f"models:/{MODEL_NAME}/{judged.version}", probed.specs_path,
                                   probed.device_id)
        path = Path("perfcast-next-steps.txt").resolve()
        print_next_steps(shell, python, path, console)
    return QuickstartResult(probed, shapes, got.adapt, got.held, judged, outcome.path, uri, path, log_path,
                            clock, clock.elapsed()[0] + clock.startup[0])
