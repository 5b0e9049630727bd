"""Writing and reading a tree of fitted estimators, knowing no model: state nodes and library leaves.

A state node (any class of :data:`~perfcast.models.persistence.state.KINDS`) is written as
``{"kind", "params", "arrays", "children"}``: its ``to_state()`` params inline, its arrays in ``<folder>/<kind>.npz``
(absent when it has none), and each sub-estimator it declares in ``state_children`` as a node of its own. A
library model is a leaf entry of its codec (:mod:`perfcast.models.persistence.codecs`). Reading goes the same way
back: leaves through their codec, state nodes through ``from_state`` and the declared children, so what loads
is the estimator class that was trained. Nodes of bundle formats 1 and 2 are read by
:mod:`perfcast.models.persistence.legacy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perfcast.models.estimators.log_target import LogTarget, is_log_wrapper
from perfcast.models.persistence import state
from perfcast.models.persistence.codecs import LEAF_KINDS, LEAVES, new_file
from perfcast.models.persistence.errors import ModelFormatError
from perfcast.models.persistence.legacy import decode_legacy
from perfcast.models.persistence.manifest import MANIFEST, corrupt, sha256


def serving_form(est: Any) -> Any:
    """A library wrapper perfcast trains with, as the perfcast class that saves and serves it (the log-target
    wrapper of scikit-learn as :class:`~perfcast.models.estimators.log_target.LogTarget`); else ``est``."""
    return LogTarget.of(est) if is_log_wrapper(est) else est


@dataclass
class Writer:
    """Writes estimator files under ``root`` and collects the libraries they need."""

    root: Path
    requires: set[str] = field(default_factory=lambda: {"perfcast", "scikit-learn"})

    def encode(self, est: Any, rel: str) -> dict[str, Any] | list[Any] | None:
        """The manifest entry of ``est`` (None, one estimator, or a list of them), files written under ``rel``."""
        if est is None:
            return None
        if isinstance(est, (list, tuple)):
            return [self.encode(e, f"{rel}{i}") for i, e in enumerate(est)]
        est = serving_form(est)
        kind = state.kind_of(est)
        if kind is None:
            return self._leaf(est, rel)
        params, arrays = est.to_state()
        node: dict[str, Any] = {"kind": kind, "params": params, "children": {}}
        self.requires |= set(state.requires(kind))
        if arrays:
            path = new_file(self.root, f"{rel}/{kind}.npz")
            np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
            node["arrays"] = f"{rel}/{kind}.npz"
        for attr, folder, child in state.children(est):
            node["children"][attr] = self.encode(child, f"{rel}/{folder}" if folder else rel)
        return node

    def _leaf(self, est: Any, rel: str) -> dict[str, Any]:
        for codec in LEAVES:
            if codec.claims(est):
                self.requires.add(codec.library)
                return codec.write(est, self.root, rel)
        raise ModelFormatError(f"cannot save an estimator of type {type(est).__name__}: a bundle holds perfcast's "
                               f"estimators ({', '.join(state.KINDS)}) and {', '.join(LEAF_KINDS)} models")


class Reader:
    """Reads a bundle's files: only those ``files`` lists, each checked against its SHA-256 first."""

    def __init__(self, root: Path, threads: int, files: dict[str, str]):
        self.root, self.threads, self.files = root, threads, files

    def verify(self) -> None:
        """Every file the manifest lists is there with its recorded SHA-256: a truncated or edited file is
        refused here, before a library's parser (some abort the process on bad input) sees it."""
        for rel, digest in self.files.items():
            if sha256(self.file(rel)) != digest:
                raise corrupt(self.root, f"{rel} does not match the checksum in {MANIFEST}")

    def _inside(self, rel: Any) -> Path:
        path = (self.root / str(rel)).resolve()
        if not isinstance(rel, str) or self.root.resolve() not in path.parents or not path.exists():
            raise ModelFormatError(f"{self.root}: {MANIFEST} names {rel!r}, which is not a file inside the model")
        return path

    def file(self, rel: Any) -> Path:
        """The path of a listed file inside the bundle (so verified before it is read)."""
        path = self._inside(rel)
        if rel not in self.files or not path.is_file():
            raise corrupt(self.root, f"{MANIFEST} does not list {rel!r} among its checksummed files, so it is not read")
        return path

    def directory(self, rel: Any) -> Path:
        """A folder a library reads whole (a format 2 group-attention network): every file in it must be listed."""
        path = self._inside(rel)
        inside = [p.relative_to(self.root.resolve()).as_posix() for p in path.rglob("*") if p.is_file()]
        unlisted = [f for f in inside if f not in self.files]
        if not inside or unlisted:
            raise corrupt(self.root, f"{rel} holds files {MANIFEST} does not list ({unlisted[:3]})" if unlisted
                          else f"{rel} holds no file")
        return path

    def arrays(self, rel: Any) -> dict[str, np.ndarray]:
        """The named arrays of a listed ``.npz`` (read without pickle)."""
        with np.load(self.file(rel), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def build(self, kind: Any, params: Any, arrays: dict[str, np.ndarray], loaded: dict[str, Any]) -> Any:
        """The estimator of ``kind`` from its state and its already loaded sub-estimators."""
        cls = state.state_class(kind, f"{self.root}/{MANIFEST}")
        if not isinstance(params, dict):
            raise corrupt(self.root, f"{MANIFEST} gives the {kind} estimator params {params!r}, not a JSON object")
        return state.with_children(cls.from_state(params, arrays), loaded)

    def decode(self, node: Any) -> Any:
        """The estimator a manifest entry describes (a list entry: a list; null: None)."""
        if node is None:
            return None
        if isinstance(node, list):
            return [self.decode(n) for n in node]
        if not isinstance(node, dict):
            raise corrupt(self.root, f"{MANIFEST} has estimator entry {node!r}, not a JSON object")
        kind = node.get("kind")
        if kind in LEAF_KINDS:
            return LEAF_KINDS[kind].read(node, self, self.threads)
        if "children" not in node:  # an entry of bundle format 1 or 2
            return decode_legacy(node, self)
        kids = node["children"]
        if not isinstance(kids, dict):
            raise corrupt(self.root, f"{MANIFEST} gives the {kind} estimator children {kids!r}, not a JSON object")
        arrays = self.arrays(node["arrays"]) if node.get("arrays") is not None else {}
        return self.build(kind, node.get("params"), arrays, {k: self.decode(v) for k, v in kids.items()})
