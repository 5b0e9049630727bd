"""MLflow helpers: where runs go, and how a training run's lineage, metrics, plots and model are recorded.

The ``log_*`` helpers write into the *active* MLflow run, so ``train`` and ``tune`` log the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")  # plots are files in a run, never windows (headless CI, remote workers)

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from sklearn.pipeline import Pipeline

from perfcast._version import __version__
from perfcast.records.hardware_specs import catalog
from perfcast.records.schema import columns
from perfcast.eval import plots
from perfcast.features import feature_transformer
from perfcast.features.hardware import DEVICE_ALIAS
from perfcast.mlflow_quiet import BUNDLE_ARTIFACT, quiet_mlflow
from perfcast.models.outputs import answer_columns
from perfcast.models.persistence.bundle import PerfcastModel, save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_NAME_IN_RUN = "model"
#: the installed module MLflow imports to load a perfcast model (the logged model holds data only)
LOADER_MODULE = "perfcast.mlflow_model"
#: the feature column (log10) that measures a record's work, and its unit, per task
SIZE_FEATURES: dict[str, tuple[str, str]] = {
    "gemm": ("log10_flops", "FLOP"),
    "attention": ("log10_flops", "FLOP"),
    "cpu_bench": ("log10_working_set_bytes", "B"),
}
#: record columns a run's errors and interval coverage are broken down by (when they hold 2-12 values)
GROUP_COLUMNS = ("dtype", "device_id", "benchmark")
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def tracking_uri(override: str | None = None, configured: str | None = None) -> str:
    """Where runs go: CLI ``override``, else ``$MLFLOW_TRACKING_URI``, else the config's, else SQLite in the CWD."""
    return override or os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_TRACKING_URI


def artifact_location(uri: str, experiment: str) -> str | None:
    """For a SQLite store, artifacts go beside the database file; otherwise the server decides (None).

    MLflow's default for a SQLite store is ``./mlruns`` in whatever directory the run was started from,
    which scatters one store's artifacts over every working directory that ever trained into it.
    """
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlruns" / quote(experiment, safe="")).as_uri()


def start(uri: str, experiment: str) -> str:
    """Point MLflow at ``uri`` and ``experiment`` (created if new); returns the experiment id."""
    mlflow.set_tracking_uri(uri)
    with quiet_mlflow():  # a new SQLite store prints its schema migrations
        if mlflow.get_experiment_by_name(experiment) is None:
            try:
                mlflow.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
            except MlflowException as err:  # another worker created it first
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        return mlflow.set_experiment(experiment).experiment_id


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` with JSON-encoded leaves (how MLflow params are searched)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:_MAX_PARAM_LEN]
    return out


def log_params(params: Mapping[str, Any]) -> None:
    """Log a nested mapping as flat dotted params."""
    mlflow.log_params(flatten(params))


def content_hash(records: pd.DataFrame) -> str:
    """Order-independent content hash of a record set: SHA-256 over its sorted ``record_id``s.

    ``record_id`` is already a content hash of each row, so two runs that read the same records get the
    same digest however the rows were ordered or filtered in; frames without it hash every cell.
    """
    if "record_id" in records.columns:
        ids = np.sort(records["record_id"].astype(str).to_numpy())
        payload = "\n".join(ids).encode()
    else:
        hashed = pd.util.hash_pandas_object(records, index=False).to_numpy()
        payload = np.sort(hashed).tobytes()
    return hashlib.sha256(payload).hexdigest()


def log_dataset(records: pd.DataFrame, *, source: str, name: str, context: str, target: str) -> str:
    """Record one split as a run input (source, rows, schema, content hash); returns the hash."""
    digest = content_hash(records)
    # MLflow reads tz-aware columns through Series.values, which pandas deprecates: hand it UTC wall times
    zoned = [c for c in records.columns if isinstance(records[c].dtype, pd.DatetimeTZDtype)]
    frame = records.assign(**{c: records[c].dt.tz_convert(None) for c in zoned}) if zoned else records
    with quiet_mlflow():  # hints about integer columns and ambiguous local sources do not apply to a lineage record
        ds = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36], targets=target)
        mlflow.log_input(ds, context=context, tags={"content_sha256": digest, "rows": str(len(records))})
    return digest


def _unwrap(est: Any) -> list[Any]:
    """The fitted estimators that carry importances (one per target when wrapped per target, one per member
    of an ensemble)."""
    if isinstance(est, Pipeline):
        return _unwrap(est[-1])
    if hasattr(est, "feature_importances_"):
        return [est]
    if hasattr(est, "regressor_"):  # TransformedTargetRegressor
        return _unwrap(est.regressor_)
    if hasattr(est, "estimators_"):  # one estimator per target, or an ensemble's members
        return [inner for e in est.estimators_ for inner in _unwrap(e)]
    if hasattr(est, "estimator_"):  # a wrapper fitting one inner model (the hybrid's efficiency model)
        return _unwrap(est.estimator_)
    if hasattr(est, "transfer_"):  # the sibling copy: its model is the transfer it falls back on
        return _unwrap(est.transfer_)
    return [est]


def _pipeline_names(pipeline: Any) -> list[str]:
    """Names of the features the pipeline's last step is given ([] when its steps cannot say)."""
    if isinstance(pipeline, Pipeline) and len(pipeline) > 1:
        try:
            return [str(x) for x in pipeline[:-1].get_feature_names_out()]
        except (AttributeError, ValueError, TypeError):
            pass
    return []


def _importances(est: Any, pipeline: Any) -> pd.Series | None:
    """One estimator's importances by the names of the columns *it* was fitted on (a model variant may see
    only some of the pipeline's features); None if it has none."""
    values = getattr(est, "feature_importances_", None)
    if values is None:
        return None
    values = np.asarray(values, dtype=float)
    names = getattr(est, "feature_names_in_", None)
    if names is None or len(names) != len(values):
        names = _pipeline_names(pipeline)
    if len(names) != len(values):
        names = [f"feature_{i}" for i in range(len(values))]
    return pd.Series(values, index=[str(x) for x in names])


def feature_importances(pipeline: Any, targets: list[str]) -> pd.DataFrame | None:
    """Importance of each feature (rows) per target or per estimator (columns), or None if the estimator
    exposes none. Estimators fitted on fewer columns than the pipeline makes (an ensemble's variants) score
    0 on the columns they never saw, so every column holds the pipeline's full feature set."""
    per = [_importances(e, pipeline) for e in _unwrap(pipeline)]
    if not per or any(v is None for v in per):
        return None
    cols = targets if len(per) == len(targets) else [f"estimator_{i}" for i in range(len(per))]
    full = list(dict.fromkeys([*_pipeline_names(pipeline), *(n for v in per for n in v.index)]))
    df = pd.DataFrame({c: v.reindex(full, fill_value=0.0) for c, v in zip(cols, per)})
    df.index.name = "feature"
    return df.sort_values(cols[0], ascending=False)


def log_feature_importances(pipeline: Any, targets: list[str], top: int = 30) -> pd.DataFrame | None:
    """Log importances as ``feature_importances.csv`` and a bar chart of the ``top`` features."""
    imp = feature_importances(pipeline, targets)
    if imp is None:
        return None
    mlflow.log_text(imp.to_csv(), "feature_importances.csv")
    shown = imp.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(shown) + 1.5))
    shown.plot.barh(ax=ax, width=0.8)
    ax.set_xlabel("importance")
    ax.set_title(f"feature importances (top {len(shown)})")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/feature_importances.png")
    plt.close(fig)
    return imp


def work_size(X: pd.DataFrame, task: str) -> tuple[pd.Series, str] | None:
    """Each row's work (FLOPs for kernels, working-set bytes for CPU benchmarks) as the task's feature
    transformer computes it from model input ``X``, with its unit; None when no row has one."""
    if task not in SIZE_FEATURES:
        return None
    column, unit = SIZE_FEATURES[task]
    size = 10 ** feature_transformer(task).fit(X).transform(X)[column]
    return (size, unit) if size.notna().any() else None


def log_evaluation_plots(test: pd.DataFrame, X_test: pd.DataFrame, task: str, measured: pd.DataFrame,
                         predicted: np.ndarray, lo: np.ndarray, hi: np.ndarray, level: float, title: str
                         ) -> list[str]:
    """Per target: predicted vs measured, error by size and by dtype/device, and interval coverage per size
    bucket and group (:func:`perfcast.eval.plots.evaluation_figures`) under ``plots/``; returns the paths."""
    shape = (len(measured), -1)
    pred, lo, hi = (np.asarray(a, dtype=float).reshape(shape) for a in (predicted, lo, hi))
    sized = work_size(X_test, task)
    groups = {c: test[c].to_numpy() for c in GROUP_COLUMNS if c in test.columns}
    paths = []
    for j, target in enumerate(measured.columns):
        figs = plots.evaluation_figures(
            measured[target].to_numpy(dtype=float), pred[:, j], target=target, title=title, lo=lo[:, j],
            hi=hi[:, j], level=level, size=None if sized is None else sized[0].to_numpy(),
            size_unit="" if sized is None else sized[1], groups=groups)
        for name, fig in figs.items():
            mlflow.log_figure(fig, f"plots/{name}")
            paths.append(f"plots/{name}")
    return paths


def serving_signature(X: pd.DataFrame, task: str, answer: Iterable[str], required: Iterable[str],
                      level: float | None = None) -> ModelSignature:
    """What a served model is sent and answers, as a user writes it: the configuration columns training saw,
    the device (``device``, ``device_id`` or ``device_name``) for a GPU task, and the hardware columns only
    when the training devices are not all on a spec sheet (a probed CPU: its hardware is the input); out
    come each target with its interval, ``in_distribution`` and ``ood_reason`` (``answer``: those column names,
    :func:`answer_columns`).

    Only the ``required`` columns are required. A column is a double where the model input holds numbers
    (flags are 1.0 / 0.0 there; MLflow casts a JSON integer or a CSV field to a double, and a typed schema is
    what lets it parse CSV at all), else a string the Predictor parses, naming the column of a bad value.
    ``level`` adds an inference parameter for the interval level.
    """
    need, schema = set(required), columns(task)
    wanted = [c for c in X.columns if schema[c].group == "config"]
    if "device_id" in X.columns or "device_name" in X.columns:
        ids = X["device_id"] if "device_id" in X.columns else pd.Series(dtype=str)
        on_sheet = ids.isin(list(catalog().specs)).all() and not ids.empty
        wanted += [DEVICE_ALIAS, "device_id", "device_name"] + ([] if on_sheet else [
            c for c in X.columns if schema[c].group == "hardware" and c not in ("device_id", "device_name")])
    inputs = Schema([
        ColSpec(DataType.double if c in X.columns and pd.api.types.is_numeric_dtype(X[c]) else DataType.string, c,
                required=c in need)
        for c in dict.fromkeys(wanted)
    ])
    outputs = Schema([
        *(ColSpec(DataType.double, c) for c in answer if c not in ("in_distribution", "ood_reason")),
        ColSpec(DataType.boolean, "in_distribution"),
        ColSpec(DataType.string, "ood_reason", required=False),
    ])
    params = None if level is None else ParamSchema([ParamSpec("level", DataType.double, float(level))])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def serving_example(X: pd.DataFrame, signature: ModelSignature, n: int = 5) -> pd.DataFrame:
    """The first ``n`` training rows as a user sends them: the signature's columns, the device as ``device``."""
    names = [c for c in signature.inputs.input_names() if c in X.columns or (c == DEVICE_ALIAS and "device_id" in X)]
    head = X.head(n).rename(columns={"device_id": DEVICE_ALIAS}) if DEVICE_ALIAS in names else X.head(n)
    head = head[[c for c in names if c in head.columns]]
    doubles = [s.name for s in signature.inputs.inputs if s.type == DataType.double and s.name in head.columns]
    return head.astype({c: "float64" for c in doubles})  # nullable Int64 (a store's sizes) as the schema's double


def log_model(model: ConformalRegressor, X: pd.DataFrame, registered_model_name: str | None, required: Iterable[str],
              metadata: dict[str, Any] | None = None) -> ModelInfo:
    """Log a fitted, calibrated model as a perfcast bundle served by MLflow's pyfunc, registering it by name.

    The bundle (see :mod:`perfcast.models.persistence.bundle`) is the pyfunc's data and its loader is the installed
    :mod:`perfcast.mlflow_model`: nothing logged is a pickle or code, so loading it executes nothing from the
    model directory. The signature and input example are what a user sends and gets back.
    """
    if not (isinstance(model, ConformalRegressor) and hasattr(model, "calibration_")):
        raise TypeError(f"log_model takes a fitted ConformalRegressor (every perfcast model carries calibrated "
                        f"intervals), got {type(model).__name__}; fit ConformalRegressor(pipeline) on the training rows")
    task = model.estimator_[0].task
    with tempfile.TemporaryDirectory(prefix="perfcast-model-") as tmp:
        bundle = save_model(model, task, X, Path(tmp) / BUNDLE_ARTIFACT, metadata)
        return log_bundle(bundle, X, registered_model_name, required)


def log_bundle(bundle: Path, X: pd.DataFrame, registered_model_name: str | None, required: Iterable[str]
               ) -> ModelInfo:
    """Log a written bundle directory (a trained or an adapted model) as MLflow's pyfunc data, loaded by the
    installed :mod:`perfcast.mlflow_model`, with the signature and example a user sends (``X``: model inputs)."""
    with quiet_mlflow():
        model = PerfcastModel.load(bundle)
        signature = serving_signature(X, model.task, answer_columns(model.targets), required, model.calibration.level)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            loader_module=LOADER_MODULE,
            data_path=str(bundle),
            signature=signature,
            input_example=serving_example(X, signature),
            registered_model_name=registered_model_name,
            pip_requirements=_requirements(model.versions),
        )


def _requirements(versions: dict[str, str]) -> list[str]:
    """The model's libraries pinned as built, perfcast (which loads it) and MLflow included."""
    pinned = dict(versions)
    pinned.setdefault("perfcast", __version__)  # a source checkout has no installed metadata
    pinned["mlflow"] = mlflow.__version__
    return [f"{lib}=={ver}" for lib, ver in sorted(pinned.items())]
