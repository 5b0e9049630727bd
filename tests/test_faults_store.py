"""Fault suite for the record store and probes: every case of benchmarks/faults.py (the script that
measures FAULTS.md) must end in its named error with no crash, no silent change and no lost record."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from perfcast.records.store import CorruptPartError, CorruptPartWarning, RecordStore, StoreNotWritableError
from perfcast.perf_probe.gemm import GemmProbe
from perfcast.perf_probe.sweep import _Claims, run_sweep

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("faults", REPO / "benchmarks" / "faults.py")
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)

FAST = {"max_time_s": 0.05, "warmup_s": 0.01}


def _assert_clean(r: dict) -> None:
    assert not r["crash"] and not r["silent_change"] and not r["data_lost"], r


def test_sixty_random_bit_flips_are_all_named(tmp_path: Path) -> None:
    r = faults.flip_bits(tmp_path, n=60, seed=12)
    _assert_clean(r)
    assert r["got"] == "60/60 named the part"


def test_damaged_part_is_named_or_skipped_loudly(tmp_path: Path) -> None:
    rs = faults.seeded_store(tmp_path, parts=3)
    bad = rs.parts("gemm")[1]
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(CorruptPartError, match=bad.name) as err:
        rs.read("gemm")
    assert "perfcast data repair" in str(err.value)
    with pytest.raises(CorruptPartError, match=bad.name):
        rs.record_ids("gemm")  # what every append and probe resume reads
    with pytest.warns(CorruptPartWarning, match=bad.name):
        assert len(rs.read("gemm", on_bad="skip")) == 40


@pytest.mark.parametrize("case", [
    faults.truncated_part, faults.check_and_repair, faults.legacy_part, faults.mixed_timestamps,
    faults.concurrent_mock_s3, faults.probe_into_file, faults.probe_under_file,
], ids=lambda c: c.__name__)
def test_store_case(case, tmp_path: Path) -> None:  # noqa: ANN001
    _assert_clean(case(tmp_path))


@pytest.mark.parametrize("case", [*faults.import_cases(), faults.import_missing_path],
                         ids=[c[0] for c in faults.IMPORT_CASES] + ["missing path"])
def test_import_case(case, tmp_path: Path) -> None:  # noqa: ANN001
    _assert_clean(case(tmp_path))


@pytest.mark.parametrize("case", [faults.train_missing_import, faults.train_empty_filter], ids=lambda c: c.__name__)
def test_train_case(case, tmp_path: Path) -> None:  # noqa: ANN001
    _assert_clean(case(tmp_path))


def test_store_on_a_readonly_dir_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only directories: nothing to observe")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(StoreNotWritableError, match="cannot be written"):
        RecordStore(ro / "store").check_writable("gemm")


def test_append_that_cannot_be_written_stores_nothing(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreNotWritableError, match="is a file"):
        RecordStore(f).append(faults.batch(0, 3), "gemm")
    assert f.read_text() == "x"


def test_a_claim_of_a_dead_sweep_is_taken_over_and_a_live_one_respected(store: RecordStore) -> None:
    cfgs = faults.sweep_configs(3)
    probe = GemmProbe(devices=("cpu",), **FAST)
    hw_id = run_sweep(probe, store, configs=cfgs[:1], progress=False).hw_ids.pop()
    claims = _Claims(store, "gemm")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claims.dir.mkdir(parents=True, exist_ok=True)
    claims._path(hw_id, probe.key(cfgs[1])).write_text(
        json.dumps({"pid": int(dead.stdout), "host": claims.host, "at": 0.0}))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claims._path(hw_id, probe.key(cfgs[2])).write_text(
            json.dumps({"pid": live.pid, "host": claims.host, "at": 1e12}))
        res = run_sweep(probe, store, configs=cfgs, progress=False)
    finally:
        live.kill()
        live.wait()
    assert (res.skipped_done, res.measured, res.claimed_elsewhere) == (1, 1, 1)
    res = run_sweep(probe, store, configs=cfgs, progress=False)  # the holder died: the rerun resumes
    assert (res.skipped_done, res.measured) == (2, 1)
    assert sorted(store.read("gemm")["params_json"]) == sorted(probe.key(c) for c in cfgs)
    assert not any(claims.dir.iterdir())  # every claim released


@pytest.mark.slow
@pytest.mark.parametrize("case", [faults.probe_disk_full, faults.probe_sigint, faults.concurrent_probes],
                         ids=lambda c: c.__name__)
def test_probe_fault(case, tmp_path: Path) -> None:  # noqa: ANN001
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        _assert_clean(case(tmp_path))


def test_a_store_on_a_filesystem_uri_verifies_its_parts(tmp_path: Path) -> None:
    import pyarrow.fs as pafs

    local = RecordStore(f"file://{tmp_path}/store")  # a file:// URI is a local store: lock and rename
    assert local.local and local.append(faults.batch(0, 4), "gemm").written == 4
    assert len(RecordStore(tmp_path / "store").read("gemm")) == 4

    fs, base = pafs.FileSystem.from_uri("mock:///store")
    remote = RecordStore(base, filesystem=fs)
    assert not remote.local and remote.append(faults.batch(0, 4), "gemm").written == 4
    part = str(remote.parts("gemm")[0])
    with fs.open_input_stream(part) as fh:
        data = bytearray(fh.readall())
    data[40] ^= 4
    with fs.open_output_stream(part) as fh:
        fh.write(bytes(data))
    with pytest.raises(CorruptPartError, match=Path(part).name):
        RecordStore(base, filesystem=fs).read("gemm")
    assert [s.status for s in remote.check(("gemm",))] == ["bad"]
