"""Nested selection of the aiconfigurator unseen-GPU and neusight-adapt presets on real slices: it picks only
among its candidates, and a held-out GPU's latencies never change what is chosen for it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.eval.protocols import neusight_ood_split
from perfcast.experiments import aiconfigurator_selection as sel
from perfcast.experiments import neusight_adapt_selection as nsel
from perfcast.experiments.baselines import CONFIG_KEYS
from perfcast.experiments.results import workspace
from perfcast.experiments.sibling import config_sample
from tests.test_sibling import gemm  # noqa: F401  (pytest fixture: bf16/fp8/nvfp4 GEMMs of GB200, GB300, B300, H100)

SETTINGS = (sel.Setting("10 trees", {"n_estimators": 10}), sel.Setting("30 trees", {"n_estimators": 30}))


@pytest.fixture(scope="module")
def rows(gemm) -> pd.DataFrame:  # noqa: F811
    """A seeded third of the slice's configurations, every GPU's rows of each (siblings stay aligned)."""
    return config_sample(gemm[gemm["runtime_ms"] > 0], list(CONFIG_KEYS["gemm"]), 0.3, 0)


def test_folds_leave_out_gpus_and_families_never_the_outer_one():
    devices = ["b300_sxm", "gb200", "gb300", "h100_sxm", "a100_sxm"]
    folds = sel.inner_folds("h100_sxm", devices)
    assert frozenset({"b300_sxm", "gb200", "gb300"}) in folds  # the Blackwell family as one fold
    assert all("h100_sxm" not in f for f in folds)
    assert len(folds) == 5  # four GPUs, one family
    assert frozenset({"gb300", "b300_sxm"}) in sel.inner_folds("gb200", devices)


def test_selection_picks_among_its_candidates(rows):
    result = sel.select(sel.Fitter("gemm", rows, 1500, 0), SETTINGS)
    labels = {s.label for s in SETTINGS}
    assert set(result["chosen"]) == set(rows["device_id"].unique())
    assert set(result["chosen"].values()) <= labels and result["preset"] in labels
    assert 0 < result["nested"] < 1
    # the nested score is each GPU's inner winner scored on that GPU
    for dev, label in result["chosen"].items():
        assert label == min(result["inner"][dev], key=result["inner"][dev].get)


def test_held_out_gpu_latencies_are_never_read(rows):
    hidden = rows.copy()
    hidden.loc[hidden["device_id"] == "h100_sxm", "runtime_ms"] = np.nan
    seen = sel.inner_scores(sel.Fitter("gemm", rows, 1500, 0), "h100_sxm", SETTINGS)
    blind = sel.inner_scores(sel.Fitter("gemm", hidden, 1500, 0), "h100_sxm", SETTINGS)
    assert seen == blind and all(np.isfinite(v) for v in seen.values())


@pytest.mark.slow
def test_neusight_adapt_selection_reads_training_gpus_only(data_root: Path, monkeypatch: pytest.MonkeyPatch):
    real = nsel.choose
    kept = real(nsel.PROTOCOL).options["budgets"][:2]  # K = 0 and the smallest adaptation budget

    def two_budgets(protocol: str, override: str | None = None):
        """The preset with its first two budgets only (the file itself is untouched): each further K fits the
        same kind of corrections again, which adds minutes, not checks."""
        choice = real(protocol, override)
        return dataclasses.replace(choice, options={**choice.options, "budgets": kept})

    monkeypatch.setattr(nsel, "choose", two_budgets)
    with workspace(data_root) as ws:
        train, test = neusight_ood_split(ws.records("neusight", "gemm"))
    slice_ = train[train["device_id"].isin(["t4", "v100_pcie_32gb"])]
    slice_ = slice_.groupby("device_id").sample(2000, random_state=0)  # K rows revealed leave rows of both ops
    candidates = nsel.CANDIDATES[:2]
    result = nsel.select(slice_, candidates, rows=600, test_rows=100)
    assert result["chosen"] in {c.label for c in candidates}
    assert set(result["folds"][candidates[0].label]) == {"t4", "v100_pcie_32gb"}  # no test GPU among the folds
    assert not set(test["device_id"]) & set(slice_["device_id"])
    assert all(0 < v < 1 for v in result["nested"].values())
    scored = {key.split("K=")[1] for per_gpu in result["folds"].values() for s in per_gpu.values() for key in s}
    assert scored == {str(k) for k in kept} and len(scored) == 2  # the base (K = 0) and an adapted K
