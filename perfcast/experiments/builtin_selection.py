"""Choosing the built-in models' base by nested leave-one-training-GPU-out (issue 17: select only on what a user has).

Why its own module: the built-in GEMM model is trained on 14 GPUs of two datasets (aiconfigurator and NeuSight),
not the 8 the unseen-GPU presets were selected on, so the presets' choice (``by_vendor``) is re-checked on the
built-in's own data. For every outer GPU ``o`` each candidate is scored on the *other* GPUs, each left out in
turn from a fit that also lacks ``o`` (inner folds); the candidate with the best inner mean is the one ``o``
would have been given, and its error on ``o`` is the nested test score. The model a fold trains without GPUs
``{o, g}`` serves both inner folds (``o``'s score on ``g`` and ``g``'s on ``o``), so a candidate costs
``n + n(n-1)/2`` fits. The shipped model is trained on every GPU, so its setting is the candidate with the best
mean over the outer folds (plain leave-one-GPU-out over the training GPUs: no test GPU exists for it).
Only the base hybrid is fitted (no sibling transfer, no intervals), on ``rows`` records per GPU.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.features.extrapolation import EFFICIENCY_DIRECTION, TRANSFERABLE

#: kernel columns the work-only member sees (the presets' second variant)
SDWT = ["shape", "dtype", "work", "tiling"]
#: base-model settings compared: overrides of the preset's ``by_vendor``, ``variants`` and ``l2_resident`` (every
#: candidate states ``l2_resident``, so a preset that turns it on does not change what a candidate name builds)
CANDIDATES: dict[str, dict[str, Any]] = {name: {"l2_resident": False, **setting} for name, setting in {
    "current": {"by_vendor": False, "variants": [{}, {"columns": SDWT}]},
    "vendor": {"by_vendor": True, "variants": [{}, {"columns": SDWT}]},
    "vendor_single": {"by_vendor": True, "variants": [{}]},
    "vendor_relative": {"by_vendor": True, "variants": [{"relative": True}, {"columns": SDWT}]},
    "vendor_monotone": {"by_vendor": True, "variants": [{"relative": True, "monotone": dict(EFFICIENCY_DIRECTION)},
                                                        {"columns": SDWT}]},
    # the GEMM unseen-GPU preset's members (benchmarks/ANALYSIS_zeroshot.md, round 2); not yet measured here
    "vendor_ratios_mono": {"by_vendor": True, "variants": [
        {"columns": [*SDWT, *TRANSFERABLE], "monotone": dict(EFFICIENCY_DIRECTION)}, {"columns": SDWT}]},
    # the shipped base with the memory time of an L2-sized GEMM at a fitted L2 rate (the GEMM unseen-GPU preset's
    # base since benchmarks/ANALYSIS_zeroshot.md, round 4); GPUs without an L2 size keep the DRAM roofline
    "vendor_l2": {"by_vendor": True, "variants": [{}, {"columns": SDWT}], "l2_resident": True},
}.items()}


def sample(records: pd.DataFrame, task: str, rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, meta) of ``rows`` records drawn per GPU: meta holds device_id, y and the attention phase."""
    from perfcast.features import feature_transformer

    picked = pd.concat([g.sample(min(len(g), rows), random_state=seed) for _, g in records.groupby("device_id")])
    picked = picked.reset_index(drop=True)
    features = feature_transformer(task).fit(picked).transform(picked)
    part = np.where(features["is_decode"].to_numpy() > 0.5, "generation", "context") if task == "attention" else "all"
    meta = pd.DataFrame({"device_id": picked["device_id"].astype(str).to_numpy(),
                         "y": picked["runtime_ms"].to_numpy(dtype="float64"), "part": part})
    return features, meta


def _score(model: Any, F: pd.DataFrame, meta: pd.DataFrame, dev: str) -> float:
    """Mean over the task's parts (attention phases) of the mean APE on ``dev``'s rows."""
    rows = (meta["device_id"] == dev).to_numpy()
    truth = meta["y"].to_numpy()[rows]
    ape = np.abs(model.predict(F[rows]) - truth) / truth
    part = meta["part"].to_numpy()[rows]
    return float(np.mean([ape[part == p].mean() for p in np.unique(part)]))


def nested(task: str, params: Mapping[str, Any], F: pd.DataFrame, meta: pd.DataFrame,
           progress: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """``{"outer": {gpu: score}, "inner": {gpu: mean score over the other GPUs' inner folds}}`` of one candidate."""
    from perfcast.models.registry import hybrid_estimator

    devices = sorted(meta["device_id"].unique())
    dev = meta["device_id"].to_numpy()
    y = meta["y"].to_numpy()

    def fitted(without: set[str]) -> Any:
        train = ~np.isin(dev, list(without))
        return hybrid_estimator(task, dict(params)).fit(F[train], y[train])

    outer = {d: _score(fitted({d}), F, meta, d) for d in devices}
    inner: dict[str, dict[str, float]] = {d: {} for d in devices}
    for a, b in itertools.combinations(devices, 2):
        model = fitted({a, b})
        inner[a][b], inner[b][a] = _score(model, F, meta, b), _score(model, F, meta, a)
    progress(f"outer mean {np.mean(list(outer.values())):.4f}")
    return {"outer": outer, "inner": {d: float(np.mean(list(s.values()))) for d, s in inner.items()}}


def select(task: str, records: pd.DataFrame, rows: int, trees: int, names: list[str] | None = None,
           progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every candidate's outer and inner scores, each GPU's nested choice and its test score, and the choice
    for the shipped model (best mean over the outer folds)."""
    F, meta = sample(records, task, rows)
    result: dict[str, Any] = {"task": task, "rows_per_gpu": rows, "trees": trees, "candidates": {}}
    for name in names or list(CANDIDATES):
        start = time.perf_counter()
        progress(f"{task}: candidate {name}")
        params = {**CANDIDATES[name], "n_estimators": trees}
        result["candidates"][name] = {**nested(task, params, F, meta, progress),
                                      "wall_s": round(time.perf_counter() - start, 1)}
    cands = result["candidates"]
    devices = sorted(meta["device_id"].unique())
    choice = {d: min(cands, key=lambda n: cands[n]["inner"][d]) for d in devices}
    result["nested_choice"] = choice
    result["nested_test"] = {d: cands[choice[d]]["outer"][d] for d in devices}
    result["nested_test_mean"] = float(np.mean(list(result["nested_test"].values())))
    result["outer_mean"] = {n: float(np.mean(list(c["outer"].values()))) for n, c in cands.items()}
    result["inner_mean"] = {n: float(np.mean(list(c["inner"].values()))) for n, c in cands.items()}
    result["shipped_choice"] = min(cands, key=lambda n: result["outer_mean"][n])
    return result


def markdown(result: Mapping[str, Any]) -> str:
    """Inner (selection) / outer (test) score per GPU and candidate, as the table of benchmarks/BUILTIN.md."""
    cands = result["candidates"]
    names = list(cands)
    lines = [f"| {result['task']}: GPU | " + " | ".join(names) + " | nested choice (its test) |",
             "|---|" + "---|" * (len(names) + 1)]
    for d in sorted(result["nested_choice"]):
        cells = [f"{100 * cands[n]['inner'][d]:.1f} / {100 * cands[n]['outer'][d]:.1f}" for n in names]
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {result['nested_choice'][d]} "
                     f"({100 * result['nested_test'][d]:.1f}) |")
    cells = [f"**{100 * result['inner_mean'][n]:.1f} / {100 * result['outer_mean'][n]:.1f}**" for n in names]
    lines.append("| **mean** | " + " | ".join(cells) + f" | **{100 * result['nested_test_mean']:.1f}** |")
    return "\n".join(lines)


def save(result: Mapping[str, Any], path: Path) -> Path:
    """Write ``result`` as JSON (the input of :func:`markdown`)."""
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return path
