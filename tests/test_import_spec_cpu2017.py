"""SPEC CPU2017 importer on the real results export: record layout, parsed hardware checked against
specific published results, parse coverage, idempotent re-import and a clear error for a wrong layout."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.datasets.importers.base import DatasetLayoutError
from perfcast.records.store import RecordStore

NAME = "spec-cpu2017"
EXPORT = "cpu2017-results.csv.gz"


@pytest.fixture(scope="module")
def spec_root(data_root: Path) -> Path:
    return data_root / "spec-cpu2017"


@pytest.fixture(scope="module")
def raw(spec_root: Path) -> pd.DataFrame:
    """The export as published (text), for counts computed independently of the importer."""
    df = pd.read_csv(spec_root / EXPORT, encoding="utf-8-sig", dtype="string")
    df.columns = df.columns.str.strip()
    return df


@pytest.fixture(scope="module")
def recs(spec_root: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Every record of a full import into an empty store, read back from the store."""
    store = RecordStore(tmp_path_factory.mktemp("spec") / "store")
    results = get_importer(NAME).run(spec_root, store)
    assert sum(r.written for r in results) > 0
    return store.read("cpu_bench")


def _one(recs: pd.DataFrame, result_id: str, variant: str = "base") -> pd.Series:
    rows = recs[(recs["x_result_id"] == result_id) & (recs["variant"] == variant)]
    assert len(rows) == 1, f"{result_id}/{variant}: {len(rows)} records"
    return rows.iloc[0]


def test_one_base_record_per_scored_result_and_one_peak_per_peak_run(recs: pd.DataFrame, raw: pd.DataFrame) -> None:
    base = pd.to_numeric(raw["Base Result"]) > 0
    peak = pd.to_numeric(raw["Peak Result"]) > 0
    counts = recs["variant"].value_counts()
    assert counts["base"] == base.sum() and counts["peak"] == peak.sum()
    assert set(counts.index) == {"base", "peak"}
    assert (recs["source"] == "spec_cpu2017").all() and (recs["device_kind"] == "cpu").all()
    assert set(recs["benchmark"]) == {"CINT2017rate", "CFP2017rate", "CINT2017", "CFP2017"}
    assert (recs["subtest"] == recs["benchmark"]).all() and (recs["score_unit"] == "SPEC").all()
    # base and peak of one result describe the same machine
    both = recs.groupby("x_result_id")["hw_id"].nunique()
    assert (both == 1).all()


def test_amd_epyc_4464p_cint2017(recs: pd.DataFrame) -> None:
    """ASRock 1U4LW-B650: "64 MB I+D on chip per chip" × 1 chip, "64 GB (2 x 32 GB 2Rx8 PC5-5200B-R)"."""
    r = _one(recs, "cpu2017-20240508-43484")
    assert (r["benchmark"], r["score"], r["device_name"]) == ("CINT2017", 18.4, "AMD EPYC 4464P")
    assert _one(recs, "cpu2017-20240508-43484", "peak")["score"] == 19.6
    assert (r["vendor"], r["family"], r["x_cpu_model"], r["x_cpu_generation"]) == ("AMD", "EPYC", "4464P", 4)
    assert (r["sockets"], r["cores"], r["threads"], r["clock_mhz"]) == (1, 12, 24, 4700)
    assert (r["l1i_kb"], r["l1d_kb"], r["l2_kb"], r["l3_mb"]) == (32, 32, 1024, 64)
    assert (r["mem_gb"], r["mem_dimms"], r["mem_ddr_gen"], r["mem_mts"]) == (64, 2, 5, 5200)
    assert r["published_at"] == pd.Timestamp("2024-06-01", tz="UTC")
    assert r["collected_at"] == pd.Timestamp("2024-04-01", tz="UTC")
    assert r["x_hw_avail"] == pd.Timestamp("2023-06-01", tz="UTC")
    assert r["compiler"] == "C/C++/Fortran: Version 4.0.0 of AOCC" and r["os"].startswith("Ubuntu 22.04.4")
    assert pd.isna(r["n_threads"]) and pd.isna(r["x_energy_score"])


def test_two_chip_intel_l3_is_summed_over_chips(recs: pd.DataFrame) -> None:
    """ASUS ESC4000-E11, 2 × Xeon Platinum 8490H: "112.5 MB I+D on chip per chip" → 225 MB in total."""
    r = _one(recs, "cpu2017-20231218-40218", "peak")
    assert (r["device_name"], r["sockets"], r["cores"], r["threads"]) == ("Intel Xeon Platinum 8490H", 2, 120, 240)
    assert r["l3_mb"] == 225.0 and r["l2_kb"] == 2048 and (r["l1i_kb"], r["l1d_kb"]) == (32, 48)
    assert (r["mem_gb"], r["mem_dimms"], r["mem_ddr_gen"], r["mem_mts"]) == (1024, 16, 5, 4800)
    assert (r["family"], r["x_cpu_generation"]) == ("Xeon Platinum", 4)


@pytest.mark.parametrize(
    ("result_id", "l3_mb", "why"),
    [
        ("cpu2017-20221024-32598", 768.0, "2 × EPYC 9654: 384 MB per chip (sliced 32 MB / 8 cores)"),
        ("cpu2017-20180129-03132", 320.0, "POWER8: 8 MB per core × 40 cores"),
        ("cpu2017-20220718-32226", 32.0, "Ryzen 7 5800X: 32 MB per 8 cores × 8 cores"),
        ("cpu2017-20190621-15365", 154.0, "2 × Xeon 9282: 77 MB per chip"),
    ],
)
def test_l3_scopes(recs: pd.DataFrame, result_id: str, l3_mb: float, why: str) -> None:
    assert _one(recs, result_id)["l3_mb"] == pytest.approx(l3_mb), why


def test_memory_speed_typos_and_hbm(recs: pd.DataFrame) -> None:
    slow = _one(recs, "cpu2017-20190805-16611")  # 768 GB (24 x 32 GB 2Rx4 PC4-2933Y-R, running at 2400)
    assert (slow["mem_mts"], slow["x_mem_rated_mts"], slow["mem_ddr_gen"]) == (2400, 2933, 4)
    ddr3 = _one(recs, "cpu2017-20230522-36693")  # 128 GB (8 x 16 GB PC3-12800R-11, ECC, running at 1333)
    assert (ddr3["mem_ddr_gen"], ddr3["x_mem_rated_mts"], ddr3["mem_mts"]) == (3, 1600, 1333)
    typo = _one(recs, "cpu2017-20190722-16246")  # "512 MB (8 x 64 GB ...)"
    assert typo["mem_gb"] == 512
    hbm = _one(recs, "cpu2017-20230925-39150")  # 1152 GB (16 x 64 GB ... + 2 x 64 GB HBM)
    assert (hbm["mem_gb"], hbm["mem_dimms"], hbm["x_hbm_gb"]) == (1152, 16, 128)


def test_unscored_results_and_impossible_dates(recs: pd.DataFrame, raw: pd.DataFrame) -> None:
    assert "redacted" not in set(recs["device_name"])  # those results have no score
    unscored = raw.loc[pd.to_numeric(raw["Base Result"]) <= 0, "Disclosure"].str.extract(r"(cpu2017-\d{8}-\d+)")[0]
    assert len(unscored) > 0 and not recs["x_result_id"].isin(unscored).any()
    typo = _one(recs, "cpu2017-20190401-11634")  # Test Date "Jan-2098", published Apr-2019
    assert pd.isna(typo["collected_at"]) and typo["published_at"] == pd.Timestamp("2019-04-01", tz="UTC")
    assert (recs["collected_at"].dropna() <= recs.loc[recs["collected_at"].notna(), "published_at"]).all()


def test_reference_machine_results_are_flagged_suspect(recs: pd.DataFrame) -> None:
    """The Sun Fire V490's four results score 1.00 by definition (cpu2017-20161026-00003: an 8-core
    CINT2017rate of 1.0); no other record is flagged."""
    suspect = recs[recs["x_suspect"]]
    assert sorted(suspect["x_result_id"]) == [f"cpu2017-20161026-0000{i}" for i in range(1, 5)]
    assert (suspect["score"] == 1.0).all() and (suspect["device_name"] == "UltraSPARC-IV+").all()
    assert _one(recs, "cpu2017-20161026-00003")["benchmark"] == "CINT2017rate"
    assert recs["x_suspect"].notna().all()
    # another SPARC result of the same publication is a real measurement
    assert not _one(recs, "cpu2017-20161026-00035")["x_suspect"]


def test_parse_coverage(recs: pd.DataFrame) -> None:
    """Measured on the shared copy (base records): l3, l1, memory size, family 100%; l2 99.995% (SPARC M7
    has split I/D L2s); memory speed and DDR generation 99.96% (unparsed: 10 HBM-only Xeon Max results, 4
    with 1990s SDRAM, 3 with "PC5-88/56B" MRDIMMs)."""
    base = recs[recs["variant"] == "base"]
    cols = ["l3_mb", "l2_kb", "l1d_kb", "mem_gb", "mem_dimms", "mem_mts", "mem_ddr_gen", "family"]
    coverage = base[cols].notna().mean()
    assert coverage[["l3_mb", "l2_kb", "l1d_kb", "mem_gb", "family"]].min() >= 0.9999, coverage
    assert coverage[["mem_mts", "mem_ddr_gen", "mem_dimms"]].min() >= 0.999, coverage
    assert base["threads"].notna().all() and base["clock_mhz"].notna().all()


def test_reimport_adds_nothing(spec_root: Path, tmp_path: Path) -> None:
    """A real slice of the export (first 400 results, header as published) imported twice."""
    root = tmp_path / "spec"
    root.mkdir()
    with gzip.open(spec_root / EXPORT, "rt", encoding="utf-8-sig") as src, gzip.open(root / EXPORT, "wt") as dst:
        dst.writelines(line for _, line in zip(range(401), src))
    store = RecordStore(tmp_path / "store")
    first = get_importer(NAME).run(root, store)
    again = get_importer(NAME).run(root, store)
    assert sum(r.written for r in first) >= 400
    assert sum(r.written for r in again) == 0 and sum(r.offered for r in again) == sum(r.offered for r in first)


def test_wrong_layout_is_a_clear_error(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="cpu2017-results"):
        get_importer(NAME).run(tmp_path, RecordStore(tmp_path / "store"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "cpu2017-results.csv").write_text(
        (data_root / "perfcastdb-sample" / "train_data.csv").read_text().splitlines()[0] + "\n"
    )
    with pytest.raises(DatasetLayoutError, match="lacks column"):
        get_importer(NAME).run(other, RecordStore(tmp_path / "store"))
