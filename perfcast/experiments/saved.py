"""The model a report judges: a saved perfcast bundle (rebuilt from the recipe its metadata records when it
is refitted) or any MLflow scikit-learn model, with the task and targets it predicts.

Why its own module: opening a model (a directory, ``models:/NAME/VERSION``, ``runs:/ID/model``) and reading
what it predicts is the one place that knows both formats; :mod:`perfcast.experiments.report` only scores.
"""

from __future__ import annotations

import re
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.pipeline import Pipeline

from perfcast.mlflow_quiet import quiet_mlflow
from perfcast.models.persistence.bundle import IncompatibleModelError, ModelFormatError
from perfcast.models.uncertainty.intervals import ConformalRegressor, ForwardFolds
from perfcast.predictor import Predictor
from perfcast.training.config import parse_config
from perfcast.training.train import build_model


class EvalError(ValueError):
    """The model, protocol or records cannot be evaluated together (the message says what to change)."""


# ------------------------------------------------------------------------------------------------- model
class SavedModel:
    """A saved perfcast model (the bundle training logs and the Predictor loads) in the shape evaluation uses:
    ``predict`` / ``predict_interval`` on record frames, and :meth:`recipe` to build it afresh for a refit."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.task = predictor.task
        self.targets_ = list(predictor.targets)

    def _answer(self, X: pd.DataFrame) -> pd.DataFrame:
        return self.predictor.predict(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._answer(X)[self.targets_].to_numpy(dtype="float64")

    def predict_interval(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        out = self._answer(X)
        return (out[[f"{t}_lo" for t in self.targets_]].to_numpy(dtype="float64"),
                out[[f"{t}_hi" for t in self.targets_]].to_numpy(dtype="float64"))

    def recipe(self) -> ConformalRegressor:
        """The unfitted model training built: the registry model and parameters the bundle's metadata
        records, seeded as it was, inside a :class:`ConformalRegressor` calibrated as the bundle was (level,
        folds)."""
        meta = self.predictor.metadata
        spec = meta.get("model")
        if not isinstance(spec, dict) or "name" not in spec:
            raise EvalError(f"the model at {self.predictor.model.path} does not record how it was built "
                            f"(no 'model' in its metadata), so it cannot be refitted; score it with refit=False")
        config = parse_config({"name": str(meta.get("name", "model")), "task": self.task, "targets": self.targets_,
                               "model": {"name": spec["name"], "params": dict(spec.get("params") or {})},
                               "seed": int(meta.get("seed", 0))})
        grouping = self.predictor.model.calibration.grouping
        options: dict[str, Any] = {"scale": "scaled_by" in grouping}
        if "n_splits" in grouping:
            options["n_splits"] = int(grouping["n_splits"])
        forward = re.fullmatch(r"ForwardFolds\(column='(\w+)', n_folds=(\d+)\)", str(grouping.get("by", "")))
        if forward:
            options["cv"] = ForwardFolds(forward.group(1), int(forward.group(2)))
        return ConformalRegressor(build_model(config, dict(config.model.params)),
                                  level=self.predictor.model.calibration.level, **options)


def load_model(uri: str) -> Any:
    """The fitted model behind ``uri``: a perfcast model directory, or an MLflow model URI (``models:/NAME/VERSION``,
    ``models:/NAME@alias``, ``runs:/RUN_ID/model``) or directory.

    The one place a model is opened for evaluation. A perfcast bundle (what ``perfcast train`` logs) comes
    back as a :class:`SavedModel`; any other MLflow model is loaded with its scikit-learn flavour. Registry
    and run URIs resolve against MLflow's current tracking URI.
    """
    try:
        return SavedModel(Predictor.load(uri))
    except ModelFormatError as err:
        bundle_error = str(err)
    except (IncompatibleModelError, FileNotFoundError) as err:
        raise EvalError(f"cannot load model {uri!r}: {err}") from None
    except MlflowException as err:
        raise EvalError(f"cannot load model {uri!r}: {err.message}") from None
    try:
        with quiet_mlflow():
            return mlflow.sklearn.load_model(uri)
    except (MlflowException, OSError) as err:
        msg = getattr(err, "message", str(err))
        raise EvalError(f"cannot load model {uri!r}: not a perfcast model ({bundle_error}) and not a "
                        f"scikit-learn MLflow model ({msg})") from None


def _parts(model: Any) -> list[Any]:
    """The model and what it wraps, outermost first: pipeline steps and ``estimator(_)``/``regressor(_)``."""
    out, todo = [], [model]
    while todo:
        est = todo.pop(0)
        if est is None or any(est is seen for seen in out):
            continue
        out.append(est)
        if isinstance(est, Pipeline):
            todo += [step for _, step in est.steps]
        todo += [getattr(est, a, None) for a in ("estimator_", "estimator", "regressor_", "regressor")]
    return out


def model_task_targets(model: Any) -> tuple[str, list[str]]:
    """The task and targets a fitted perfcast model predicts, read from the model and what it wraps (the
    feature step's ``task``; the outermost ``targets_`` or ``targets``)."""
    parts = _parts(model)
    task = next((p.task for p in parts if isinstance(getattr(p, "task", None), str)), None)
    targets = next((v for p in parts for v in (getattr(p, "targets_", None), getattr(p, "targets", None))
                    if v is not None and len(v)), None)
    if task is None or targets is None:
        raise EvalError(f"cannot tell which task and targets the {type(model).__name__} model predicts; "
                        f"pass task= and targets= (CLI: --task, --target)")
    return task, [str(t) for t in targets]


def columns_of(values: Any, n_rows: int, n_targets: int, what: str) -> np.ndarray:
    """A model output as an (n_rows, n_targets) float array, or a clear error."""
    arr = np.asarray(values, dtype="float64")
    if arr.size != n_rows * n_targets:
        raise EvalError(f"the model's {what} has {arr.size} values for {n_rows} rows x {n_targets} target(s)")
    return arr.reshape(n_rows, n_targets)


# ------------------------------------------------------------------------------------------------ report
