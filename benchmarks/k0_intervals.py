"""K = 0 (spec sheet only) interval variants of the aiconfigurator-adapt protocol, chosen by leave-one-GPU-out.

Why a script of its own: the full adaptation benchmark refits every K; the K = 0 intervals need only the base model
of each left-out GPU. This fits the 8 bases per kernel family once (as ``aiconfigurator_adapt`` does: the preset's
model, ``train_rows`` rows, its ``[intervals]``; attention with ``attention_intervals``), caches their cross-fitted
calibration rows (:class:`~perfcast.models.uncertainty.zero_shot.CrossFittedScores`) and a sample of each left-out
GPU's rows with the base predictions, then scores every candidate (the preset's own intervals and its
``k0_intervals`` variants) on every GPU and chooses, per GPU, the one that did best on the *other* GPUs' coverage
(:func:`~perfcast.models.uncertainty.zero_shot.select_variants`). A candidate's bounds are those a model saved with
its rule serves (:meth:`~perfcast.models.uncertainty.zero_shot.CrossFittedScores.bounds`).

    python benchmarks/k0_intervals.py --out benchmarks/RESULTS_k0cov.md --json benchmarks/RESULTS_k0cov.json

Analysis: benchmarks/ANALYSIS_k0cov.md.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval import metrics
from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import K0_BAND, LEVEL, PHASE_LABEL
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import Workspace
from perfcast.models.uncertainty.zero_shot import (
    OBJECTIVES,
    PRESET,
    CrossFittedScores,
    describe,
    objective_of,
    select_variants,
    variants,
    zero_shot_variants,
)
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal, model_input

REPO = Path(__file__).resolve().parent.parent
PROTOCOL = "aiconfigurator-adapt"


def fit_bases(data_root: Path, task: str, test_rows: int, seed: int, n_splits: int | None = None
              ) -> dict[str, dict[str, Any]]:
    """Per left-out GPU: its base's cross-fitted scores, and ``test_rows`` of its rows with the base's
    prediction, the preset's interval (``before``), features, parts and noise."""
    choice = choose(PROTOCOL)
    options = choice.options
    intervals = choice.config.intervals if task == choice.config.task else IntervalsConfig(
        **options.get(f"{task}_intervals", {}))
    if n_splits is not None:  # e.g. one fold per training GPU, as the test holds one out
        intervals = intervals.model_copy(update={"n_splits": n_splits})
    config = choice.config.model_copy(update={"task": task, "intervals": intervals})
    with tempfile.TemporaryDirectory() as tmp:
        records = Workspace(data_root, Path(tmp)).records("aiconfigurator", task)
    out = {}
    for dev in sorted(records["device_id"].dropna().unique()):
        start = time.perf_counter()
        train, test = unseen_hardware_split(records, test_devices=[dev])
        rows, params, _ = budget_rows(choice.name, choice.params, train, choice.train_rows, seed)
        base = fit_conformal(config, rows, params, seed=seed)
        scores = CrossFittedScores.of(base, model_input(rows, task), rows["runtime_ms"].to_numpy(dtype="float64"),
                                      rows["device_id"].astype(str).to_numpy())
        test = test.sample(min(len(test), test_rows), random_state=seed).reset_index(drop=True)
        X = model_input(test, task)
        pred, lo, hi = (np.asarray(v, dtype="float64").reshape(len(test), -1)[:, 0]
                        for v in base.predict_with_interval(X, noise=test))
        parts = (test["phase"].map(PHASE_LABEL).fillna(test["phase"]).astype(str).to_numpy() if task == "attention"
                 else np.full(len(test), "", dtype=object))
        out[str(dev)] = {"scores": scores, "features": base.estimator_[0].transform(X).reset_index(drop=True),
                         "pred": pred, "y": test["runtime_ms"].to_numpy(dtype="float64"), "before": (lo, hi),
                         "noise": base.calibration_.noise(test, len(test))[:, 0], "parts": parts,
                         "fit_s": time.perf_counter() - start}
        print(f"{task} {dev}: fitted in {out[str(dev)]['fit_s']:.0f} s", flush=True)
    return out


def evaluate(cache: dict[str, dict[str, Any]], candidates: list, guard: bool = False, objective: str = "count"
             ) -> dict[str, Any]:
    """Coverage and width of every candidate on every GPU and part, the choice per GPU, before and after."""
    cov: dict[tuple[str, str, Any], float] = {}
    width: dict[tuple[str, str, Any], float] = {}
    flags: dict[str, bool] = {}
    for dev, c in cache.items():
        for v in candidates:
            lo, hi, ood = c["scores"].bounds(v, c["features"], c["pred"], c["noise"], LEVEL)
            flags[dev] = bool(ood.any())
            for part in np.unique(c["parts"]):
                sel = c["parts"] == part
                cov[(dev, part, v)] = metrics.coverage(c["y"][sel], lo[sel], hi[sel])
                width[(dev, part, v)] = metrics.mean_width(lo[sel], hi[sel])
    parts = {dev: list(np.unique(c["parts"])) for dev, c in cache.items()}
    chosen, nested = select_variants(cov, parts, candidates, LEVEL, K0_BAND,
                                     PRESET if guard and PRESET in candidates else None, objective)
    rows = []
    for dev, c in cache.items():
        for part in parts[dev]:
            sel = c["parts"] == part
            lo, hi = c["before"]
            v = chosen[dev]
            y, p = c["y"][sel], c["pred"][sel]
            rows.append({"device": dev, "part": part or "gemm", "n": int(sel.sum()),
                         "mean_ape": float(np.mean(np.abs(p - y) / y)),
                         "before_coverage": metrics.coverage(y, lo[sel], hi[sel]),
                         "before_width": metrics.mean_width(lo[sel], hi[sel]),
                         "variant": describe(v), "nested_score": nested[dev],
                         "coverage": cov[(dev, part, v)], "width": width[(dev, part, v)], "ood": flags[dev],
                         "in_band": K0_BAND[0] <= cov[(dev, part, v)] <= K0_BAND[1]})
    return {"rows": rows, "coverage": {f"{d}|{p}|{describe(v)}": x for (d, p, v), x in cov.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--test-rows", type=int, default=5000, help="rows per left-out GPU scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-splits", type=int, help="calibration folds of the bases (default: the preset's)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "perfcast_k0_cache_v2.pkl",
                        help="fitted bases of an earlier run, reused when the file exists (delete it after changing "
                             "--test-rows, --seed, --n-splits or the data)")
    parser.add_argument("--guard", action="store_true",
                        help="keep the preset's intervals unless choosing among the variants beat them one level "
                             "deeper (select_variants' guard)")
    parser.add_argument("--objective", choices=OBJECTIVES, help="select_variants' objective (default: the preset's)")
    parser.add_argument("--json", type=Path, help="write the per-GPU rows here")
    parser.add_argument("--out", type=Path, help="write a markdown table here")
    args = parser.parse_args()
    if args.cache.exists():
        cache = pickle.loads(args.cache.read_bytes())
    else:
        cache = {task: fit_bases(args.data_root, task, args.test_rows, args.seed, args.n_splits)
                 for task in ("gemm", "attention")}
        args.cache.write_bytes(pickle.dumps(cache))
    spec = choose(PROTOCOL).options.get("k0_intervals")
    candidates = zero_shot_variants(spec) or [PRESET, *variants(
        (None, "phase", "kind", "phase own", "kind own"), (1.0, 0.8, 0.9, 1.1, 1.2))]
    objective = args.objective or objective_of(spec)
    found = {task: evaluate(c, candidates, args.guard, objective) for task, c in cache.items()}
    rows = [r for f in found.values() for r in f["rows"]]
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(frame.drop(columns=["n"]).round(3).to_string())
    if args.json:
        args.json.write_text(json.dumps({"protocol": PROTOCOL, "K": 0, "level": LEVEL, "band": K0_BAND, "rows": rows},
                                        indent=1))
    if args.out:
        args.out.write_text(render(frame, args))


def render(frame: pd.DataFrame, args: argparse.Namespace) -> str:
    """The per-GPU K = 0 rows as a markdown table, before -> after."""
    lines = ["# aiconfigurator-adapt, K = 0: 90% interval coverage per GPU, before -> after", "",
             f"`python benchmarks/k0_intervals.py --test-rows {args.test_rows} --seed {args.seed}"
             + (f" --n-splits {args.n_splits}" if args.n_splits else "") + (" --guard" if args.guard else "")
             + (f" --objective {args.objective}" if args.objective else "")
             + "`: per left-out GPU "
             "the base model of the protocol (fitted on the other GPUs), its 90% interval before (the preset's: GEMM "
             "scaled by spec-sheet distance, attention one width) and after (the candidate, the preset's own or a "
             "variant, chosen by leave-one-GPU-out on the other GPUs' coverage"
             + (", the choosing checked against the preset's one level deeper" if args.guard else "")
             + "). Width: mean (hi - lo) / midpoint. Band: 80-97%.", "",
             "| part | GPU | n | mean APE | coverage before | width before | chosen variant | nested score "
             "(others) | coverage after | width after | OOD | in band |", "|" + "---|" * 12]
    for r in frame.itertuples():
        lines.append(f"| {r.part} | {r.device} | {r.n:,} | {100 * r.mean_ape:.1f}% | {100 * r.before_coverage:.1f}% "
                     f"| {r.before_width:.2f} | {r.variant} | {r.nested_score} | **{100 * r.coverage:.1f}%** | "
                     f"{r.width:.2f} | {'yes' if r.ood else ''} | {'yes' if r.in_band else 'no'} |")
    lines += ["", "| family | GPU-parts in band before -> after | lowest coverage before -> after | "
              "mean abs(coverage - 90%) before -> after |", "|---|---|---|---|"]
    for family, rows in frame.groupby(frame["part"] == "gemm", sort=False):
        name = "GEMM" if family else "attention"
        band = [int(rows[c].between(*K0_BAND).sum()) for c in ("before_coverage", "coverage")]
        low = [rows.loc[rows[c].idxmin()] for c in ("before_coverage", "coverage")]
        miss = [100 * float((rows[c] - LEVEL).abs().mean()) for c in ("before_coverage", "coverage")]
        lines.append(f"| {name} ({len(rows)}) | {band[0]} -> {band[1]} | {100 * low[0].before_coverage:.1f}% "
                     f"({low[0].device}) -> {100 * low[1].coverage:.1f}% ({low[1].device}) | {miss[0]:.1f} -> "
                     f"{miss[1]:.1f} pt |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
