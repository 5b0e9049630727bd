"""Fit one configured model, judge it on the configured protocol, and record everything in MLflow.

The steps are separate functions (load records, split, fit-evaluate-log) so that tuning reuses exactly
the same data path and logging as a plain training run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from perfcast.datasets.importers import get_importer
from perfcast.datasets.schema import EXTRA_PREFIX, columns
from perfcast.datasets.store import RecordStore
from perfcast.eval.metrics import mape, median_ape, p90_ape, r2, spearman
from perfcast.features import feature_transformer
from perfcast.models.registry import make_model
from perfcast.training import tracking
from perfcast.training.config import DataConfig, EvalConfig, TrainConfig

Progress = Callable[[str], None]
#: schema groups a model may read: what is known before the measurement is taken
INPUT_GROUPS = ("hardware", "config")
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mape": mape, "median_ape": median_ape, "p90_ape": p90_ape, "r2": r2, "spearman": spearman,
}


class TrainingDataError(ValueError):
    """The configured data selects no usable rows (says which filter or target emptied it)."""


@dataclass(frozen=True)
class Records:
    """The rows a run trains and tests on, with where they came from."""

    frame: pd.DataFrame
    source: str
    dropped_unmeasured: int = 0


@dataclass(frozen=True)
class Split:
    """Positional row indices of the training and test parts."""

    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: where it is logged, its test metrics, and the registered model."""

    run_id: str
    metrics: dict[str, float]
    model_uri: str
    registered_model_name: str | None
    registered_version: int | None
    n_train: int
    n_test: int
    extra: dict[str, Any] = field(default_factory=dict)


def no_progress(_: str) -> None:
    """The default progress callback: say nothing (the CLI passes one that updates a spinner)."""


@contextmanager
def _store_for(data: DataConfig) -> Iterator[RecordStore]:
    """The configured store, or a temporary one when the config only lists imports."""
    if data.store is not None:
        yield RecordStore(data.store)
    elif data.imports:
        with tempfile.TemporaryDirectory(prefix="perfcast-train-") as tmp:
            yield RecordStore(tmp)
    else:
        yield RecordStore()


def load_records(data: DataConfig, task: str, targets: list[str], progress: Progress = no_progress) -> Records:
    """Import what the config lists, read ``task`` records through the filters, keep rows with a target."""
    known = columns(task)
    unknown = [c for c in data.filters if c not in known and not c.startswith(EXTRA_PREFIX)]
    if unknown:
        raise TrainingDataError(f"data.filters: column(s) {unknown} are not in the {task!r} record schema")
    with _store_for(data) as store:
        for spec in data.imports:
            progress(f"importing {spec.dataset} from {spec.path}")
            get_importer(spec.dataset).run(spec.path, store)
        progress(f"reading {task} records")
        frame = store.read(task, filters=dict(data.filters) or None)
        source = ", ".join(f"{s.dataset}:{s.path}" for s in data.imports) or str(store.root)
    if frame.empty:
        where = f" after filters {dict(data.filters)}" if data.filters else ""
        raise TrainingDataError(f"no {task} records in {source}{where}")
    # a row missing one target still teaches the others (models fit each target where it was measured)
    measured = frame[targets].notna().any(axis=1)
    if not measured.any():
        raise TrainingDataError(f"none of the {len(frame)} {task} records from {source} has any of {targets}")
    return Records(frame[measured].reset_index(drop=True), source, int((~measured).sum()))


def model_input(records: pd.DataFrame, task: str) -> pd.DataFrame:
    """The columns a model may see (the schema's hardware and config groups) in numpy-backed dtypes.

    Nullable integers and booleans become float (NaN where missing) and strings pandas' default ``str``,
    so the frame the pipeline is fitted on is the frame MLflow's signature enforcement hands it at serving.
    Dataset extras (``x_*``) are left out: they are run conditions or labels no feature reads, and a served
    model must not demand them.
    """
    schema = columns(task)
    keep = [c for c in records.columns if c in schema and schema[c].group in INPUT_GROUPS]
    out = {}
    for c in keep:
        s = records[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s):
            out[c] = s.astype("float64")
        elif pd.api.types.is_string_dtype(s) or s.dtype == object:
            out[c] = s.astype("str")
        else:
            out[c] = s
    return pd.DataFrame(out, index=records.index)


def split_records(records: pd.DataFrame, protocol: EvalConfig, seed: int) -> Split:
    """Train/test row positions under the named protocol (see :data:`PROTOCOLS`)."""
    train_idx, test_idx = PROTOCOLS[protocol.protocol](records, seed=seed, **protocol.options)
    train_idx, test_idx = np.asarray(train_idx, dtype=int), np.asarray(test_idx, dtype=int)
    if not len(train_idx) or not len(test_idx):
        raise TrainingDataError(
            f"protocol {protocol.protocol!r} with options {protocol.options} left {len(train_idx)} training and "
            f"{len(test_idx)} test rows out of {len(records)}; loosen the data filters or change the options"
        )
    return Split(train_idx, test_idx)


def build_model(config: TrainConfig, params: dict[str, Any]) -> Pipeline:
    """The configured pipeline; the config's seed goes to every ``random_state`` the user left unset."""
    pipe = make_model(config.model.name, config.task, list(config.targets), params)
    if "random_state" not in params:
        seeded = {k: config.seed for k in pipe.get_params(deep=True) if k.endswith("random_state")}
        pipe.set_params(**seeded)
    return pipe


def evaluate(measured: pd.DataFrame, predicted: np.ndarray, prefix: str) -> dict[str, float]:
    """``{prefix}{target}_{metric}`` for every target, each on the rows where that target was measured."""
    pred = np.asarray(predicted, dtype=float).reshape(len(measured), -1)
    out: dict[str, float] = {f"{prefix}n": float(len(measured))}
    for j, target in enumerate(measured.columns):
        y = measured[target].to_numpy(dtype=float)
        ok = ~np.isnan(y)
        out[f"{prefix}{target}_n"] = float(ok.sum())
        if ok.sum() < 2:
            continue
        for name, fn in METRICS.items():
            out[f"{prefix}{target}_{name}"] = float(fn(y[ok], pred[ok, j]))
    return out


def log_config(config: TrainConfig, params: dict[str, Any]) -> None:
    """The config as flat params, with the model parameters actually used (tuned ones included)."""
    dumped = config.model_dump(mode="json", exclude={"tune", "model"})
    dumped["model"] = {"name": config.model.name, "params": params}
    tracking.log_params(dumped)
    mlflow.set_tags({"perfcast.task": config.task, "perfcast.protocol": config.eval.protocol,
                     "perfcast.model": config.model.name})


def fit_and_log(
    config: TrainConfig, records: Records, split: Split, params: dict[str, Any], progress: Progress = no_progress
) -> TrainResult:
    """Fit on the training rows, score the test rows, and log lineage, metrics, plots and the model.

    Writes into the active MLflow run; both :func:`train` and the tuner's final refit call it.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("fit_and_log needs an active MLflow run")
    frame, targets = records.frame, list(config.targets)
    X, Y = model_input(frame, config.task), frame[targets].astype("float64")
    lineage = {"source": records.source, "name": config.task, "target": targets[0]}
    tracking.log_dataset(frame.iloc[split.train], context="training", **lineage)
    tracking.log_dataset(frame.iloc[split.test], context="testing", **lineage)
    mlflow.log_params({"data.rows_train": len(split.train), "data.rows_test": len(split.test),
                       "data.rows_dropped_unmeasured": records.dropped_unmeasured})
    mlflow.set_tag("perfcast.sources", ",".join(sorted(frame["source"].dropna().astype(str).unique())))

    progress(f"fitting {config.model.name} on {len(split.train)} rows")
    X_train, Y_train = X.iloc[split.train], Y.iloc[split.train]
    pipe = build_model(config, params).fit(X_train, Y_train)
    progress(f"evaluating on {len(split.test)} test rows ({config.eval.protocol})")
    pred_test = pipe.predict(X.iloc[split.test])
    metrics = evaluate(Y.iloc[split.test], pred_test, "test_") | evaluate(Y_train, pipe.predict(X_train), "train_")
    mlflow.log_metrics(metrics)

    progress("logging plots and model")
    title = f"{config.name}: {config.eval.protocol} test, n={len(split.test)}"
    tracking.log_pred_vs_measured(Y.iloc[split.test], pred_test, title)
    tracking.log_feature_importances(pipe, targets)
    info = tracking.log_model(pipe, X_train, config.registered_model_name, feature_transformer(config.task).required)
    version = info.registered_model_version
    return TrainResult(
        run_id=run.info.run_id,
        metrics=metrics,
        model_uri=info.model_uri,
        registered_model_name=config.registered_model_name,
        registered_version=int(version) if version is not None else None,
        n_train=len(split.train),
        n_test=len(split.test),
    )


def train(config: TrainConfig, *, tracking_uri: str | None = None, progress: Progress = no_progress) -> TrainResult:
    """Load, split, fit, evaluate and log one run (see the module docstring); returns where it went."""
    records = load_records(config.data, config.task, list(config.targets), progress)
    split = split_records(records.frame, config.eval, config.seed)
    tracking.start(tracking.tracking_uri(tracking_uri, config.tracking.uri), config.tracking.experiment)
    with mlflow.start_run(run_name=config.name):
        log_config(config, dict(config.model.params))
        return fit_and_log(config, records, split, dict(config.model.params), progress)
