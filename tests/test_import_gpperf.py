"""GPPerf importers on the full real files (CUTLASS sweep: 16,128 rows; tiled SGEMM: 195 + 582 rows)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.records.hardware_specs import spec_columns
from perfcast.datasets.importers.base import DatasetLayoutError
from perfcast.datasets.importers.gpperf import (
    GPPerfAdaMatmulImporter,
    GPPerfCutlassImporter,
)
from perfcast.records.store import RecordStore


@pytest.fixture(scope="module")
def gpperf_store(tmp_path_factory: pytest.TempPathFactory) -> RecordStore:
    return RecordStore(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def cutlass(data_root: Path, gpperf_store: RecordStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(raw file, imported records), both in file order."""
    root = data_root / "gpperf-cutlass"
    GPPerfCutlassImporter().run(root, gpperf_store)
    recs = gpperf_store.read("gemm", filters={"source": "gpperf-cutlass"}).sort_values("x_record", ignore_index=True)
    return pd.read_csv(root / "cutlass_rtx4070.csv.gz"), recs


@pytest.fixture(scope="module")
def ada(data_root: Path, gpperf_store: RecordStore) -> pd.DataFrame:
    GPPerfAdaMatmulImporter().run(data_root / "gpperf-ada-matmul", gpperf_store)
    return gpperf_store.read("gemm", filters={"source": "gpperf-ada-matmul"})


# ---------------------------------------------------------------------------------------- CUTLASS
def test_cutlass_keeps_every_row_in_file_order(cutlass) -> None:
    raw, recs = cutlass
    assert len(recs) == len(raw) == 16128
    assert (recs["x_record"].to_numpy() == raw["record"].to_numpy()).all()
    for col in ("m", "n", "k", "alpha", "beta", "runtime_ms", "kernel"):
        assert (recs[col].to_numpy() == raw[col].to_numpy()).all(), col
    assert (recs["collected_at"] == pd.to_datetime(raw["datetime_utc"], utc=True)).all()
    assert (recs["x_block_m"].to_numpy() == raw["block_m"].to_numpy()).all()  # the paper's (unapplied) label
    assert (recs["x_sm_clock_mhz"].to_numpy() == raw["sm_clock_mhz"].to_numpy()).all()


def test_cutlass_specific_rows(cutlass) -> None:
    raw, recs = cutlass
    slowest = raw["runtime_ms"].idxmax()
    row = recs[recs["x_record"] == raw.at[slowest, "record"]].iloc[0]
    assert (row["m"], row["n"], row["k"]) == tuple(raw.loc[slowest, ["m", "n", "k"]])
    assert row["runtime_ms"] == raw.at[slowest, "runtime_ms"]
    first = recs.iloc[0]  # record 0, read by eye: 512^3, nn kernel, alpha 1, beta 0, 0.04352 ms, 70.17 W
    assert (first["m"], first["n"], first["k"], first["layout"]) == (512, 512, 512, "nn")
    assert (first["alpha"], first["beta"], first["runtime_ms"], first["power_w"]) == (1.0, 0.0, 0.04352, 70.17)


def test_cutlass_repeats(cutlass) -> None:
    recs = cutlass[1]
    config = ["m", "n", "k", "kernel", "alpha", "beta"]
    groups = recs.groupby(config)
    assert groups.ngroups == 576 and set(groups.size()) == {28}
    # repeat numbers each executed configuration's rows 0..27 in file order
    assert (groups["repeat"].agg(list).map(lambda r: r == list(range(28)))).all()
    assert (groups["x_record"].agg(lambda s: s.is_monotonic_increasing)).all()
    # the dataset README's view: alpha pooled (it does nothing), beta only as zero / non-zero
    readme = recs.assign(beta_used=recs["beta"] != 0).groupby(["m", "n", "k", "kernel", "beta_used"]).size()
    assert len(readme) == 288 and set(readme) == {56}
    assert recs[["m", "n", "k"]].drop_duplicates().shape[0] == 36


def test_cutlass_kernel_name_is_the_truth(cutlass) -> None:
    raw, recs = cutlass
    assert (recs["layout"].to_numpy() == recs["kernel"].str.extract(r"_(nn|nt|tn|tt)_")[0].to_numpy()).all()
    assert (recs["layout"].to_numpy() == raw["kernel_layout"].to_numpy()).all()
    assert (recs["layout"] != recs["x_layout"]).mean() == pytest.approx(0.75)  # the label was never applied
    for ours, theirs in (("tile_m", "kernel_tile_m"), ("tile_n", "kernel_tile_n"), ("tile_k", "kernel_tile_k"),
                         ("stages", "kernel_stages")):
        assert (recs[ours].to_numpy() == raw[theirs].to_numpy()).all(), ours
    assert set(zip(recs["tile_m"], recs["tile_n"], recs["tile_k"], recs["stages"])) == {(128, 128, 8, 2)}


def test_cutlass_missing_power_stays_missing(cutlass) -> None:
    raw, recs = cutlass
    missing = raw["power_w"].isna().to_numpy()
    assert missing.sum() == 13533
    assert (recs["power_w"].isna().to_numpy() == missing).all()
    assert (recs["energy_j"].isna().to_numpy() == missing).all()
    assert (recs["power_w"].dropna() > 0).all() and (recs["energy_j"].dropna() > 0).all()
    one = recs.loc[np.flatnonzero(missing)[0]]
    assert np.isnan(one["power_w"]) and np.isnan(one["energy_j"])
    assert one["power_source"] == "nvidia-smi" and "no nvidia-smi reading" in one["power_note"]
    present = ~missing
    assert (recs["power_w"].to_numpy()[present] == raw["power_w"].to_numpy()[present]).all()
    # energy is the source's power x runtime, full precision (energy_j_raw is the same truncated to 1 mJ)
    energy = recs["energy_j"].to_numpy()[present]
    assert np.allclose(energy, raw["power_w"].to_numpy()[present] * raw["runtime_ms"].to_numpy()[present] / 1e3)
    lost = energy - raw["energy_j_raw"].to_numpy()[present]
    assert (lost >= 0).all() and (lost < 1e-3).all()


def test_cutlass_hardware(cutlass) -> None:
    recs = cutlass[1]
    assert set(recs["device_name"]) == {"NVIDIA GeForce RTX 4070"}
    assert set(recs["device_id"]) == {"rtx_4070"} and recs["hw_id"].nunique() == 1
    assert set(recs["op"]) == {"sgemm"} and set(recs["backend"]) == {"cutlass"} and set(recs["dtype"]) == {"float32"}
    assert spec_columns(recs[["device_id"]])["peak_tflops_fp32"].notna().all() and set(recs["batch"]) == {1}


# ---------------------------------------------------------------------------------------- tiled SGEMM
def test_ada_rows_match_the_raw_tables(ada, data_root: Path) -> None:
    root = data_root / "gpperf-ada-matmul"
    tiled = ada[ada["source_file"] == "tiled_rtx4070.csv.gz"]
    assert len(tiled) == 195 and len(ada) == 195 + 582
    key = ["m", "n", "k", "tile_m"]
    # the tidy table joins two source tables: check against those, not against the tidy file
    times = pd.read_csv(root / "execution_times_all.csv").rename(
        columns={"M": "m", "N": "n", "K": "k", "Tile Size": "tile_m", "Execution Time": "t"})
    power = pd.read_csv(root / "power_usage_results_all.csv").rename(
        columns={"M": "m", "N": "n", "K": "k", "Tile Size": "tile_m", "Average Power Usage (W)": "p"})
    got = tiled.astype({c: "int64" for c in key}).merge(times, on=key, how="left", validate="one_to_one")
    assert (got["runtime_ms"].isna() == got["t"].isna()).all() and got["runtime_ms"].isna().sum() == 54
    assert (got["runtime_ms"].dropna() == got["t"].dropna()).all()
    got = got.merge(power, on=key, how="left", validate="one_to_one")
    assert (got["power_w"] == got["p"]).all()  # power is present on every row
    assert (tiled["tile_m"] == tiled["tile_n"]).all() and (tiled["tile_m"] == tiled["tile_k"]).all()
    assert tiled["energy_j"].isna().all()  # whole-process power x kernel time is not kernel energy
    assert set(tiled["power_source"]) == {"nvidia-smi"} and tiled["power_note"].notna().all()


def test_ada_repeats_are_kept(ada, data_root: Path) -> None:
    reps = ada[ada["source_file"] == "tiled_rtx4070_repeats.csv.gz"]
    raw = pd.read_csv(data_root / "gpperf-ada-matmul" / "tiled_rtx4070_repeats.csv.gz")
    assert len(reps) == len(raw) == 582
    got = raw.merge(reps.astype({c: "int64" for c in ("m", "n", "k", "tile_m", "repeat")}),
                    left_on=["m", "n", "k", "tile", "rep"], right_on=["m", "n", "k", "tile_m", "repeat"],
                    how="left", validate="one_to_one")
    assert (got["runtime_ms_x"] == got["runtime_ms_y"]).all()
    cold = got[(got["m"] == 512) & (got["n"] == 512) & (got["k"] == 512) & (got["tile"] == 1)]
    assert sorted(cold["runtime_ms_y"]) == [35.3664, 80.6099, 13010.7]  # the cold-start outlier is kept
    assert reps["power_w"].isna().all() and set(reps["power_source"]) == {"none"}


def test_ada_hardware_and_config(ada, cutlass) -> None:
    assert set(ada["device_id"]) == {"rtx_4070"}
    assert set(ada["hw_id"]) == set(cutlass[1]["hw_id"])  # same GPU, same description -> same hw_id
    assert set(ada["op"]) == {"tiled_sgemm"} and set(ada["backend"]) == {"cuda-naive"}
    assert set(ada["dtype"]) == {"float32"} and set(ada["tile_m"]) == {1, 4, 8, 16, 32}


# ---------------------------------------------------------------------------------------- both
def test_reimport_adds_nothing(data_root: Path, gpperf_store: RecordStore, cutlass, ada) -> None:
    pairs = ((GPPerfCutlassImporter(), "gpperf-cutlass"), (GPPerfAdaMatmulImporter(), "gpperf-ada-matmul"))
    for importer, folder in pairs:
        results = importer.run(data_root / folder, gpperf_store)
        assert sum(r.offered for r in results) > 0 and sum(r.written for r in results) == 0, folder


def test_wrong_layout_is_a_clear_error(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"gpperf-cutlass: no CUTLASS profiler tables \(cutlass_\*\.csv\.gz\)"):
        GPPerfCutlassImporter().run(data_root / "gpperf-ada-matmul", RecordStore(tmp_path / "s1"))
    with pytest.raises(DatasetLayoutError, match=r"gpperf-ada-matmul: no tiled SGEMM tables"):
        GPPerfAdaMatmulImporter().run(data_root / "gpperf-cutlass", RecordStore(tmp_path / "s2"))
    # right name, wrong content: the tiled table in the CUTLASS slot names what is missing
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "cutlass_x.csv.gz").symlink_to(data_root / "gpperf-ada-matmul" / "tiled_rtx4070.csv.gz")
    with pytest.raises(DatasetLayoutError, match=r"cutlass_x\.csv\.gz lacks column\(s\) \['kernel', 'alpha'"):
        GPPerfCutlassImporter().run(tmp_path / "fake", RecordStore(tmp_path / "s3"))
    with gzip.open(tmp_path / "fake" / "tiled_y.csv.gz", "wt") as fh:
        fh.write("m,n,k,tile,rep\n512,512,512,1,0\n")
    with pytest.raises(DatasetLayoutError, match=r"tiled_y\.csv\.gz lacks column\(s\) \['runtime_ms'\]"):
        GPPerfAdaMatmulImporter().run(tmp_path / "fake", RecordStore(tmp_path / "s4"))
