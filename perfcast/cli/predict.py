"""``perfcast predict [MODEL]``: predictions with intervals and out-of-distribution flags from the command line.

    perfcast predict --set m=4096 --set n=4096 --set k=4096 --set dtype=bf16 --set device=h100_sxm   # built-in
    perfcast predict ./model --set m=4096 --set n=4096 --set k=4096 --set dtype=bf16 --set device=h100_sxm
    perfcast predict models:/gemm-runtime/3 --input shapes.csv --set device=l40s --format csv -o out.csv

``--set`` values apply to every row of ``--input`` (or make the one row predicted without it). Without a
model, perfcast's built-in model of the task (``--task``, or the task the input's keys name) answers. Output is
the input columns followed by the predictions. Mounted unnamed in :mod:`perfcast.cli`, so it is ``perfcast predict``.
"""

from __future__ import annotations

import csv
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, TextIO

import typer
from rich.console import Console
from rich.table import Table

from perfcast.cli.common import err_console, fail

predict_app = typer.Typer()
#: input file suffix -> pandas reader name
READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet"}


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """``["m=4096", "dtype=bf16"]`` -> ``{"m": "4096", "dtype": "bf16"}`` (the Predictor converts the types)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected COLUMN=VALUE, e.g. --set m=4096")
        out[key.strip()] = value.strip()
    return out


def read_input(path: Path):  # noqa: ANN201 (pandas DataFrame; pandas is imported on use)
    """The configurations in a CSV or Parquet file."""
    import pandas as pd

    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"--input {path}: unknown file type {path.suffix!r}; give a .csv or .parquet file")
    if not path.is_file():
        raise FileNotFoundError(f"--input {path}: no such file")
    frame = getattr(pd, reader)(path)
    if frame.empty:
        raise ValueError(f"--input {path}: the file has no rows")
    return frame


def _json_value(value: Any) -> Any:
    """A cell as JSON: a missing value is null, text that is a plain number (``--set m=4096``) a number."""
    from perfcast.records.parsing import decimal  # (imports NumPy: not at the command line's start-up)

    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, str) and (number := decimal(value)) is not None:
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
    return value


def _cell(value: Any) -> str:
    """A cell of the table: blank when missing, floats to 4 significant digits."""
    if value is None or value != value:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(rows: list[dict[str, Any]], fmt: Format, out: TextIO) -> None:
    """Write ``rows`` (Python values, one dict per row, the same keys) to ``out`` as a rich table, CSV, or JSON."""
    columns = list(rows[0])
    if fmt is Format.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None or v != v else v for v in row.values()] for row in rows])
    elif fmt is Format.json:
        out.write(json.dumps([{c: _json_value(v) for c, v in row.items()} for row in rows], indent=2) + "\n")
    else:
        table = Table(show_lines=False)
        for c in columns:
            table.add_column(str(c), overflow="fold", min_width=len(str(c)))
        for row in rows:
            table.add_row(*[_cell(v) for v in row.values()])
        Console(file=out, width=max(160, 14 * len(columns))).print(table)


def _with_inputs(given: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A row of output: the input columns (renamed ``<name>_input`` where a prediction column has the name), then
    the predictions."""
    return {**{f"{c}_input" if c in result else c: v for c, v in given.items()}, **result}


def _frame_rows(frame: Any, result: Any) -> list[dict[str, Any]]:  # (DataFrames; pandas is imported on use)
    """The rows of input and prediction frames as Python values (missing as None)."""
    inputs = frame.reset_index(drop=True).astype(object)
    outputs = result.reset_index(drop=True).astype(object)
    inputs, outputs = inputs.where(inputs.notna(), None), outputs.where(outputs.notna(), None)
    return [_with_inputs(g, r) for g, r in zip(inputs.to_dict("records"), outputs.to_dict("records"), strict=True)]


@predict_app.command()
def predict(
    model: Annotated[Optional[str], typer.Argument(
        help="Model directory, runs:/RUN_ID/model or models:/NAME/VERSION; omit it for the built-in model.")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Configurations: a .csv or .parquet file.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="COLUMN=VALUE for every row (repeat it), e.g. --set m=4096 --set device=h100_sxm.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    level: Annotated[Optional[float], typer.Option(help="Interval level, e.g. 0.8 [default: the model's].")] = None,
    task: Annotated[Optional[str], typer.Option(
        help="Built-in model to use without MODEL: gemm or attention [default: from the input's keys].")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(
        help="MLflow tracking URI for runs:/ and models:/ [default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db]")] = None,
) -> None:
    """Predict runtime/power with calibrated intervals and out-of-distribution flags."""
    from perfcast.predictor import Predictor

    try:
        values = parse_sets(set_ or [])
        if input is None and not values:
            raise ValueError("nothing to predict: give --input FILE and/or --set COLUMN=VALUE ...")
        frame = read_input(input).assign(**values) if input is not None else None
        if model is None:
            from perfcast.builtin import infer_task

            predictor = Predictor.builtin(task or infer_task(values if frame is None else frame.columns))
        elif task is not None:
            raise ValueError(f"--task chooses a built-in model; {model!r} is a model of its own: drop --task")
        else:
            if model.startswith(("runs:/", "models:/")):
                import mlflow

                from perfcast.training.tracking import tracking_uri as resolve_uri

                mlflow.set_tracking_uri(resolve_uri(tracking_uri))
            predictor = Predictor.load(model)
        # one configuration from --set is a dict request: answered without pandas (perfcast.lazy)
        rows = [_with_inputs(values, predictor.predict(values, level=level))] if frame is None else \
            _frame_rows(frame, predictor.predict(frame, level=level))
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is reported as one line, never a traceback
        raise fail(str(err) if isinstance(err, (ValueError, KeyError, FileNotFoundError, RuntimeError))
                   else f"{type(err).__name__}: {err}", stderr=True) from None
    if output is None:
        render(rows, fmt, sys.stdout)
    else:
        with output.open("w", encoding="utf-8", newline="") as out:
            render(rows, fmt, out)
        err_console.print(f"wrote {len(rows)} prediction(s) to {output}")
