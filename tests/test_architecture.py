"""The import graph follows the data flow (see ARCHITECTURE.md).

Every ``perfcast/**/*.py`` is parsed with :mod:`ast` (imports inside functions count: they run too, only later),
each module is mapped to its stage, and the test fails on an import from a later stage, on a cycle between files
(also within one stage) and on a module over :data:`MAX_LINES` lines. Failures print the offending edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "perfcast"
MAX_LINES = 500

#: stages, earliest first; a module may import its own stage or an earlier one. The package root
#: ``perfcast/__init__.py`` (lazy public re-exports) is outside the order: it may name anything, nothing imports it.
STAGES: list[tuple[str, ...]] = [
    ("perfcast._version", "perfcast.mlflow_quiet", "perfcast.lazy"),
    ("perfcast.records",),
    ("perfcast.perf_probe",),
    ("perfcast.datasets",),
    ("perfcast.features",),
    ("perfcast.models",),
    ("perfcast.eval",),
    ("perfcast.training",),
    ("perfcast.predictor", "perfcast.builtin", "perfcast.mlflow_model"),
    ("perfcast.experiments",),
    ("perfcast.workflows",),
    ("perfcast.cli",),
]

#: cycles still present because another change owns the fix; each entry names its issue. Empty when done.
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``pkg/__init__.py`` is named ``pkg``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The perfcast modules ``name`` imports anywhere in its file.

    ``from pkg import sub`` is an edge to ``pkg.sub`` when that is a module, else to ``pkg`` (its ``__init__``);
    parent packages that Python initialises on the way are not counted: their ``__init__`` files are checked
    as modules in their own right.
    """
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in modules else source)
    return {target for target in found if target in modules and target != name}


def stage_of(module: str) -> int | None:
    """Index of the stage ``module`` belongs to; None for the package root."""
    if module == "perfcast":
        return None
    for index, prefixes in enumerate(STAGES):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no stage: add it to STAGES in {Path(__file__).name} "
                         "and to the layout in ARCHITECTURE.md")


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_every_module_has_a_stage():
    for name in module_files():
        stage_of(name)


def test_no_import_from_a_later_stage():
    back_edges = []
    for source, targets in sorted(import_graph().items()):
        for target in sorted(targets):
            if target == "perfcast":
                back_edges.append(f"{source} -> perfcast (the package root is for users; import the module)")
                continue
            source_stage, target_stage = stage_of(source), stage_of(target)
            if source_stage is not None and target_stage > source_stage:
                back_edges.append(f"{source} (stage {source_stage}) -> {target} (stage {target_stage})")
    assert not back_edges, "imports against the data flow:\n  " + "\n  ".join(back_edges)


def test_no_import_cycle_between_files():
    graph = import_graph()
    found = find_cycles(graph)
    stale = KNOWN_CYCLES - {frozenset(c) for c in found}
    assert not stale, f"no longer cycles, remove them from KNOWN_CYCLES: {[sorted(c) for c in stale]}"
    cycles = [c for c in found if frozenset(c) not in KNOWN_CYCLES]
    report = []
    for component in cycles:
        members = set(component)
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
        report.append("cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(edges))
    assert not cycles, "import cycles:\n  " + "\n  ".join(report)


def test_no_module_over_the_size_limit():
    too_long = {str(path.relative_to(ROOT)): n for path in module_files().values()
                if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by responsibility): {too_long}"


def test_checker_sees_imports_inside_functions(tmp_path):
    """The walker must catch a late import hidden in a function, relative imports, and a two-file cycle."""
    pkg = tmp_path / "perfcast" / "records"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from perfcast.cli.main import app\n    from . import b\n")
    (pkg / "b.py").write_text("from perfcast.records.a import f\n")
    modules = {"perfcast.records": pkg / "__init__.py", "perfcast.records.a": pkg / "a.py",
               "perfcast.records.b": pkg / "b.py", "perfcast.cli.main": tmp_path / "main.py"}
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items() if path.exists()}
    assert graph["perfcast.records.a"] == {"perfcast.cli.main", "perfcast.records.b"}
    assert find_cycles(graph) == [["perfcast.records.a", "perfcast.records.b"]]
    assert stage_of("perfcast.cli.main") > stage_of("perfcast.records.a")


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
