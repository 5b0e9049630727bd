"""Nested leave-one-training-GPU-out selection of the built-in models' base (perfcast.experiments.builtin_selection),
on real aiconfigurator GEMM rows of four GPUs: a GPU's inner (selection) score never reads that GPU's rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.experiments import builtin_selection as sel
from perfcast.experiments.builtin_models import BASE, _params, _preset, main
from perfcast.models.estimators.physical_base import physical_roofline
from perfcast.models.registry import hybrid_estimator

GPUS = ("a100_sxm", "h100_sxm", "l40s", "b60")


@pytest.fixture(scope="module")
def records(data_root: Path) -> pd.DataFrame:
    """300 measured GEMM rows of each of four GPUs (seeded), read with the importer."""
    imp = get_importer("aiconfigurator")
    root = data_root / "aiconfigurator"
    frames = []
    for gpu in GPUS:
        units = [u for u in imp.units(root) if f"/{gpu}/gemm/" in u.as_posix()][:2]
        rows = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
        frames.append(rows[rows["runtime_ms"] > 0].sample(300, random_state=0))
    return pd.concat(frames, ignore_index=True)


def test_inner_scores_of_a_gpu_never_read_its_rows(records: pd.DataFrame) -> None:
    params = {**sel.CANDIDATES["vendor"], "n_estimators": 20}
    F, meta = sel.sample(records, "gemm", 200)
    base = sel.nested("gemm", params, F, meta, progress=lambda _: None)
    assert set(base["outer"]) == set(base["inner"]) == set(GPUS)
    slowed = meta.copy()
    slowed.loc[slowed["device_id"] == "l40s", "y"] *= 3.0  # only the L40S's measurements change
    moved = sel.nested("gemm", params, F, slowed, progress=lambda _: None)
    assert moved["inner"]["l40s"] == pytest.approx(base["inner"]["l40s"])  # its selection score: unchanged
    assert moved["outer"]["l40s"] != pytest.approx(base["outer"]["l40s"])  # its test score: moved
    assert moved["inner"]["h100_sxm"] != pytest.approx(base["inner"]["h100_sxm"])  # others were fitted on it


def test_select_writes_scores_choices_and_a_table(records: pd.DataFrame, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    result = sel.select("gemm", records, rows=150, trees=10, names=["current", "vendor"], progress=lambda _: None)
    assert set(result["candidates"]) == {"current", "vendor"}
    assert result["shipped_choice"] in {"current", "vendor"}
    for gpu, name in result["nested_choice"].items():
        inner = {n: c["inner"][gpu] for n, c in result["candidates"].items()}
        assert inner[name] == min(inner.values())
        assert result["nested_test"][gpu] == result["candidates"][name]["outer"][gpu]
    table = sel.markdown(result)
    assert table.count("\n") == len(GPUS) + 2 and "| **mean** |" in table
    out = sel.save(result, tmp_path / "sel.json")
    assert json.loads(out.read_text())["nested_choice"] == result["nested_choice"]


def test_the_build_reads_the_selected_base() -> None:
    for task, name in BASE.items():
        params = _params(task, 7)[1]
        assert params["by_vendor"] == sel.CANDIDATES[name]["by_vendor"] and params["n_estimators"] == 7
    assert _params("gemm", 7, "current")[1]["by_vendor"] is False
    # the GEMM preset turns the L2-resident base on; a candidate's name alone decides it
    assert _preset("gemm").model.params.get("l2_resident") is True
    assert _params("gemm", 7, "vendor")[1]["l2_resident"] is False
    assert _params("gemm", 7, "vendor_l2")[1]["l2_resident"] is True
    with pytest.raises(SystemExit):
        main(["build", "--data-root", ".", "--base", "no_such_base"])


def test_the_l2_candidate_leaves_a_gpu_without_an_l2_size_on_its_dram_roofline(records: pd.DataFrame) -> None:
    """A sheet without the L2 size (NaN) keeps the DRAM memory time under the L2 base, while the same GPU with its
    size gets a lower one for some GEMMs; the candidate fits and predicts with such a GPU in training."""
    F, meta = sel.sample(records, "gemm", 200)
    l40s = (meta["device_id"] == "l40s").to_numpy()
    unknown = F.assign(l2_mb=F["l2_mb"].where(~l40s))
    for frame, keeps in ((F, False), (unknown, True)):
        A, names = frame.to_numpy(dtype="float64"), tuple(frame.columns)
        dram = physical_roofline(A, names, None, False)[l40s]
        l2 = physical_roofline(A, names, None, False, l2_bytes_per_clock=8.0)[l40s]
        assert np.allclose(l2, dram, rtol=1e-9) == keeps and (l2 <= dram * (1 + 1e-9)).all()
    model = hybrid_estimator("gemm", {**sel.CANDIDATES["vendor_l2"], "n_estimators": 10})
    pred = model.fit(unknown, meta["y"].to_numpy()).predict(unknown)
    assert np.isfinite(pred).all() and (pred > 0).all()
