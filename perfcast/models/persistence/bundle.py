"""A trained perfcast model saved as files that are data, not code: what a Predictor loads and MLflow serves.

Why not one pickle: unpickling runs whatever code the file names, so a model file from anyone else would
be a program. A bundle directory holds each part in the format its library reads without executing it:

    manifest.json              format version, task, targets, feature columns, library versions, interval
                               calibration and domain ranges (JSON), training metadata, the estimator tree,
                               the SHA-256 of every other file (:mod:`perfcast.models.persistence.manifest`)
    manifest "features"        the fitted feature transformer as JSON (:mod:`.features_json`)
    estimators/<target>/       each estimator's state: JSON params in the manifest, arrays in ``<kind>.npz``
                               (``np.load(allow_pickle=False)``), library models as LightGBM text (with its parsed
                               forest in ``forest.npz``, read instead of the text), XGBoost JSON
                               or a scikit-learn estimator in skops (types checked against an allow-list); see
                               :mod:`.tree`, :mod:`.state` and :mod:`.codecs`
    calibration/<target>.npy   sorted conformity scores (``np.load(allow_pickle=False)``)

Loading checks the manifest first: a bundle built with another major.minor version of perfcast or of a
library it uses raises :class:`IncompatibleModelError` naming the library and both versions, and anything
unreadable raises :class:`ModelFormatError` naming the file, never an unpickling traceback. What loads is the
estimator classes that were trained (their ``from_state``), so serving and training share one ``predict``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features import RecordFeatures, feature_names
from perfcast.models.estimators.rows import predict_rows
from perfcast.models.persistence.codecs import SKOPS_ALLOWED
from perfcast.models.persistence.errors import CorruptModelError, IncompatibleModelError, ModelFormatError
from perfcast.models.persistence.features_json import FEATURE_CLASSES, features_from_json, features_to_json
from perfcast.models.persistence.manifest import (
    FORMAT,
    FORMAT_VERSION,
    LIBRARIES,
    MANIFEST,
    SUPPORTED_VERSIONS,
    check_versions,
    corrupt,
    library_versions,
    manifest_digest,
    read_manifest,
    sha256,
    write_manifest,
)
from perfcast.models.persistence.tree import Reader, Writer
from perfcast.models.uncertainty.domain import DomainGuard
from perfcast.models.uncertainty.intervals import ConformalRegressor, IntervalCalibration

__all__ = ["FEATURE_CLASSES", "FORMAT", "FORMAT_VERSION", "LIBRARIES", "MANIFEST", "SKOPS_ALLOWED",
           "SUPPORTED_VERSIONS", "CorruptModelError", "IncompatibleModelError", "ModelFormatError", "PerfcastModel",
           "check_versions", "features_from_json", "features_to_json", "library_versions", "manifest_digest",
           "read_manifest", "save_model", "write_bundle", "write_manifest"]


def save_model(model: ConformalRegressor, task: str, records: pd.DataFrame, path: str | os.PathLike[str],
               metadata: dict[str, Any] | None = None) -> Path:
    """Write a fitted :class:`ConformalRegressor` around a perfcast pipeline as a bundle directory ``path``.

    ``records`` are the training inputs (what the model was fitted on): the domain guard learns their ranges.
    ``metadata`` (JSON-serialisable: model name, parameters, data lineage, test metrics) is kept as is.
    The directory is written beside ``path`` and renamed into place, so a half-written bundle never appears.
    """
    from sklearn.pipeline import Pipeline

    from perfcast.models.registry import PerTargetRegressor

    pipe = model.estimator_
    if not (isinstance(pipe, Pipeline) and isinstance(pipe[0], RecordFeatures)
            and isinstance(pipe[-1], PerTargetRegressor) and len(pipe) == 2):
        raise ModelFormatError(f"save_model expects a perfcast pipeline (features -> PerTargetRegressor, as "
                               f"make_model builds) inside the ConformalRegressor; got {pipe!r}")
    if pipe[0].task != task:
        raise ModelFormatError(f"the pipeline's features are for task {pipe[0].task!r}, not {task!r}")
    features, per_target = pipe[0], pipe[-1]
    domain = DomainGuard(task).fit(records, features.transform(records))
    return write_bundle(path, task, list(per_target.targets_), features, list(per_target.estimators_),
                        bool(per_target.joint), model.calibration_, domain, metadata or {})


def write_bundle(path: str | os.PathLike[str], task: str, targets: list[str], features: RecordFeatures,
                 heads: list[Any], joint: bool, calibration: IntervalCalibration, domain: DomainGuard,
                 metadata: dict[str, Any]) -> Path:
    """Write a bundle of fitted ``heads`` (one per target, or one joint head) at ``path``: written beside it and
    renamed into place (never half-written)."""
    target = Path(path)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty; save the model to a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        writer = Writer(tmp)
        names = ["joint"] if joint else targets
        entries = [writer.encode(h, f"estimators/{t}") for t, h in zip(names, heads, strict=True)]
        (tmp / "calibration").mkdir()
        for t in calibration.targets:
            np.save(tmp / "calibration" / f"{t}.npy", calibration.scores[t], allow_pickle=False)
        doc = {
            "format": FORMAT,
            "task": task,
            "targets": list(targets),
            "feature_columns": [str(c) for c in features.get_feature_names_out()],
            "features": features_to_json(features),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": library_versions(),
            "requires": sorted(writer.requires),
            "estimators": {"joint": bool(joint), "heads": entries},
            "calibration": calibration.to_json(),
            "domain": domain.to_json(),
            "metadata": metadata,
            "files": {p.relative_to(tmp).as_posix(): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        write_manifest(tmp, doc)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@dataclass
class PerfcastModel:
    """A loaded bundle: features, one head per target (or one joint head), intervals and domain guard.

    A head is the fitted estimator itself (its class's ``from_state``), so ``head.predict(F)`` is the trained
    model's ``predict``."""

    path: Path
    task: str
    targets: list[str]
    features: RecordFeatures
    heads: list[Any]
    joint: bool
    calibration: IntervalCalibration
    domain: DomainGuard
    metadata: dict[str, Any]
    versions: dict[str, str]

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int = 1) -> PerfcastModel:
        """Read a bundle directory (see the module docstring for what is checked and trusted)."""
        root = Path(path)
        if not root.is_dir():
            raise ModelFormatError(f"{root} is not a directory holding a perfcast model")
        manifest = read_manifest(root)
        check_versions(manifest, str(root))
        task = manifest["task"]
        now = feature_names(task)
        if manifest["feature_columns"] != now:
            gone = [c for c in manifest["feature_columns"] if c not in now]
            new = [c for c in now if c not in manifest["feature_columns"]]
            raise IncompatibleModelError(
                f"the {task} features of this perfcast differ from those the model at {root} was trained on "
                f"(removed {gone}, added {new}{', or reordered' if not gone and not new else ''}); retrain the model "
                f"with this perfcast (perfcast train CONFIG)")
        reader = Reader(root, threads, manifest["files"])
        reader.verify()
        try:
            features = features_from_json(manifest["features"])
            heads = [reader.decode(spec) for spec in manifest["estimators"]["heads"]]
            cal_doc = manifest["calibration"]
            scores = {t: np.load(reader.file(f"calibration/{t}.npy"), allow_pickle=False) for t in cal_doc["targets"]}
            calibration = IntervalCalibration.from_json(cal_doc, scores)
            domain = DomainGuard.from_json(manifest["domain"])
        except (ModelFormatError, IncompatibleModelError):
            raise
        except Exception as err:  # noqa: BLE001 - any library's parse error becomes one clear message
            raise corrupt(root, f"{type(err).__name__}: {err}") from err
        return cls(root, task, list(manifest["targets"]), features, heads, bool(manifest["estimators"]["joint"]),
                   calibration, domain, dict(manifest.get("metadata", {})), dict(manifest.get("versions", {})))

    def predict_features(self, F: pd.DataFrame) -> np.ndarray:
        """(rows, targets) predictions from the feature frame the bundle's transformer produced."""
        if self.joint:
            return np.asarray(self.heads[0].predict(F), dtype="float64").reshape(len(F), -1)
        return np.column_stack([np.asarray(h.predict(F), dtype="float64").reshape(len(F)) for h in self.heads])

    def predict_rows(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`predict_features` of feature rows ``A`` whose columns are ``names`` (a request's path: no frame)."""
        if self.joint:
            return predict_rows(self.heads[0], A, names).reshape(len(A), -1)
        if len(self.heads) == 1:  # one target: its column as it is (column_stack's copy costs a request ~2 us)
            return predict_rows(self.heads[0], A, names).reshape(len(A), 1)
        return np.column_stack([predict_rows(h, A, names).reshape(len(A)) for h in self.heads])
