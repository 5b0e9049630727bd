"""The ``perfcast`` command line: thin typer commands that call the packages and print with rich.

Heavy libraries are imported inside the commands so ``perfcast --help`` answers instantly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="perfcast: predict how fast (and at what power) work runs on hardware, before anyone runs it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Import public datasets into the record store and look at what it holds.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()


def _mount() -> None:
    """``perfcast train``, ``eval`` and ``predict`` live with their packages; mounted unnamed, so they are not
    ``perfcast train train``."""
    from perfcast.cli.adapt import adapt_app
    from perfcast.cli.bench import eval_app
    from perfcast.cli.predict import predict_app
    from perfcast.cli.train import train_app

    app.add_typer(train_app)
    app.add_typer(eval_app)
    app.add_typer(predict_app)
    app.add_typer(adapt_app)


_mount()

StoreOpt = Annotated[
    Optional[str],
    typer.Option("--store", "-s", help="Record store: a directory or a pyarrow filesystem URI (s3://…) "
                                       "[default: $PERFCAST_STORE or ~/.perfcast/store]"),
]


def _store(path: str | None):  # noqa: ANN202
    """The record store at ``path``; a URI the filesystem layer cannot open is a named error (exit 2)."""
    from perfcast.records.store import RecordStore

    try:
        return RecordStore(path)
    except (OSError, ValueError) as e:
        raise _fail(f"cannot open record store {path}: {e}") from None


def _fail(msg: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {msg}")
    return typer.Exit(code=2)


def _frame_table(df, title: str | None = None) -> Table:  # noqa: ANN001
    table = Table(title=title, show_lines=False)
    for c in df.columns:
        table.add_column(str(c), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*["" if _isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    return table


def _isna(v: object) -> bool:
    try:
        import pandas as pd

        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


@app.command()
def hw(gpus: Annotated[bool, typer.Option(
        "--gpus", help="List the GPUs with a spec sheet (what the built-in models predict) instead")] = False) -> None:
    """Fingerprint this machine: CPU, caches, memory, NUMA, GPUs, and its stable hw_id (--gpus: known GPUs)."""
    if gpus:
        from perfcast.builtin import gpu_table

        console.print(_frame_table(gpu_table(), title="GPUs with a spec sheet: predictable by the built-in models "
                                                      "(add yours in a YAML file named by $PERFCAST_HW_SPECS)"))
        return
    from perfcast.perf_probe.hardware import fingerprint_table

    df = fingerprint_table()
    for _, row in df.iterrows():
        table = Table(title=f"{row.get('device_kind', '')}: {row.get('device_name', '')}", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for k, v in row.items():
            if not _isna(v):
                table.add_row(str(k), str(v))
        console.print(table)


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h' or plain seconds → seconds (a clear error otherwise)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 90s, 10m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@app.command()
def probe(
    which: Annotated[str, typer.Argument(help="gemm, attention, cpu or all")] = "all",
    quick: Annotated[bool, typer.Option("--quick", "-q", help="A short sweep (about a minute per probe)")] = False,
    budget: Annotated[Optional[str], typer.Option(help="Time budget for the whole run, e.g. 10m (with --plan adapt, "
                                                       "also a number of configurations, e.g. 128)")] = None,
    store: StoreOpt = None,
    ray: Annotated[Optional[str], typer.Option(
        "--ray", help="Probe every node of this Ray cluster (address, or 'local'); the store must be reachable "
                      "from every node")] = None,
    plan: Annotated[Optional[str], typer.Option(help="adapt: only the configurations that best adapt a trained "
                                                     "model to this device (then `perfcast adapt`)")] = None,
) -> None:
    """Measure this machine: GEMM, attention and CPU kernels, stored as records (resumable).

    Re-running skips what this hardware already measured, so an interrupted sweep (Ctrl-C, a crash)
    resumes where it stopped; every finished measurement is stored at once.
    """
    from perfcast.perf_probe import PROBES

    names = list(PROBES) if which == "all" else [which]
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise _fail(f"unknown probe {which!r}; expected one of {', '.join(PROBES)} or all")
    count = None
    if plan is not None:
        from perfcast.perf_probe.plan import DEFAULT_BUDGET

        if plan != "adapt":
            raise _fail(f"unknown plan {plan!r}; the one plan is 'adapt'")
        count = int(budget) if budget and budget.strip().isdigit() else DEFAULT_BUDGET
        budget = None if budget and budget.strip().isdigit() else budget
    budget_s = parse_duration(budget) if budget else None
    if ray is not None:
        _probe_fleet(ray, names, quick, budget_s, store)
        return
    rs = _store(store)
    try:
        code = _probe_run(names, quick, budget_s, rs, count)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every finished measurement is stored; run the same command to resume")
        code = 130
    if code:
        raise typer.Exit(code=code)


def _probe_run(names: list[str], quick: bool, budget_s: float | None, rs, count: int | None) -> int:  # noqa: ANN001
    """The probe command's work (``count``: the size of an adaptation plan); returns its exit code (2: the store
    failed, 130: Ctrl-C)."""
    from perfcast.records.store import StoreError
    from perfcast.perf_probe import PROBES
    from perfcast.perf_probe.sweep import run_sweep, summarize

    try:
        for name in names:  # before measuring anything: a store that cannot take the records is an error now
            rs.check_writable(PROBES[name].task)
    except StoreError as e:
        raise _fail(str(e)) from None
    t0 = time.perf_counter()
    runs = []
    for name in names:
        left = None if budget_s is None else budget_s - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            console.print(f"[yellow]{name}: skipped, the time budget is spent")
            continue
        # quick: cap each measurement at 0.5 s (precision-limited repeats still stop earlier)
        probe_ = PROBES[name](**({"max_time_s": 0.5} if quick else {}))
        configs = None
        if count is not None and probe_.task in ("gemm", "attention"):
            from perfcast.perf_probe.plan import plan_configs

            configs = plan_configs(probe_.space(quick=quick), probe_.task, count)
        try:
            res = run_sweep(probe_, rs, quick=quick, budget_s=left, configs=configs)
        except StoreError as e:
            raise _fail(str(e)) from None
        runs.append(res)
        if res.unavailable:
            console.print(f"[yellow]{name}: not run here: {res.unavailable}")
        for cfg, err in res.failed:
            console.print(f"[red]{name}: configuration {cfg} failed: {err.splitlines()[0]}")
        if res.claimed_elsewhere:
            console.print(f"[yellow]{name}: {res.claimed_elsewhere} configuration(s) left to another probe "
                          "running the same plan on this machine")
        if res.interrupted or res.store_error:
            break
    table = Table(title=f"probe run: {time.perf_counter() - t0:.0f} s, store {rs.uri}")
    for col in ("probe", "measured", "records", "already done", "failed", "stopped by"):
        table.add_column(col)
    for r in runs:
        stop = ("store error" if r.store_error else "budget" if r.stopped_by_budget else "Ctrl-C" if r.interrupted
                else r.unavailable or "done")
        table.add_row(r.probe, str(r.measured), str(r.records), str(r.skipped_done), str(len(r.failed)), stop)
    console.print(table)
    failed_store = [r for r in runs if r.store_error]
    if failed_store:
        r = failed_store[0]
        console.print(f"[bold red]error:[/] probe {r.probe}: a measurement could not be stored in {rs.uri}: "
                      f"{r.store_error}\nThe sweep stopped; {r.measured} configuration(s) measured before it "
                      "are stored. Fix the store (space, permissions) and run the same command to resume.")
        return 2
    hw_ids = set().union(*(r.hw_ids for r in runs)) if runs else set()
    if hw_ids:
        try:
            summary = summarize(rs, hw_ids)
            power = rs.read("gemm", columns_=["power_source", "power_note"], filters={"hw_id": list(hw_ids)})
        except StoreError as e:
            raise _fail(str(e)) from None
        if not summary.empty:
            console.print(_frame_table(summary, title="best measured on this hardware"))
        if not power.empty:
            src = power.iloc[-1]
            console.print(f"power source: {src['power_source']} ({src['power_note'] or 'measured during the kernel'})")
    if any(r.interrupted for r in runs):
        console.print("[yellow]interrupted: what was measured is stored; run the same command to resume")
        return 130
    return 0


def _probe_fleet(address: str, names: list[str], quick: bool, budget_s: float | None, store: Path | None) -> None:
    """``perfcast probe --ray``: the same sweeps as Ray tasks on every node (perfcast.perf_probe.fleet)."""
    from perfcast.perf_probe.fleet import FleetError, run_fleet, store_location, table

    t0 = time.perf_counter()
    try:
        results = run_fleet(address, store, [(n, {"max_time_s": 0.5} if quick else {}) for n in names],
                            quick=quick, budget_s=budget_s)
    except FleetError as e:
        raise _fail(str(e)) from None
    console.print(table(results, f"fleet probe on {address}: {time.perf_counter() - t0:.0f} s, "
                                 f"store {store_location(store)}"))
    if any(r.error for r in results):
        raise _fail("a task failed; what it measured is stored: run the same command to resume")


@app.command()
def quickstart(
    quick: Annotated[bool, typer.Option("--quick", "-q", help="A shorter probe plan (36 GEMMs instead of 60)")] = False,
    cap: Annotated[str, typer.Option(help="Warn when probing takes longer than this (the plan is still measured)")] = "3m",
    store: StoreOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library warnings and logs")] = False,
) -> None:
    """Built-in GPU predictions, then probe this machine, fit a model to it, log it to MLflow, show what next."""
    from perfcast.workflows.quickstart import run_quickstart

    res = run_quickstart(_store(store), quick=quick, cap_s=parse_duration(cap), verbose=verbose, console=console)
    console.print(f"\nquickstart took {res.elapsed_s:.0f} s", highlight=False)


@data_app.command("import")
def data_import(
    name: Annotated[str, typer.Argument(help="Dataset name (see `perfcast data sources`)")],
    path: Annotated[Path, typer.Argument(help="Directory laid out like the shared copy of the dataset")],
    store: StoreOpt = None,
) -> None:
    """Import a public dataset directory into the record store (re-importing adds nothing)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from perfcast.datasets.importers import get_importer
    from perfcast.datasets.importers.base import DatasetLayoutError
    from perfcast.records.parsing import DataFileError
    from perfcast.records.schema import SchemaError
    from perfcast.records.store import StoreError

    try:
        importer = get_importer(name)
    except KeyError as e:
        raise _fail(str(e.args[0])) from None
    rs = _store(store)
    root = path.expanduser()
    t0 = time.perf_counter()
    if not root.is_dir():
        raise _fail(f"{name}: {root} is not a directory{'' if root.exists() else ' (it does not exist)'}; "
                    f"pass the directory holding the {name} dataset")
    try:
        units = importer.units(root)
        importer.check_files(root, units)
    except (DatasetLayoutError, DataFileError, FileNotFoundError) as e:
        raise _fail(f"{e}\nNothing was stored.") from None
    written: dict[str, int] = {}
    offered: dict[str, int] = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[unit]}"), console=console) as progress:
        bar = progress.add_task(f"import {name}", total=len(units), unit="")

        def on_unit(unit: Path, results: list) -> None:  # noqa: ANN001
            for r in results:
                written[r.task] = written.get(r.task, 0) + r.written
                offered[r.task] = offered.get(r.task, 0) + r.offered
            progress.update(bar, advance=1, unit=unit.name)

        try:
            importer.run(root, rs, on_unit=on_unit)
        except (SchemaError, DatasetLayoutError, DataFileError) as e:
            notes = "\n".join(getattr(e, "__notes__", []))
            raise _fail(f"{e}\n{notes}\nNothing of that file was stored (records of files imported before it "
                        "are kept); fix the file and re-run (stored records are skipped).") from None
        except StoreError as e:
            raise _fail(str(e)) from None
    table = Table(title=f"{name} → {rs.root}  ({time.perf_counter() - t0:.1f} s)")
    for col in ("task", "rows read", "new records", "already stored"):
        table.add_column(col, justify="right" if col != "task" else "left")
    for task in offered:
        table.add_row(task, f"{offered[task]:,}", f"{written[task]:,}", f"{offered[task] - written[task]:,}")
    console.print(table)


@data_app.command("sources")
def data_sources() -> None:
    """List the datasets `perfcast data import` knows."""
    from perfcast.datasets.importers import REGISTRY

    table = Table("name", "what")
    for name, cls in sorted(REGISTRY.items()):
        table.add_row(name, (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
    console.print(table)


@data_app.command("ls")
def data_ls(
    store: StoreOpt = None,
    top: Annotated[int, typer.Option(min=0, help="Devices listed per source (0 = all); the rest are summed")] = 12,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Leave out damaged parts (with a warning)")] = False,
) -> None:
    """Records stored per task, source and device."""
    from perfcast.records.store import StoreError

    rs = _store(store)
    try:
        counts = rs.counts(on_bad="skip" if skip_bad else "raise")
    except StoreError as e:
        raise _fail(str(e)) from None
    if counts.empty:
        console.print(f"store {rs.root} is empty: try `perfcast data import NAME PATH` or `perfcast probe all`")
        return
    table = Table(title=f"record store {rs.root}")
    for col in ("task", "source", "device", "records"):
        table.add_column(col, justify="right" if col == "records" else "left")
    for task, g in counts.groupby("task", sort=True):
        for source, gs in g.groupby("source", sort=True):
            gs = gs.sort_values("records", ascending=False)
            shown = gs if top == 0 else gs.head(top)
            for row in shown.itertuples(index=False):
                table.add_row(task, source, str(row.device_name), f"{row.records:,}")
            if len(gs) > len(shown):
                rest = gs.iloc[len(shown):]
                table.add_row(task, source, f"[dim]… {len(rest)} more devices (--top 0 lists all)",
                              f"{int(rest['records'].sum()):,}")
        table.add_row(f"[bold]{task} total", f"{g['source'].nunique()} sources",
                      f"{g['device_name'].nunique()} devices", f"[bold]{int(g['records'].sum()):,}",
                      end_section=True)
    console.print(table)


@data_app.command("show")
def data_show(
    task: Annotated[str, typer.Argument(help="gemm, attention or cpu_bench")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Rows to show")] = 10,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="Comma-separated columns")] = None,
    source: Annotated[Optional[str], typer.Option(help="Only records from this source")] = None,
    store: StoreOpt = None,
) -> None:
    """Show stored records of one task: device, configuration and targets (or the --columns asked for)."""
    from perfcast.records.schema import TASKS
    from perfcast.records.schema import columns as schema_columns
    from perfcast.records.store import StoreError

    if task not in TASKS:
        raise _fail(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    rs = _store(store)
    try:
        df = rs.read(task, filters={"source": source} if source else None)
    except StoreError as e:
        raise _fail(str(e)) from None
    if df.empty:
        console.print(f"no {task} records in {rs.root}")
        return
    total = len(df)
    if columns:
        want = [c.strip() for c in columns.split(",") if c.strip()]
        missing = [c for c in want if c not in df.columns]
        if missing:
            raise _fail(f"unknown column(s) {missing} for task {task}")
        df = df[want]
    else:  # the columns that say what was measured: device, non-empty config and targets
        groups = {c.name: c.group for c in schema_columns(task).values()}
        wide = {"kernel", "compiler", "system"}  # long free text: ask for them with --columns
        keep = ["device_name"] + [c for g in ("config", "targets") for c in df.columns
                                  if groups.get(c) == g and c not in wide]
        df = df[keep].dropna(axis=1, how="all")
    console.print(_frame_table(df.head(limit), title=f"{task}: {total:,} records, first {min(limit, total)}"))


@data_app.command("check")
def data_check(store: StoreOpt = None) -> None:
    """Verify every part of the store against its checksum; name the damaged ones (exit 2 if any)."""
    rs = _store(store)
    found = rs.check()
    table = Table("task", "part", "status", "detail", title=f"record store {rs.uri}: {len(found)} parts")
    for st in found:
        if st.status != "ok":
            style = "red" if st.status == "bad" else "yellow"
            table.add_row(st.task, st.path.name, f"[{style}]{st.status}", st.detail or
                          "written before checksums: unverified (`perfcast data repair` seals it)")
    bad = [st for st in found if st.status == "bad"]
    if table.row_count:
        console.print(table)
    ok = sum(st.status == "ok" for st in found)
    console.print(f"{ok} part(s) verified, {len(found) - ok - len(bad)} legacy, {len(bad)} damaged")
    if bad:
        raise _fail(f"{len(bad)} damaged part(s) in {rs.uri}: run `perfcast data repair --store {rs.uri}` to move "
                    f"them to {rs.root / 'quarantine'} (nothing is deleted), then re-import or re-probe")


@data_app.command("repair")
def data_repair(store: StoreOpt = None) -> None:
    """Move damaged parts to <store>/quarantine/ (never deleted) and seal legacy parts with their checksum."""
    rs = _store(store)
    moved = rs.repair()
    for st, dest in moved:
        verb = "quarantined" if st.status == "bad" else "sealed"
        console.print(f"{verb}: {st.path} -> {dest}" + (f"  ({st.detail})" if st.detail else ""), highlight=False)
    n_bad = sum(st.status == "bad" for st, _ in moved)
    console.print(f"{n_bad} damaged part(s) quarantined, {len(moved) - n_bad} legacy part(s) sealed in {rs.uri}"
                  + ("; re-import or re-probe to restore the quarantined records" if n_bad else ""))


@data_app.command("schema")
def data_schema(task: Annotated[str, typer.Argument(help="gemm, attention or cpu_bench")]) -> None:
    """Print the record schema of a task: columns, dtypes, units, groups."""
    from perfcast.records.schema import TASKS, describe

    if task not in TASKS:
        raise _fail(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    table = Table("column", "dtype", "unit", "group", "meaning", title=f"{task} records")
    for row in describe(task):
        table.add_row(*row)
    console.print(table)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
