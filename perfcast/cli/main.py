"""The ``perfcast`` command line: thin typer commands that call the packages and print with rich.

One module per command group (:mod:`~perfcast.cli.data`, :mod:`~perfcast.cli.probe`, :mod:`~perfcast.cli.train`,
:mod:`~perfcast.cli.bench`, :mod:`~perfcast.cli.predict`, :mod:`~perfcast.cli.adapt`), mounted here. Heavy
libraries are imported inside the commands so ``perfcast --help`` answers instantly.
"""

from __future__ import annotations

from typing import Annotated

import typer

from perfcast.cli.adapt import adapt_app
from perfcast.cli.bench import eval_app
from perfcast.cli.common import StoreOpt, console, open_store, parse_duration
from perfcast.cli.data import data_app
from perfcast.cli.predict import predict_app
from perfcast.cli.probe import probe_app
from perfcast.cli.train import train_app

app = typer.Typer(
    help="perfcast: predict how fast (and at what power) work runs on hardware, before anyone runs it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
# command groups mounted unnamed (their commands are top-level: ``perfcast probe``, not ``perfcast probe probe``)
for sub in (probe_app, train_app, eval_app, predict_app, adapt_app):
    app.add_typer(sub)
app.add_typer(data_app, name="data")


@app.command()
def quickstart(
    quick: Annotated[bool, typer.Option("--quick", "-q", help="A shorter probe plan (36 GEMMs instead of 60)")] = False,
    budget: Annotated[str, typer.Option(help="Time budget of the whole run, e.g. 5m: on a busy machine the "
                                              "adaptation plan's probing stops early to fit it")] = "5m",
    store: StoreOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library warnings and logs")] = False,
) -> None:
    """Built-in GPU predictions, then probe this machine, adapt the built-in model to it, log to MLflow, show next steps."""
    from perfcast.workflows.quickstart import run_quickstart
    from perfcast.workflows.quickstart_clock import PhaseClock

    clock = PhaseClock.since_process_start()
    res = run_quickstart(open_store(store), quick=quick, budget_s=parse_duration(budget), verbose=verbose,
                         console=console, clock=clock)
    console.print(f"\nquickstart took {res.elapsed_s:.0f} s (start-up included)", highlight=False)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
