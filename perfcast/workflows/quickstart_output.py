"""What ``perfcast quickstart`` prints besides its results: nothing foreign (library warnings, logging and
progress bars go to a log file), and next steps that work when pasted (unwrapped, unindented, also written to
a file). Kept apart from the steps themselves (:mod:`perfcast.workflows.quickstart`)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from perfcast.records.hardware_specs import ENV_VAR

#: the example shape of the printed next steps
EXAMPLE = {"m": 384, "n": 256, "k": 512, "dtype": "float32"}


# ============================================================================================ output hygiene
@contextlib.contextmanager
def quiet(log_path: Path, verbose: bool) -> Iterator[None]:
    """Route warnings, logging and what libraries print to stderr (MLflow, tqdm bars) into ``log_path``."""
    if verbose:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"))
    with log_path.open("a", encoding="utf-8") as log, warnings.catch_warnings(), contextlib.redirect_stderr(log):
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        own = [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)]
        own = [(lg, lg.handlers[:], lg.propagate) for lg in own if isinstance(lg, logging.Logger) and lg.handlers]
        for logger, _, _ in own:  # libraries that print through their own handlers
            logger.handlers[:] = []
            logger.propagate = True
        warnings.simplefilter("default")
        warnings.showwarning = lambda msg, cat, file, line, *_: log.write(
            f"{cat.__name__}: {msg} ({file}:{line})\n")
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        try:
            yield
        finally:
            root.handlers[:], root.level = saved[0], saved[1]
            for logger, handlers, propagate in own:
                logger.handlers[:], logger.propagate = handlers, propagate
            if saved[2] is None:
                os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
            else:
                os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = saved[2]


# ============================================================================================== next steps
def next_steps(tracking_uri: str, uri: str, specs_path: Path, device_id: str) -> tuple[list[str], list[str]]:
    """(shell commands, three Python lines) that find what quickstart made (the model ``uri`` in
    ``tracking_uri``) when pasted in this directory."""
    from perfcast.training.tracking import DEFAULT_TRACKING_URI

    sets = " ".join(f"--set {k}={v}" for k, v in {**EXAMPLE, "device": device_id}.items())
    via = "" if tracking_uri == DEFAULT_TRACKING_URI or os.environ.get("MLFLOW_TRACKING_URI") else \
        f" --tracking-uri {tracking_uri}"
    shell = [f"mlflow ui --backend-store-uri {tracking_uri}",
             f"{ENV_VAR}={specs_path} perfcast predict {uri}{via} {sets}",
             "perfcast predict --set m=4096 --set n=4096 --set k=4096 --set dtype=bf16 --set device=h100_sxm",
             "perfcast data ls"]
    config = {**EXAMPLE, "device": device_id}
    python = [f"import os; os.environ[{ENV_VAR!r}] = {str(specs_path)!r}",
              f"from perfcast import Predictor; p = Predictor.load({uri!r})",
              f"print(p.predict({config!r}))"]
    return shell, python


def print_next_steps(shell: list[str], python: list[str], path: Path, console: Console) -> None:
    """The commands, unwrapped and unindented (soft wrap: the terminal folds them, the text stays one line)."""
    path.write_text("# perfcast quickstart: next steps (run from this directory)\n" + "\n".join(shell)
                    + "\n\n# Python\n" + "\n".join(python) + "\n", encoding="utf-8")
    console.print(f"\nNext (run from this directory; also written to {path}):", highlight=False, soft_wrap=True)
    for line in shell:
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    console.print("\nPython:", highlight=False)
    for line in python:
        console.print(line, soft_wrap=True, highlight=False, markup=False)
