"""``perfcast train CONFIG.toml [--tune N [--workers W]]``: thin command over :func:`train` / :func:`tune`, rich output.

Mount with ``app.add_typer(train_app)`` (no ``name=``), which adds the ``train`` command itself; a named
sub-app would make it ``perfcast train train CONFIG``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

train_app = typer.Typer(add_completion=False)
console = Console()
#: metric suffix -> column header (APEs are shown in percent)
_COLUMNS = {"n": "n", "mape": "MAPE %", "median_ape": "MdAPE %", "p90_ape": "P90 APE %", "r2": "R²",
            "r2_log": "R² log", "spearman": "Spearman"}
_PERCENT = {"mape", "median_ape", "p90_ape"}


def results_table(metrics: dict[str, float], targets: list[str], title: str) -> Table:
    """Test metrics as one row per target (APEs in percent; — where a metric does not apply)."""
    table = Table(title=title)
    table.add_column("target", no_wrap=True)
    for header in _COLUMNS.values():
        table.add_column(header, justify="right")
    for target in targets:
        cells = []
        for c in _COLUMNS:
            v = metrics.get(f"test_{target}_{c}")
            cells.append("—" if v is None else f"{v:.0f}" if c == "n" else f"{100 * v:.2f}" if c in _PERCENT
                         else f"{v:.3f}")
        table.add_row(target, *cells)
    return table


@train_app.command("train")
def train_command(
    config: Annotated[Path, typer.Argument(help="training config (TOML); see configs/", exists=True, dir_okay=False)],
    tune_trials: Annotated[
        int | None, typer.Option("--tune", min=1, help="run N Optuna trials, then refit and register the best")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="with --tune: run the trials in W parallel processes on one study "
                          "(the same command on other machines joins it)")
    ] = 1,
    storage: Annotated[
        str | None, typer.Option(help="Optuna study database URL (default: the config's, else a postgresql:// tracking "
                                 "database, else sqlite:///optuna.db); a PostgreSQL study lives in its schema 'optuna'")
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the config's, else "
                     "sqlite:///mlflow.db)"),
    ] = None,
) -> None:
    """Fit the configured model, evaluate it on its protocol, and log and register it in MLflow."""
    from perfcast.training.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as err:
        console.print(f"[red]invalid config[/red]\n{err}", highlight=False)
        raise typer.Exit(2) from None
    if workers > 1 and tune_trials is None:
        console.print("[red]--workers runs tuning workers: give --tune N as well[/red]")
        raise typer.Exit(2)
    with console.status(f"[bold]{cfg.name}[/bold]: starting", spinner="dots") as status:
        def progress(msg: str) -> None:
            status.update(f"[bold]{cfg.name}[/bold]: {msg}")
            if msg.startswith("trial "):
                console.log(msg)

        from perfcast.training.train import TrainingDataError

        try:
            if tune_trials is None:
                from perfcast.training.train import train

                result = train(cfg, tracking_uri=tracking_uri, progress=progress)
            else:
                import optuna

                from perfcast.training.tune import tune

                optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress lines below say the same
                tuned = tune(cfg, tune_trials, storage, tracking_uri=tracking_uri, workers=workers, progress=progress)
                result = tuned.final
        except TrainingDataError as err:
            status.stop()
            console.print(f"[red]no training data[/red] ({config})\n{err}", highlight=False)
            raise typer.Exit(2) from None
    if tune_trials is not None:
        console.print(
            f"study [bold]{tuned.study_name}[/bold] ({tuned.storage}): {tuned.n_trials} trials, "
            f"{tuned.n_complete} complete, {tuned.n_pruned} pruned; best validation "
            f"{cfg.targets[0]} MAPE {100 * tuned.best_value:.2f}% with {tuned.best_params}"
        )
    console.print(results_table(result.metrics, list(cfg.targets), f"{cfg.name}: {cfg.eval.protocol} test split "
                                                f"({result.n_train} train / {result.n_test} test rows)"))
    console.print(f"run [bold]{result.run_id}[/bold]  model {result.model_uri}")
    if result.registered_version is not None:
        console.print(f"registered [bold]models:/{result.registered_model_name}/{result.registered_version}[/bold]")
