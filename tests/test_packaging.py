"""What a fresh `pip install` gets: every imported library declared with a lower bound, the lean xgboost variant
where it exists (and the full wheel everywhere else), and the versions the shipped built-in models load with
(issue 16: `perfcast predict` answers on a fresh install; the install stays lean)."""

from __future__ import annotations

import ast
import json
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from perfcast.models.persistence.manifest import DISTRIBUTIONS, library_versions

ROOT = Path(__file__).resolve().parents[1]
#: import name -> distribution name, where they differ
DIST_OF = {"sklearn": "scikit-learn", "yaml": "pyyaml", "pynvml": "nvidia-ml-py"}
#: platforms pip meets, as the markers see them
PLATFORMS = [{"sys_platform": s, "platform_machine": m} for s, m in
             (("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "arm64"), ("darwin", "x86_64"),
              ("win32", "AMD64"), ("win32", "ARM64"))]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = [r for reqs in project["optional-dependencies"].values() for r in reqs]
    return [Requirement(r) for r in [*project["dependencies"], *extra]]


def _imported() -> set[str]:
    """Top-level third-party modules that perfcast's own code imports."""
    found: set[str] = set()
    for path in (ROOT / "perfcast").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"perfcast"}


def test_every_imported_library_is_declared_with_a_lower_bound() -> None:
    declared: dict[str, list[Requirement]] = {}
    for req in _requirements():
        declared.setdefault(req.name.lower(), []).append(req)
    for module in sorted(_imported()):
        dist = DIST_OF.get(module, module)
        names = DISTRIBUTIONS.get(dist, (dist,))
        reqs = [r for n in names for r in declared.get(n, [])]
        assert reqs, f"perfcast imports {module!r} but pyproject.toml declares none of {names}"
        for req in reqs:
            assert any(s.operator in (">=", "==", "~=") for s in req.specifier), f"{req} has no lower bound"


def test_exactly_one_xgboost_distribution_on_every_platform() -> None:
    """xgboost-cpu (no CUDA NCCL wheel) where xgboost publishes it, the full wheel elsewhere: never both, never none."""
    xgb = [r for r in _requirements() if r.name in DISTRIBUTIONS["xgboost"]]
    for env in PLATFORMS:
        chosen = [r.name for r in xgb if r.marker is None or r.marker.evaluate(env)]
        assert len(chosen) == 1, (env, chosen)
    lean = {tuple(env.values()) for env in PLATFORMS
            for r in xgb if r.name == "xgboost-cpu" and r.marker.evaluate(env)}
    assert lean == {("linux", "x86_64"), ("win32", "AMD64")}


def test_the_installed_xgboost_version_is_read_under_either_distribution() -> None:
    xgboost = pytest.importorskip("xgboost")
    assert library_versions(["xgboost"]) == {"xgboost": xgboost.__version__}


@pytest.mark.parametrize("task", ["gemm", "attention"])
def test_the_declared_versions_are_those_the_built_in_models_load_with(task: str) -> None:
    """A bundle loads only with the major.minor it was built with, so pyproject.toml must admit that major.minor
    and no other, or a fresh install could get a newer release that refuses the shipped model."""
    manifest = json.loads((ROOT / "perfcast" / "builtin_models" / task / "manifest.json").read_text(encoding="utf-8"))
    by_name = {r.name.lower(): r for r in _requirements()}
    for lib in manifest["requires"]:
        if lib == "perfcast":
            continue
        built = Version(manifest["versions"][lib])
        spec = by_name[lib].specifier
        assert built in spec, f"{lib} {built} (the built-in {task} model's) is outside pyproject.toml's {spec}"
        for other in (Version(f"{built.major}.{built.minor + 1}.0"), Version(f"{built.major}.{built.minor - 1}.99")):
            if other.minor >= 0:
                assert other not in spec, (f"pyproject.toml's {lib}{spec} admits {other}, which the built-in {task} "
                                           f"model (built with {built}) refuses")
