"""Fuzzed importer input: random truncations, overwrites, insertions, deletions and bit flips of small slices
of real dataset files must import cleanly or fail with the importer's named error, never another
exception, and an import that fails leaves the store unchanged."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("faults", REPO / "benchmarks" / "faults.py")
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> dict:  # noqa: ARG001
    """Per dataset: (root, unit, unit text, record_ids of the intact slice, scratch dir)."""
    out = {}
    for dataset in faults.FUZZ_BASES:
        tmp = tmp_path_factory.mktemp(dataset)
        root, unit, text = faults.fuzz_base(tmp, dataset)
        clean = RecordStore(tmp / "clean")
        get_importer(dataset).run(root, clean)
        task = "gemm" if dataset.startswith("gpperf") else "cpu_bench"
        out[dataset] = (root, unit, text, set(clean.read(task, columns_=["record_id"])["record_id"]), tmp, task)
    return out


@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=st.sampled_from(sorted(faults.FUZZ_BASES)), kind=st.sampled_from(faults.KINDS),
       where=st.floats(0, 1), payload=st.binary(min_size=1, max_size=8), on_text=st.booleans())
def test_fuzzed_file_imports_or_is_named(bases: dict, dataset: str, kind: str, where: float, payload: bytes,
                                         on_text: bool) -> None:
    root, unit, text, truth, tmp, task = bases[dataset]
    data = faults.apply_mutation(text, unit.name.endswith(".gz"), kind, where, payload, on_text)
    outcome = faults.fuzz_one(dataset, root, unit, data, tmp / "store")
    assert outcome in ("ok", "named"), (dataset, kind, where, payload, on_text, outcome)
    if outcome == "ok" and kind == "truncate":  # a cut file may lose rows, never store altered ones
        assert set(RecordStore(tmp / "store").read(task, columns_=["record_id"])["record_id"]) <= truth


def test_every_cut_of_a_small_file_is_a_whole_prefix_or_named(bases: dict) -> None:
    """Cut UCI's machine.data at every 97th byte: rows stored are always rows of the intact file."""
    root, unit, text, truth, tmp, task = bases["uci-computer-hardware"]
    for cut in range(1, len(text), 97):
        outcome = faults.fuzz_one("uci-computer-hardware", root, unit, text[:cut], tmp / "store")
        assert outcome in ("ok", "named"), (cut, outcome)
        if outcome == "ok":
            got = set(RecordStore(tmp / "store").read(task, columns_=["record_id"])["record_id"])
            assert got <= truth and (text[:cut].endswith(b"\n") or not got), cut
