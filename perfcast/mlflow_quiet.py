"""Keep MLflow's chatter (warnings, INFO lines, artifact progress bars) out of perfcast's output.

Why: MLflow warns about things perfcast has decided on purpose (no type hints on a loader, integer columns
in a lineage record) and draws a progress bar for every artifact download; on a terminal they bury the
answer. Inside :func:`quiet_mlflow` they go to the ``perfcast.mlflow`` logger at DEBUG, where ``-v`` (a
DEBUG level and a handler on the ``perfcast`` logger) shows them.
No perfcast imports: the predictor, training and evaluation all use it (and so share the name a logged
model's bundle has, :data:`BUNDLE_ARTIFACT`, from here: training writes it, the predictor reads it).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr

log = logging.getLogger("perfcast.mlflow")
#: the bundle's name as a logged MLflow model's data (MLflow puts it at ``data/<name>`` in the model directory)
BUNDLE_ARTIFACT = "bundle"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
#: loggers that print on MLflow's behalf (alembic: the tracking database's schema migrations)
LOGGERS = ("mlflow", "alembic")


class _ToDebug(logging.Handler):
    """Re-emits MLflow's records on :data:`log` at DEBUG."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s: %s", record.name, record.getMessage())


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Within the block, MLflow's warnings, log records and lines printed to stderr ("Successfully registered
    model ...") go to the ``perfcast.mlflow`` logger (DEBUG) and artifact downloads draw no progress bar
    (unless ``$MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` says so)."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(lg.handlers, lg.propagate) for lg in loggers]
    bar = os.environ.get(PROGRESS_BAR_ENV)
    for lg in loggers:
        lg.handlers, lg.propagate = [_ToDebug()], False
    os.environ.setdefault(PROGRESS_BAR_ENV, "false")
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stderr(printed):
            warnings.simplefilter("default")
            yield
    finally:
        for line in printed.getvalue().splitlines():
            log.debug("stderr: %s", line)
        for lg, (handlers, propagate) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
        if bar is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)
    for w in caught:  # MLflow's go to the log; anyone else's (perfcast's own) are warned again as they were
        if f"{os.sep}mlflow{os.sep}" in w.filename:
            log.debug("%s: %s", w.category.__name__, w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
