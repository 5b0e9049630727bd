"""aiconfigurator (NVIDIA's measured GEMM and attention tables on many GPUs): every GPU left out in turn and
predicted from its spec sheet (``aiconfigurator-unseen-gpu-gemm`` / ``-attention``), and unseen shapes on a
known GPU (``aiconfigurator-unseen-shape``), each beside the roofline, copying the nearest or sibling GPU's
measurements, and interpolating the measured grid."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval import metrics
from perfcast.eval.protocols import NOTE, unseen_hardware_split, unseen_shape_split
from perfcast.experiments.baselines import (
    CONFIG_KEYS,
    GRID,
    NEAREST,
    PHASE_LABEL,
    ROOFLINE,
    SIBLING,
    SIBLING_NOTE,
    copy_from_devices,
    grid_interpolate,
    nearest_devices,
    roofline,
    sibling_devices,
)
from perfcast.experiments.presets import budget_rows, choose, sample_rows
from perfcast.experiments.results import Goal, Result, RunConfig, Workspace
from perfcast.experiments.scoring import macro_mean, score, with_values

#: the issue's goal for GPUs whose family sibling is in training, per task
SIBLING_GOALS: dict[str, Goal] = {"gemm": Goal(0.05, below=SIBLING), "attention": Goal(0.06, below=SIBLING)}
#: the columns naming a kernel kind, whose level an unseen GPU may shift as a whole (see :func:`level_oracle`)
CONFIG_KINDS: dict[str, tuple[str, ...]] = {"gemm": ("dtype",), "attention": ("phase", "dtype", "kv_dtype")}


def level_oracle(truth: Any, pred: Any, kinds: pd.Series) -> np.ndarray:
    """``pred`` with each kernel kind's median log error removed, the median taken on the scored rows
    themselves. A diagnosis, not a model: it shows how much of an unseen GPU's error is one offset per kind
    (a level the spec sheet misstates) and how much varies with the shape."""
    r = pd.Series(np.log(np.asarray(pred, dtype="float64") / np.asarray(truth, dtype="float64")), index=kinds.index)
    return np.asarray(pred, dtype="float64") * np.exp(-r.groupby(kinds).transform("median").to_numpy())


def aiconfigurator_unseen_gpu(ws: Workspace, cfg: RunConfig, task: str) -> list[Result]:
    """Leave one GPU out: fit on the others (spec sheets only for the held-out one), score every row of it.

    Per GPU (and per attention phase): perfcast vs roofline, nearest GPU and, for GPUs with a family
    sibling in training, copy-sibling. Summary rows: the mean over GPUs with a sibling (vs roofline and
    copy-sibling) and over every GPU (vs roofline and nearest GPU).
    """
    protocol = f"aiconfigurator-unseen-gpu-{task}"
    choice = choose(protocol, cfg.model)
    name, limit = choice.name, choice.train_rows
    records = ws.records("aiconfigurator", task)
    devices = sorted(records["device_id"].dropna().unique())
    keys = CONFIG_KEYS[task]
    parts = [None]
    if task == "attention":  # context (prefill) first, as the phases run; any other phase after them
        present = set(records["phase"].dropna())
        parts = [p for p in PHASE_LABEL if p in present] + sorted(present - set(PHASE_LABEL))
    per_device: dict[str | None, list[Result]] = {p: [] for p in parts}
    with_sibling: dict[str | None, list[Result]] = {p: [] for p in parts}
    pool_sizes, sampled = [], False
    for dev in devices:
        train, test = unseen_hardware_split(records, test_devices=[dev])
        others = sorted(train["device_id"].unique())
        fit_rows, fit_params, note = budget_rows(name, choice.params, train, limit, cfg.seed)
        pool_sizes.append(len(train))
        start = time.perf_counter()
        model = choice.fit(fit_rows, cfg.seed, fit_params)
        pred, lo, hi = choice.predict_interval(model, test)
        wall = time.perf_counter() - start
        base = {ROOFLINE: roofline(test, task)}
        nearest = nearest_devices(dev, others)
        base[NEAREST] = copy_from_devices(train, test, nearest, keys)
        siblings = sibling_devices(dev, others)
        if siblings:
            base[SIBLING] = copy_from_devices(train, test, siblings, keys)
        sampled = sampled or note is not None
        notes = [f"nearest GPUs by spec sheet: {', '.join(nearest[:3])}",
                 f"siblings: {', '.join(siblings)}" if siblings else "no family sibling in training"]
        kinds = test[list(CONFIG_KINDS[task])].astype(str).agg("/".join, axis=1)
        leveled = level_oracle(test["runtime_ms"], pred, kinds)
        for part in parts:
            sel = np.ones(len(test), dtype=bool) if part is None else (test["phase"] == part).to_numpy()
            target = "runtime_ms" if part is None else f"runtime_ms ({PHASE_LABEL.get(part, part)})"
            diagnosis = (f"diagnosis: with this GPU's per-kernel-kind ({'/'.join(CONFIG_KINDS[task])}) offset known "
                         f"(an oracle fitted on these test rows) ours would score "
                         f"{metrics.mape(test.loc[sel, 'runtime_ms'], leveled[sel]):.1%}: the rest of the error "
                         f"varies with the shape, not only the level")
            kept, absent = with_values({k: v[sel] for k, v in base.items()})
            res = score(protocol, target, dev, test.loc[sel, "runtime_ms"], pred[sel], name, wall,
                        baselines=kept, interval=(lo[sel], hi[sel]), notes=[*notes, diagnosis, *absent])
            per_device[part].append(res)
            if SIBLING in kept:  # the same rows scored against roofline and copy-sibling only
                with_sibling[part].append(score(protocol, target, dev, test.loc[sel, "runtime_ms"], pred[sel], name,
                                                wall, baselines={k: kept[k] for k in (ROOFLINE, SIBLING) if k in kept},
                                                interval=(lo[sel], hi[sel])))
                with_sibling[part][-1].goal = SIBLING_GOALS[task]
    own = name in ("transfer", "sibling")  # models that sample their base model's rows themselves
    sampling = [(f"per held-out GPU: {'the base model' if own else 'trained'} on {limit:,} rows "
                 f"drawn (seed {cfg.seed}) from the other GPUs' {min(pool_sizes):,}-{max(pool_sizes):,}"
                 + ("; every row enters the sibling residual table" if own else ""))] if sampled else []
    rows = []
    for part in parts:
        if with_sibling[part]:
            rows.append(macro_mean(with_sibling[part], "GPUs with a sibling in training",
                                   notes=[*sampling, SIBLING_NOTE]))
            rows[-1].goal = SIBLING_GOALS[task]
        rows.append(macro_mean(per_device[part], "every GPU left out", notes=sampling))
        rows[-1].goal = Goal(0.15)
        rows.extend(per_device[part])
    return rows


def aiconfigurator_unseen_gpu_gemm(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Leave-one-GPU-out on aiconfigurator's GEMM tables."""
    return aiconfigurator_unseen_gpu(ws, cfg, "gemm")


def aiconfigurator_unseen_gpu_attention(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Leave-one-GPU-out on aiconfigurator's context and generation attention tables."""
    return aiconfigurator_unseen_gpu(ws, cfg, "attention")


def aiconfigurator_unseen_shape(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """GEMM shapes (m, n, k) held out on every GPU at once (20 %, seeded); each GPU is known from its other
    shapes. perfcast (one model per GPU, fitted on that GPU's training shapes: a known GPU's own table is
    all a user of this protocol has and needs) vs log-linear interpolation on that GPU's measured grid."""
    protocol = "aiconfigurator-unseen-shape"
    choice = choose(protocol, cfg.model)
    name, limit = choice.name, choice.train_rows
    records = ws.records("aiconfigurator", "gemm")
    train, test = unseen_shape_split(records, seed=cfg.seed)
    grid, bracketed = grid_interpolate(train, test, by=["device_id", "dtype"])
    rows, walls, sampled = [], [], []
    for dev in sorted(test["device_id"].unique()):
        sel = (test["device_id"] == dev).to_numpy()
        fit_rows, note = sample_rows(train[train["device_id"] == dev], limit, cfg.seed)
        start = time.perf_counter()
        pred = choice.predict(choice.fit_point(fit_rows, cfg.seed), test[sel])[:, 0]
        walls.append(time.perf_counter() - start)
        notes = [note] if note else []
        sampled.append(note is not None)
        outside = int((sel & ~bracketed).sum())
        if outside:
            notes.append(f"{outside:,} rows lie outside the measured grid on every axis: {GRID} copies the nearest "
                         f"measured neighbour there")
        rows.append(score(protocol, "runtime_ms", dev, test.loc[sel, "runtime_ms"], pred, name, walls[-1],
                          baselines={GRID: grid[sel]}, notes=notes))
        rows[-1].goal = Goal(0.03)
    common = [test.attrs[NOTE], f"{GRID}: every training row of the same GPU and dtype (not subsampled)",
              "one model per GPU, fitted on that GPU's training shapes"]
    if any(sampled):
        common.append(f"the model learns from at most {limit:,} of a GPU's training rows (seed {cfg.seed}), while "
                      f"{GRID} reads every measured neighbour of the held-out shape")
    rows.insert(0, macro_mean(rows, "every GPU", notes=common, wall_s=sum(walls)))
    rows[0].goal = Goal(0.03)
    return rows
