"""The estimator state protocol, and the one table that names every estimator a bundle may hold.

Why a protocol and not a pickle or a per-model branch in the bundle code: each estimator knows what its fitted
state is, so it says so itself. ``to_state()`` returns ``(params, arrays)``: JSON-able values and named numpy
arrays (saved as ``.npz``, read with ``allow_pickle=False``); ``from_state(params, arrays)`` (a classmethod)
returns an object of the same class whose ``predict`` gives the same numbers. Fitted sub-estimators are not in the
state: a class names the attributes that hold them in ``state_children`` (attribute -> sub-folder of its files,
"" for its own folder; an attribute may hold one estimator, None, or a list), and the persistence layer writes
and reads them recursively, library models through the leaf codecs of :mod:`perfcast.models.persistence.codecs`.

Adding a model to bundles: give the class the two methods (and ``state_children`` if it wraps others) and one
line in :data:`KINDS`. Classes are named by module path and imported on first use, so a bundle without a
network never imports torch, and only the classes listed here are ever constructed from a file.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from perfcast.models.persistence.errors import ModelFormatError

#: estimator kind (the name a manifest gives) -> "module:Class", and the libraries (besides perfcast, numpy and
#: scikit-learn) whose versions its state depends on
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "log": ("perfcast.models.estimators.log_target:LogTarget", ()),
    "hybrid": ("perfcast.models.estimators.hybrid:HybridRegressor", ()),
    "geometric": ("perfcast.models.estimators.ensemble:GeometricEnsemble", ()),
    "transfer": ("perfcast.models.estimators.transfer:SiblingTransfer", ()),
    "normalized": ("perfcast.models.estimators.normalize:TargetNormalizer", ()),
    "roofline": ("perfcast.models.estimators.roofline:RooflineRegressor", ()),
    "power": ("perfcast.models.estimators.power:PowerRegressor", ()),
    "adapted": ("perfcast.models.estimators.adapted_regressor:AdaptedRegressor", ("lightgbm",)),
    "power_adapted": ("perfcast.models.estimators.power_adapt:AdaptedJointRegressor", ("lightgbm",)),
    "group_attention": ("perfcast.models.estimators.group_attention:GroupAttentionRegressor", ("torch",)),
    "knn": ("perfcast.models.estimators.knn:KNNRegressor", ()),
    "sibling": ("perfcast.models.estimators.sibling:SiblingShrink", ()),
    "physics": ("perfcast.models.estimators.physics:PhysicsCorrected", ()),
    "vendor": ("perfcast.models.estimators.vendor:VendorSplit", ()),
    "layout": ("perfcast.models.estimators.layout_split:LayoutSplit", ()),
    "phase": ("perfcast.models.estimators.phase_split:PhaseSplit", ()),
}


class Stateful(Protocol):
    """What an estimator in :data:`KINDS` provides (``state_children`` is optional)."""

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Stateful: ...


def kind_of(est: Any) -> str | None:
    """The kind :data:`KINDS` gives ``est``'s class (None: not a perfcast estimator with a state)."""
    name = f"{type(est).__module__}:{type(est).__qualname__}"
    return next((kind for kind, (path, _) in KINDS.items() if path == name), None)


def state_class(kind: Any, where: str) -> type[Stateful]:
    """The class of ``kind``, imported on first use; a :class:`ModelFormatError` naming ``where`` if unknown."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ModelFormatError(f"{where} names estimator kind {kind!r}, which this perfcast does not know (known: "
                               f"{', '.join(sorted(KINDS))}); it was written by another perfcast: install that "
                               f"version, or retrain the model (perfcast train CONFIG)")
    module, _, cls = KINDS[kind][0].partition(":")
    return getattr(importlib.import_module(module), cls)


def requires(kind: str) -> tuple[str, ...]:
    """The libraries the state of ``kind`` needs (see :data:`KINDS`)."""
    return KINDS[kind][1] if kind in KINDS else ()


def children(est: Any) -> Iterator[tuple[str, str, Any]]:
    """(attribute, sub-folder, value) of each fitted sub-estimator ``est`` declares in ``state_children``."""
    for attr, folder in getattr(type(est), "state_children", {}).items():
        yield attr, folder, getattr(est, attr)


def with_children(obj: Any, loaded: dict[str, Any]) -> Any:
    """``obj`` (from ``from_state``) with its declared sub-estimators set from ``loaded`` (attribute -> value)."""
    declared = getattr(type(obj), "state_children", {})
    unknown = sorted(set(loaded) - set(declared))
    if unknown:
        raise ModelFormatError(f"{type(obj).__name__} has no sub-estimator {unknown[0]!r} (it has "
                               f"{sorted(declared) or 'none'})")
    for attr in declared:
        setattr(obj, attr, loaded.get(attr))
    return obj
