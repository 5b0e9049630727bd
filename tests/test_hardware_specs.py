"""Spec sheets: every device string in the shared data resolves, numbers trace to the source sheets,
the generated YAML section is what the build script produces, and user files extend/override safely."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from perfcast.records import hardware_specs as hs
from perfcast.datasets.build_specs import BEGIN, END, build_specs, render
from perfcast.records.schema import COMMON


@pytest.fixture(autouse=True)
def _no_user_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own $PERFCAST_HW_SPECS must not change what these tests see."""
    monkeypatch.delenv(hs.ENV_VAR, raising=False)


def _csv_devices(path: Path, column: str) -> set[str]:
    header = pd.read_csv(path, nrows=0).columns
    return set(pd.read_csv(path, usecols=[column])[column].dropna().unique()) if column in header else set()


def shared_device_strings(root: Path) -> set[str]:
    """Every device name the shared datasets use: columns, file stems and directory names."""
    aic = root / "aiconfigurator"
    names = {p.stem for p in (aic / "systems").glob("*.yaml") if p.stem != "perf_data_reuse_manifest"}
    names |= {p.name for p in aic.iterdir() if p.is_dir() and p.name != "systems"}
    for p in aic.glob("*/*/*/*/*.parquet"):
        names |= set(pq.read_table(p, columns=["device"]).column(0).unique().to_pylist())
    ns = root / "neusight"
    for p in (ns / "data" / "device_configs").glob("*.json"):
        names |= {p.stem.removesuffix("_TP"), json.loads(p.read_text())["Device"]}
    names |= {p.name for p in (ns / "label").iterdir() if p.is_dir()}
    for p in (ns / "data" / "dataset").rglob("*.csv.gz"):
        names |= _csv_devices(p, "Device")
        if p.parent.name.startswith("p2."):  # train/collect/<op>/<torch version>/<Device>.csv.gz
            names.add(p.name.removesuffix(".csv.gz"))
    names |= _csv_devices(root / "gpperf-cutlass" / "cutlass_rtx4070.csv.gz", "gpu_name")
    names |= {p.name for p in (root / "vidur" / "profiling" / "compute").iterdir() if p.is_dir()}
    return names


def test_every_device_string_in_the_shared_data_resolves(data_root: Path) -> None:
    names = shared_device_strings(data_root)
    assert len(names) > 30  # all three datasets were read
    unresolved = sorted(n for n in names if hs.resolve_device_id(n) is None)
    assert unresolved == []


@pytest.mark.parametrize(
    ("name", "device_id"),
    [
        ("NVIDIA H100 80GB HBM3", "h100_sxm"),
        ("NVIDIA_H100_80GB_HBM3", "h100_sxm"),
        ("Tesla T4", "t4"),
        ("NVIDIA A100-SXM4-80GB", "a100_sxm"),
        ("NVIDIA A100-PCIE-40GB", "a100_pcie_40gb"),
        ("NVIDIA_A100-PCIE-40GB", "a100_pcie_40gb"),
        ("NVIDIA A100 80GB PCIe", "a100_pcie"),
        ("a100_pcie_80gb", "a100_pcie"),
        ("NVIDIA A100-SXM4-40GB", "a100_sxm_40gb"),
        ("NVIDIA GeForce RTX 4070", "rtx_4070"),
        ("Intel(R) Arc(TM) Pro B60 Graphics", "b60"),
        ("Tesla_P100-PCIE-16GB", "p100_pcie_16gb"),
        ("Tesla V100-PCIE-32GB", "v100_pcie_32gb"),
        ("Tesla P4", "p4"),
        ("NVIDIA L4", "l4"),
        ("AMD_Instinct_MI250", "mi250"),
        ("NVIDIA B300 SXM6 AC", "b300_sxm"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx_pro_6000_server"),
        ("gb300", "gb300"),
        ("a40", "a40"),
        ("  nvidia a100-pcie 40gb ", "a100_pcie_40gb"),  # case, space, underscore, hyphen insensitive
        ("TESLA_t4", "t4"),
    ],
)
def test_resolve_device_id(name: str, device_id: str) -> None:
    assert hs.resolve_device_id(name) == device_id


def test_unknown_name_resolves_to_none_and_get_spec_suggests_close_ids() -> None:
    assert hs.resolve_device_id("NVIDIA Z9000") is None
    with pytest.raises(KeyError, match="h100_sxm"):
        hs.get_spec("h100_sxn")


def test_spec_table_columns_and_key_numbers() -> None:
    t = hs.spec_table()
    assert t.index.is_unique and t.index.name == "device_id"
    schema_hw = {c.name for c in COMMON if c.group == "hardware"}
    for col in ("device_name", "vendor", "family", "sm_count", "clock_mhz", "max_clock_mhz", "mem_bw_gbs", "mem_gb",
                "l2_mb", "tdp_w", "compute_capability", *(f"peak_tflops_{d}" for d in
                                                            ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8"))):
        assert col in t.columns and col in schema_hw
    assert str(t["sm_count"].dtype) == "Int64" and str(t["device_name"].dtype) == "string"
    sms = t["sm_count"]
    assert (sms["h100_sxm"], sms["a100_sxm"], sms["l40s"], sms["b200_sxm"], sms["rtx_4070"]) == (132, 108, 142, 148, 46)
    assert t.at["rtx_4070", "compute_capability"] == "8.9"
    assert t["device_kind"].eq("gpu").all() and t["vendor"].notna().all()
    # a dense BF16 peak never exceeds the FP8 peak where both exist
    both = t[["peak_tflops_bf16", "peak_tflops_fp8"]].dropna()
    assert (both["peak_tflops_bf16"] <= both["peak_tflops_fp8"]).all()


def test_numbers_trace_to_the_aiconfigurator_sheets(data_root: Path) -> None:
    t = hs.spec_table()
    for path in (data_root / "aiconfigurator" / "systems").glob("*.yaml"):
        gpu = (yaml.safe_load(path.read_text()) or {}).get("gpu")
        if not gpu:
            continue
        row = t.loc[path.stem]
        assert row["mem_bw_gbs"] == pytest.approx(gpu["mem_bw"] / 1e9)
        assert row["peak_tflops_bf16"] == pytest.approx(gpu["bfloat16_tc_flops"] / 1e12, rel=1e-5)
        assert row["tdp_w"] == gpu["power"]
        if "sm_version" in gpu:
            assert row["compute_capability"].replace(".", "") == str(gpu["sm_version"])


def test_numbers_trace_to_the_neusight_sheets_except_documented_corrections(data_root: Path) -> None:
    doc = yaml.safe_load(hs.DATA_FILE.read_text())
    t = hs.spec_table()
    checked = 0
    for path in (data_root / "neusight" / "data" / "device_configs").glob("*.json"):
        if path.stem.endswith("_TP"):
            continue
        cfg = json.loads(path.read_text())
        dev = hs.resolve_device_id(cfg["Device"])
        replaced = set(doc["vendor_supplement"].get(dev, {}).get("replaces", []))
        if "sm_count" not in replaced:
            assert t.at[dev, "sm_count"] == cfg["Num_Sm"]
            checked += 1
        if "aiconfigurator" not in doc["devices"][dev]["sources"]:  # else NVIDIA's own sheet wins
            assert t.at[dev, "mem_bw_gbs"] == cfg["Mem_Bw"]
    assert checked >= 8
    # the two corrections are documented and differ from the sheet
    assert (t.at["l4", "sm_count"], t.at["p4", "sm_count"]) == (58, 20)


def test_generated_section_is_what_build_specs_produces(data_root: Path) -> None:
    entries = build_specs(data_root / "aiconfigurator" / "systems", data_root / "neusight" / "data" / "device_configs")
    text = hs.DATA_FILE.read_text()
    packaged = BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END + "\n"
    assert render(entries) == packaged
    ids = {e["device_id"] for e in entries}
    assert {"h100_sxm", "a100_pcie", "l4", "mi250", "b60", "t4"} <= ids
    assert not any(i.startswith(("nvidia_", "tesla_", "amd_")) for i in ids)  # every sheet got a canonical id
    h100 = next(e for e in entries if e["device_id"] == "h100_sxm")
    assert set(h100["sources"]) == {"aiconfigurator", "neusight"}
    assert h100["mem_bw_gbs"] == 3350.0 and h100["source_conflicts"]["mem_bw_gbs"] == {"neusight": 3430.0}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_user_file_extends_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = _write(tmp_path / "mine.yaml", {
        "devices": {
            "h100_sxm": {"tdp_w": 650.0},
            "acme_x1": {"device_name": "ACME X1 Accelerator", "vendor": "ACME", "device_kind": "gpu",
                        "sm_count": 10, "aliases": ["acme-x1"]},
        },
    })
    assert hs.get_spec("h100_sxm", extra=user)["tdp_w"] == 650.0
    assert hs.get_spec("h100_sxm", extra=user)["sm_count"] == 132  # other fields kept
    assert hs.resolve_device_id("ACME_X1", extra=user) == "acme_x1"
    assert hs.spec_table(extra=user).at["acme_x1", "sm_count"] == 10
    assert hs.get_spec("h100_sxm")["tdp_w"] == 700.0  # the packaged table is untouched
    monkeypatch.setenv(hs.ENV_VAR, str(user))
    assert hs.resolve_device_id("ACME X1 Accelerator") == "acme_x1"
    assert hs.get_spec("h100_sxm")["tdp_w"] == 650.0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"devices": {"h100_sxm": {"sm_cout": 1}}}, r"devices\.h100_sxm: unknown field 'sm_cout' \(did you mean"),
        ({"devices": {"h100_sxm": {"sm_count": "many"}}}, r"h100_sxm: field 'sm_count' = 'many' must be of type int"),
        ({"devices": {"h100_sxm": {"mem_bw_gbs": -5}}}, r"field 'mem_bw_gbs' = -5 must be positive"),
        ({"devices": {"new_gpu": {"sm_count": 4}}}, r"device 'new_gpu' lacks required field\(s\) \['device_name'"),
        ({"aliases": {"l4": ["Tesla T4"]}}, r"alias 'Tesla T4' names both"),
        ({"aliases": {"nope": ["x"]}}, r"unknown device id\(s\) \['nope'\]"),
        ({"gpus": {}}, r"unknown top-level key"),
    ],
)
def test_bad_user_file_names_file_device_and_field(tmp_path: Path, doc: dict, message: str) -> None:
    path = _write(tmp_path / "bad.yaml", doc)
    with pytest.raises(hs.SpecError, match=message) as err:
        hs.spec_table(extra=path)
    assert "bad.yaml" in str(err.value)


def test_missing_user_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(hs.SpecError, match="does not exist"):
        hs.spec_table(extra=tmp_path / "absent.yaml")


def test_supplement_may_not_silently_contradict_a_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = hs.DATA_FILE.read_text()
    bad = text.replace("    peak_tflops_fp64: 67.0       # FP64 Tensor Core", "    tdp_w: 650.0", 1)
    assert bad != text
    monkeypatch.setattr(hs, "DATA_FILE", _write_text(tmp_path / "specs.yaml", bad))
    with pytest.raises(hs.SpecError, match=r"vendor_supplement\.h100_sxm: field 'tdp_w' = 650.0 disagrees"):
        hs.spec_table()


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_spec_columns_joins_by_device_id_and_keeps_existing_columns() -> None:
    df = pd.DataFrame({"device_id": ["t4", None, "h100_sxm", "t4"], "device_name": ["raw", "x", "y", "z"]})
    out = hs.spec_columns(df, columns=["device_name", "sm_count", "mem_bw_gbs"])
    assert list(out.columns) == ["device_id", "device_name", "sm_count", "mem_bw_gbs"]
    assert out["device_name"].tolist() == ["raw", "x", "y", "z"]  # the source's own name is kept
    assert out["sm_count"].tolist()[::2] == [40, 132]
    assert pd.isna(out.at[1, "sm_count"])
    assert out["mem_bw_gbs"].tolist()[3] == 320.0
    with pytest.raises(KeyError, match="device_id"):
        hs.spec_columns(pd.DataFrame({"x": [1]}))
