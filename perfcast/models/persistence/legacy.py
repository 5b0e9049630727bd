"""Estimator entries of bundle formats 1 and 2, read into the same classes as format 3.

Why a table per old kind: before format 3 each wrapper kept its state under keys of its own (a hybrid's
``floors``, a transfer's ``siblings.npz``, an adapted model's ``shape_file``). Every bundle saved before
format 3 (tests/data/format2 keeps one) has them, so this module translates each old entry into the ``(params, arrays,
children)`` of the class's state protocol and builds it with the reader's generic
:meth:`~perfcast.models.persistence.tree.Reader.build`. Nothing here is written any more; new kinds never
need a line here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from perfcast.models.persistence.manifest import MANIFEST, corrupt

#: what an old entry's translation gives: the class's params, arrays, and children (attribute -> old entry)
Translated = tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]


def _hybrid(spec: dict[str, Any], reader: Any) -> Translated:
    params = {"target": spec["target"], "columns": spec.get("columns"), "floors": spec.get("floors", {}),
              "pooled_floor": spec.get("pooled_floor", 0.0)}
    return params, {}, {"estimator_": spec["inner"]}


def _transfer(spec: dict[str, Any], reader: Any) -> Translated:
    return spec["params"], reader.arrays(spec["file"]), {"estimator_": spec["inner"]}


def _power(spec: dict[str, Any], reader: Any) -> Translated:
    return ({"targets": spec["targets"], "physics": spec["physics"]}, {},
            {"correction_": spec["correction"], "runtime_": spec.get("runtime")})


def _adapted(spec: dict[str, Any], reader: Any) -> Translated:
    arrays: dict[str, np.ndarray] = {}
    donors = spec.get("donors")
    if donors:
        found = reader.arrays(donors["file"])
        arrays = {"donor_keys": found["keys"], "donor_log_latency": found["log_latency"]}
        donors = {"devices": [donors["device"]], "columns": donors["columns"]}
    if spec.get("shape_file"):
        text = reader.file(spec["shape_file"]).read_text(encoding="utf-8")
        arrays["shape_text"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return {"correction": spec["correction"], "donors": donors or None}, arrays, {"inner": spec["inner"]}


#: old kind -> its translation into the state protocol of the class that reads it now
OLD_KINDS: dict[str, Callable[[dict[str, Any], Any], Translated]] = {
    "log": lambda spec, reader: ({}, {}, {"regressor_": spec["inner"]}),
    "hybrid": _hybrid,
    "geometric": lambda spec, reader: ({}, {}, {"estimators_": spec["members"]}),
    "transfer": _transfer,
    "roofline": lambda spec, reader: ({"target": spec["target"]}, {}, {}),
    "power": _power,
    "adapted": _adapted,
    "normalized": lambda spec, reader: (spec["baseline"], {}, {"estimator_": spec["inner"]}),
}


def decode_legacy(spec: dict[str, Any], reader: Any) -> Any:
    """The estimator an entry of bundle format 1 or 2 describes (its children decoded by ``reader``)."""
    kind = spec.get("kind")
    if kind == "group_attention":  # a folder the network's own loader reads (tensors only)
        from perfcast.models.estimators.group_attention import GroupAttentionRegressor

        return GroupAttentionRegressor.load(reader.directory(spec["dir"]))
    if kind not in OLD_KINDS:
        return reader.build(kind, {}, {}, {})  # an unknown kind: refused by name there
    try:
        params, arrays, kids = OLD_KINDS[kind](spec, reader)
    except KeyError as err:
        raise corrupt(reader.root, f"{MANIFEST} has a {kind} estimator without {err}") from None
    return reader.build(kind, params, arrays, {k: reader.decode(v) for k, v in kids.items()})
