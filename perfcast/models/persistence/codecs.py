"""Leaf codecs: library models written in the format their library reads without executing anything.

Why leaves are separate from the state protocol (:mod:`perfcast.models.persistence.state`): a LightGBM, XGBoost
or scikit-learn model belongs to its library, which has its own safe file format; perfcast only chooses it. Each
codec is registered once in :data:`LEAVES` (the way MLflow registers flavors): ``claims`` says which fitted
objects it writes, ``write`` writes one and returns its manifest entry, ``read`` turns an entry back into an
object with ``predict(X)`` (X a feature frame or a float array). Loaded LightGBM and XGBoost models are served by
:class:`LightGBMLeaf` / :class:`XGBoostLeaf`, which keep what they were read from, so a loaded model can be
written again (an adapted model is its base plus a correction).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from perfcast.lazy import is_instance, pandas as pd

from perfcast.features.estimator_base import is_estimator
from perfcast.models.persistence.compiled import CompiledForest, compile_lightgbm, forest_from_arrays, parse_lightgbm
from perfcast.models.persistence.errors import CorruptModelError, ModelFormatError

#: types skops must be told to trust for the scikit-learn estimators perfcast trains (everything else is
#: refused): sklearn's tree arrays, numpy dtypes, the MLP's optimiser state
SKOPS_ALLOWED: frozenset[str] = frozenset({
    "sklearn.tree._tree.Tree",
    "numpy.dtype",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})


def as_array(X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """``X`` as the float64 matrix a booster reads."""
    return X.to_numpy(dtype="float64") if is_instance(X, "pandas", "DataFrame") else np.asarray(X, dtype="float64")


class LightGBMLeaf:
    """A LightGBM model read from its text: walked by :mod:`perfcast.models.persistence.compiled` (the same sums,
    less overhead per call) when the walker covers it, else by LightGBM's own ``Booster``.

    A bundle stores a covered model's parsed forest beside its text (``forest.npz``); read from there (``forest``)
    the text is not parsed, nor even read until it is needed (:attr:`text`: to save the model again), and then
    checked against the SHA-256 the bundle's manifest gave it."""

    #: ``predict`` takes a float matrix as it is (no feature names to check), so callers may skip building a frame
    reads_arrays: ClassVar[bool] = True

    def __init__(self, text: str | None = None, threads: int = 1, where: str = "<lightgbm model>", *,
                 forest: CompiledForest | None = None, path: Path | None = None, digest: str | None = None):
        self._text, self.threads, self.where, self._path, self._digest = text, threads, where, path, digest
        self.compiled: CompiledForest | None = forest if forest is not None else compile_lightgbm(self.text, where)
        self.booster = None
        if self.compiled is None:
            import lightgbm as lgb

            self.booster = lgb.Booster(model_str=self.text)

    @property
    def text(self) -> str:
        """The model file's text (read on first use when the leaf was loaded from its parsed forest)."""
        if self._text is None:
            data = self._path.read_bytes()
            if hashlib.sha256(data).hexdigest() != self._digest:
                raise CorruptModelError(f"{self._path} changed since its model was loaded (its SHA-256 no longer "
                                        f"matches the model's manifest); load the model again")
            self._text = data.decode("utf-8")
        return self._text

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        A = as_array(X)
        if self.compiled is not None:
            return self.compiled.predict(A, self.threads)
        return self.booster.predict(A, num_threads=self.threads)


@dataclass
class XGBoostLeaf:
    """An XGBoost booster read from its JSON, predicting over the trees of ``iteration_range``."""

    booster: Any
    iteration_range: tuple[int, int]
    reads_arrays: ClassVar[bool] = True

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return self.booster.inplace_predict(as_array(X), iteration_range=self.iteration_range)


@dataclass(frozen=True)
class LeafCodec:
    """How one library's models are written and read; ``library`` is the distribution the file needs."""

    kind: str
    library: str
    claims: Callable[[Any], bool]
    write: Callable[[Any, Path, str], dict[str, Any]]
    #: (manifest entry, the bundle's checked files: ``.file(rel)`` gives a listed, verified path, threads)
    read: Callable[[dict[str, Any], Any, int], Any]


def _is_lightgbm(est: Any) -> bool:
    import lightgbm as lgb

    return isinstance(est, (lgb.LGBMRegressor, LightGBMLeaf))


def _write_lightgbm(est: Any, root: Path, rel: str) -> dict[str, Any]:
    """The model's text, and for a forest the walker covers its parsed arrays (``forest.npz``), which loading
    reads instead of parsing the text (benchmarks/PREDICT_SPEED.md, load section). Readers that predate the
    arrays read the text, so the bundle's format is unchanged."""
    text = est.text if isinstance(est, LightGBMLeaf) else est.booster_.model_to_string()
    new_file(root, f"{rel}/lightgbm.txt").write_text(text, encoding="utf-8")
    entry = {"kind": "lightgbm", "file": f"{rel}/lightgbm.txt"}
    arrays, covered = parse_lightgbm(text, f"{rel}/lightgbm.txt")
    if covered:
        np.savez(new_file(root, f"{rel}/forest.npz"), **{k: _narrowest(v) for k, v in arrays.items()})
        entry["forest"] = f"{rel}/forest.npz"
    return entry


def _narrowest(a: np.ndarray) -> np.ndarray:
    """Integers in the narrowest signed type that holds them all (node indices of trees of a few dozen leaves fit
    a byte; the built-in bundles ship in the wheel)."""
    if a.dtype.kind != "i":
        return a
    fits = (t for t in (np.int8, np.int16, np.int32)
            if not a.size or np.iinfo(t).min <= a.min() <= a.max() <= np.iinfo(t).max)
    return a.astype(next(fits, a.dtype))


def _read_lightgbm(entry: dict[str, Any], files: Any, threads: int) -> LightGBMLeaf:
    path = files.file(entry["file"])
    if entry.get("forest") is None:  # written before the parsed forest was stored, or a forest left to LightGBM
        return LightGBMLeaf(path.read_text(encoding="utf-8"), threads, str(path))
    forest = forest_from_arrays(files.arrays(entry["forest"]), str(files.file(entry["forest"])))
    if forest is None:  # too wide for the walker: LightGBM reads the text
        return LightGBMLeaf(path.read_text(encoding="utf-8"), threads, str(path))
    return LightGBMLeaf(None, threads, str(path), forest=forest, path=path, digest=files.files[entry["file"]])


def _is_xgboost(est: Any) -> bool:
    import xgboost as xgb

    return isinstance(est, (xgb.XGBRegressor, XGBoostLeaf))


def _write_xgboost(est: Any, root: Path, rel: str) -> dict[str, Any]:
    path = new_file(root, f"{rel}/xgboost.json")
    if isinstance(est, XGBoostLeaf):
        est.booster.save_model(str(path))
        return {"kind": "xgboost", "file": f"{rel}/xgboost.json", "iteration_range": list(est.iteration_range)}
    est.get_booster().save_model(str(path))
    best = getattr(est, "best_iteration", None)  # set only when the fit stopped early
    return {"kind": "xgboost", "file": f"{rel}/xgboost.json", "iteration_range": [0, 0 if best is None else int(best) + 1]}


def _read_xgboost(entry: dict[str, Any], files: Any, threads: int) -> XGBoostLeaf:
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(files.file(entry["file"])))
    booster.set_param({"nthread": threads})
    return XGBoostLeaf(booster, tuple(entry["iteration_range"]))


def _write_skops(est: Any, root: Path, rel: str) -> dict[str, Any]:
    import skops.io as sio  # its import walks every scikit-learn module (seconds): only when a model needs it

    data = sio.dumps(est)
    refused = sorted(set(sio.get_untrusted_types(data=data)) - SKOPS_ALLOWED)
    if refused:
        raise ModelFormatError(
            f"cannot save {type(est).__name__} safely: skops would have to trust {refused}, which are not on "
            f"perfcast's allow-list (perfcast.models.persistence.codecs.SKOPS_ALLOWED); add them there only if "
            f"loading them cannot run code")
    new_file(root, f"{rel}/model.skops").write_bytes(data)
    return {"kind": "sklearn", "file": f"{rel}/model.skops"}


def _read_skops(entry: dict[str, Any], files: Any, threads: int) -> Any:
    import skops.io as sio  # slow to import; only bundles of scikit-learn estimators need it

    path = files.file(entry["file"])
    untrusted = sio.get_untrusted_types(file=path)
    refused = sorted(set(untrusted) - SKOPS_ALLOWED)
    if refused:
        raise ModelFormatError(f"{path} holds types outside perfcast's allow-list {refused}; refusing to load "
                               f"it (only models written by perfcast load)")
    est = sio.load(path, trusted=untrusted)
    if "n_jobs" in est.get_params():  # a forest's default n_jobs=-1 costs ms of thread start-up per call
        est.set_params(n_jobs=threads)
    return est


def new_file(root: Path, rel: str) -> Path:
    """``root / rel`` with its folder made; two estimators may not write one file."""
    path = root / rel
    if path.exists():
        raise ModelFormatError(f"two estimators of the model would write {rel}; nest them under different folders "
                               f"(state_children)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


#: every library leaf a bundle may hold, in the order they are tried (scikit-learn, which claims any
#: estimator, last); see the module docstring
LEAVES: tuple[LeafCodec, ...] = (
    LeafCodec("lightgbm", "lightgbm", _is_lightgbm, _write_lightgbm, _read_lightgbm),
    LeafCodec("xgboost", "xgboost", _is_xgboost, _write_xgboost, _read_xgboost),
    LeafCodec("sklearn", "skops", is_estimator, _write_skops, _read_skops),
)
LEAF_KINDS: dict[str, LeafCodec] = {c.kind: c for c in LEAVES}
