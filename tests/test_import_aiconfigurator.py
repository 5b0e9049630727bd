"""aiconfigurator importer: stored values equal the raw parquet rows, sequence lengths follow the
documented rule, re-imports dedupe, and a wrong directory fails with a layout error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.records.hardware_specs import spec_columns
from perfcast.datasets.importers.aiconfigurator import AIConfiguratorImporter
from perfcast.datasets.importers import get_importer
from perfcast.datasets.importers.base import DatasetLayoutError
from perfcast.records.store import RecordStore

VERSION_DIR = "trtllm/1.3.0rc20"
TABLES = {
    "gemm": f"h100_sxm/gemm/{VERSION_DIR}/gemm_perf.parquet",
    "prefill": f"h100_sxm/attention/{VERSION_DIR}/context_attention_perf.parquet",
    "decode": f"h100_sxm/attention/{VERSION_DIR}/generation_attention_perf.parquet",
}
GEMM_KEY = ["m", "n", "k", "dtype", "kernel"]


def _target(raw: pd.DataFrame) -> pd.Series:
    """The brief's check row: H100, bf16, m=8192 n=65536 k=51200."""
    return (raw["gemm_dtype"] == "bfloat16") & (raw["m"] == 8192) & (raw["n"] == 65536) & (raw["k"] == 51200)


@pytest.fixture(scope="module")
def raw(data_root: Path) -> dict[str, pd.DataFrame]:
    """Every 40th row of the H100 tables (plus the check row): small, but every dtype and kernel."""
    out = {}
    for name, rel in TABLES.items():
        df = pd.read_parquet(data_root / "aiconfigurator" / rel)
        keep = np.zeros(len(df), dtype=bool)
        keep[::40] = True
        if name == "gemm":
            keep |= _target(df).to_numpy()
        out[name] = df[keep].reset_index(drop=True)
    return out


def _write_tree(root: Path, tables: dict[str, pd.DataFrame]) -> Path:
    for name, df in tables.items():
        path = root / TABLES[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    return root


@pytest.fixture(scope="module")
def slice_root(raw: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tree(tmp_path_factory.mktemp("aiconfigurator"), raw)


@pytest.fixture(scope="module")
def imported(slice_root: Path, tmp_path_factory: pytest.TempPathFactory) -> RecordStore:
    store = RecordStore(tmp_path_factory.mktemp("store"))
    AIConfiguratorImporter().run(slice_root, store)
    return store


def test_registered_under_its_name() -> None:
    assert isinstance(get_importer("aiconfigurator"), AIConfiguratorImporter)


def test_units_are_found_by_glob(data_root: Path) -> None:
    root = data_root / "aiconfigurator"
    units = AIConfiguratorImporter().units(root)
    gpus = {p.name for p in root.iterdir() if p.is_dir() and p.name != "systems"}
    assert {u.relative_to(root).parts[0] for u in units} == gpus
    assert {u.name for u in units} == {"gemm_perf.parquet", "context_attention_perf.parquet",
                                       "generation_attention_perf.parquet"}
    assert len(units) == len(list(root.glob("*/*/*/*/*_perf.parquet")))


def test_gemm_rows_equal_the_source(imported: RecordStore, raw: dict[str, pd.DataFrame]) -> None:
    g = imported.read("gemm")
    src = raw["gemm"]
    assert len(g) == len(src)
    check = g[(g["m"] == 8192) & (g["n"] == 65536) & (g["k"] == 51200) & (g["dtype"] == "bfloat16")]
    assert len(check) == 1
    assert check["runtime_ms"].iloc[0] == src.loc[_target(src), "latency"].iloc[0]
    assert round(check["runtime_ms"].iloc[0], 2) == 79.18
    both = g.merge(src.rename(columns={"gemm_dtype": "dtype", "kernel_source": "kernel"}), on=GEMM_KEY, validate="1:1")
    assert len(both) == len(src)
    assert (both["runtime_ms"].to_numpy() == both["latency"].to_numpy()).all()
    assert (both["op"] == both["op_name"]).all() and (both["batch"] == 1).all()
    assert (both["device_name"] == both["device"]).all()
    assert set(g["dtype"]) == set(src["gemm_dtype"])


def test_hardware_and_provenance_columns(imported: RecordStore) -> None:
    g, a = imported.read("gemm"), imported.read("attention")
    for df, table in ((g, TABLES["gemm"]), (a, None)):
        assert set(df["device_id"]) == {"h100_sxm"} and set(df["vendor"]) == {"NVIDIA"}
        assert set(df["device_kind"]) == {"gpu"}
        # records keep what the source observed; spec numbers join by device_id (a spec fix never re-keys)
        assert df["sm_count"].isna().all() and df["mem_bw_gbs"].isna().all()
        specs = spec_columns(df[["device_id"]].drop_duplicates())
        assert specs[["sm_count", "mem_bw_gbs", "peak_tflops_bf16"]].iloc[0].tolist() == [132, 3350.0, 989.0]
        assert set(df["source"]) == {"aiconfigurator"} and set(df["backend"]) == {"trtllm"}
        assert {json.loads(s)["version"] for s in df["software"]} == {"1.3.0rc20"}
        if table:
            assert set(df["source_file"]) == {table}
    assert g["hw_id"].nunique() == 1 and set(g["hw_id"]) == set(a["hw_id"])  # one GPU, one fingerprint


def test_attention_rows_follow_the_sequence_rule(imported: RecordStore, raw: dict[str, pd.DataFrame]) -> None:
    a = imported.read("attention")
    pre, dec = a[a["phase"] == "prefill"], a[a["phase"] == "decode"]
    assert (len(pre), len(dec)) == (len(raw["prefill"]), len(raw["decode"]))
    assert (pre["seq_q"] == pre["x_isl"]).all() and (pre["seq_kv"] == pre["x_isl"] + pre["x_step"]).all()
    assert pre["causal"].all() and not dec["causal"].any()
    assert (dec["seq_q"] == 1).all() and (dec["seq_kv"] == 1 + dec["x_step"]).all()
    kv = dec["seq_kv"].to_numpy(dtype=np.int64)
    assert (kv & (kv - 1) == 0).all()  # decode lengths are powers of two, as aiconfigurator keys them
    key = ["batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "window_size", "attn_dtype",
           "kv_cache_dtype", "step", "kernel_source"]
    for phase, df in (("prefill", pre), ("decode", dec)):
        stored = df.rename(columns={"batch": "batch_size", "x_isl": "isl", "heads": "num_heads",
                                    "kv_heads": "num_key_value_heads", "window": "window_size", "dtype": "attn_dtype",
                                    "kv_dtype": "kv_cache_dtype", "x_step": "step", "kernel": "kernel_source"})
        both = stored.merge(raw[phase], on=key, validate="1:1")
        assert len(both) == len(raw[phase])
        assert (both["runtime_ms"].to_numpy() == both["latency"].to_numpy()).all()


def test_importing_twice_adds_nothing(imported: RecordStore, slice_root: Path) -> None:
    before = {t: len(imported.read(t)) for t in ("gemm", "attention")}
    again = AIConfiguratorImporter().run(slice_root, imported)
    assert sum(r.written for r in again) == 0 and sum(r.offered for r in again) == sum(before.values())
    assert {t: len(imported.read(t)) for t in before} == before


def test_unmapped_raw_columns_are_kept_with_x_prefix(raw: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    gemm = raw["gemm"].head(5).assign(power=np.arange(5.0) + 100.0)
    root = _write_tree(tmp_path / "copy", {"gemm": gemm})
    out = AIConfiguratorImporter().load(root, root / TABLES["gemm"])["gemm"]
    assert out["x_power"].tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]


def test_a_gpu_without_a_spec_sheet_imports_and_a_user_file_supplies_it(
    raw: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERFCAST_HW_SPECS", raising=False)
    gemm = raw["gemm"].head(20).assign(device="ACME X1 Accelerator")
    root = tmp_path / "copy"
    path = root / f"acme_x1/gemm/{VERSION_DIR}/gemm_perf.parquet"
    path.parent.mkdir(parents=True)
    gemm.to_parquet(path, index=False)
    with pytest.warns(UserWarning, match=r"no spec sheet for \['ACME X1 Accelerator'\] \(system 'acme_x1'\)"):
        out = AIConfiguratorImporter().load(root, path)["gemm"]
    assert out["device_id"].isna().all() and (out["device_kind"] == "gpu").all()
    specs = tmp_path / "specs.yaml"
    specs.write_text("devices:\n  acme_x1: {device_name: ACME X1 Accelerator, vendor: ACME, device_kind: gpu, "
                     "sm_count: 96}\n")
    monkeypatch.setenv("PERFCAST_HW_SPECS", str(specs))
    out = AIConfiguratorImporter().load(root, path)["gemm"]
    assert set(out["device_id"]) == {"acme_x1"} and set(out["vendor"]) == {"ACME"}
    assert set(spec_columns(out[["device_id"]])["sm_count"]) == {96}


def test_a_directory_without_tables_is_a_layout_error(tmp_path: Path, store: RecordStore) -> None:
    (tmp_path / "h100_sxm" / "gemm").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"aiconfigurator: no .*_perf\.parquet tables found under"):
        AIConfiguratorImporter().run(tmp_path, store)
    with pytest.raises(DatasetLayoutError, match="is not a directory"):
        AIConfiguratorImporter().run(tmp_path / "absent", store)


def test_a_table_missing_columns_is_a_layout_error(raw: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {"gemm": raw["gemm"].drop(columns=["latency", "k"])})
    with pytest.raises(DatasetLayoutError, match=r"gemm_perf\.parquet lacks column\(s\) \['latency', 'k'\]"):
        AIConfiguratorImporter().load(root, root / TABLES["gemm"])


@pytest.mark.slow
def test_full_import_keeps_every_row(data_root: Path, store: RecordStore) -> None:
    root = data_root / "aiconfigurator"
    results = AIConfiguratorImporter().run(root, store)
    n_raw = sum(len(pd.read_parquet(p, columns=["latency"])) for p in root.glob("*/*/*/*/*_perf.parquet"))
    assert sum(r.written for r in results) == n_raw
    g = store.read("gemm", columns_=["device_id", "hw_id"])
    assert g.groupby("device_id")["hw_id"].nunique().eq(1).all()
    assert g["device_id"].notna().all()
