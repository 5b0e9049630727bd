"""Fit one configured model, judge it on the configured protocol, and record everything in MLflow.

The steps are separate functions (load records, split, fit-evaluate-log) so that tuning reuses exactly
the same data path and logging as a plain training run.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from perfcast.datasets.importers import get_importer
from perfcast.records.schema import EXTRA_PREFIX, columns
from perfcast.records.store import RecordStore, StoreError
from perfcast.eval.metrics import scores
from perfcast.eval.protocols import PROTOCOLS
from perfcast.features import feature_transformer
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.models.uncertainty.zero_shot import CrossFittedScores
from perfcast.models.registry import make_model
from perfcast.training import tracking
from perfcast.training.config import DataConfig, EvalConfig, TrainConfig

Progress = Callable[[str], None]
#: schema groups a model may read: what is known before the measurement is taken
INPUT_GROUPS = ("hardware", "config")


class TrainingDataError(ValueError):
    """The configured data selects no usable rows (says which filter, target or protocol emptied it)."""


@dataclass(frozen=True)
class Records:
    """The rows the config selects, with where they came from."""

    frame: pd.DataFrame
    #: local directory the rows came from: the imported copies' common parent, or the store
    source: str


@dataclass(frozen=True)
class Split:
    """The protocol's training and test records (protocols may derive columns or clip, so frames, not indices)."""

    train: pd.DataFrame
    test: pd.DataFrame
    #: rows the protocol kept but that have none of the targets measured, dropped from either side
    dropped_unmeasured: int = 0


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


def load_records(data: DataConfig, task: str, progress: Progress = no_progress) -> Records:
    """Import what the config lists, then read the ``task`` records that pass the filters."""
    known = columns(task)
    unknown = [c for c in data.filters if c not in known and not c.startswith(EXTRA_PREFIX)]
    if unknown:
        raise TrainingDataError(f"data.filters: column(s) {unknown} are not in the {task!r} record schema")
    with _store_for(data) as store:
        for i, spec in enumerate(data.imports):
            progress(f"importing {spec.dataset} from {spec.path}")
            try:
                get_importer(spec.dataset).run(spec.path, store)
            except (ValueError, StoreError) as e:  # layout, damaged file, schema: named, with the config key
                notes = "".join(f"\n{n}" for n in getattr(e, "__notes__", []))
                raise TrainingDataError(f"data.imports[{i}] ({spec.dataset}): {e}{notes}") from None
        progress(f"reading {task} records")
        try:
            frame = store.read(task, filters=dict(data.filters) or None)
        except StoreError as e:
            raise TrainingDataError(f"data.store: {e}") from None
        paths = [str(s.path) for s in data.imports]
        source = os.path.commonpath(paths) if paths else str(store.root)
    if frame.empty:
        where = f" after filters {dict(data.filters)}" if data.filters else ""
        raise TrainingDataError(f"no {task} records in {source}{where}")
    return Records(frame, source)


def split_records(records: pd.DataFrame, protocol: EvalConfig, seed: int, targets: list[str]) -> Split:
    """Train/test records under the named protocol; rows with none of ``targets`` measured are dropped after.

    Dropping after the split lets a protocol see the dataset as imported (GPPerf's clips over all rows).
    A split function taking ``seed`` gets the config's.
    """
    fn = PROTOCOLS[protocol.protocol]
    seeded = {"seed": seed} if "seed" in inspect.signature(fn).parameters else {}
    try:
        train, test = fn(records, **protocol.options, **seeded)
    except ValueError as err:  # the protocol's own message says what the data lacks
        raise TrainingDataError(f"protocol {protocol.protocol!r}: {err}") from None
    kept = [part[part[targets].notna().any(axis=1)].reset_index(drop=True) for part in (train, test)]
    for part, name in zip(kept, ("training", "test")):
        if part.empty:
            raise TrainingDataError(
                f"protocol {protocol.protocol!r} with options {protocol.options} leaves no {name} row with any "
                f"of {targets} measured ({len(records)} records in); loosen data.filters or change the options"
            )
    dropped = len(train) + len(test) - len(kept[0]) - len(kept[1])
    return Split(kept[0], kept[1], dropped)


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


def build_model(config: TrainConfig, params: dict[str, Any], seed: int | None = None) -> Pipeline:
    """The configured pipeline; ``seed`` (default: the config's) goes to every ``random_state`` the user left
    unset."""
    pipe = make_model(config.model.name, config.task, list(config.targets), params)
    if "random_state" not in params:
        state = config.seed if seed is None else seed
        pipe.set_params(**{k: state for k in pipe.get_params(deep=True) if k.endswith("random_state")})
    return pipe


def fit_model(config: TrainConfig, rows: pd.DataFrame, params: dict[str, Any] | None = None,
              seed: int | None = None) -> Pipeline:
    """The configured model fitted on the records ``rows`` (their model input, their targets), no intervals.

    With :func:`fit_conformal`, the one way a config's model is fitted: ``perfcast train``, the tuner's refit,
    the accuracy benchmark and the built-in models all come through here. ``params`` default to the config's."""
    params = dict(config.model.params) if params is None else params
    targets = list(config.targets)
    return build_model(config, params, seed).fit(model_input(rows, config.task), rows[targets].astype("float64"))


def fit_conformal(config: TrainConfig, rows: pd.DataFrame, params: dict[str, Any] | None = None,
                  seed: int | None = None, groups: Any = None) -> ConformalRegressor:
    """The configured model inside a :class:`ConformalRegressor` calibrated as ``config.intervals`` says, fitted
    on the records ``rows``. Calibration groups: ``groups``, else the publication dates for forward folds
    (the model's input does not carry them), else the devices (or configurations) of the rows."""
    params = dict(config.model.params) if params is None else params
    targets = list(config.targets)
    if groups is None and config.intervals.forward_years:
        groups = rows["published_at"]
    model = ConformalRegressor(build_model(config, params, seed), **config.intervals.options(),
                               random_state=config.seed if seed is None else seed)
    X = model_input(rows, config.task)
    model.fit(X, rows[targets].astype("float64"), noise=rows, groups=groups)
    rule = config.intervals.zero_shot
    if rule is not None:  # the K = 0 rule, re-drawn from the same cross-fitted rows, becomes part of the model
        scores = CrossFittedScores.of(model, X, rows[targets[0]].to_numpy(dtype="float64"),
                                      rows["device_id"].astype(str).to_numpy())
        model.calibration_ = scores.calibration((rule.width, rule.groups, rule.scale, rule.vendor_matched),
                                                config.intervals.level)
    return model


def predict_interval(model: ConformalRegressor, rows: pd.DataFrame, task: str
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, lo, hi) of the first target for the records ``rows``, in one pass of the model (its input
    taken as :func:`fit_conformal` took it, the rows' own noise columns setting the interval floor)."""
    out = model.predict_with_interval(model_input(rows, task), noise=rows)
    pred, lo, hi = (np.asarray(a, dtype="float64").reshape(len(rows), -1)[:, 0] for a in out)
    return pred, lo, hi


def log_config(config: TrainConfig, params: dict[str, Any]) -> None:
    """The config as flat params, with the model parameters actually used (tuned ones included)."""
    dumped = config.model_dump(mode="json", exclude={"tune", "model"})
    dumped["model"] = {"name": config.model.name, "params": params}
    tracking.log_params(dumped)
    mlflow.set_tags({"perfcast.task": config.task, "perfcast.protocol": config.eval.protocol,
                     "perfcast.model": config.model.name})


def fit_and_log(
    config: TrainConfig, split: Split, source: str, params: dict[str, Any], progress: Progress = no_progress
) -> TrainResult:
    """Fit on the training records, score the test records, and log lineage, metrics, plots and the model.

    Writes into the active MLflow run; both :func:`train` and the tuner's final refit call it.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("fit_and_log needs an active MLflow run")
    targets = list(config.targets)
    lineage = {"source": source, "name": config.task, "target": targets[0]}
    train_digest = tracking.log_dataset(split.train, context="training", **lineage)
    tracking.log_dataset(split.test, context="testing", **lineage)
    mlflow.log_params({"data.rows_train": len(split.train), "data.rows_test": len(split.test),
                       "data.rows_dropped_unmeasured": split.dropped_unmeasured})
    sources = pd.concat([split.train["source"], split.test["source"]]).dropna().astype(str).unique()
    mlflow.set_tag("perfcast.sources", ",".join(sorted(sources)))

    progress(f"fitting {config.model.name} on {len(split.train)} rows and calibrating its intervals")
    X_train, Y_train = model_input(split.train, config.task), split.train[targets].astype("float64")
    X_test, Y_test = model_input(split.test, config.task), split.test[targets].astype("float64")
    model = fit_conformal(config, split.train, params)
    pipe = model.estimator_
    progress(f"evaluating on {len(split.test)} test rows ({config.eval.protocol})")
    pred_test = pipe.predict(X_test)
    lo, hi = model.predict_interval(X_test, noise=split.test)
    metrics = scores(Y_test, pred_test, "test_", lo, hi) | scores(Y_train, pipe.predict(X_train), "train_")
    mlflow.log_metrics(metrics)
    mlflow.log_param("intervals.level", model.level)

    progress("logging plots and model")
    tracking.log_evaluation_plots(split.test, X_test, config.task, Y_test, pred_test, lo, hi, model.level,
                                  f"{config.name}: {config.eval.protocol} test, n={len(Y_test)}")
    tracking.log_feature_importances(pipe, targets)
    metadata = {
        "name": config.name, "model": {"name": config.model.name, "params": params}, "seed": config.seed,
        "protocol": {"name": config.eval.protocol, "options": dict(config.eval.options)}, "metrics": metrics,
        "data": {"source": source, "sources": sorted(sources), "rows_train": len(split.train),
                 "train_sha256": train_digest},
        "run_id": run.info.run_id,
    }
    info = tracking.log_model(model, X_train, config.registered_model_name, feature_transformer(config.task).required,
                              metadata)
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
    """Load, split, fit, evaluate and log one run; returns where it went and how it scored."""
    records = load_records(config.data, config.task, progress)
    split = split_records(records.frame, config.eval, config.seed, list(config.targets))
    tracking.start(tracking.tracking_uri(tracking_uri, config.tracking.uri), config.tracking.experiment)
    with mlflow.start_run(run_name=config.name):
        log_config(config, dict(config.model.params))
        return fit_and_log(config, split, records.source, dict(config.model.params), progress)
