"""Nested selection of the GPPerf presets on the real CUTLASS sweep: the choice is the candidate with the best
score inside the training rows, and a held-out size's labels cannot reach its own fold's choice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from perfcast.experiments.gpperf_selection import PAPER_CANDIDATES, select_paper, select_unseen_shape
from perfcast.experiments.results import workspace
from perfcast.training.config import load_preset

CHEAP = {"n_estimators": 40}


@pytest.fixture(scope="module")
def sweep(data_root: Path) -> pd.DataFrame:
    with workspace(data_root) as ws:
        return ws.records("gpperf-cutlass", "gemm")


def test_paper_selection_picks_the_best_nested_score_and_drops_a_crippled_candidate(sweep: pd.DataFrame) -> None:
    cands = {"l1": {"objective": "l1", "min_child_samples": 3, **CHEAP},
             "two trees": {"objective": "l1", "min_child_samples": 3, "n_estimators": 2}}
    got = select_paper(sweep, candidates=cands)
    assert got["chosen"] == "l1" == min(got["nested"], key=lambda k: got["nested"][k]["criterion"])
    assert got["nested"]["two trees"]["runtime_mape"] > 2 * got["nested"]["l1"]["runtime_mape"]
    assert 0 < got["test"]["runtime_mape"] < 0.2 and "never its test rows" in got["selected_on"]


def test_the_preset_holds_the_paper_selection() -> None:
    params = dict(load_preset("gpperf-paper").model.params)
    assert params in PAPER_CANDIDATES.values(), params
    assert "cross-validation" in load_preset("gpperf-paper").benchmark.selected_on


def test_a_held_out_size_cannot_reach_its_own_choice(sweep: pd.DataFrame) -> None:
    """Tripling one size's runtimes changes neither the inner scores nor the choice of the fold holding it out."""
    sizes = sweep.groupby(["m", "n", "k"]).ngroup()
    rows = sweep[sizes.isin(sizes.unique()[:6])].reset_index(drop=True)
    cands = {"shape columns": {"columns": ["log2_m", "log2_n", "log2_k", "log2_waves"], **CHEAP},
             "every column": dict(CHEAP)}
    first = rows.groupby(["m", "n", "k"]).ngroup() == 0
    perturbed = rows.copy()
    perturbed.loc[first, "runtime_ms"] *= 3.0
    runs = [select_unseen_shape(r, 600, inner_folds=2, candidates=cands) for r in (rows, perturbed)]
    held = [f for f in runs[0]["folds"] if f["size"] == rows.loc[first.idxmax(), ["m", "n", "k"]].astype(int).tolist()]
    assert len(held) == 1
    twin = next(f for f in runs[1]["folds"] if f["size"] == held[0]["size"])
    assert twin["inner"] == held[0]["inner"] and twin["chosen"] == held[0]["chosen"]
    assert twin["test_mape"] != held[0]["test_mape"]  # its own score does see the new labels
    assert sum(runs[0]["wins"].values()) == 6
