"""CPU benchmarks: SPEC CPU2017 results of future years (``spec-cpu2017-future``) and NCPP's PerfCastDB split
(``ncpp-paper``), beside the family and workload means a practitioner would otherwise use."""

from __future__ import annotations

import time

import pandas as pd

from perfcast.eval.protocols import NOTE, future_split, ncpp_paper_split
from perfcast.experiments.baselines import FAMILY_MEAN, WORKLOAD_MEAN, group_mean
from perfcast.experiments.presets import choose
from perfcast.experiments.results import Goal, Result, RunConfig, Workspace
from perfcast.experiments.scoring import score


def spec_cpu2017_future(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Train on SPEC CPU2017 base results published before the cutoff year, test on the rest, per benchmark,
    vs the mean score of the same processor family; plus the rows of processors never seen in training."""
    protocol = "spec-cpu2017-future"
    choice = choose(protocol, cfg.model)
    records = ws.records("spec-cpu2017", "cpu_bench")
    # the reference machine's own results (score 1 by definition, x_suspect) measure no machine: left out, as
    # the preset's data.filters do
    base_rows = records[(records["variant"] == "base").fillna(False).to_numpy()
                        & ~records["x_suspect"].fillna(False).astype(bool).to_numpy()]
    latest = int(pd.to_datetime(base_rows["published_at"], utc=True).dt.year.max())
    year = cfg.cutoff if cfg.cutoff is not None else latest
    train, test = future_split(base_rows, cutoff=f"{year}-01-01")
    start = time.perf_counter()
    model = choice.fit(train, cfg.seed)
    pred, lo, hi = choice.predict_interval(model, test)
    wall = time.perf_counter() - start
    family, fell_back = group_mean(train, test, ["benchmark", "family"], "score", fallback=["benchmark"])
    notes = [test.attrs[NOTE], "intervals calibrated by predicting each of the latest training years from the earlier "
                               "ones (as the test predicts the year after), widths scaled by processor novelty"]
    if fell_back:
        notes.append(f"{fell_back:,} test rows of families absent from training: {FAMILY_MEAN} = the benchmark's mean")
    target = f"score (base, cutoff {year})"
    rows = [score(protocol, target, "all processors", test["score"], pred, choice.name, wall,
                  baselines={FAMILY_MEAN: family}, interval=(lo, hi), notes=notes)]
    rows[0].goal = Goal(0.06, below=FAMILY_MEAN)
    unseen = ~test["device_name"].isin(set(train["device_name"])).to_numpy()
    if unseen.any():
        rows.append(score(protocol, target, "processors never seen", test.loc[unseen, "score"], pred[unseen],
                          choice.name, wall, baselines={FAMILY_MEAN: family[unseen]},
                          interval=(lo[unseen], hi[unseen])))
        rows[-1].goal = Goal(0.08, below=FAMILY_MEAN)
    for bench in sorted(test["benchmark"].unique()):
        sel = (test["benchmark"] == bench).to_numpy()
        rows.append(score(protocol, f"score ({bench}, base)", "all processors", test.loc[sel, "score"], pred[sel],
                          choice.name, wall, baselines={FAMILY_MEAN: family[sel]}, interval=(lo[sel], hi[sel])))
    return rows


#: what the ncpp-paper row says when the data holds NCPP's training file only
NO_TEST_SET = ("not scored: the data holds no NCPP test set (test_data.csv, x_split == 'test'); in the public "
               "sample every workload ran on one hardware configuration, so holding a configuration out holds out "
               "a workload no training row ran, in a unit no model can know (benchmarks/ANALYSIS.md)")


def ncpp_paper(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """NCPP's PerfCastDB split (train_data.csv -> test_data.csv) vs the per-(workload, sub-test) training mean;
    without test_data.csv, one row saying there is nothing honest to score."""
    protocol = "ncpp-paper"
    choice = choose(protocol, cfg.model)
    records = ws.records("perfcastdb-sample", "cpu_bench")
    goal = Goal(0.15, below=WORKLOAD_MEAN)
    if not (records["x_split"].astype("string") == "test").fillna(False).any():
        res = Result(protocol, "score", "held-out configurations", "mape", None, choice.name, 0, 0.0,
                     notes=[NO_TEST_SET], goal=goal)
        return [res]
    train, test = ncpp_paper_split(records)
    start = time.perf_counter()
    model = choice.fit(train, cfg.seed, groups=train["hw_id"].astype(str))
    pred, lo, hi = choice.predict_interval(model, test)
    wall = time.perf_counter() - start
    mean = group_mean(train, test, ["benchmark", "subtest"], "score")[0]
    res = score(protocol, "score", "test_data.csv configurations", test["score"], pred, choice.name, wall,
                baselines={WORKLOAD_MEAN: mean}, interval=(lo, hi), notes=[test.attrs[NOTE]])
    res.goal = goal
    return [res]
