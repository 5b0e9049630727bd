"""``perfcast data``: import public datasets into the record store and look at what it holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from perfcast.cli.common import StoreOpt, console, fail, frame_table, open_store

data_app = typer.Typer(help="Import public datasets into the record store and look at what it holds.",
                       no_args_is_help=True)


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
        raise fail(str(e.args[0])) from None
    rs = open_store(store)
    root = path.expanduser()
    t0 = time.perf_counter()
    if not root.is_dir():
        raise fail(f"{name}: {root} is not a directory{'' if root.exists() else ' (it does not exist)'}; "
                    f"pass the directory holding the {name} dataset")
    try:
        units = importer.units(root)
        importer.check_files(root, units)
    except (DatasetLayoutError, DataFileError, FileNotFoundError) as e:
        raise fail(f"{e}\nNothing was stored.") from None
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
            raise fail(f"{e}\n{notes}\nNothing of that file was stored (records of files imported before it "
                        "are kept); fix the file and re-run (stored records are skipped).") from None
        except StoreError as e:
            raise fail(str(e)) from None
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

    rs = open_store(store)
    try:
        counts = rs.counts(on_bad="skip" if skip_bad else "raise")
    except StoreError as e:
        raise fail(str(e)) from None
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
        raise fail(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    rs = open_store(store)
    try:
        df = rs.read(task, filters={"source": source} if source else None)
    except StoreError as e:
        raise fail(str(e)) from None
    if df.empty:
        console.print(f"no {task} records in {rs.root}")
        return
    total = len(df)
    if columns:
        want = [c.strip() for c in columns.split(",") if c.strip()]
        missing = [c for c in want if c not in df.columns]
        if missing:
            raise fail(f"unknown column(s) {missing} for task {task}")
        df = df[want]
    else:  # the columns that say what was measured: device, non-empty config and targets
        groups = {c.name: c.group for c in schema_columns(task).values()}
        wide = {"kernel", "compiler", "system"}  # long free text: ask for them with --columns
        keep = ["device_name"] + [c for g in ("config", "targets") for c in df.columns
                                  if groups.get(c) == g and c not in wide]
        df = df[keep].dropna(axis=1, how="all")
    console.print(frame_table(df.head(limit), title=f"{task}: {total:,} records, first {min(limit, total)}"))


@data_app.command("check")
def data_check(store: StoreOpt = None) -> None:
    """Verify every part of the store against its checksum; name the damaged ones (exit 2 if any)."""
    rs = open_store(store)
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
        raise fail(f"{len(bad)} damaged part(s) in {rs.uri}: run `perfcast data repair --store {rs.uri}` to move "
                    f"them to {rs.root / 'quarantine'} (nothing is deleted), then re-import or re-probe")


@data_app.command("repair")
def data_repair(store: StoreOpt = None) -> None:
    """Move damaged parts to <store>/quarantine/ (never deleted) and seal legacy parts with their checksum."""
    rs = open_store(store)
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
        raise fail(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    table = Table("column", "dtype", "unit", "group", "meaning", title=f"{task} records")
    for row in describe(task):
        table.add_row(*row)
    console.print(table)
