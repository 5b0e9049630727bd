"""aiconfigurator-power importer on real rows of the shared copy: power, limit, energy and library land in the
record schema, and readings no board can draw are refused with the file's rows named, storing nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from typer.testing import CliRunner

from perfcast.cli import app
from perfcast.datasets.importers import get_importer
from perfcast.datasets.importers.aiconfigurator_power import PowerValueError
from perfcast.records.store import RecordStore

TABLES = ("gb200/gemm/trtllm/1.3.0rc17/gemm_perf.parquet", "gb200/gemm/vllm/0.22.0/gemm_perf.parquet",
          "gb200/attention/vllm/0.22.0/context_attention_perf.parquet",
          "gb200/attention/trtllm/1.3.0rc17/generation_attention_perf.parquet")


def write_slice(src: Path, dst: Path, tables: tuple[str, ...] = TABLES, every: int = 500) -> dict[str, pd.DataFrame]:
    """Every ``every``-th row of ``tables`` copied to ``dst`` in the dataset's layout; returns the raw rows."""
    out = {}
    for rel in tables:
        raw = pd.read_parquet(src / rel).iloc[::every].reset_index(drop=True)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        raw.to_parquet(dst / rel, index=False)
        out[rel] = raw
    return out


@pytest.fixture(scope="module")
def sliced(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame]]:
    root = tmp_path_factory.mktemp("power")
    return root, write_slice(data_root / "aiconfigurator-power", root)


def test_records_carry_power_limit_energy_and_library(sliced, tmp_path: Path) -> None:
    root, raw = sliced
    store = RecordStore(tmp_path / "store")
    get_importer("aiconfigurator-power").run(root, store)
    gemm, attn = store.read("gemm"), store.read("attention")
    assert len(gemm) == sum(len(raw[t]) for t in TABLES[:2]) and len(attn) == sum(len(raw[t]) for t in TABLES[2:])
    for df in (gemm, attn):
        assert set(df["source"]) == {"aiconfigurator-power"} and set(df["device_id"]) == {"gb200"}
        assert (df["power_limit_w"] == 1200).all() and set(df["power_source"]) == {"nvml"}
        np.testing.assert_allclose(df["energy_j"], df["power_w"] * df["runtime_ms"] / 1e3, rtol=1e-12)
    # the stored values are the raw rows' (matched on the configuration, library included)
    src = raw[TABLES[0]].rename(columns={"gemm_dtype": "dtype", "kernel_source": "kernel"})
    got = gemm[gemm["backend"] == "trtllm"].merge(src, on=["m", "n", "k", "dtype", "kernel"], validate="one_to_one")
    assert len(got) == len(src)
    np.testing.assert_allclose(got["power_w"], got["power"])
    np.testing.assert_allclose(got["runtime_ms"], got["latency"])
    assert set(gemm["backend"]) == {"trtllm", "vllm"}
    assert {"torch_flow", "vllm_default"} <= set(gemm["kernel"])
    assert set(attn["kernel"]) <= {"torch_flow", "vllm_flashinfer", "vllm_triton_attn"}
    again = get_importer("aiconfigurator-power").run(root, store)  # re-import adds nothing
    assert sum(r.written for r in again) == 0


@pytest.mark.parametrize("bad", [-12.5, np.inf, 3601.0, 0.0])
def test_a_bad_power_reading_is_refused_with_its_row(sliced, tmp_path: Path, bad: float) -> None:
    _, raw = sliced
    rel = TABLES[0]
    crafted = raw[rel].head(30).copy()
    crafted.loc[7, "power"] = bad
    crafted.loc[19, "power"] = bad
    (tmp_path / rel).parent.mkdir(parents=True)
    crafted.to_parquet(tmp_path / rel, index=False)
    store = RecordStore(tmp_path / "store")
    with pytest.raises(PowerValueError) as err:
        get_importer("aiconfigurator-power").run(tmp_path, store)
    msg = str(err.value)
    assert "2 row(s)" in msg and "row 7:" in msg and "row 19:" in msg and "3x" in msg and rel in msg
    assert "row 8:" not in msg
    assert not store.parts("gemm")  # nothing stored
    res = CliRunner().invoke(app, ["data", "import", "aiconfigurator-power", str(tmp_path), "--store",
                                   str(tmp_path / "cli-store")], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "row 7:" in res.output and "row 19:" in res.output
    assert not RecordStore(tmp_path / "cli-store").parts("gemm")


def test_a_table_without_power_is_a_layout_error(data_root: Path, tmp_path: Path) -> None:
    rel = "gb200/gemm/trtllm/1.3.0rc17/gemm_perf.parquet"
    raw = pd.read_parquet(data_root / "aiconfigurator-power" / rel).head(20).drop(columns=["power", "power_limit"])
    (tmp_path / rel).parent.mkdir(parents=True)
    raw.to_parquet(tmp_path / rel, index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['power', 'power_limit'\]"):
        get_importer("aiconfigurator-power").run(tmp_path, RecordStore(tmp_path / "store"))
