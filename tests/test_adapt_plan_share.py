"""The adaptation plan with a share of its budget drawn at random from the shapes a probe can run (real L40S rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.perf_probe.plan import adaptation_plan, random_share_for

K = 128


@pytest.fixture(scope="module")
def candidates(data_root: Path) -> pd.DataFrame:
    """3,000 real aiconfigurator GEMM rows of the L40S (bf16, fp8 and fp8_block)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    unit = next(u for u in imp.units(root) if "l40s/gemm/" in u.as_posix())
    return imp.load(root, unit)["gemm"].sample(3000, random_state=0).reset_index(drop=True)


def test_the_random_share_reads_no_latency_and_keeps_the_space_filling_half(candidates):
    blind = candidates.assign(runtime_ms=np.nan)
    plan = adaptation_plan(candidates, "gemm", K, random_share=0.5)
    assert plan.equals(adaptation_plan(blind, "gemm", K, random_share=0.5))  # the same plan without latencies
    assert len(plan) == K and plan.is_unique and plan.isin(candidates.index).all()
    assert adaptation_plan(candidates, "gemm", K // 2).isin(plan).all()  # the space-filling half, as without a share
    assert adaptation_plan(candidates, "gemm", K, random_share=0.0).equals(adaptation_plan(candidates, "gemm", K))
    other = adaptation_plan(candidates, "gemm", K, random_share=0.5, seed=1)
    assert not other.equals(plan)  # the seed draws the random half (and the clustering)


def test_a_random_plan_follows_the_candidates_kinds_where_the_centres_do_not(candidates):
    """The space-filling plan gives each kind a share growing with the square root of its candidates; the random
    share follows the candidates' own mix of kinds (what a user's shapes look like)."""
    bf16 = candidates[candidates["dtype"] == "bfloat16"]
    candidates = pd.concat([bf16, candidates[candidates["dtype"] == "fp8"].head(len(bf16) // 9)])  # 90% bf16
    share = candidates["dtype"].value_counts(normalize=True)
    spread = candidates.loc[adaptation_plan(candidates, "gemm", 256), "dtype"].value_counts(normalize=True)
    drawn = candidates.loc[adaptation_plan(candidates, "gemm", 256, random_share=1.0), "dtype"].value_counts(
        normalize=True)
    off = {name: float((got.reindex(share.index, fill_value=0) - share).abs().sum()) for name, got in
           (("spread", spread), ("drawn", drawn))}
    assert off["drawn"] < off["spread"]


def test_a_share_outside_zero_to_one_is_refused(candidates):
    with pytest.raises(ValueError, match="random_share"):
        adaptation_plan(candidates, "gemm", K, random_share=1.5)


def test_a_table_of_shares_sets_each_kernel_family_and_a_float_every_family():
    assert random_share_for({"gemm": 0.5}, "gemm") == 0.5
    assert random_share_for({"gemm": 0.5}, "attention") == 0.0  # a family the table does not name: no random share
    assert random_share_for(0.25, "attention") == random_share_for(0.25, "gemm") == 0.25
    assert random_share_for(None, "gemm") == 0.0


@pytest.mark.parametrize("bad", [{"gem": 0.5}, {"gemm": 1.5}, -0.1, "half", True])
def test_a_bad_share_names_the_option_it_came_from(bad):
    with pytest.raises(ValueError, match="plan_random_share"):
        random_share_for(bad, "gemm", "plan_random_share")
