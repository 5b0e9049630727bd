"""PerfCastDB sample, SPECpower_ssj2008 and UCI Computer Hardware importers on the real files: record
layout, parsed values checked against specific source rows and the sources' own summary columns,
idempotent re-import and clear errors for a wrong layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.datasets.importers.base import DatasetLayoutError
from perfcast.records.store import RecordStore


def _import(name: str, root: Path, store: RecordStore) -> pd.DataFrame:
    results = get_importer(name).run(root, store)
    assert sum(r.written for r in results) > 0
    return store.read("cpu_bench")


# ---------------------------------------------------------------- PerfCastDB sample


@pytest.fixture(scope="module")
def pcdb_root(data_root: Path) -> Path:
    return data_root / "perfcastdb-sample"


@pytest.fixture(scope="module")
def pcdb_raw(pcdb_root: Path) -> pd.DataFrame:
    return pd.read_csv(pcdb_root / "train_data.csv")


@pytest.fixture(scope="module")
def pcdb(pcdb_root: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return _import("perfcastdb-sample", pcdb_root, RecordStore(tmp_path_factory.mktemp("pcdb") / "store"))


def test_perfcastdb_one_record_per_row_with_units(pcdb: pd.DataFrame, pcdb_raw: pd.DataFrame) -> None:
    assert len(pcdb) == len(pcdb_raw) and (pcdb["x_split"] == "train").all()
    units = pcdb.groupby("benchmark")["score_unit"].unique().map(list).to_dict()
    assert units == {
        "HPCG": ["GFLOP/s"], "Memory Latency Checker Bandwidth": ["MB/s"], "Memory Latency Checker latency": ["ns"],
        "SPECrate2017_fp_base": ["SPECrate"], "SPECrate2017_int_base": ["SPECrate"], "Stream": ["MB/s"],
    }
    assert (pcdb["score"] > 0).all()
    # the scores are the source's values, row for row
    merged = pcdb.merge(
        pcdb_raw, left_on=["x_kubernetes_pod_id", "x_iterationid", "subtest"],
        right_on=["kubernetes.pod_id", "IterationID", "RESULT.TestName"],
    )
    assert len(merged) == len(pcdb_raw)
    np.testing.assert_allclose(merged["score"], merged["RESULT.Value"])


def test_perfcastdb_hardware_of_first_row(pcdb: pd.DataFrame) -> None:
    """Row 0: SPECrate2017_fp_base 503.bwaves_r on 2 × Xeon Platinum 8487C, 16 × 64 GB DDR5-4800."""
    first = pcdb["x_iterationid"] == "002e2af2-bd05-4e2f-a5e9-be6f1ca5bf25_0"
    r = pcdb[first & (pcdb["subtest"] == "503.bwaves_r")]
    assert len(r) == 1
    r = r.iloc[0]
    assert (r["benchmark"], r["repeat"]) == ("SPECrate2017_fp_base", 0)
    assert r["variant"] == "gcc8.1 O2 | SSE | MultipleCopy"
    assert r["score"] == pytest.approx(1079.62, abs=1e-3) and r["compiler"] == "gcc8.1"
    assert (r["vendor"], r["family"], r["x_cpu_model"]) == ("Intel", "Xeon Platinum", "8487C")
    assert (r["sockets"], r["cores"], r["threads"], r["numa_nodes"]) == (2, 112, 224, 2)
    assert (r["clock_mhz"], r["max_clock_mhz"], r["x_allcore_max_clock_mhz"]) == (1900, 3800, 2800)
    assert (r["l1d_kb"], r["l1i_kb"], r["l2_kb"], r["l3_mb"]) == (48, 32, 2048, 210)  # 105 MB × 2 sockets
    assert (r["mem_gb"], r["mem_dimms"], r["mem_ddr_gen"], r["mem_mts"]) == (1024, 16, 5, 4800)
    assert r["tdp_w"] == 350 and r["os"] == "Red Hat Enterprise Linux 8.2 (Ootpa)"
    flags = set(r["isa_flags"].split())
    assert {"avx512f", "avx512_bf16", "amx-tile", "amx-int8"} <= flags and "avx512_4vnniw" not in flags
    assert r["x_isa_avx512f"] and not r["x_isa_avx512_4vnniw"]
    assert (r["x_acc_qat"], r["x_acc_dsa"], r["x_acc_iax"]) == (2, 8, 8)
    assert r["x_prefetch_dcu_hw"] and r["x_prefetch_l2_adj"]


def test_perfcastdb_parsed_memory_agrees_with_measured_columns(pcdb: pd.DataFrame) -> None:
    """The sample measures DIMMs separately (Measure.DIMM.*): parsed totals and speeds must match them."""
    measured = pcdb.filter(like="x_measure_dimm_").apply(pd.to_numeric, errors="coerce")  # kept as text
    assert (pcdb["mem_gb"] == measured["x_measure_dimm_total"]).all()  # DDR + HBM, as the source counts
    assert (pcdb["mem_mts"] == measured["x_measure_dimm_freq"]).all()
    hbm = pcdb["x_hbm_gb"].notna()
    assert hbm.any() and (pcdb.loc[hbm, "family"] == "Xeon Max").all()
    assert (pcdb.loc[~hbm, "mem_dimms"] == measured.loc[~hbm, "x_measure_dimm_num"]).all()
    assert (pcdb["threads"] == pcdb["cores"] * pd.to_numeric(pcdb["x_svr_cpu_threads_per_core"])).all()


def test_perfcastdb_keeps_bios_and_other_columns(pcdb: pd.DataFrame, pcdb_raw: pd.DataFrame) -> None:
    bios = [c for c in pcdb_raw.columns if c.startswith("BIOS.")]
    assert len([c for c in pcdb.columns if c.startswith("x_bios_")]) == len(bios)
    assert {"x_bios_snc", "x_bios_total_memory_encryption_multi_tenant_tme_mt", "x_bios_fan_pwm_offset"} <= set(pcdb)
    with_bios = pcdb["x_bios_snc"].notna()
    assert with_bios.sum() == pcdb_raw["BIOS.SNC"].notna().sum() and set(pcdb.loc[with_bios, "x_bios_snc"]) == {"0xf"}
    assert set(pcdb["x_svr_system_microcode"]) == set(pcdb_raw["SVR.System.Microcode"])


def test_perfcastdb_discovers_every_split_and_reimports_nothing(pcdb_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "pcdb"
    root.mkdir()
    shutil.copy(pcdb_root / "train_data.csv", root / "train_data.csv")
    lines = (pcdb_root / "train_data.csv").read_text().splitlines(keepends=True)
    (root / "test_data.csv").write_text("".join(lines[:21]))  # a real 20-row slice standing in for test
    store = RecordStore(tmp_path / "store")
    recs = _import("perfcastdb-sample", root, store)
    assert recs["x_split"].value_counts().to_dict() == {"train": len(lines) - 1, "test": 20}
    assert sum(r.written for r in get_importer("perfcastdb-sample").run(root, store)) == 0


def test_perfcastdb_wrong_layout(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"\*_data.csv"):
        get_importer("perfcastdb-sample").run(tmp_path, RecordStore(tmp_path / "store"))
    shutil.copy(data_root / "uci-computer-hardware" / "machine.data", tmp_path / "train_data.csv")
    with pytest.raises(DatasetLayoutError, match="lacks column"):
        get_importer("perfcastdb-sample").run(tmp_path, RecordStore(tmp_path / "store"))


# ---------------------------------------------------------------- SPECpower_ssj2008


@pytest.fixture(scope="module")
def power_root(data_root: Path) -> Path:
    return data_root / "specpower-ssj2008"


@pytest.fixture(scope="module")
def power_raw(power_root: Path) -> pd.DataFrame:
    return pd.read_csv(power_root / "SPECpower-full-results.csv", dtype="string")


@pytest.fixture(scope="module")
def power(power_root: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return _import("specpower-ssj2008", power_root, RecordStore(tmp_path_factory.mktemp("power") / "store"))


def test_specpower_two_records_per_compliant_result(power: pd.DataFrame, power_raw: pd.DataFrame) -> None:
    compliant = power_raw[power_raw["ssj_ops @ 100%"] != "NC"].drop_duplicates()  # "NC" = non-compliant
    assert power["subtest"].value_counts().to_dict() == {"100%": len(compliant), "active_idle": len(compliant)}
    full, idle = power[power["subtest"] == "100%"], power[power["subtest"] == "active_idle"]
    assert (full["score"] > 0).all() and (full["score_unit"] == "ssj_ops").all() and (full["power_w"] > 0).all()
    assert idle["score"].isna().all() and (idle["power_w"] > 0).all()
    assert (power["benchmark"] == "ssj2008").all() and (power["power_source"] == "analyzer").all()
    # a server draws less at active idle than at full load: catches swapped columns
    pair = full.merge(idle, on="hw_id", suffixes=("_full", "_idle"))
    assert (pair["power_w_idle"] < pair["power_w_full"]).all()


def test_specpower_first_result(power: pd.DataFrame) -> None:
    """Colfax CX2266-N2, Dec 11 2007: 2 × AMD Opteron 2216HE, 95,853 ssj_ops at 276 W, 164 W idle."""
    rows = power[power["system"] == "CX2266-N2"].set_index("subtest")
    assert (rows.loc["100%", "score"], rows.loc["100%", "power_w"]) == (95853, 276)
    assert rows.loc["active_idle", "power_w"] == 164
    r = rows.loc["100%"]
    assert (r["device_name"], r["vendor"], r["family"]) == ("AMD Opteron 2216HE", "AMD", "Opteron")
    assert r["x_cpu_model"] == "2216HE"
    assert (r["sockets"], r["cores"], r["threads"], r["clock_mhz"], r["mem_gb"]) == (2, 4, 4, 2400, 16)
    assert r["x_ssj_ops_per_watt"] == 203 and r["published_at"] == pd.Timestamp("2007-12-11", tz="UTC")


def test_specpower_reads_thousands_separators(power: pd.DataFrame, power_raw: pd.DataFrame) -> None:
    for published in ("6,652,024", "322 278"):
        src = power_raw[power_raw["ssj_ops @ 100%"] == published].iloc[0]
        date = pd.Timestamp(src["Date Submitted"], tz="UTC")
        rec = power[(power["system"] == src["System Enclosure (if applicable)"]) & (power["published_at"] == date)
                    & (power["device_name"] == src["CPU Description"])]
        expected = float(published.replace(",", "").replace(" ", ""))
        assert rec.loc[rec["subtest"] == "100%", "score"].tolist() == [expected]
    epyc = power[power["device_name"] == "EPYC 7742"]
    assert len(epyc) and (epyc["vendor"] == "AMD").all()  # the list omits the vendor for EPYC


def test_specpower_reimport_and_wrong_layout(power_root: Path, tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "store")
    _import("specpower-ssj2008", power_root, store)
    assert sum(r.written for r in get_importer("specpower-ssj2008").run(power_root, store)) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(power_root.parent / "perfcastdb-sample" / "train_data.csv", bad / "SPECpower-full-results.csv")
    with pytest.raises(DatasetLayoutError, match="lacks column"):
        get_importer("specpower-ssj2008").run(bad, store)


# ---------------------------------------------------------------- UCI Computer Hardware


@pytest.fixture(scope="module")
def uci_root(data_root: Path) -> Path:
    return data_root / "uci-computer-hardware"


@pytest.fixture(scope="module")
def uci(uci_root: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return _import("uci-computer-hardware", uci_root, RecordStore(tmp_path_factory.mktemp("uci") / "store"))


def test_uci_first_machine(uci: pd.DataFrame) -> None:
    """adviser 32/60: MYCT 125 ns, MMIN 256 KB, MMAX 6000 KB, CACH 256, CHMIN 16, CHMAX 128, PRP 198, ERP 199."""
    r = uci[uci["device_name"] == "adviser 32/60"].iloc[0]
    assert (r["benchmark"], r["score"], r["score_unit"], r["x_erp"]) == ("prp", 198, "PRP", 199)
    assert r["vendor"] == "adviser"
    assert r["clock_mhz"] == 8.0 and r["mem_gb"] == pytest.approx(6000 / 1024**2)
    assert (r["x_mmin_kb"], r["x_mmax_kb"], r["x_cache_kb"], r["x_chmin"], r["x_chmax"]) == (256, 6000, 256, 16, 128)


def test_uci_matches_published_summary(uci: pd.DataFrame) -> None:
    """machine.names publishes 209 instances and summary statistics of every attribute."""
    assert len(uci) == 209 and uci["device_name"].is_unique
    assert uci["score"].mean() == pytest.approx(105.6, abs=0.05)
    assert uci["x_erp"].mean() == pytest.approx(99.3, abs=0.05)
    assert (uci["x_myct_ns"].min(), uci["x_myct_ns"].max()) == (17, 1500)
    assert uci["clock_mhz"].max() == pytest.approx(1000 / 17)
    assert uci["x_mmax_kb"].mean() == pytest.approx(11796.1, abs=0.1) and uci["x_cache_kb"].max() == 256


def test_uci_reimport_and_wrong_layout(uci_root: Path, tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "store")
    _import("uci-computer-hardware", uci_root, store)
    assert sum(r.written for r in get_importer("uci-computer-hardware").run(uci_root, store)) == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(uci_root / "machine.data", bad / "machine.data")
    with pytest.raises(DatasetLayoutError, match="machine.names"):  # no column names
        get_importer("uci-computer-hardware").run(bad, store)
    names = (uci_root / "machine.names").read_text().replace("3. MYCT:", "3. SPEED:")
    (bad / "machine.names").write_text(names)
    with pytest.raises(DatasetLayoutError, match="expected"):
        get_importer("uci-computer-hardware").run(bad, store)
