"""Adapted intervals weighted for the probe plan's covariate shift (weighted split-conformal)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfcast.experiments.adapt_bench import _offers_weighted, interval_variants
from perfcast.models.estimators.adapt import Adaptation
from perfcast.models.estimators.adapt_correction import Correction
from perfcast.models.uncertainty.calibration import IntervalCalibration, conformal_quantile
from perfcast.models.uncertainty.weighted_conformal import query_share, weighted_scores
from perfcast.perf_probe.plan import adaptation_plan, represented

LEVEL = 0.9


def adaptation_of(scores: np.ndarray) -> Adaptation:
    """An adaptation whose cross-fitted scores are ``scores`` (one Mondrian group)."""
    cal = IntervalCalibration(["runtime_ms"], {"runtime_ms": np.sort(scores)}, {"runtime_ms": np.nan}, LEVEL)
    return Adaptation(Correction(), cal, {}, len(scores), scores=scores, labels=np.full(len(scores), "none"),
                      residuals=scores)


def test_equal_weights_give_the_plain_conformal_quantile():
    s = np.random.default_rng(1).random(57)
    for level in (0.5, 0.8, 0.9, 0.95):
        assert conformal_quantile(weighted_scores(s, np.full(57, 3.0)), level) == conformal_quantile(np.sort(s), level)
    assert query_share(np.ones(57)) == pytest.approx(1 / 58)


def test_weighted_intervals_cover_where_the_plan_over_represents_the_easy_shapes():
    """90% of the candidate shapes are large (errors 10x larger) but k-means centres spread over the log sizes put
    about half the plan there: the plain quantile of the plan's scores under-covers the candidates, the weighted
    one (each planned row weighs the candidates it stands for) does not."""
    rng = np.random.default_rng(0)
    n = 4000
    log_m = np.where(rng.random(n) < 0.9, rng.uniform(12, 14, n), rng.uniform(4, 12, n))
    candidates = pd.DataFrame({"m": np.round(2 ** log_m).astype(int), "n": 4096, "k": 4096, "batch": 1,
                               "op": "gemm", "dtype": "fp16"})
    plan = adaptation_plan(candidates, "gemm", 128)
    at = candidates.index.get_indexer(plan)
    weights = represented(candidates, candidates.loc[plan], "gemm")
    assert weights.sum() == n and weights.shape == (128,)
    rest = np.setdiff1d(np.arange(n), at)
    sigma = np.where(log_m >= 12, 0.2, 0.02)
    plain, weighted = [], []
    for _ in range(100):
        r = np.abs(rng.normal(0.0, sigma))
        found = adaptation_of(r[at])
        for out, w in ((plain, None), (weighted, weights)):
            cal = found.regrouped(None, weights=w).calibration
            out.append(np.mean(r[rest] <= cal.quantiles()[0]))
    assert np.mean(plain) < 0.86
    assert 0.88 <= np.mean(weighted) <= 0.94
    assert found.regrouped(None, weights=weights).calibration.grouping["shift_weighted"] is True


def test_weights_must_match_the_rows():
    with pytest.raises(ValueError, match="weights"):
        adaptation_of(np.ones(20)).regrouped(None, weights=np.ones(19))


def test_weighted_variants_are_offered_only_where_the_training_gpus_find_them_better():
    options = {"group_rows": [20], "score_scales": [1.0], "shift_weighted": {"gemm": [False, True]}}
    grid = interval_variants(options, task="gemm")
    assert len(grid) == 4 and grid[2:] == [(*v, True) for v in grid[:2]]
    assert interval_variants(options, task="attention") == grid[:2]
    gpus = ["a", "b", "c", "d"]
    # weighting fixes every GPU's coverage: offered; it ruins it: not offered
    for good, offered in ((True, True), (False, False)):
        miss = {(d, ("s", v)): (0.01 if (len(v) == 4) == good else 0.05) for d in gpus for v in grid}
        among, note = _offers_weighted(grid, gpus[1:], "s", miss)
        assert (among == grid) is offered and ("not offered" in note) is not offered
