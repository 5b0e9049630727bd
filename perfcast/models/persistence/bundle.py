"""A trained perfcast model saved as files that are data, not code: what a Predictor loads and MLflow serves.

Why not one pickle: unpickling runs whatever code the file names, so a model file from anyone else would
be a program. A bundle directory holds each part in the format its library reads without executing it:

    manifest.json              format version, task, targets, feature columns, library versions,
                               interval calibration and domain ranges (JSON), training metadata
    manifest "features"        the fitted feature transformer: its class (one of perfcast's), parameters and
                               fitted attributes as JSON
    estimators/<target>/       LightGBM model text, XGBoost JSON, a scikit-learn estimator in skops (types
                               checked against :data:`SKOPS_ALLOWED`), or a group-attention network
                               (JSON + a tensors-only state dict read with ``torch.load(weights_only=True)``)
    estimators/.../siblings.npz  a sibling-transfer model's residual tables (``np.load(allow_pickle=False)``)
    calibration/<target>.npy   sorted conformity scores (``np.load(allow_pickle=False)``)

Loading checks the manifest first: a bundle built with another major.minor version of perfcast or of a
library it uses raises :class:`IncompatibleModelError` naming the library and both versions, and anything
unreadable raises :class:`ModelFormatError` naming the file, never an unpickling traceback.

The manifest is verified before any value of it is used (:func:`_read_manifest`): ``format_version`` must be
one this perfcast reads; ``digest`` must be the SHA-256 of the manifest's canonical JSON (sorted keys, no
whitespace) without the digest itself; every key the loader reads must be present with its type; ``files`` must
give each file's SHA-256, and only listed files are ever read (each checked before its parser sees it);
``requires`` must name every library the estimators need, so the version check cannot be skipped by emptying
it. Any failure is a :class:`CorruptModelError` saying what and to save or download the model again.

Why a ``digest`` field inside manifest.json and not a ``manifest.sha256`` beside it: the check travels with the
one file it covers (a manifest copied or uploaded alone, as MLflow artifact stores may, cannot lose it), and
hashing the parsed, canonical document makes the digest cover exactly what the loader reads (re-indenting
the file changes nothing; changing any value does). It detects damage and careless edits, not a deliberate
forger, who can recompute it: what a forged manifest can reach is still limited to data (see README, "What
loading a model trusts"). Bundles of format 1, written before the digest existed, load without one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from perfcast.records.schema import TASKS
from perfcast.features import TRANSFORMERS, RecordFeatures, feature_names
from perfcast.models.persistence.compiled import CompiledForest, compile_lightgbm
from perfcast.models.uncertainty.domain import DomainGuard
from perfcast.models.persistence.errors import CorruptModelError, IncompatibleModelError, ModelFormatError
from perfcast.models.uncertainty.intervals import ConformalRegressor, IntervalCalibration
from perfcast.models.estimators.roofline import baseline

FORMAT = "perfcast-model"
#: version 2 adds the manifest's ``digest``; version 1 bundles (written before it) still load
FORMAT_VERSION = 2
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1, 2})
MANIFEST = "manifest.json"
#: distributions whose version is recorded; a bundle names those it needs in ``requires``
LIBRARIES: tuple[str, ...] = ("perfcast", "scikit-learn", "lightgbm", "xgboost", "torch", "skops", "numpy",
                              "pandas")
#: types skops must be told to trust for the scikit-learn estimators perfcast trains (everything else is
#: refused): sklearn's tree arrays, numpy dtypes, the MLP's optimiser state
SKOPS_ALLOWED: frozenset[str] = frozenset({
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})
#: the feature transformers a bundle may name, by qualified class name
FEATURE_CLASSES: dict[str, type[RecordFeatures]] = {f"{c.__module__}.{c.__qualname__}": c for c in TRANSFORMERS.values()}


# =========================================================================================== versions
def library_versions() -> dict[str, str]:
    """Installed version of each of :data:`LIBRARIES` (absent ones omitted); read from metadata, no import."""
    out = {}
    for dist in LIBRARIES:
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def check_versions(manifest: dict[str, Any], where: str) -> None:
    """Raise :class:`IncompatibleModelError` unless every required library matches in major.minor."""
    saved = manifest.get("versions", {})
    installed = library_versions()
    for lib in manifest.get("requires", []):
        have, had = installed.get(lib), saved.get(lib, "?")
        if have is None:
            raise IncompatibleModelError(
                f"the model at {where} needs {lib} (it was built with {lib} {had}), which is not installed here; "
                f"install it: pip install '{lib}=={'.'.join(_major_minor(had))}.*'")
        if _major_minor(have) != _major_minor(had):
            raise IncompatibleModelError(
                f"the model at {where} was built with {lib} {had}, but this environment has {lib} {have}. A model "
                f"loads only with the major.minor versions it was built with: install {lib} "
                f"{'.'.join(_major_minor(had))}.x (pip install '{lib}=={'.'.join(_major_minor(had))}.*') or "
                f"retrain the model here (perfcast train CONFIG).")


# ============================================================================================ heads
class Head(Protocol):
    """A loaded estimator: predictions from the feature frame ``F`` (and the same values as an array ``A``)."""

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray: ...


@dataclass
class _LightGBM:
    """A LightGBM model: walked by :mod:`perfcast.models.persistence.compiled` (same sums, less overhead per call) when it
    covers the model, else by LightGBM's own ``Booster`` (``booster`` is then the loaded booster)."""

    booster: Any
    threads: int = 1
    compiled: CompiledForest | None = None

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        if self.compiled is not None:
            return self.compiled.predict(A, self.threads)
        return self.booster.predict(A, num_threads=self.threads)


@dataclass
class _XGBoost:
    booster: Any
    iteration_range: tuple[int, int]

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        return self.booster.inplace_predict(A, iteration_range=self.iteration_range)


@dataclass
class _Sklearn:
    estimator: BaseEstimator

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        return self.estimator.predict(F)


@dataclass
class _Log:
    inner: Head

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        return np.exp(self.inner.predict(F, A))


def _reads_frame(head: Head) -> bool:
    """Whether ``head`` reads the feature frame (else only the array: a booster on an ad-hoc column subset then
    needs no sub-frame built per call)."""
    if isinstance(head, (_LightGBM, _XGBoost)):
        return False
    return _reads_frame(head.inner) if isinstance(head, _Log) else True


@dataclass
class _Hybrid:
    """The roofline (+ the learned per-kernel-kind latency floor) times exp(inner), inner on ``columns``."""

    target: str
    inner: Head
    columns: list[str] | None = None
    floors: dict[str, float] = field(default_factory=dict)
    pooled_floor: float = 0.0
    #: kernel-kind bit pattern -> latency floor, filled as patterns are met (a model knows a handful)
    _kind_floors: dict[int, float] = field(default_factory=dict, init=False, repr=False)
    #: (number of feature columns, positions of those kernel_kinds reads): a bundle's feature columns are
    #: fixed (checked on load), so they are found once
    _kind_columns: tuple[int, np.ndarray] | None = field(default=None, init=False, repr=False)

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        base = baseline(F, self.target)
        if self.floors or self.pooled_floor:
            base = base + self._floor(F, A)
        if self.columns is None:
            return base * np.exp(self.inner.predict(F, A))
        where = F.columns.get_indexer(self.columns)
        if (where < 0).any():
            raise ModelFormatError(f"the hybrid model reads feature columns {self.columns}, but the features lack "
                                   f"{[c for c, j in zip(self.columns, where, strict=True) if j < 0]}")
        sub_a = A[:, where]
        sub = F[self.columns] if _reads_frame(self.inner) else F.iloc[:0]
        return base * np.exp(self.inner.predict(sub, sub_a))

    def _floor(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        """Each row's floor by :func:`~perfcast.models.estimators.hybrid.kernel_kinds`, which is asked once per distinct
        pattern of the kind columns (one representative row) instead of once per row."""
        from perfcast.models.estimators.hybrid import KIND_COLUMNS, KIND_PREFIXES, kernel_kinds

        if self._kind_columns is None or self._kind_columns[0] != F.shape[1]:
            self._kind_columns = (F.shape[1], np.flatnonzero(
                [c.startswith(KIND_PREFIXES) or c in KIND_COLUMNS for c in F.columns]))
        idx = self._kind_columns[1]
        flags = np.nan_to_num(A[:, idx], nan=0.0) > 0.5  # kernel_kinds' fillna(0) > 0.5
        codes = flags.astype(np.int64) @ (np.int64(1) << np.arange(len(idx), dtype=np.int64))
        uniq, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        new = [(int(c), int(r)) for c, r in zip(uniq, first, strict=True) if int(c) not in self._kind_floors]
        if new:
            kinds = kernel_kinds(F.iloc[[r for _, r in new]])
            for (code, _), kind in zip(new, kinds, strict=True):
                floor = self.floors.get(kind, np.nan)
                self._kind_floors[code] = self.pooled_floor if np.isnan(floor) else float(floor)
        return np.asarray([self._kind_floors[int(c)] for c in uniq], dtype="float64")[inverse.ravel()]


@dataclass
class _Geometric:
    """The geometric mean of the members' predictions (a seed bag or a multi-view ensemble)."""

    members: list[Head]

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        logs = [np.log(np.asarray(m.predict(F, A), dtype="float64").ravel()) for m in self.members]
        return np.exp(np.mean(logs, axis=0))


@dataclass
class _Transfer:
    """The base prediction times the sibling devices' residual on the same configuration."""

    inner: Head
    transfer: Any  # a SiblingTransfer rebuilt from plain arrays (from_state)

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        return np.asarray(self.inner.predict(F, A), dtype="float64") * np.exp(self.transfer.correction(F))


@dataclass
class _Normalized:
    """Predictions of the inner model are ratios to a fitted per-group baseline (saved as plain numbers)."""

    normalizer: Any
    inner: Head

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        pred = np.asarray(self.inner.predict(F, A), dtype="float64")
        base = self.normalizer.baseline(F)
        return pred * (base[:, 0] if pred.ndim == 1 else base)


@dataclass
class _Adapted:
    """A base head corrected for one device from its measurements (:mod:`perfcast.models.estimators.adapt`)."""

    inner: Head
    correction: Any  # an adapt.Correction: per-kind levels (JSON) and a LightGBM shape term (text)
    donors: Any = None  # an adapt.DonorTable the correction starts from (arrays), or None

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        base = np.asarray(self.inner.predict(F, A), dtype="float64").reshape(len(F))
        if self.donors is not None:
            base = self.donors.start(F, base)
        return base * np.exp(self.correction.log_ratio(F, base, A))


@dataclass
class _Roofline:
    target: str

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        return baseline(F, self.target)


@dataclass
class _Power:
    """The power model (:mod:`perfcast.models.estimators.power`): the physics law (three numbers) times exp(correction), the
    correction read on the features plus the utilisation; runtime from its head (else the roofline time)."""

    targets: list[str]
    physics: Any  # a PowerPhysics rebuilt from its JSON numbers
    correction: Head
    runtime: Head | None = None

    def predict(self, F: pd.DataFrame, A: np.ndarray) -> np.ndarray:
        from perfcast.models.estimators.power import PowerPhysics, combine, with_utilisation

        runtime = (10.0 ** F["log10_roofline_ms"].to_numpy(dtype="float64") if self.runtime is None
                   else np.asarray(self.runtime.predict(F, A), dtype="float64").ravel())
        util = PowerPhysics.utilisation(F, runtime)
        inputs = with_utilisation(F, util)
        fix = np.asarray(self.correction.predict(inputs, inputs.to_numpy(dtype="float64")), dtype="float64").ravel()
        return combine(self.targets, runtime, self.physics.predict(F, util) * np.exp(fix))


# ========================================================================= feature transformer as JSON
def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, np.ndarray) and (value.dtype.kind in "biuf" or value.dtype == object):
        return {"ndarray": [_jsonable(v, where) for v in value.tolist()], "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ModelFormatError(f"cannot save {where} of type {type(value).__name__} as data; perfcast.models.persistence.bundle "
                           f"saves feature transformers whose parameters and state are numbers, text and arrays")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and "ndarray" in value:
        return np.asarray(value["ndarray"], dtype=value["dtype"])
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value["dict"].items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def features_to_json(features: RecordFeatures) -> dict[str, Any]:
    """A fitted feature transformer as its class name, parameters and fitted (``*_``) attributes."""
    name = f"{type(features).__module__}.{type(features).__qualname__}"
    if name not in FEATURE_CLASSES:
        raise ModelFormatError(f"cannot save feature transformer {name}: not one of {sorted(FEATURE_CLASSES)}")
    state = {k: _jsonable(v, f"{name}.{k}") for k, v in vars(features).items() if k.endswith("_")}
    return {"class": name, "params": _jsonable(features.get_params(), name), "state": state}


def features_from_json(doc: dict[str, Any]) -> RecordFeatures:
    """The transformer :func:`features_to_json` described; only perfcast's own classes are constructed."""
    cls = FEATURE_CLASSES.get(doc.get("class"))
    if cls is None:
        raise ModelFormatError(f"unknown feature transformer {doc.get('class')!r}; known: {sorted(FEATURE_CLASSES)}")
    features = cls(**_from_json(doc["params"]))
    for k, v in doc["state"].items():
        setattr(features, k, _from_json(v))
    return features


# ===================================================================================== save (encode)
@dataclass
class _Writer:
    """Writes estimator files under ``root`` and collects the libraries they need."""

    root: Path
    requires: set[str] = field(default_factory=lambda: {"perfcast", "scikit-learn"})

    def skops(self, obj: Any, rel: str) -> dict[str, Any]:
        import skops.io as sio  # its import walks every scikit-learn module (seconds): only when a model needs it

        self.requires.add("skops")
        data = sio.dumps(obj)
        untrusted = sio.get_untrusted_types(data=data)
        refused = sorted(set(untrusted) - SKOPS_ALLOWED)
        if refused:
            raise ModelFormatError(
                f"cannot save {type(obj).__name__} safely: skops would have to trust {refused}, which are not on "
                f"perfcast's allow-list (perfcast.models.persistence.bundle.SKOPS_ALLOWED); add them there only if loading "
                f"them cannot run code")
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_bytes(data)
        return {"kind": "sklearn", "file": rel}

    def encode(self, est: Any, rel: str) -> dict[str, Any]:
        """The manifest entry of one fitted estimator (files written under ``rel``)."""
        import lightgbm as lgb
        import xgboost as xgb
        from sklearn.compose import TransformedTargetRegressor

        from perfcast.models.estimators.ensemble import GeometricEnsemble
        from perfcast.models.estimators.hybrid import HybridRegressor
        from perfcast.models.estimators.normalize import TargetNormalizer
        from perfcast.models.estimators.roofline import RooflineRegressor
        from perfcast.models.estimators.power import PowerRegressor
        from perfcast.models.estimators.transfer import SiblingTransfer

        if isinstance(est, PowerRegressor):
            return {"kind": "power", "targets": list(est.targets_), "physics": est.physics_.to_json(),
                    "correction": self.encode(est.correction_, f"{rel}/correction"),
                    "runtime": None if est.runtime_ is None else self.encode(est.runtime_, f"{rel}/runtime")}
        if isinstance(est, TransformedTargetRegressor):
            if est.func is not np.log or est.inverse_func is not np.exp:
                raise ModelFormatError(f"cannot save a TransformedTargetRegressor with func={est.func!r}: only "
                                       f"the log/exp target transform of perfcast's registry is supported")
            return {"kind": "log", "inner": self.encode(est.regressor_, rel)}
        if isinstance(est, HybridRegressor):
            return {"kind": "hybrid", "target": est.target, "inner": self.encode(est.estimator_, rel),
                    "columns": None if est.columns is None else list(est.columns),
                    "floors": {k: float(v) for k, v in est.floors_.items()}, "pooled_floor": float(est.pooled_floor_)}
        if isinstance(est, GeometricEnsemble):
            return {"kind": "geometric", "members": [self.encode(m, f"{rel}/member{i}")
                                                     for i, m in enumerate(est.estimators_)]}
        if isinstance(est, SiblingTransfer):
            params, arrays = est.to_state()
            path = self.root / rel / "siblings.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **arrays)
            return {"kind": "transfer", "params": params, "file": f"{rel}/siblings.npz",
                    "inner": self.encode(est.estimator_, f"{rel}/base")}
        if isinstance(est, TargetNormalizer):
            return {"kind": "normalized", "baseline": est.to_json(), "inner": self.encode(est.estimator_, rel)}
        if isinstance(est, RooflineRegressor):
            return {"kind": "roofline", "target": est.target}
        if isinstance(est, lgb.LGBMRegressor):
            self.requires.add("lightgbm")
            path = self.root / rel / "lightgbm.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            est.booster_.save_model(str(path))
            return {"kind": "lightgbm", "file": f"{rel}/lightgbm.txt"}
        if isinstance(est, xgb.XGBRegressor):
            self.requires.add("xgboost")
            path = self.root / rel / "xgboost.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            booster = est.get_booster()
            booster.save_model(str(path))
            best = getattr(est, "best_iteration", None)  # set only when the fit stopped early
            return {"kind": "xgboost", "file": f"{rel}/xgboost.json",
                    "iteration_range": [0, 0 if best is None else int(best) + 1]}
        if type(est).__name__ == "GroupAttentionRegressor":  # torch is imported only when such a model exists
            self.requires.add("torch")
            est.save(self.root / rel / "group_attention")
            return {"kind": "group_attention", "dir": f"{rel}/group_attention"}
        if isinstance(est, BaseEstimator):
            return self.skops(est, f"{rel}/model.skops")
        raise ModelFormatError(f"cannot save an estimator of type {type(est).__name__}: perfcast.models.persistence.bundle "
                               f"knows LightGBM, XGBoost, scikit-learn, group-attention, hybrid, ensemble, transfer and "
                               "roofline models")


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
    target = Path(path)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty; save the model to a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _write(model, task, records, tmp, metadata or {})
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write(model: ConformalRegressor, task: str, records: pd.DataFrame, root: Path, metadata: dict[str, Any]) -> None:
    pipe = model.estimator_
    features, per_target = pipe[0], pipe[-1]
    writer = _Writer(root)
    if per_target.joint:
        heads = [writer.encode(per_target.estimators_[0], "estimators/joint")]
    else:
        heads = [writer.encode(e, f"estimators/{t}") for t, e in zip(per_target.targets_, per_target.estimators_, strict=True)]
    cal = model.calibration_
    (root / "calibration").mkdir()
    for t in cal.targets:
        np.save(root / "calibration" / f"{t}.npy", cal.scores[t], allow_pickle=False)
    domain = DomainGuard(task).fit(records, features.transform(records))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task,
        "targets": list(per_target.targets_),
        "feature_columns": [str(c) for c in features.get_feature_names_out()],
        "features": features_to_json(features),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "requires": sorted(writer.requires),
        "estimators": {"joint": bool(per_target.joint), "heads": heads},
        "calibration": cal.to_json(),
        "domain": domain.to_json(),
        "metadata": metadata,
        "files": {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()},
    }
    write_manifest(root, manifest)


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` into bundle ``root`` at this format version, sealed with its :func:`manifest_digest`
    (every writer of bundles goes through here, so no bundle is written that its reader would refuse)."""
    manifest = json.loads(json.dumps({**manifest, "format_version": FORMAT_VERSION}, default=_json_default))
    manifest.pop("digest", None)  # the values as a reader will see them, then sealed
    manifest["digest"] = manifest_digest(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    raise TypeError(f"model metadata value {value!r} ({type(value).__name__}) is not JSON-serialisable")


# ====================================================================================== load (decode)
def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON (sorted keys, no whitespace), its own ``digest`` key left out."""
    rest = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


#: top-level manifest keys every bundle has, with their JSON types
REQUIRED_KEYS: dict[str, type] = {
    "format": str, "format_version": int, "task": str, "targets": list, "feature_columns": list, "features": dict,
    "versions": dict, "requires": list, "estimators": dict, "calibration": dict, "domain": dict, "metadata": dict,
    "files": dict}
#: estimator kind -> the library (besides perfcast and scikit-learn, which every bundle needs) that reads it
KIND_LIBRARY = {"lightgbm": "lightgbm", "xgboost": "xgboost", "sklearn": "skops", "group_attention": "torch"}
_HEX = frozenset("0123456789abcdef")


def _corrupt(root: Path, problem: str) -> CorruptModelError:
    return CorruptModelError(f"the model at {root} is damaged or was modified: {problem}; save or download the model "
                             f"again (models are written by `perfcast train`)")


def _read_manifest(root: Path) -> dict[str, Any]:
    """The manifest, verified (format, version, digest, then the keys and types the loader reads) before any
    value of it is used."""
    path = root / MANIFEST
    if not path.is_file():
        raise ModelFormatError(f"{root} is not a perfcast model: it has no {MANIFEST} (models are written by "
                               f"`perfcast train` or perfcast.models.persistence.bundle.save_model)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _corrupt(root, f"{MANIFEST} is not readable JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFormatError(f"{path} is not a perfcast model manifest (format {FORMAT!r})")
    version = manifest.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise IncompatibleModelError(
            f"the model at {root} has bundle format {version!r}, newer than this perfcast reads ({FORMAT_VERSION}); "
            f"upgrade perfcast (it was built with perfcast {_version_of(manifest, 'perfcast')})")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise _corrupt(root, f"{MANIFEST} has format_version {version!r}, which no perfcast wrote (this one reads "
                             f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))})")
    if version >= 2 or "digest" in manifest:
        if manifest.get("digest") != manifest_digest(manifest):
            raise _corrupt(root, f"{MANIFEST} does not match its digest" if "digest" in manifest else
                           f"{MANIFEST} has no digest (every format {version} manifest has one)")
    _check_manifest(root, manifest)
    return manifest


def _version_of(manifest: dict[str, Any], lib: str) -> str:
    versions = manifest.get("versions")
    return str(versions.get(lib, "?")) if isinstance(versions, dict) else "?"


def _check_manifest(root: Path, m: dict[str, Any]) -> None:
    """Every key the loader reads is present with its type; ``files`` gives a SHA-256 per file; ``requires``
    names every library the estimators need (so the version check cannot be skipped) and ``versions`` each one's
    version."""
    for key, kind in REQUIRED_KEYS.items():
        if key not in m:
            raise _corrupt(root, f"{MANIFEST} has no {key!r}")
        if not isinstance(m[key], kind) or isinstance(m[key], bool):
            raise _corrupt(root, f"{MANIFEST} {key!r} is a {type(m[key]).__name__}, not a "
                                 f"{'JSON object' if kind is dict else kind.__name__}")
    if m["task"] not in TASKS:
        raise _corrupt(root, f"{MANIFEST} 'task' is {m['task']!r}, not one of {', '.join(TASKS)}")
    for key in ("targets", "feature_columns", "requires"):
        if not m[key] or not all(isinstance(v, str) for v in m[key]):
            raise _corrupt(root, f"{MANIFEST} {key!r} must be a non-empty list of names, not {m[key]!r}")
    files = m["files"]
    bad = [k for k, v in files.items() if not (isinstance(v, str) and len(v) == 64 and set(v) <= _HEX)]
    if not files or bad:
        raise _corrupt(root, f"{MANIFEST} 'files' must map each file to its SHA-256 ({bad[0]!r} has {files[bad[0]]!r})"
                             if bad else f"{MANIFEST} 'files' lists no file")
    heads = m["estimators"].get("heads")
    if not isinstance(m["estimators"].get("joint"), bool) or not isinstance(heads, list) or not heads \
            or not all(isinstance(h, dict) for h in heads):
        raise _corrupt(root, f"{MANIFEST} 'estimators' must hold 'joint' (true/false) and a non-empty list of 'heads'")
    needed = {"perfcast", "scikit-learn"} | {KIND_LIBRARY[k] for k in _kinds(heads) if k in KIND_LIBRARY}
    foreign = sorted(set(m["requires"]) - set(LIBRARIES))
    if foreign:  # an error message must never tell the user to install what a manifest names
        raise _corrupt(root, f"{MANIFEST} 'requires' names {foreign}, which perfcast never requires")
    absent = sorted(needed - set(m["requires"]))
    if absent:
        raise _corrupt(root, f"{MANIFEST} 'requires' lacks {absent}, which its estimators need")
    unversioned = [lib for lib in m["requires"] if not isinstance(m["versions"].get(lib), str)]
    if unversioned:
        raise _corrupt(root, f"{MANIFEST} 'versions' gives no version of {unversioned}, which it requires")


def _kinds(specs: list[Any]) -> list[str]:
    """The estimator kinds in a list of head specs, nested ones included."""
    out = []
    for spec in specs:
        if isinstance(spec, dict):
            out.append(spec.get("kind"))
            out += _kinds([spec.get("inner"), *spec.get("members", [])])
    return out


class _Reader:
    """Reads a bundle's files: only those ``files`` lists, each checked against its SHA-256 first."""

    def __init__(self, root: Path, threads: int, files: dict[str, str]):
        self.root, self.threads, self.files = root, threads, files

    def verify(self) -> None:
        """Every file the manifest lists is there with its recorded SHA-256: a truncated or edited file is
        refused here, before a library's parser (some abort the process on bad input) sees it."""
        for rel, digest in self.files.items():
            if _sha256(self.file(rel)) != digest:
                raise _corrupt(self.root, f"{rel} does not match the checksum in {MANIFEST}")

    def _inside(self, rel: Any) -> Path:
        path = (self.root / str(rel)).resolve()
        if not isinstance(rel, str) or self.root.resolve() not in path.parents or not path.exists():
            raise ModelFormatError(f"{self.root}: {MANIFEST} names {rel!r}, which is not a file inside the model")
        return path

    def file(self, rel: Any) -> Path:
        """The path of a listed file inside the bundle (so verified before it is read)."""
        path = self._inside(rel)
        if rel not in self.files or not path.is_file():
            raise _corrupt(self.root, f"{MANIFEST} does not list {rel!r} among its checksummed files, so it is not read")
        return path

    def directory(self, rel: Any) -> Path:
        """A folder a library reads whole (a group-attention network): every file in it must be listed."""
        path = self._inside(rel)
        inside = [p.relative_to(self.root.resolve()).as_posix() for p in path.rglob("*") if p.is_file()]
        unlisted = [f for f in inside if f not in self.files]
        if not inside or unlisted:
            raise _corrupt(self.root, f"{rel} holds files {MANIFEST} does not list ({unlisted[:3]})" if unlisted
                           else f"{rel} holds no file")
        return path

    def skops(self, rel: str) -> Any:
        import skops.io as sio  # slow to import (see _Writer.skops); only bundles of scikit-learn estimators need it

        path = self.file(rel)
        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - SKOPS_ALLOWED)
        if refused:
            raise ModelFormatError(f"{path} holds types outside perfcast's allow-list {refused}; refusing to load "
                                   f"it (only models written by perfcast load)")
        return sio.load(path, trusted=untrusted)

    def decode(self, spec: dict[str, Any]) -> Head:
        kind = spec.get("kind")
        if kind == "log":
            return _Log(self.decode(spec["inner"]))
        if kind == "hybrid":
            return _Hybrid(spec["target"], self.decode(spec["inner"]), spec.get("columns"),
                           {str(k): float(v) for k, v in spec.get("floors", {}).items()},
                           float(spec.get("pooled_floor", 0.0)))
        if kind == "geometric":
            return _Geometric([self.decode(m) for m in spec["members"]])
        if kind == "transfer":
            from perfcast.models.estimators.transfer import SiblingTransfer

            with np.load(self.file(spec["file"]), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            return _Transfer(self.decode(spec["inner"]), SiblingTransfer.from_state(spec["params"], arrays))
        if kind == "roofline":
            return _Roofline(spec["target"])
        if kind == "power":
            from perfcast.models.estimators.power import PowerPhysics

            return _Power(list(spec["targets"]), PowerPhysics(**{k: float(v) for k, v in spec["physics"].items()}),
                          self.decode(spec["correction"]),
                          None if spec.get("runtime") is None else self.decode(spec["runtime"]))
        if kind == "adapted":
            from perfcast.models.estimators.adapt import Correction, DonorTable

            text = self.file(spec["shape_file"]).read_text(encoding="utf-8") if spec.get("shape_file") else None
            donors = None
            if spec.get("donors"):
                with np.load(self.file(spec["donors"]["file"]), allow_pickle=False) as npz:
                    donors = DonorTable(str(spec["donors"]["device"]), [str(c) for c in spec["donors"]["columns"]],
                                        npz["keys"], npz["log_latency"])
            return _Adapted(self.decode(spec["inner"]), Correction.from_json(spec["correction"], text, self.threads),
                            donors)
        if kind == "normalized":
            from perfcast.models.estimators.normalize import TargetNormalizer

            return _Normalized(TargetNormalizer.from_json(spec["baseline"]), self.decode(spec["inner"]))
        if kind == "lightgbm":
            path = self.file(spec["file"])
            compiled = compile_lightgbm(path.read_text(), str(path))
            if compiled is not None:
                return _LightGBM(None, self.threads, compiled)
            import lightgbm as lgb

            return _LightGBM(lgb.Booster(model_file=str(path)), self.threads)
        if kind == "xgboost":
            import xgboost as xgb

            booster = xgb.Booster(model_file=str(self.file(spec["file"])))
            booster.set_param({"nthread": self.threads})
            return _XGBoost(booster, tuple(spec["iteration_range"]))
        if kind == "sklearn":
            est = self.skops(spec["file"])
            if "n_jobs" in est.get_params():  # a forest's default n_jobs=-1 costs ms of thread start-up per call
                est.set_params(n_jobs=self.threads)
            return _Sklearn(est)
        if kind == "group_attention":
            from perfcast.models.estimators.group_attention import GroupAttentionRegressor

            return _Sklearn(GroupAttentionRegressor.load(self.directory(spec["dir"])))
        raise ModelFormatError(f"{self.root}: unknown estimator kind {kind!r} in {MANIFEST}")


@dataclass
class PerfcastModel:
    """A loaded bundle: features, one head per target (or one joint head), intervals and domain guard."""

    path: Path
    task: str
    targets: list[str]
    features: RecordFeatures
    heads: list[Head]
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
        manifest = _read_manifest(root)
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
        reader = _Reader(root, threads, manifest["files"])
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
            raise _corrupt(root, f"{type(err).__name__}: {err}") from err
        return cls(root, task, list(manifest["targets"]), features, heads, bool(manifest["estimators"]["joint"]),
                   calibration, domain, dict(manifest.get("metadata", {})), dict(manifest.get("versions", {})))

    def predict_features(self, F: pd.DataFrame) -> np.ndarray:
        """(rows, targets) predictions from the feature frame the bundle's transformer produced."""
        A = F.to_numpy(dtype="float64")
        if self.joint:
            return np.asarray(self.heads[0].predict(F, A), dtype="float64").reshape(len(F), -1)
        return np.column_stack([np.asarray(h.predict(F, A), dtype="float64").reshape(len(F)) for h in self.heads])

