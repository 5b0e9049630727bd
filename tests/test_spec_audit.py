"""benchmarks/spec_audit.py on a slice of the real aiconfigurator GEMM tables: achieved rates over the sheet's peaks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from perfcast.experiments.results import Workspace

REPO = Path(__file__).resolve().parents[1]
#: three GPUs of different memory (HBM2e, HBM3, GDDR6) keep the import and features to seconds
GPUS = ("a100_sxm", "h100_sxm", "l40s")


def _audit_module():
    """benchmarks/spec_audit.py (a script beside its siblings, not a package module)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import spec_audit

    return spec_audit


@pytest.fixture(scope="module")
def table(data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The audit of three GPUs' GEMM tables (a data root holding only their folders and the spec sheets)."""
    root = tmp_path_factory.mktemp("root")
    (root / "aiconfigurator").mkdir()
    for name in (*GPUS, "systems", "SOURCE.txt"):
        (root / "aiconfigurator" / name).symlink_to(data_root / "aiconfigurator" / name)
    records = Workspace(root, tmp_path_factory.mktemp("ws")).records("aiconfigurator", "gemm")
    audit = _audit_module()
    return audit.achieved(records, "gemm", 256.0, 3000).assign(dataset="aiconfigurator", task="gemm")


def test_no_gpu_beats_its_sheet_and_bandwidth_is_in_the_physical_range(table):
    assert set(table["device_id"]) == set(GPUS)
    assert (table["compute_frac"] <= 1.0).all() and (table["compute_frac"] > 0.3).all()
    assert table["bw_frac"].between(0.6, 1.0).all()
    assert not table["l2_mb"].isna().any()  # the L40S's L2 is on the sheet now (SPEC_AUDIT.md)


def test_a_sparse_peak_is_flagged_and_the_real_sheets_are_not(table):
    audit = _audit_module()
    clean = audit.flag(table)
    bf16 = clean["dtype"] == "bfloat16"
    assert not clean.loc[bf16, "flags"].str.contains("peers").any()
    sparse = table.copy()
    h100 = (sparse["device_id"] == "h100_sxm") & (sparse["dtype"] == "bfloat16")
    sparse.loc[h100, "compute_frac"] /= 2.0  # as if the sheet gave the 2:4-sparse figure
    flagged = audit.flag(sparse).loc[h100, "flags"].iloc[0]
    assert "compute 0.5" in flagged and np.isfinite(table.loc[h100, "best_tflops"]).all()
    assert "above the sheet" in audit.flag(table.assign(bw_frac=table["bw_frac"] * 1.3)).loc[h100, "flags"].iloc[0]
