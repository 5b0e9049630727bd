"""The zero-shot tools on three real aiconfigurator GPUs: benchmarks/spec_audit.py (achieved rates over the sheet's
peaks) and benchmarks/zeroshot_nested.py (nested scores, the choice, the tables)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from perfcast.experiments.results import Workspace

REPO = Path(__file__).resolve().parents[1]
#: three GPUs of different memory (HBM2e, HBM3, GDDR6) keep the import and features to seconds
GPUS = ("a100_sxm", "h100_sxm", "l40s")


def _script(name: str):
    """A benchmarks/ script (beside its siblings, not a package module)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    return __import__(name)


@pytest.fixture(scope="module")
def root(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding only the three GPUs' aiconfigurator folders and the spec sheets."""
    root = tmp_path_factory.mktemp("root")
    (root / "aiconfigurator").mkdir()
    for name in (*GPUS, "systems", "SOURCE.txt"):
        (root / "aiconfigurator" / name).symlink_to(data_root / "aiconfigurator" / name)
    return root


@pytest.fixture(scope="module")
def table(root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The audit of the three GPUs' GEMM tables."""
    records = Workspace(root, tmp_path_factory.mktemp("ws")).records("aiconfigurator", "gemm")
    return _script("spec_audit").achieved(records, "gemm", 256.0, 3000).assign(dataset="aiconfigurator", task="gemm")


@pytest.fixture(scope="module")
def result(root: Path) -> dict:
    out = root / "nested.json"
    _script("zeroshot_nested").main(["--task", "gemm", "--data-root", str(root), "--rows", "300", "--trees", "10",
                                     "--only", "vendor", "ratios_mono", "--out", str(out)])
    return json.loads(out.read_text())


def test_no_gpu_beats_its_sheet_and_bandwidth_is_in_the_physical_range(table):
    assert set(table["device_id"]) == set(GPUS)
    assert (table["compute_frac"] <= 1.0).all() and (table["compute_frac"] > 0.3).all()
    assert table["bw_frac"].between(0.6, 1.0).all()


def test_a_sparse_peak_is_flagged_and_the_real_sheets_are_not(table):
    audit = _script("spec_audit")
    clean = audit.flag(table)
    bf16 = clean["dtype"] == "bfloat16"
    assert not clean.loc[bf16, "flags"].str.contains("peers").any()
    sparse = table.copy()
    h100 = (sparse["device_id"] == "h100_sxm") & (sparse["dtype"] == "bfloat16")
    sparse.loc[h100, "compute_frac"] /= 2.0  # as if the sheet gave the 2:4-sparse figure
    flagged = audit.flag(sparse).loc[h100, "flags"].iloc[0]
    assert "compute 0.5" in flagged and np.isfinite(table.loc[h100, "best_tflops"]).all()
    assert "above the sheet" in audit.flag(table.assign(bw_frac=table["bw_frac"] * 1.3)).loc[h100, "flags"].iloc[0]


def test_every_gpu_gets_inner_and_outer_scores_and_its_own_choice(result: dict):
    for name in ("vendor", "ratios_mono"):
        for fold in ("outer", "inner"):
            scores = [s["all"] for s in result[name][fold].values()]
            assert sorted(result[name][fold]) == sorted(GPUS) and all(0 < s < 5 for s in scores)
    # the choice of each held-out GPU is the candidate with the lower inner score: its own score never enters it
    for dev, pick in result["nested_choice"].items():
        other = "vendor" if pick == "ratios_mono" else "ratios_mono"
        assert result[pick]["inner"][dev]["all"] <= result[other]["inner"][dev]["all"]
    inner_means = {n: np.mean([result[n]["inner"][d]["all"] for d in GPUS]) for n in ("vendor", "ratios_mono")}
    assert result["preset_choice"] == min(inner_means, key=inner_means.get)


def test_render_shows_every_gpu_and_the_nested_test_score(result: dict):
    table = _script("zeroshot_nested").render(result)
    for dev in GPUS:
        pick = result["nested_choice"][dev]
        assert f"| {dev} |" in table and f"{pick} ({100 * result[pick]['outer'][dev]['all']:.1f}) |" in table
    assert "| **mean** |" in table
