"""The ``perfcast`` command line: one thin typer module per command group, mounted in :mod:`perfcast.cli.main`."""

from perfcast.cli.main import app, main

__all__ = ["app", "main"]
