"""A fitted feature transformer as JSON: its class (one of perfcast's), parameters and fitted attributes.

Why JSON: the transformer's fitted state is a few numbers, names and small arrays, and only perfcast's own
transformer classes (:data:`FEATURE_CLASSES`) are ever constructed from a manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perfcast.features import TRANSFORMERS, RecordFeatures
from perfcast.models.persistence.errors import ModelFormatError

#: the feature transformers a bundle may name, by qualified class name
FEATURE_CLASSES: dict[str, type[RecordFeatures]] = {f"{c.__module__}.{c.__qualname__}": c for c in TRANSFORMERS.values()}


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
    raise ModelFormatError(f"cannot save {where} of type {type(value).__name__} as data; perfcast.models.persistence "
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
