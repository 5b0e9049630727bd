"""``perfcast hw`` and ``perfcast probe``: fingerprint and measure this machine (:mod:`perfcast.perf_probe`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from perfcast.cli.common import StoreOpt, console, fail, frame_table, isna, open_store, parse_duration

probe_app = typer.Typer()


@probe_app.command("hw")
def hw(gpus: Annotated[bool, typer.Option(
        "--gpus", help="List the GPUs with a spec sheet (what the built-in models predict) instead")] = False) -> None:
    """Fingerprint this machine: CPU, caches, memory, NUMA, GPUs, and its stable hw_id (--gpus: known GPUs)."""
    if gpus:
        from perfcast.builtin import gpu_table

        console.print(frame_table(gpu_table(), title="GPUs with a spec sheet: predictable by the built-in models "
                                                      "(add yours in a YAML file named by $PERFCAST_HW_SPECS)"))
        return
    from perfcast.perf_probe.hardware import fingerprint_table

    df = fingerprint_table()
    for _, row in df.iterrows():
        table = Table(title=f"{row.get('device_kind', '')}: {row.get('device_name', '')}", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for k, v in row.items():
            if not isna(v):
                table.add_row(str(k), str(v))
        console.print(table)


@probe_app.command("probe")
def probe(
    which: Annotated[str, typer.Argument(help="gemm, attention, cpu or all")] = "all",
    quick: Annotated[bool, typer.Option("--quick", "-q", help="A short sweep (about a minute per probe)")] = False,
    budget: Annotated[Optional[str], typer.Option(help="Time budget for the whole run, e.g. 10m, shared equally by "
                                                       "the probes (with --plan adapt, also a number of configurations "
                                                       "per device, e.g. 128)")] = None,
    store: StoreOpt = None,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", help="Probe every node of this Ray cluster (address, or 'local'); the store must be reachable "
                      "from every node")] = None,
    plan: Annotated[Optional[str], typer.Option(help="adapt: only the configurations that best adapt a trained "
                                                     "model to this device (then `perfcast adapt`)")] = None,
    max_time: Annotated[Optional[str], typer.Option(
        "--max-time", help="Cap on each measurement's repeats, e.g. 0.2s (default: 0.5 s with --quick, else each "
                           "probe's own); a quiet kernel stops sooner, at 1% precision")] = None,
) -> None:
    """Measure this machine: GEMM, attention and CPU kernels, stored as records (resumable).

    Re-running skips what this hardware already measured, so an interrupted sweep (Ctrl-C, a crash)
    resumes where it stopped; every finished measurement is stored at once.
    """
    from perfcast.perf_probe import PROBES

    names = list(PROBES) if which == "all" else [which]
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise fail(f"unknown probe {which!r}; expected one of {', '.join(PROBES)} or all")
    count = None
    if plan is not None:
        from perfcast.perf_probe.plan import DEFAULT_BUDGET

        if plan != "adapt":
            raise fail(f"unknown plan {plan!r}; the one plan is 'adapt'")
        count = int(budget) if budget and budget.strip().isdigit() else DEFAULT_BUDGET
        budget = None if budget and budget.strip().isdigit() else budget
    budget_s = parse_duration(budget) if budget else None
    max_time_s = parse_duration(max_time, "--max-time") if max_time is not None else None
    if ray is not None:
        _probe_fleet(ray, names, quick, budget_s, store, max_time_s)
        return
    rs = open_store(store)
    try:
        code = _probe_run(names, quick, budget_s, rs, count, max_time_s)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every finished measurement is stored; run the same command to resume")
        code = 130
    if code:
        raise typer.Exit(code=code)


def _probe_run(names: list[str], quick: bool, budget_s: float | None, rs, count: int | None,  # noqa: ANN001
               max_time_s: float | None) -> int:
    """The probe command's work (``count``: the size of an adaptation plan; ``max_time_s``: the cap on each
    measurement's repeats); returns its exit code (2: the store failed, 130: Ctrl-C)."""
    from perfcast.perf_probe.affordable import MAX_CALL_S
    from perfcast.records.store import StoreError
    from perfcast.workflows.probe import measured_summary, run_probes

    def skipped(name: str) -> None:
        console.print(f"[yellow]{name}: skipped, the time budget is spent")

    def finished(name: str, res) -> None:  # noqa: ANN001
        if res.unavailable:
            console.print(f"[yellow]{name}: not run here: {res.unavailable}")
        for cfg, err in res.failed:
            console.print(f"[red]{name}: configuration {cfg} failed: {err.splitlines()[0]}")
        if res.left_out:
            cfg, seconds = max(res.left_out, key=lambda c: c[1])
            shown = {k: v for k, v in cfg.items() if k != "device"}
            console.print(f"[yellow]{name}: {len(res.left_out)} configuration(s) left out: one call would take over "
                          f"{MAX_CALL_S:g} s here (the longest, about {seconds:,.0f} s: {shown})", highlight=False)
        if res.claimed_elsewhere:
            console.print(f"[yellow]{name}: {res.claimed_elsewhere} configuration(s) left to another probe "
                          "running the same plan on this machine")

    t0 = time.perf_counter()
    try:
        runs = run_probes(names, rs, quick=quick, budget_s=budget_s, count=count, on_skip=skipped, on_result=finished,
                          max_time_s=max_time_s)
    except StoreError as e:
        raise fail(str(e)) from None
    table = Table(title=f"probe run: {time.perf_counter() - t0:.0f} s, store {rs.uri}")
    for col in ("probe", "measured", "records", "already done", "failed", "too slow here", "stopped by"):
        table.add_column(col)
    for r in runs:
        stop = ("store error" if r.store_error else "budget" if r.stopped_by_budget else "Ctrl-C" if r.interrupted
                else r.unavailable or "done")
        table.add_row(r.probe, str(r.measured), str(r.records), str(r.skipped_done), str(len(r.failed)),
                      str(len(r.left_out)), stop)
    console.print(table)
    failed_store = [r for r in runs if r.store_error]
    if failed_store:
        r = failed_store[0]
        console.print(f"[bold red]error:[/] probe {r.probe}: a measurement could not be stored in {rs.uri}: "
                      f"{r.store_error}\nThe sweep stopped; {r.measured} configuration(s) measured before it "
                      "are stored. Fix the store (space, permissions) and run the same command to resume.")
        return 2
    try:
        summary, power = measured_summary(rs, runs)
    except StoreError as e:
        raise fail(str(e)) from None
    if not summary.empty:
        console.print(frame_table(summary, title="best measured on this hardware"))
    if power is not None:
        console.print(f"power source: {power['power_source']} ({power['power_note'] or 'measured during the kernel'})")
    if any(r.interrupted for r in runs):
        console.print("[yellow]interrupted: what was measured is stored; run the same command to resume")
        return 130
    return 0


def _probe_fleet(address: str, names: list[str], quick: bool, budget_s: float | None, store: Path | None,
                 max_time_s: float | None) -> None:
    """``perfcast probe --ray``: the same sweeps as Ray tasks on every node (perfcast.perf_probe.fleet)."""
    from perfcast.perf_probe.fleet import FleetError, run_fleet, store_location, table
    from perfcast.workflows.probe import probe_options

    options = probe_options(quick, max_time_s)
    t0 = time.perf_counter()
    try:
        results = run_fleet(address, store, [(n, options) for n in names],
                            quick=quick, budget_s=budget_s)
    except FleetError as e:
        raise fail(str(e)) from None
    console.print(table(results, f"fleet probe on {address}: {time.perf_counter() - t0:.0f} s, "
                                 f"store {store_location(store)}"))
    if any(r.error for r in results):
        raise fail("a task failed; what it measured is stored: run the same command to resume")
