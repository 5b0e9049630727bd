"""Record store: atomic appends, dedupe, concurrent writers, bad batches never touch stored data."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd
import pytest

from perfcast.records.schema import SchemaError, hardware_ids
from perfcast.records.store import RecordStore


def _batch(start: int, n: int, device: str = "cpu a") -> pd.DataFrame:
    df = pd.DataFrame({
        "source": "probe", "device_name": device, "device_kind": "cpu", "op": "matmul",
        "m": range(start + 1, start + n + 1), "n": 64, "k": 64, "batch": 1, "dtype": "float32",
        "runtime_ms": [0.01 * (i + 1) for i in range(start, start + n)],
    })
    df["hw_id"] = hardware_ids(df)
    return df


def test_append_read_dedupe(store: RecordStore) -> None:
    r1 = store.append(_batch(0, 10), "gemm")
    assert (r1.offered, r1.written) == (10, 10)
    r2 = store.append(_batch(5, 10), "gemm")  # 5 overlap
    assert (r2.written, r2.duplicates) == (5, 5)
    df = store.read("gemm")
    assert len(df) == 15 and df["record_id"].is_unique
    assert sorted(df["m"].astype(int)) == list(range(1, 16))
    assert store.append(_batch(0, 15), "gemm").written == 0


def test_bad_batch_leaves_store_untouched(store: RecordStore) -> None:
    store.append(_batch(0, 5), "gemm")
    before = sorted(p.name for p in store.parts("gemm"))
    bad = _batch(10, 3)
    bad.loc[1, "m"] = -1
    with pytest.raises(SchemaError, match="row 1: m=-1"):
        store.append(bad, "gemm")
    assert sorted(p.name for p in store.parts("gemm")) == before
    assert len(store.read("gemm")) == 5
    assert not list((store.root / "gemm").glob(".tmp-*"))


def test_counts_filters_and_compact(store: RecordStore) -> None:
    store.append(_batch(0, 4, "cpu a"), "gemm")
    store.append(_batch(0, 6, "cpu b"), "gemm")
    counts = store.counts().set_index("device_name")["records"]
    assert counts.to_dict() == {"cpu a": 4, "cpu b": 6}
    sub = store.read("gemm", columns_=["m"], filters={"device_name": "cpu b"})
    assert len(sub) == 6
    assert store.compact("gemm") == 10
    assert len(store.parts("gemm")) == 1 and len(store.read("gemm")) == 10


def test_one_record_appends_read_each_earlier_part_once(store: RecordStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep appends one part per measurement: its dedupe must not re-read every earlier part each time."""
    reads: list[str] = []
    real = RecordStore._read_part

    def spy(self: RecordStore, path, want):  # noqa: ANN001, ANN202
        reads.append(path.name)
        return real(self, path, want)

    monkeypatch.setattr(RecordStore, "_read_part", spy)
    for i in range(30):
        assert store.append(_batch(i, 1), "gemm").written == 1
    assert len(reads) == 29 and len(set(reads)) == 29  # each part's ids read once, by the next append
    assert store.append(_batch(0, 30), "gemm").written == 0  # the remembered ids still deduplicate
    other = RecordStore(store.root)  # another writer's parts are seen too
    other.append(_batch(30, 2), "gemm")
    assert store.append(_batch(30, 3), "gemm").written == 1
    assert store.compact("gemm") == 33  # a compacted store's ids come from the merged part
    assert store.record_ids("gemm").to_pylist() == store.read("gemm")["record_id"].tolist()
    assert store.append(_batch(0, 34), "gemm").written == 1


def test_half_written_temp_file_is_invisible(store: RecordStore) -> None:
    store.append(_batch(0, 3), "gemm")
    (store.root / "gemm" / ".tmp-part-crashed.parquet").write_bytes(b"PAR1 half")
    assert len(store.read("gemm")) == 3


def _writer(root: str, start: int, n_batches: int) -> None:
    s = RecordStore(root)
    for b in range(n_batches):
        # overlapping ranges between the two writers: both try to store the same records
        s.append(_batch(start + b * 5, 10), "gemm")


def test_two_processes_appending_neither_corrupt_nor_lose(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(root, s, 20)) for s in (0, 50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = RecordStore(root).read("gemm")
    expected = set(range(1, 50 + 19 * 5 + 10 + 1))
    assert set(df["m"].astype(int)) == expected
    assert df["record_id"].is_unique and len(df) == len(expected)
    # no two parts hold the same record: dedupe happened under the lock, not only at read time
    ids = [i for p in RecordStore(root).parts("gemm") for i in pd.read_parquet(p, columns=["record_id"])["record_id"]]
    assert len(ids) == len(set(ids))


def test_parts_with_clashing_extra_types_still_read(store: RecordStore) -> None:
    a = _batch(0, 2).assign(x_bios_knob=[1.5, 2.5])
    b = _batch(2, 2).assign(x_bios_knob=["on", "off"])
    store.append(a, "gemm")
    store.append(b, "gemm")
    df = store.read("gemm").sort_values("m")
    assert list(df["x_bios_knob"]) == ["1.5", "2.5", "on", "off"]
