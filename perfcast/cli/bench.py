"""``perfcast eval MODEL --protocol NAME``: thin command over :func:`evaluate_model` / :func:`log_report`.

Mount with ``app.add_typer(eval_app)`` (no ``name=``), which adds the ``eval`` command itself; a named
sub-app would make it ``perfcast eval eval MODEL``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

eval_app = typer.Typer(add_completion=False)
console = Console()
DEFAULT_OUT = Path("eval-reports")


def _pairs(values: list[str], what: str, example: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` strings as pairs; a clear error for one without ``=``."""
    out = []
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"{v!r} is not {what} (expected e.g. {example})")
        out.append((key.strip(), value.strip()))
    return out


def _option_value(text: str) -> Any:
    """An option value: JSON where it parses (0.2, 3, true, ["a", "b"]), else the text itself (2023-01-01)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


@eval_app.command("eval")
def eval_command(
    model: Annotated[str, typer.Argument(help="MLflow model URI (models:/NAME/VERSION, runs:/ID/model), or a "
                                              "perfcast or MLflow model directory")],
    protocol: Annotated[str, typer.Option("--protocol", "-p", help="evaluation protocol (random, unseen-shape, "
                                          "unseen-hardware, future, gpperf-paper, neusight-ood, ncpp-paper)")],
    data: Annotated[list[str] | None, typer.Option(
        "--data", help="DATASET=PATH: import a public dataset copy first (repeatable); without it the store is read",
    )] = None,
    store: Annotated[Path | None, typer.Option(
        "--store", "-s", help="record store to read (and import into) [default: a temporary one with --data, "
                              "else $PERFCAST_STORE or ~/.perfcast/store]")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="KEY=VALUE protocol option, VALUE as JSON where it parses (repeatable), "
                               "e.g. test_size=0.3 or 'test_devices=[\"a100_pcie\"]'")] = None,
    seed: Annotated[int, typer.Option(min=0, help="seed of the protocol's split")] = 0,
    refit: Annotated[bool, typer.Option(help="fit a clone of the model on the protocol's training rows "
                                             "(--no-refit scores the model as it was fitted)")] = True,
    task: Annotated[str | None, typer.Option(help="task, if the model does not say")] = None,
    target: Annotated[list[str] | None, typer.Option(help="target(s) to score [default: all the model predicts]")
                      ] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help=f"report directory [default: {DEFAULT_OUT}/PROTOCOL_MODEL]")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the evaluation run")] = "perfcast",
) -> None:
    """Judge MODEL on a named protocol: metrics, breakdowns and plots in a Markdown report, logged to MLflow."""
    imports = _pairs(data or [], "DATASET=PATH", "gpperf-ada-matmul=../shared/datasets/gpperf-ada-matmul")
    options = {k: _option_value(v) for k, v in _pairs(option or [], "KEY=VALUE", "test_size=0.3")}
    out_dir = out or DEFAULT_OUT / f"{_slug(protocol)}_{_slug(model)}"

    import mlflow

    from perfcast.experiments.report import evaluate_model, load_model, log_report, model_task_targets
    from perfcast.training import tracking
    from perfcast.training.config import DataConfig
    from perfcast.training.train import load_records

    uri = tracking.tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)  # registry and run URIs resolve against it
    with console.status(f"[bold]{model}[/bold]: starting", spinner="dots") as status:
        def progress(msg: str) -> None:
            status.update(f"[bold]{model}[/bold] on [bold]{protocol}[/bold]: {msg}")

        try:
            progress("loading the model")
            fitted = load_model(model)
            if task is None or not target:
                known_task, known_targets = model_task_targets(fitted)
                task, target = task or known_task, target or known_targets
            config = DataConfig(store=store, imports=[{"dataset": d, "path": p} for d, p in imports])
            records = load_records(config, task, progress)
            report = evaluate_model(fitted, records.frame, protocol, seed=seed, options=options, refit=refit,
                                    task=task, targets=target, name=model, progress=progress)
            progress("writing the report and logging it to MLflow")
            run_id = log_report(report, out_dir, tracking_uri=uri, experiment=experiment)
        except ValueError as err:  # bad model, data, protocol or option: the message says what to change
            console.print(f"[bold red]error:[/] {err}", highlight=False)
            raise typer.Exit(2) from None

    folds = f", pooled over {len(report.folds)} folds" if len(report.folds) > 1 else ""
    console.print(f"[bold]{model}[/bold] on [bold]{protocol}[/bold] (seed {seed}): "
                  f"n = {report.n_test} test rows{folds}", highlight=False)
    frame = report.summary_frame()
    table = Table()
    for c in frame.columns:
        table.add_column(c, justify="left" if c == "target" else "right", no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(*map(str, row))
    console.print(table)
    if report.notes:  # a cross-validated protocol has one note per fold: the report lists them all
        more = f" (and {len(report.notes) - 1} more in the report)" if len(report.notes) > 1 else ""
        console.print(f"[dim]{report.notes[0]}{more}[/dim]", highlight=False)
    console.print(f"report [bold]{out_dir / 'report.md'}[/bold]  run [bold]{run_id}[/bold] ({uri})", highlight=False)
