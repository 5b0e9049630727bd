"""Nested leave-one-training-GPU-out selection for the zero-shot (spec sheet only) aiconfigurator presets.

Why a script of its own: issue 17 asks that a preset's choices be made only on what a user would have. For each
outer GPU held out, every candidate is scored by leave-one-GPU-out over the *other* GPUs (the inner folds); the
candidate with the best inner score is the one that outer GPU would have been given, and its error on that GPU
is the honest (nested) test score. The preset takes the candidate with the best inner score over all GPUs.
Rows are subsampled per GPU (``--rows``) and the trees cut (``--trees``) so a candidate costs minutes, not hours.

    python benchmarks/zeroshot_nested.py --task gemm --out benchmarks/zeroshot_nested_gemm.json
    python benchmarks/zeroshot_nested.py --render benchmarks/zeroshot_nested_gemm.json

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
from perfcast.features.extrapolation import EFFICIENCY_DIRECTION, TRANSFERABLE
from perfcast.models.registry import hybrid_estimator

#: kernel columns a member without the hardware group sees
SDWT = ["shape", "dtype", "work", "tiling"]
#: device-relative hardware terms: perfcast.features.extrapolation.RELATIVE and two spec-sheet columns (the L2 term is
#: NaN where the sheet gives no L2: B300, GB200, GB300)
REL = ["log10_ridge", "log10_watts_per_tflop", "compute_capability", "log10_bytes_over_l2"]
#: only ratios physics says transfer between devices (extrapolation.TRANSFERABLE: REL, the work per SM, the last
#: wave's loss, the SM's issue width per clock)
RATIOS = list(TRANSFERABLE)
REG = {"num_leaves": 15, "min_child_samples": 200}
#: the physical direction of the learned efficiency in the relative terms
MONOTONE = dict(EFFICIENCY_DIRECTION)


def candidates(trees: int, task: str) -> dict[str, dict[str, Any]]:
    """Every candidate base model (hybrid parameters), the preset's own (``vendor``) first. Round 1 (the earlier
    presets' candidates), round 2 (the efficiency relative to the device, physics in the base, fewer columns), round 4
    (the L2-resident roofline base), round 5 (attention: the softmax bound, the L2 for decode), round 6 (the trees told
    how much the L2 term moved each row's base)."""
    base = {"n_estimators": trees, "learning_rate": 0.1}
    pair = [{}, {"columns": SDWT}]
    rel = [{"columns": [*SDWT, *REL]}, {"columns": [*SDWT, "log10_bytes_over_l2"]}]
    #: the preset's own members: the pair for GEMM, one member on every column for attention
    own = pair if task == "gemm" else [{}]
    vendor = {**base, "by_vendor": True}
    pool = {
        "vendor": {**vendor, "variants": own},
        "current": {**base, "variants": pair},
        "rel_l2": {**base, "variants": rel},
        "current_reg": {**base, **REG, "variants": pair},
        "rel_l2_reg": {**base, **REG, "variants": rel},
        # round 2
        "waves": {**vendor, "variants": [{**v, "wave_quantised": True} for v in own]},
        "relative": {**vendor, "variants": [{**v, "relative": True} for v in own]},
        "ratios": {**vendor, "variants": [{"columns": [*SDWT, *RATIOS]}, {"columns": SDWT}]},
        "ratios_mono": {**vendor, "variants": [{"columns": [*SDWT, *RATIOS], "monotone": MONOTONE},
                                               {"columns": SDWT}]},
        "relative_mono": {**vendor, "variants": [{**v, "relative": True, "monotone": MONOTONE} for v in own]},
        "relative_pair": {**vendor, "variants": [{"relative": True}, {"columns": SDWT}]},
    }
    # round 4: the presets' members (round 2) with the L2-resident memory time in the roofline base
    pool["ratios_mono_l2"] = {**pool["ratios_mono"], "l2_resident": True}
    pool["relative_pair_l2"] = {**pool["relative_pair"], "l2_resident": True}
    # round 5 (attention): the softmax exponentials' time bounding the compute term; the L2-resident memory time on
    # the decode rows alone (their KV-cache read), its rate fitted on them; both
    pool["relative_pair_exp"] = {**pool["relative_pair"], "softmax_exp": True}
    pool["relative_pair_l2dec"] = {**pool["relative_pair"], "l2_resident": True, "l2_rows": "decode"}
    pool["relative_pair_exp_l2dec"] = {**pool["relative_pair_exp"], "l2_resident": True, "l2_rows": "decode"}
    # round 5, second run: one model per attention phase (prefill and decode apart), each with the preset's members
    pool["relative_pair_phase"] = {**pool["relative_pair"], "by_phase": True}
    # round 6: the L2 base's members also read log10(DRAM / L2-resident memory time) per row
    pool["ratios_mono_l2_flag"] = {**pool["ratios_mono_l2"], "l2_feature": True}
    # round 6: the L2 base only in the member that sees the device ratios (the kernel-only member cannot tell the
    # GDDR boards, whose ratios the base moved, from the others)
    mono, kernel = pool["ratios_mono"]["variants"]
    pool["ratios_mono_l2_dev"] = {**pool["ratios_mono"], "variants": [{**mono, "l2_resident": True}, kernel]}
    return pool


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


def render(result: dict[str, Any]) -> str:
    """Markdown tables (one per phase) of a result file: inner / outer-test mean APE % per GPU and candidate, and
    the nested choice per GPU with its test score (what ANALYSIS_zeroshot.md shows)."""
    names = [n for n, v in result.items() if isinstance(v, dict) and "outer" in v]
    devices = sorted(result[names[0]]["outer"])
    lines = []
    for phase in result[names[0]]["outer"][devices[0]]:
        lines += [f"| {phase} | " + " | ".join(names) + " | nested choice (its test) |", "|---" * (len(names) + 2) + "|"]
        for d in devices:
            pick = result["nested_choice"][d]
            lines.append(f"| {d} | " + " | ".join(f"{100 * result[n]['inner'][d][phase]:.1f} / "
                                                  f"{100 * result[n]['outer'][d][phase]:.1f}" for n in names)
                         + f" | {pick} ({100 * result[pick]['outer'][d][phase]:.1f}) |")
        means = {n: [np.mean([result[n][k][d][phase] for d in devices]) for k in ("inner", "outer")] for n in names}
        nested = np.mean([result[result["nested_choice"][d]]["outer"][d][phase] for d in devices])
        lines.append("| **mean** | " + " | ".join(f"{100 * means[n][0]:.1f} / {100 * means[n][1]:.1f}" for n in names)
                     + f" | {100 * nested:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["gemm", "attention"])
    ap.add_argument("--data-root", type=Path, default=Path("/work/shared/datasets"))
    ap.add_argument("--rows", type=int, default=2000, help="records per GPU")
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--only", nargs="+", help="candidates to score (default: all)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--render", type=Path, help="print the Markdown tables of this result file and stop")
    args = ap.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    if args.task is None or args.out is None:
        ap.error("--task and --out are required unless --render is given")
    pool = candidates(args.trees, args.task)
    pool = {n: pool[n] for n in (args.only or pool)}
    with tempfile.TemporaryDirectory(prefix="perfcast-nested-") as tmp:
        F, meta = sample(args.data_root, args.task, args.rows, Path(tmp))
    result: dict[str, Any] = {}
    for name, params in pool.items():
        outer = logo(params, args.task, F, meta)
        inner = {dev: logo(params, args.task, F[(meta["device_id"] != dev).to_numpy()],
                           meta[meta["device_id"] != dev]) for dev in sorted(outer)}
        result[name] = {"outer": outer, "inner": {dev: {k: float(np.mean([s[k] for s in folds.values()]))
                                                        for k in outer[dev]} for dev, folds in inner.items()}}
        print(name, f"outer {mean(outer):.3f}", f"inner {mean(result[name]['inner']):.3f}", flush=True)
    devices = sorted(meta["device_id"].unique())
    chosen = {d: min(result, key=lambda n: np.mean(list(result[n]["inner"][d].values()))) for d in devices}
    result["nested_choice"] = chosen
    result["preset_choice"] = min(pool, key=lambda n: np.mean(
        [np.mean(list(result[n]["inner"][d].values())) for d in devices]))
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
