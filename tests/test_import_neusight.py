"""NeuSight importer on the real files: the test files plus one GPU's (T4) training files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.records.hardware_specs import spec_columns
from perfcast.datasets.importers.base import DatasetLayoutError
from perfcast.datasets.importers.neusight import NeuSightImporter, parse_kernel_names
from perfcast.records.store import RecordStore

TEST_FILES = ("data/dataset/test/bmm.csv.gz", "data/dataset/test/linear.csv.gz")
T4_FILES = tuple(f"data/dataset/train/collect/{op}/p2.1.0/Tesla T4.csv.gz" for op in ("bmm", "linear"))


def _mirror(src: Path, dst: Path, files: tuple[str, ...]) -> Path:
    """A dataset root holding only ``files`` (symlinks to the real ones), laid out as in the source."""
    for rel in files:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).symlink_to(src / rel)
    return dst


@pytest.fixture(scope="module")
def neusight(data_root: Path) -> Path:
    return data_root / "neusight"


@pytest.fixture(scope="module")
def imported(neusight: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RecordStore, pd.DataFrame]:
    root = _mirror(neusight, tmp_path_factory.mktemp("neusight"), TEST_FILES + T4_FILES)
    store = RecordStore(tmp_path_factory.mktemp("store"))
    NeuSightImporter().run(root, store)
    return root, store, store.read("gemm")


def _raw(neusight: Path, rel: str) -> pd.DataFrame:
    return pd.read_csv(neusight / rel).assign(source_file=rel)


def test_every_raw_row_becomes_one_record(imported, neusight: Path) -> None:
    _root, _store, recs = imported
    counts = recs["source_file"].value_counts()
    for rel in TEST_FILES + T4_FILES:
        assert counts[rel] == len(pd.read_csv(neusight / rel)), rel
    assert len(recs) == counts.sum() == 8892 + 6174 + 17697 + 6458


@pytest.mark.parametrize("rel", TEST_FILES + T4_FILES)
def test_sampled_rows_match_raw_source(imported, neusight: Path, rel: str) -> None:
    """Find each sampled raw row by its measurement (latency, kernel, grid), then check shape and values."""
    recs = imported[2]
    raw = _raw(neusight, rel)
    found_by = {"Device": "device_name", "Latency": "runtime_ms", "Kernel Name": "kernel", "Grid x": "x_grid_x",
                "Grid y": "x_grid_y", "Grid z": "x_grid_z"}
    raw = raw.drop_duplicates(list(found_by), keep=False)  # a handful of rows share all of these
    sample = pd.concat([raw.sample(25, random_state=0), raw.loc[[raw["Latency"].idxmax()]]])
    got = sample.merge(
        recs, left_on=["source_file", *found_by], right_on=["source_file", *found_by.values()],
        how="left", validate="one_to_many",
    )
    assert len(got) == len(sample) and got["record_id"].notna().all()  # each found exactly once
    linear = got["OPName"] == "linear"
    # NeuSight's (M x N) @ (N x K): N is the reduction dimension; linear folds B into the rows
    assert (got["m"] == np.where(linear, got["B"] * got["M"], got["M"])).all()
    assert (got["batch"] == np.where(linear, 1, got["B"])).all()
    assert (got["n"] == got["K"]).all() and (got["k"] == got["N"]).all()
    assert (got["kernel"] == got["Kernel Name"]).all()
    assert (got["op"] == got["OPName"]).all()
    assert (got["x_grid_x"] == got["Grid x"]).all() and (got["x_warps_per_sm"] == got["Warps per SM"]).all()
    assert set(got["dtype"]) == {"float32"} and set(got["backend"]) == {"cublas"}
    assert set(got["x_split"]) == {"test" if "/test/" in rel else "train"}


def test_largest_linear_matches_hand_read_row(imported) -> None:
    """The slowest test linear row, read by eye from the CSV: P100, B=1 M=65536 N=50272 K=4096."""
    recs = imported[2]
    row = recs.loc[recs.loc[recs["op"] == "linear", "runtime_ms"].idxmax()]
    assert row["device_name"] == "Tesla P100-PCIE-16GB" and row["device_id"] == "p100_pcie_16gb"
    assert (row["batch"], row["m"], row["n"], row["k"]) == (1, 65536, 4096, 50272)
    assert row["runtime_ms"] == pytest.approx(12296.544270833334, rel=1e-12)
    assert (row["tile_m"], row["tile_n"], row["layout"]) == (32, 128, "tn")


def test_shape_convention_agrees_with_launch_grid(imported) -> None:
    """On every row whose kernel names its tile: grid x covers n (output cols), grid y covers m (rows)."""
    recs = imported[2]
    tiled = recs[recs["tile_m"].notna() & recs["kernel"].str.contains("_sgemm_", regex=False)]
    assert len(tiled) > 0.9 * len(recs)
    n_tiles = np.ceil(tiled["n"].astype(float) / tiled["tile_m"].astype(float))
    m_tiles = np.ceil(tiled["m"].astype(float) / tiled["tile_n"].astype(float))
    assert (tiled["x_grid_x"] == n_tiles).all()
    assert (tiled["x_grid_y"] == m_tiles).all()


def test_runtime_is_milliseconds_and_never_beats_the_fp32_peak(imported) -> None:
    """2*batch*m*n*k / runtime is a FLOP rate at most the spec-sheet FP32 peak (ms, FP32, right FLOPs)."""
    recs = imported[2]
    tflops = 2 * recs["batch"].astype(float) * recs["m"] * recs["n"] * recs["k"] / recs["runtime_ms"] / 1e9
    frac = tflops / spec_columns(recs[["device_id"]])["peak_tflops_fp32"]
    assert frac.notna().all()
    assert frac.max() <= 1.0
    assert frac.max() > 0.8  # big GEMMs do reach most of the peak: a unit slip of 1000x would fail one side


def test_devices_resolve_to_spec_sheets(imported) -> None:
    recs = imported[2]
    devices = recs.groupby("device_name")[["device_id", "hw_id"]].nunique()
    assert (devices == 1).all().all()  # one id and one hw_id per device, across train and test files
    ids = dict(recs.drop_duplicates("device_name")[["device_name", "device_id"]].to_numpy())
    assert ids == {
        "Tesla T4": "t4", "Tesla P4": "p4", "Tesla P100-PCIE-16GB": "p100_pcie_16gb",
        "Tesla V100-PCIE-32GB": "v100_pcie_32gb", "NVIDIA A100-PCIE-40GB": "a100_pcie_40gb",
        "NVIDIA A100 80GB PCIe": "a100_pcie",
    }
    assert set(recs["device_kind"]) == {"gpu"} and set(recs["vendor"]) == {"NVIDIA"}
    specs = spec_columns(recs[["device_id"]].drop_duplicates())
    assert specs["sm_count"].notna().all() and specs["mem_bw_gbs"].notna().all()


def test_launch_and_software_provenance(imported, neusight: Path) -> None:
    recs = imported[2]
    assert set(recs["software"]) == {'{"torch": "2.1.0", "cudnn": "8902", "cuda": "12.1"}'}
    raw = _raw(neusight, T4_FILES[0])
    two = raw[raw["Kernels"].str.count(";") == 2].iloc[0]  # a GEMM followed by a split-K reduction
    rec = recs[(recs["source_file"] == T4_FILES[0]) & (recs["runtime_ms"] == two["Latency"])].iloc[0]
    assert rec["x_n_kernels"] == 2 and rec["x_kernels"] == two["Kernels"].lstrip(";")
    assert "splitkreduce" in rec["x_kernels"]
    # test files leave Kernels empty on some rows: unknown, not zero
    blank = recs[(recs["x_split"] == "test")]
    assert blank["x_n_kernels"].isna().any() and (blank["x_n_kernels"].dropna() >= 1).all()
    assert recs["power_w"].isna().all() and recs["energy_j"].isna().all()


def test_reimport_adds_nothing(imported) -> None:
    root, store, recs = imported
    results = NeuSightImporter().run(root, store)
    assert sum(r.written for r in results) == 0
    assert sum(r.offered for r in results) == len(recs)


def test_wrong_layout_is_a_clear_error(neusight: Path, tmp_path: Path) -> None:
    other = _mirror(neusight, tmp_path / "elem_only", ("data/dataset/test/elem.csv.gz",))
    with pytest.raises(DatasetLayoutError, match=r"neusight: no bmm/linear files .*data/dataset/test/"):
        NeuSightImporter().units(other)
    # a file in a bmm slot that holds another table: the missing columns are named
    bad = tmp_path / "bad"
    (bad / "data/dataset/test").mkdir(parents=True)
    (bad / "data/dataset/test/bmm.csv.gz").symlink_to(neusight / "data/dataset/test/elem.csv.gz")
    with pytest.raises(DatasetLayoutError, match=r"lacks column\(s\) \['Kernels', 'M', 'N', 'K'\]"):
        NeuSightImporter().run(bad, RecordStore(tmp_path / "store"))
    # linear rows in the bmm slot: the op disagrees with the path
    swapped = tmp_path / "swapped"
    (swapped / "data/dataset/test").mkdir(parents=True)
    (swapped / "data/dataset/test/bmm.csv.gz").symlink_to(neusight / "data/dataset/test/linear.csv.gz")
    with pytest.raises(DatasetLayoutError, match=r"only 'bmm' rows .* OPName='linear'"):
        NeuSightImporter().run(swapped, RecordStore(tmp_path / "store2"))


# ---------------------------------------------------------------------------------------- kernel names
def test_parse_kernel_names_on_the_real_kernel_set(imported) -> None:
    recs = imported[2]
    kernels = recs["kernel"].drop_duplicates()
    parsed = parse_kernel_names(kernels)
    assert parsed[["tile_m", "tile_n", "layout"]].notna().all().all()  # every NeuSight kernel encodes both
    dims = kernels.str.extract(r"(\d+)x(\d+)").astype(int)
    assert (parsed["tile_m"].to_numpy() == dims[0].to_numpy()).all()
    assert (parsed["tile_n"].to_numpy() == dims[1].to_numpy()).all()
    suffix = kernels.str.extract(r"_([NTnt]{2})(?:_vec)?$", expand=False).str.lower()  # ..._tn, ..._NT_vec
    assert (parsed["layout"].to_numpy() == suffix.to_numpy()).all()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ampere_sgemm_128x64_nn", (128, 64, None, None, "nn")),
        ("volta_sgemm_128x32_tn", (128, 32, None, None, "tn")),
        ("volta_sgemm_64x32_sliced1x4_tn", (64, 32, None, None, "tn")),
        ("sgemm_128x128x8_NT_vec", (128, 128, 8, None, "nt")),
        ("cutlass_simt_sgemm_128x128_8x2_tt_align1", (128, 128, 8, 2, "tt")),
        ("sm80_xmma_gemm_f32f32_f32f32_f32_nt_n_tilesize128x128x8_stage3_warpsize2x2x1_ffma_aligna4_alignb4",
         (128, 128, 8, 3, "nt")),
        ("void splitkreduce_kernel<32, 16, int, float>(cublassplitkparams<float>)", (None,) * 5),
        (None, (None,) * 5),
    ],
)
def test_parse_kernel_names_grammars(name: str | None, expected: tuple) -> None:
    got = parse_kernel_names(pd.Series([name], index=[7], dtype="string"))
    assert list(got.index) == [7]
    values = tuple(None if pd.isna(v) else (v if isinstance(v, str) else int(v)) for v in got.iloc[0])
    assert values == expected
