"""The bundle manifest: format, library versions, checksums and its digest, verified before any value is used.

``manifest.json`` holds the format version, task, targets, feature columns, library versions, interval
calibration and domain ranges, training metadata, the estimator tree (see :mod:`perfcast.models.persistence.tree`)
and the SHA-256 of every other file. It is verified before any value of it is used (:func:`read_manifest`):
``format_version`` must be one this perfcast reads; ``digest`` must be the SHA-256 of the manifest's canonical
JSON (sorted keys, no whitespace) without the digest itself; every key the loader reads must be present with
its type; ``files`` must give each file's SHA-256, and only listed files are ever read (each checked before its
parser sees it); ``requires`` must name every library the estimators need, so the version check cannot be
skipped by emptying it. Any failure is a :class:`CorruptModelError` saying what and to save or download the
model again.

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
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.models.persistence import state
from perfcast.models.persistence.codecs import LEAF_KINDS
from perfcast.models.persistence.errors import CorruptModelError, IncompatibleModelError, ModelFormatError
from perfcast.records.schema import TASKS

FORMAT = "perfcast-model"
#: version 2 added the manifest's ``digest``; version 3 writes every estimator as a generic state node (its
#: kind, JSON params, an arrays file, its children). Versions 1 and 2 still load (:mod:`.legacy`).
FORMAT_VERSION = 3
SUPPORTED_VERSIONS: frozenset[int] = frozenset({1, 2, 3})
MANIFEST = "manifest.json"
#: distributions whose version is recorded; a bundle names those it needs in ``requires``
LIBRARIES: tuple[str, ...] = ("perfcast", "scikit-learn", "lightgbm", "xgboost", "torch", "skops", "numpy",
                              "pandas")


#: a library installed under another distribution name that provides the same module (pyproject.toml installs
#: ``xgboost-cpu`` where it exists: the ``xgboost`` wheel pulls a CUDA NCCL wheel of hundreds of MB)
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {"xgboost": ("xgboost", "xgboost-cpu")}


def library_versions(dists: tuple[str, ...] | list[str] = LIBRARIES) -> dict[str, str]:
    """Installed version of each of ``dists`` (absent ones omitted); read from metadata, no import."""
    out = {}
    for dist in dists:
        for name in DISTRIBUTIONS.get(dist, (dist,)):
            try:
                out[dist] = importlib_metadata.version(name)
                break
            except importlib_metadata.PackageNotFoundError:
                continue
    return out


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def check_versions(manifest: dict[str, Any], where: str) -> None:
    """Raise :class:`IncompatibleModelError` unless every required library matches in major.minor."""
    saved = manifest.get("versions", {})
    installed = library_versions(manifest.get("requires", []))  # each lookup scans the path: only those needed
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


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON (sorted keys, no whitespace), its own ``digest`` key left out."""
    rest = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


#: top-level manifest keys every bundle has, with their JSON types
REQUIRED_KEYS: dict[str, type] = {
    "format": str, "format_version": int, "task": str, "targets": list, "feature_columns": list, "features": dict,
    "versions": dict, "requires": list, "estimators": dict, "calibration": dict, "domain": dict, "metadata": dict,
    "files": dict}
_HEX = frozenset("0123456789abcdef")


def corrupt(root: Path, problem: str) -> CorruptModelError:
    return CorruptModelError(f"the model at {root} is damaged or was modified: {problem}; save or download the model "
                             f"again (models are written by `perfcast train`)")


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest, verified (format, version, digest, then the keys and types the loader reads) before any
    value of it is used."""
    path = root / MANIFEST
    if not path.is_file():
        raise ModelFormatError(f"{root} is not a perfcast model: it has no {MANIFEST} (models are written by "
                               f"`perfcast train` or perfcast.models.persistence.bundle.save_model)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise corrupt(root, f"{MANIFEST} is not readable JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFormatError(f"{path} is not a perfcast model manifest (format {FORMAT!r})")
    version = manifest.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise IncompatibleModelError(
            f"the model at {root} has bundle format {version!r}, newer than this perfcast reads ({FORMAT_VERSION}); "
            f"upgrade perfcast (it was built with perfcast {_version_of(manifest, 'perfcast')})")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise corrupt(root, f"{MANIFEST} has format_version {version!r}, which no perfcast wrote (this one reads "
                      f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))})")
    if version >= 2 or "digest" in manifest:
        if manifest.get("digest") != manifest_digest(manifest):
            raise corrupt(root, f"{MANIFEST} does not match its digest" if "digest" in manifest else
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
            raise corrupt(root, f"{MANIFEST} has no {key!r}")
        if not isinstance(m[key], kind) or isinstance(m[key], bool):
            raise corrupt(root, f"{MANIFEST} {key!r} is a {type(m[key]).__name__}, not a "
                          f"{'JSON object' if kind is dict else kind.__name__}")
    if m["task"] not in TASKS:
        raise corrupt(root, f"{MANIFEST} 'task' is {m['task']!r}, not one of {', '.join(TASKS)}")
    for key in ("targets", "feature_columns", "requires"):
        if not m[key] or not all(isinstance(v, str) for v in m[key]):
            raise corrupt(root, f"{MANIFEST} {key!r} must be a non-empty list of names, not {m[key]!r}")
    files = m["files"]
    bad = [k for k, v in files.items() if not (isinstance(v, str) and len(v) == 64 and set(v) <= _HEX)]
    if not files or bad:
        raise corrupt(root, f"{MANIFEST} 'files' must map each file to its SHA-256 ({bad[0]!r} has {files[bad[0]]!r})"
                      if bad else f"{MANIFEST} 'files' lists no file")
    heads = m["estimators"].get("heads")
    if not isinstance(m["estimators"].get("joint"), bool) or not isinstance(heads, list) or not heads \
            or not all(isinstance(h, dict) for h in heads):
        raise corrupt(root, f"{MANIFEST} 'estimators' must hold 'joint' (true/false) and a non-empty list of 'heads'")
    needed = {"perfcast", "scikit-learn"} | needed_libraries(heads)
    foreign = sorted(set(m["requires"]) - set(LIBRARIES))
    if foreign:  # an error message must never tell the user to install what a manifest names
        raise corrupt(root, f"{MANIFEST} 'requires' names {foreign}, which perfcast never requires")
    absent = sorted(needed - set(m["requires"]))
    if absent:
        raise corrupt(root, f"{MANIFEST} 'requires' lacks {absent}, which its estimators need")
    unversioned = [lib for lib in m["requires"] if not isinstance(m["versions"].get(lib), str)]
    if unversioned:
        raise corrupt(root, f"{MANIFEST} 'versions' gives no version of {unversioned}, which it requires")


def needed_libraries(nodes: list[Any]) -> set[str]:
    """The libraries (besides perfcast and scikit-learn) the estimator nodes need, nested ones included: a leaf's
    codec library, a state kind's :func:`~perfcast.models.persistence.state.requires`."""
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, list):
            out |= needed_libraries(node)
        elif isinstance(node, dict):
            kind = node.get("kind")
            if kind in LEAF_KINDS:
                out.add(LEAF_KINDS[kind].library)
            elif "params" in node or kind == "group_attention":  # a state node (a format 2 network: a folder)
                out |= set(state.requires(kind))
            # format 3 nests under "children", formats 1 and 2 under the wrappers' own keys
            out |= needed_libraries([node.get(k) for k in ("inner", "members", "correction", "runtime")])
            if isinstance(node.get("children"), dict):
                out |= needed_libraries(list(node["children"].values()))
    return out


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` into bundle ``root`` at this format version, sealed with its :func:`manifest_digest`
    (every writer of bundles goes through here, so no bundle is written that its reader would refuse)."""
    manifest = json.loads(json.dumps({**manifest, "format_version": FORMAT_VERSION}, default=_json_default))
    manifest.pop("digest", None)  # the values as a reader will see them, then sealed
    manifest["digest"] = manifest_digest(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    raise TypeError(f"model metadata value {value!r} ({type(value).__name__}) is not JSON-serialisable")
