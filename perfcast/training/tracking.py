"""MLflow helpers: where runs go, and how a training run's lineage, metrics, plots and model are recorded.

The ``log_*`` helpers write into the *active* MLflow run, so ``train`` and ``tune`` log the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
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
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType
from sklearn.pipeline import Pipeline

from perfcast.eval import plots
from perfcast.models.bundle import save_model
from perfcast.models.intervals import ConformalRegressor
from perfcast.predictor import BUNDLE_ARTIFACT, Predictor

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_NAME_IN_RUN = "model"
#: the file MLflow runs to load a perfcast model ("models from code": no pickled Python object is logged)
PYFUNC_CODE = Path(__file__).resolve().parents[1] / "mlflow_model.py"
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
    with warnings.catch_warnings():
        # MLflow hints about integer columns and ambiguous local sources; neither applies to a lineage record
        warnings.filterwarnings("ignore", message=".*(integer column|interpreted in multiple ways).*")
        ds = mlflow.data.from_pandas(records, source=source, name=name, digest=digest[:36], targets=target)
        mlflow.log_input(ds, context=context, tags={"content_sha256": digest, "rows": str(len(records))})
    return digest


def _unwrap(est: Any) -> list[Any]:
    """The fitted estimators that carry importances (one per target when wrapped per target)."""
    if isinstance(est, Pipeline):
        return _unwrap(est[-1])
    if hasattr(est, "feature_importances_"):
        return [est]
    if hasattr(est, "regressor_"):  # TransformedTargetRegressor
        return _unwrap(est.regressor_)
    if hasattr(est, "estimators_"):  # one estimator per target
        return [inner for e in est.estimators_ for inner in _unwrap(e)]
    if hasattr(est, "estimator_"):  # a wrapper fitting one inner model (the hybrid's efficiency model)
        return _unwrap(est.estimator_)
    return [est]


def _feature_names(pipeline: Any, n: int) -> list[str]:
    """Names of the features the final estimator sees (falls back to positions when steps cannot say)."""
    if isinstance(pipeline, Pipeline) and len(pipeline) > 1:
        try:
            names = list(pipeline[:-1].get_feature_names_out())
            if len(names) == n:
                return [str(x) for x in names]
        except (AttributeError, ValueError, TypeError):
            pass
    return [f"feature_{i}" for i in range(n)]


def feature_importances(pipeline: Any, targets: list[str]) -> pd.DataFrame | None:
    """Importance of each feature (rows) per target (columns), or None if the estimator exposes none."""
    inner = _unwrap(pipeline)
    values = [getattr(e, "feature_importances_", None) for e in inner]
    if not values or any(v is None for v in values):
        return None
    mat = np.column_stack([np.asarray(v, dtype=float) for v in values])
    cols = targets if mat.shape[1] == len(targets) else [f"estimator_{i}" for i in range(mat.shape[1])]
    df = pd.DataFrame(mat, index=_feature_names(pipeline, mat.shape[0]), columns=cols)
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


def log_pred_vs_measured(measured: pd.DataFrame, predicted: np.ndarray, title: str) -> list[str]:
    """One predicted-vs-measured plot per target column; returns the artifact paths."""
    pred = np.asarray(predicted, dtype=float).reshape(len(measured), -1)
    paths = []
    for j, target in enumerate(measured.columns):
        fig = plots.pred_vs_measured(measured[target].to_numpy(dtype=float), pred[:, j], target=target, title=title)
        path = f"plots/pred_vs_measured_{target}.png"
        mlflow.log_figure(fig, path)
        paths.append(path)
    return paths


def serving_signature(X: pd.DataFrame, y_pred: Any, required: Iterable[str], level: float | None = None
                      ) -> ModelSignature:
    """Input columns named as in ``X``, only the ``required`` ones required; outputs inferred from ``y_pred``.

    Inference would mark every column without a missing value as required (a served model demanding
    ``l3_mb`` because the training device had one) and type sizes as double, which MLflow's schema check
    refuses to fill from a JSON integer; so text columns are strings, numeric ones any type (the
    Predictor checks and converts them, naming the column of a bad value). ``level`` adds an inference
    parameter for the interval level.
    """
    need = set(required)
    inputs = Schema([
        ColSpec(DataType.string if pd.api.types.is_string_dtype(X[c]) or X[c].dtype == object else AnyType(), c,
                required=c in need)
        for c in X.columns
    ])
    params = None if level is None else ParamSchema([ParamSpec("level", DataType.double, float(level))])
    return ModelSignature(inputs=inputs, outputs=infer_signature(model_output=y_pred).inputs, params=params)


def log_model(model: ConformalRegressor, X: pd.DataFrame, registered_model_name: str | None, required: Iterable[str],
              metadata: dict[str, Any] | None = None) -> ModelInfo:
    """Log a fitted, calibrated model as a perfcast bundle served by MLflow's pyfunc, registering it by name.

    The bundle (see :mod:`perfcast.models.bundle`) is the pyfunc's only artifact and the model's code is
    :mod:`perfcast.mlflow_model`, so nothing logged is a pickle and MLflow loads it with no opt-in. The
    signature and the input example (the first training rows) come from what the Predictor answers.
    """
    if not (isinstance(model, ConformalRegressor) and hasattr(model, "calibration_")):
        raise TypeError(f"log_model takes a fitted ConformalRegressor (every perfcast model carries calibrated "
                        f"intervals), got {type(model).__name__}; fit ConformalRegressor(pipeline) on the training rows")
    with tempfile.TemporaryDirectory(prefix="perfcast-model-") as tmp:
        bundle = save_model(model, model.estimator_[0].task, X, Path(tmp) / BUNDLE_ARTIFACT, metadata)
        predictor = Predictor.load(bundle)
        example = X.head(5)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(PYFUNC_CODE),
            artifacts={BUNDLE_ARTIFACT: str(bundle)},
            signature=serving_signature(X, predictor.predict(example), required, predictor.level),
            input_example=example,
            registered_model_name=registered_model_name,
            pip_requirements=_requirements(predictor.model.versions),
        )


def _requirements(versions: dict[str, str]) -> list[str]:
    """The model's libraries pinned as built (perfcast itself must be installed where the model is served)."""
    pinned = [f"{lib}=={ver}" for lib, ver in sorted(versions.items()) if lib != "perfcast"]
    return [*pinned, f"mlflow=={mlflow.__version__}"]
