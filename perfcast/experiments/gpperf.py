"""GPPerf's CUTLASS SGEMM sweep on an RTX 4070: the paper's own split (``gpperf-paper``) and whole sizes held
out (``gpperf-unseen-shape``), perfcast beside GPPerf's published numbers and the roofline."""

from __future__ import annotations

import time

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut

from perfcast.eval.protocols import gpperf_paper_split
from perfcast.experiments.baselines import ROOFLINE, roofline
from perfcast.experiments.presets import choose, sample_rows
from perfcast.experiments.results import Anchor, Goal, Result, RunConfig, Workspace
from perfcast.experiments.scoring import miss_note, score

GPPERF = "GPPerf (RF)"
#: (target, metric, GPPerf's published value)
GPPERF_ANCHORS = (("runtime_ms", "mape", 0.1557), ("runtime_ms", "r2", 0.98), ("power_w", "median_ape", 0.0542),
                  ("power_w", "r2", 0.78))
#: the issue's goals for the gpperf-paper rows, by (target, metric)
GPPERF_GOALS = {("runtime_ms", "mape"): Goal(0.03), ("power_w", "median_ape"): Goal(0.035)}
PAPER_SPLIT = ("paper's preprocessing: features and targets clipped to [1%, 99%], rows without power dropped, "
               "train_test_split(test_size=0.2, random_state=42)")


def gpperf_paper(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """GPPerf's own split of the CUTLASS sweep (519 test rows): runtime mean APE / R², power median APE / R²."""
    protocol = "gpperf-paper"
    choice = choose(protocol, cfg.model)
    train, test = gpperf_paper_split(ws.records("gpperf-cutlass", "gemm"))
    targets = list(choice.config.targets)
    start = time.perf_counter()
    pred = choice.predict(choice.fit_point(train, cfg.seed), test)
    wall = time.perf_counter() - start
    rows = [score(protocol, target, "rtx_4070", test[target], pred[:, targets.index(target)], choice.name, wall,
                  metric=metric, anchor=Anchor(GPPERF, value), notes=[PAPER_SPLIT])
            for target, metric, value in GPPERF_ANCHORS]
    for r in rows:
        r.goal = GPPERF_GOALS.get((r.target, r.metric))
        if r.target == "power_w":
            miss_note(r, "power was sampled by nvidia-smi after the kernel (dataset README): most readings are "
                         "idle board power, so the target is mostly noise")
    return rows


def gpperf_unseen_shape(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Leave one (m, n, k) of the CUTLASS sweep out at a time; runtime mean APE over all held-out rows."""
    protocol = "gpperf-unseen-shape"
    choice = choose(protocol, cfg.model)
    records = ws.records("gpperf-cutlass", "gemm").reset_index(drop=True)
    groups = records.groupby(["m", "n", "k"]).ngroup().to_numpy()
    pred = np.full(len(records), np.nan)
    note = None
    start = time.perf_counter()
    for fit_idx, held_idx in LeaveOneGroupOut().split(records, groups=groups):
        train, note = sample_rows(records.iloc[fit_idx], choice.train_rows, cfg.seed)
        pred[held_idx] = choice.predict(choice.fit_point(train, cfg.seed), records.iloc[held_idx])[:, 0]
    wall = time.perf_counter() - start
    n_shapes = int(groups.max()) + 1
    notes = [f"{n_shapes} folds, each holding out every row (layouts, betas, repeats) of one (m, n, k)",
             f"per fold: {note}" if note else "per fold: every other shape's rows trained",
             "GPPerf's exact unseen-shape protocol is not published with the data: this is the issue's reading"]
    res = score(protocol, "runtime_ms", "rtx_4070", records["runtime_ms"], pred, choice.name, wall,
                baselines={ROOFLINE: roofline(records, "gemm")}, anchor=Anchor("GPPerf's model", 0.71), notes=notes)
    res.goal = Goal(0.06)
    return [res]
