"""``perfcast adapt``: the command line of :mod:`perfcast.workflows.adapt`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table


adapt_app = typer.Typer()
console = Console()


@adapt_app.command("adapt")
def adapt(
    model: Annotated[str, typer.Argument(help="Model to adapt: builtin:gemm or builtin:attention (the shipped "
                                              "models), a directory, runs:/RUN_ID/model or models:/NAME/N")],
    store: Annotated[Path, typer.Option("--store", "-s", help="Record store holding the device's measurements")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New directory for the adapted model")],
    device: Annotated[Optional[str], typer.Option(help="The device to adapt to (when the store holds several)")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI: log and register the result")] = None,
    registered_name: Annotated[Optional[str], typer.Option(help="Register the adapted model under this name")] = None,
    donors: Annotated[Optional[Path], typer.Option(help="A store with other devices' measurements of the same task "
                                                        "(every device in it, nearest by spec sheet first): starting "
                                                        "point and donor mix, kept if they cross-validate better")] = None,
    donor_device: Annotated[Optional[str], typer.Option(help="Use only this device of --donors")] = None,
    setting: Annotated[str, typer.Option(help="fast: the adapted model predicts about as fast as its base; "
                                              "accurate: the accuracy benchmark's choice (smooth shape term and "
                                              "kriging; fewer trees on fewer than 64 GEMM rows), a few times "
                                              "slower to predict")] = "fast",
) -> None:
    """Adapt a trained model to a new device from its measured records (level, shape, intervals)."""
    if not store.is_dir():
        console.print(f"[bold red]error:[/] no record store at {store}: measure the device first "
                      f"(`perfcast probe gemm --plan adapt --store {store}`)")
        raise typer.Exit(code=2)
    from perfcast.models.persistence.adapted import SETTINGS

    if setting not in SETTINGS:
        console.print(f"[bold red]error:[/] --setting {setting!r} is not one of {', '.join(SETTINGS)}")
        raise typer.Exit(code=2)
    if out.exists() and any(out.iterdir()):
        console.print(f"[bold red]error:[/] {out} exists and is not empty; choose a new --out directory")
        raise typer.Exit(code=2)
    from perfcast.records.hardware_specs import ENV_VAR
    from perfcast.records.store import RecordStore
    from perfcast.workflows.adapt import (AdaptationError, adaptation_records, adapt_from_store, donor_records,
                                          load_base)

    try:
        donor_rows = None
        if donors is not None:
            target = load_base(model)
            near = adaptation_records(RecordStore(store), target.task, target.targets[0], device)[1]
            donor_rows = donor_records(RecordStore(donors), target.task, target.targets[0], donor_device, near)
        res = adapt_from_store(model, store, out, device=device, tracking_uri=tracking_uri,
                               registered_name=registered_name, donors=donor_rows, setting=setting)
    except AdaptationError as err:
        console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(code=2) from None
    table = Table(title=f"adapted to {res.device} from {res.rows} measurements ({res.report['seconds']:.1f} s)")
    table.add_column("correction")
    table.add_column("cross-validated mean APE on the rows", justify="right")
    chosen = res.report["chosen"]
    # a `stack W` row is the chosen correction mixed with a model of the rows alone at weight W: kept on top of it
    weight = res.report.get("k_rows_model_weight") or 0.0
    stacked = f"stack {weight:g}" if weight else None
    for mode, err in res.report["cv_mean_ape"].items():
        mark = " (chosen)" if mode == chosen else f" (chosen, on top of {chosen})" if mode == stacked else ""
        table.add_row(mode + mark, f"{100 * err:.2f}%")
    console.print(table)
    console.print(f"adapted model: {res.path} (starts from the {res.report['starts_from']})")
    if res.specs_path is not None:
        console.print(f"this device's measured spec sheet: {res.specs_path} (set {ENV_VAR}={res.specs_path} "
                      f"to predict with the model)")
    if res.run_id:
        console.print(f"MLflow run {res.run_id}" + (f"; registered version {res.registered_version}"
                                                    if res.registered_version else ""))
