"""``perfcast predict [MODEL]``: predictions with intervals and out-of-distribution flags from the command line.

    perfcast predict --set m=4096 --set n=4096 --set k=4096 --set dtype=bf16 --set device=h100_sxm   # built-in
    perfcast predict ./model --set m=4096 --set n=4096 --set k=4096 --set dtype=bf16 --set device=h100_sxm
    perfcast predict models:/gemm-runtime/3 --input shapes.csv --set device=l40s --format csv -o out.csv

``--set`` values apply to every row of ``--input`` (or make the one row predicted without it). Without a
model, perfcast's built-in model of the task (``--task``, or the task the input's keys name) answers. Output is
the input columns followed by the predictions. Mounted unnamed in :mod:`perfcast.cli`, so it is ``perfcast predict``.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

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


def _numbers(frame):  # noqa: ANN001, ANN202 (DataFrame in and out)
    """Text columns whose every value is a finite number (``--set m=4096``) as numbers, so JSON says 4096."""
    import numpy as np
    import pandas as pd

    out = {}
    for c in frame.columns:
        if pd.api.types.is_string_dtype(frame[c]) or frame[c].dtype == object:
            num = pd.to_numeric(frame[c], errors="coerce")
            if num.notna().all() and np.isfinite(num).all():
                out[c] = num
    return frame.assign(**out) if out else frame


def render(frame, fmt: Format, out) -> None:  # noqa: ANN001 (DataFrame, text stream)
    """Write ``frame`` to ``out`` as a rich table, CSV, or JSON records."""
    if fmt is Format.csv:
        frame.to_csv(out, index=False)
    elif fmt is Format.json:
        out.write(_numbers(frame).to_json(orient="records", indent=2, double_precision=15) + "\n")
    else:
        table = Table(show_lines=False)
        for c in frame.columns:
            table.add_column(str(c), overflow="fold", min_width=len(str(c)))
        for row in frame.astype(object).itertuples(index=False):
            table.add_row(*["" if v is None or v != v else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
        Console(file=out, width=max(160, 14 * len(frame.columns))).print(table)


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
    import pandas as pd

    from perfcast.predictor import Predictor

    try:
        values = parse_sets(set_ or [])
        if input is None and not values:
            raise ValueError("nothing to predict: give --input FILE and/or --set COLUMN=VALUE ...")
        frame = read_input(input) if input is not None else pd.DataFrame([values])
        frame = frame.assign(**values) if input is not None and values else frame
        if model is None:
            from perfcast.builtin import infer_task

            predictor = Predictor.builtin(task or infer_task(frame.columns))
        elif task is not None:
            raise ValueError(f"--task chooses a built-in model; {model!r} is a model of its own: drop --task")
        else:
            if model.startswith(("runs:/", "models:/")):
                import mlflow

                from perfcast.training.tracking import tracking_uri as resolve_uri

                mlflow.set_tracking_uri(resolve_uri(tracking_uri))
            predictor = Predictor.load(model)
        result = predictor.predict(frame, level=level)
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is reported as one line, never a traceback
        raise fail(str(err) if isinstance(err, (ValueError, KeyError, FileNotFoundError, RuntimeError))
                   else f"{type(err).__name__}: {err}", stderr=True) from None
    given = frame.rename(columns={c: f"{c}_input" for c in result.columns if c in frame.columns})
    table = pd.concat([given.reset_index(drop=True), result.reset_index(drop=True)], axis=1)
    if output is None:
        render(table, fmt, sys.stdout)
    else:
        with output.open("w", encoding="utf-8", newline="") as out:
            render(table, fmt, out)
        err_console.print(f"wrote {len(table)} prediction(s) to {output}")
