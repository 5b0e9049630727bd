"""The adaptation ceiling benchmark's noise floor: two tables of one GPU joined on their configuration, and repeats."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets"
NEW = DATA / "aiconfigurator" / "gb200" / "gemm" / "trtllm" / "1.3.0rc20" / "gemm_perf.parquet"
OLD = DATA / "aiconfigurator-power" / "gb200" / "gemm" / "trtllm" / "1.3.0rc17" / "gemm_perf.parquet"
pytestmark = pytest.mark.skipif(not (NEW.exists() and OLD.exists()), reason="aiconfigurator tables not present")


def _ceiling():
    """benchmarks/adapt_ceiling.py (a script beside its siblings, not a package module)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import adapt_ceiling

    return adapt_ceiling


def _write(root: Path, dataset: str, version: str, df: pd.DataFrame) -> None:
    path = root / dataset / "gb200" / "gemm" / "trtllm" / version / "gemm_perf.parquet"
    path.parent.mkdir(parents=True)
    df.to_parquet(path)


def _floor(root: Path, new: pd.DataFrame, old: pd.DataFrame) -> list[dict]:
    _write(root, "aiconfigurator", "1.3.0rc20", new)
    _write(root, "aiconfigurator-power", "1.3.0rc17", old)
    return _ceiling().noise_floor(root)


def test_noise_floor_joins_two_versions_and_measures_repeats(tmp_path: Path) -> None:
    new = pd.read_parquet(NEW).query("gemm_dtype == 'bfloat16'").head(3000).reset_index(drop=True)
    old = pd.read_parquet(OLD).query("gemm_dtype == 'bfloat16'")
    repeats = new.head(10).assign(latency=new["latency"].head(10) * 1.1)  # a second run 10% slower
    table = pd.concat([new, repeats], ignore_index=True)
    found = _floor(tmp_path / "one", table, old)
    within = next(r for r in found if r["b"].startswith("(") and r["a"].startswith("aiconfigurator/"))
    assert within["pairs"] == 10 and within["mape"] == pytest.approx(0.1, rel=1e-9)
    pair = next(r for r in found if r["b"] == "aiconfigurator-power/gemm/trtllm/1.3.0rc17")
    keys = ["op_name", "kernel_source", "gemm_dtype", "m", "n", "k"]
    joined = table.groupby(keys)["latency"].mean().to_frame("a").join(
        old.groupby(keys)["latency"].mean().rename("b"), how="inner")
    assert pair["pairs"] == len(joined) > 1000
    assert pair["mape"] == pytest.approx(np.mean(np.abs(joined["a"] - joined["b"]) / joined["a"]), rel=1e-9)
    # a version that is uniformly twice as slow differs by a level, not by noise: the level-corrected figure ignores it
    slow = _floor(tmp_path / "two", table, old.assign(latency=old["latency"] * 2))
    moved = next(r for r in slow if r["b"] == "aiconfigurator-power/gemm/trtllm/1.3.0rc17")
    assert moved["mape"] > pair["mape"] + 0.5
    assert moved["level_corrected_mape"] == pytest.approx(pair["level_corrected_mape"], rel=1e-9)


def test_mean_table_averages_each_column_over_the_gpus_that_have_it() -> None:
    """The report's means (what the issue's goals compare with) from the measured rows shipped beside the script:
    each cell is the mean of the per-GPU values, and a draw a GPU's table is too small for is averaged over the
    others, their count named."""
    ceiling = _ceiling()
    rows = json.loads((REPO / "benchmarks" / "adapt_ceiling.json").read_text())["ceiling"]
    frame = pd.DataFrame(rows)
    frame = frame[frame["device"].isin(["a100_sxm", "b300_sxm", "h100_sxm"]) & (frame["part"] != "gemm")]
    adapted = {("a100_sxm", "context", 128): 0.1, ("b300_sxm", "context", 128): 0.2, ("h100_sxm", "context", 128): 0.3}
    columns = [(512, "random"), (8000, "random")]
    lines = ceiling.mean_table(frame, adapted, columns)
    cells = {line.split(" | ")[0].strip("| "): line.strip("| ").split(" | ") for line in lines[4:]}
    assert set(cells) == {"context", "generation"}
    context = cells["context"]
    assert context[1] == "3"
    base = frame[(frame["part"] == "context") & (frame["draw"] == "base model")]["mape"]
    assert context[2] == f"{100 * base.mean():.2f}"
    assert context[3] == "20.00" and context[4] == "—"  # the adapted rows given, none at K = 512
    r512 = frame[(frame["part"] == "context") & (frame["draw"] == "random") & (frame["rows"] == 512)]["mape"]
    assert context[5] == f"{100 * r512.mean():.2f}"
    # the A100's attention table (6,890 rows) has no 8,000-row draw: the mean is over the other two
    r8000 = frame[(frame["part"] == "context") & (frame["draw"] == "random") & (frame["rows"] == 8000)]
    assert set(r8000["device"]) == {"b300_sxm", "h100_sxm"}
    assert context[6] == f"{100 * r8000['mape'].mean():.2f} (2 GPUs)"
    assert context[-2:] == ["6.0", "4.5"]
