"""Nested leave-one-training-GPU-out selection for the zero-shot (spec sheet only) aiconfigurator presets.

Why a script of its own: issue 17 asks that a preset's choices be made only on what a user would have. For each
outer GPU held out, every candidate is scored by leave-one-GPU-out over the *other* GPUs (the inner folds); the
candidate with the best inner score is the one that outer GPU would have been given, and its error on that GPU
is the honest (nested) test score. The preset takes the candidate with the best inner score over all GPUs.
Rows are subsampled per GPU (``--rows``) and the trees cut (``--trees``) so a candidate costs minutes, not hours.

    python benchmarks/zeroshot_nested.py --task gemm --out benchmarks/zeroshot_nested_gemm.json

Results and the choice: benchmarks/ANALYSIS_zeroshot.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.experiments.results import Workspace
from perfcast.features import feature_transformer
from perfcast.models.registry import hybrid_estimator

#: kernel columns a member without the hardware group sees
SDWT = ["shape", "dtype", "work", "tiling"]
#: device-relative hardware terms: perfcast.features.extrapolation.RELATIVE and two spec-sheet columns (the L2 term is
#: NaN where the sheet gives no L2: L40S, B60, B300, GB200, GB300)
REL = ["log10_ridge", "log10_watts_per_tflop", "compute_capability", "log10_bytes_over_l2"]
REG = {"num_leaves": 15, "min_child_samples": 200}


def candidates(trees: int) -> dict[str, dict[str, Any]]:
    """Every candidate base model (hybrid parameters), the preset's own first."""
    base = {"n_estimators": trees, "learning_rate": 0.1}
    pair = [{}, {"columns": SDWT}]
    rel = [{"columns": [*SDWT, *REL]}, {"columns": [*SDWT, "log10_bytes_over_l2"]}]
    return {
        "current": {**base, "variants": pair},
        "rel_l2": {**base, "variants": rel},
        "current_reg": {**base, **REG, "variants": pair},
        "rel_l2_reg": {**base, **REG, "variants": rel},
        "vendor": {**base, "by_vendor": True, "variants": pair},
    }


def sample(data_root: Path, task: str, rows: int, tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, meta): ``rows`` records per GPU (drawn from 8,000 per GPU, as the exploration did)."""
    records = Workspace(data_root, tmp).records("aiconfigurator", task)
    records = records[records["runtime_ms"] > 0]
    parts = [g.sample(min(len(g), 8000), random_state=0) for _, g in records.groupby("device_id")]
    parts = [g.sample(min(len(g), rows), random_state=1) for g in parts]
    picked = pd.concat(parts).reset_index(drop=True)
    features = feature_transformer(task).fit(picked).transform(picked)
    meta = pd.DataFrame({"device_id": picked["device_id"].astype(str), "y": picked["runtime_ms"].astype(float)})
    return features, meta


def parts(task: str, F: pd.DataFrame) -> dict[str, np.ndarray]:
    if task != "attention":
        return {"all": np.ones(len(F), dtype=bool)}
    decode = F["is_decode"].to_numpy() > 0.5
    return {"context": ~decode, "generation": decode}


def logo(params: dict[str, Any], task: str, F: pd.DataFrame, meta: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean APE per held-out GPU (and per phase for attention), each GPU left out in turn."""
    out = {}
    for dev in sorted(meta["device_id"].unique()):
        train, test = (meta["device_id"] != dev).to_numpy(), (meta["device_id"] == dev).to_numpy()
        model = hybrid_estimator(task, dict(params)).fit(F[train], meta["y"][train].to_numpy())
        truth = meta["y"][test].to_numpy()
        ape = np.abs(model.predict(F[test]) - truth) / truth
        out[dev] = {k: float(ape[sel].mean()) for k, sel in parts(task, F[test]).items()}
    return out


def mean(scores: dict[str, dict[str, float]]) -> float:
    """One number per fold set: the mean over GPUs of the mean over phases."""
    return float(np.mean([np.mean(list(s.values())) for s in scores.values()]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["gemm", "attention"], required=True)
    ap.add_argument("--data-root", type=Path, default=Path("/work/shared/datasets"))
    ap.add_argument("--rows", type=int, default=2000, help="records per GPU")
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="perfcast-nested-") as tmp:
        F, meta = sample(args.data_root, args.task, args.rows, Path(tmp))
    result: dict[str, Any] = {}
    for name, params in candidates(args.trees).items():
        outer = logo(params, args.task, F, meta)
        inner = {dev: logo(params, args.task, F[(meta["device_id"] != dev).to_numpy()],
                           meta[meta["device_id"] != dev]) for dev in sorted(outer)}
        result[name] = {"outer": outer, "inner": {dev: {k: float(np.mean([s[k] for s in folds.values()]))
                                                        for k in outer[dev]} for dev, folds in inner.items()}}
        print(name, f"outer {mean(outer):.3f}", f"inner {mean(result[name]['inner']):.3f}", flush=True)
    devices = sorted(meta["device_id"].unique())
    chosen = {d: min(result, key=lambda n: np.mean(list(result[n]["inner"][d].values()))) for d in devices}
    result["nested_choice"] = chosen
    result["preset_choice"] = min(candidates(args.trees), key=lambda n: np.mean(
        [np.mean(list(result[n]["inner"][d].values())) for d in devices]))
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
