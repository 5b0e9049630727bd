"""What every ``perfcast`` command module shares: the console, the ``--store`` option and error exits."""

from __future__ import annotations

import re
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
#: where a command whose stdout carries data (``perfcast predict``) reports
err_console = Console(stderr=True)

StoreOpt = Annotated[
    Optional[str],
    typer.Option("--store", "-s", help="Record store: a directory or a pyarrow filesystem URI (s3://…) "
                                       "[default: $PERFCAST_STORE or ~/.perfcast/store]"),
]


def open_store(path: str | None):  # noqa: ANN202
    """The record store at ``path``; a URI the filesystem layer cannot open is a named error (exit 2)."""
    from perfcast.records.store import RecordStore

    try:
        return RecordStore(path)
    except (OSError, ValueError) as e:
        raise fail(f"cannot open record store {path}: {e}") from None


def fail(msg: str, *, stderr: bool = False) -> typer.Exit:
    """Print ``msg`` as an error (on stderr when stdout carries data); the caller raises the returned exit (code
    2: bad input)."""
    (err_console if stderr else console).print(f"[bold red]error:[/] {msg}", highlight=False)
    return typer.Exit(code=2)


def frame_table(df, title: str | None = None) -> Table:  # noqa: ANN001
    """A DataFrame as a rich table (floats to 4 significant digits, missing values blank)."""
    table = Table(title=title, show_lines=False)
    for c in df.columns:
        table.add_column(str(c), overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*["" if isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    return table


def isna(v: object) -> bool:
    """Whether a table cell is missing (pandas' notion; False for values pandas cannot judge)."""
    try:
        import pandas as pd

        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def parse_duration(text: str, option: str = "--budget") -> float:
    """'90s', '10m', '1.5h' or plain seconds → seconds (a clear error naming ``option`` otherwise)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a positive duration: use e.g. 0.2s, 90s, 10m or 1.5h",
                                 param_hint=option)
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
