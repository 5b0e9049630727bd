"""Round 16e (analysis only): would a narrower K = 0 interval of the unseen-GPU default fit the 80-97% band?

    PYTHONPATH=. nice -n 10 python benchmarks/sibling_k0_width.py gemm --json benchmarks/results_sibwidth_gemm.json
    PYTHONPATH=. python benchmarks/sibling_k0_width.py --summary benchmarks/results_sibwidth_gemm.json \
        benchmarks/results_sibwidth_attention.json

For each GPU of the aiconfigurator-adapt protocol with a family sibling in training (B300, GB200, GB300), the
unseen-GPU default is fitted as the protocol's :class:`~perfcast.experiments.adapt_k0.SiblingK0` fits it (the
``k0_model`` preset, its row budget, the run's seed, the same training GPUs) and scored on the protocol's K = 0 test
rows (the seeded ``test_rows`` sample of the GPU's rows, as ``adapt_device`` draws it). Per part (GEMM; attention
context and generation) the script records the coverage and the half-width of the interval with its log-space
half-width times s about the prediction, for every s of :data:`SCALES`, and what widened it: the calibration's
quantile, the spec-sheet distance factor σ(d) of its scaled widths (the interval the protocol serves), and, for
comparison, the sibling estimator's own ``distance_stretch`` (its ``predict_interval``, which the protocol's
:class:`~perfcast.models.uncertainty.intervals.ConformalRegressor` does not call). ``--summary`` applies the
leave-one-sibling-GPU-out pick (:func:`pick_scales`) and the criterion written before it was run
(benchmarks/ANALYSIS_adapt.md, round 16e). Nothing here changes a preset.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval import metrics
from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_k0 import SiblingK0, k0_choice
from perfcast.experiments.baselines import PHASE_LABEL
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import Workspace
from perfcast.models.uncertainty.intervals import feature_step
from perfcast.perf_probe.plan import adaptation_plan
from perfcast.training.train import model_input

PROTOCOL = "aiconfigurator-adapt"
SCALES: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 1.0)
TARGET, BAND = 0.9, (0.80, 0.97)


def scaled_bounds(pred: np.ndarray, lo: np.ndarray, hi: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """The interval with its log-space half-widths (each side's own) times ``s`` about the prediction."""
    with np.errstate(divide="ignore"):
        return pred * (lo / pred) ** s, pred * (hi / pred) ** s


def pick_scales(coverage: dict[str, dict[float, float]], target: float = TARGET) -> dict[str, float]:
    """Per GPU (GPU -> {s: coverage}), the s whose mean |coverage - target| over the OTHER GPUs is smallest (ties:
    the larger s, the wider interval); a GPU's own coverage never decides its s."""
    out = {}
    for dev in coverage:
        others = [d for d in coverage if d != dev]
        if not others:
            raise ValueError(f"pick_scales: {dev} is the only GPU; a leave-one-GPU-out pick needs at least two")
        scales = sorted(coverage[dev], reverse=True)
        out[dev] = min(scales, key=lambda s: round(float(np.mean([abs(coverage[d][s] - target) for d in others])), 12))
    return out


def k0_rows(test: pd.DataFrame, task: str, options: dict[str, Any], seed: int) -> np.ndarray:
    """The protocol's K = 0 test rows of one GPU (``adapt_device``'s draw for K = 0)."""
    candidates = test.drop(columns=["runtime_ms"])
    rest = ~test.index.isin(adaptation_plan(candidates, task, 0))
    if rest.sum() > int(options["test_rows"]):
        keep = np.random.default_rng(seed).choice(np.flatnonzero(rest), int(options["test_rows"]), replace=False)
        rest = np.isin(np.arange(len(test)), keep)
    return rest


def part_summary(pred: np.ndarray, lo: np.ndarray, hi: np.ndarray, y: np.ndarray, extra: dict[str, np.ndarray]
                 ) -> dict[str, Any]:
    """Coverage and half-width (mean relative width / 2) per scale, and the widening factors' quantiles."""
    per = {}
    for s in SCALES:
        a, b = scaled_bounds(pred, lo, hi, s)
        per[str(s)] = {"coverage": metrics.coverage(y, a, b), "half_width": metrics.mean_width(a, b) / 2}
    ape = np.abs(pred / y - 1)
    out = {"n": int(len(y)), "mape": float(np.mean(ape)), "per_scale": per,
           "abs_log_err_q90": float(np.quantile(np.abs(np.log(pred / y)), 0.9))}
    for name, v in extra.items():
        out[name] = {q: float(np.quantile(v, float(q))) for q in ("0.1", "0.5", "0.9")} | {"mean": float(np.mean(v))}
    return out


def fit_device(task: str, dev: str, records: pd.DataFrame, seed: int) -> dict[str, Any] | None:
    """One sibling GPU's K = 0 rows under the default, as the protocol fits and scores it (None: no sibling)."""
    choice = choose(PROTOCOL, None)
    train, test = unseen_hardware_split(records, test_devices=[dev])
    k0 = SiblingK0.of(k0_choice(choice.options, task, PROTOCOL), dev, train, seed)
    if k0 is None:
        return None
    test = test.reset_index(drop=True)
    rows = test[k0_rows(test, task, choice.options, seed)]
    fit_rows, params, _ = budget_rows(k0.choice.name, k0.choice.params, train, k0.choice.train_rows, seed)
    model = k0.choice.fit(fit_rows, seed, params)
    pred, lo, hi = k0.choice.predict_interval(model, rows)
    X = model_input(rows, task)
    cal = model.calibration_
    step = model.features_ if model.features_ is not None or cal.zero_shot is None else feature_step(model.estimator_)
    sigma = cal.scale(step.transform(X) if step is not None else None, len(X))[:, 0]
    est = model.estimator_[-1].estimators_[0]  # the per-target wrapper's one estimator (runtime, linear target)
    stretch = est.distance_stretch(model.estimator_[:-1].transform(X))
    _, own_lo, own_hi = est.predict_interval(model.estimator_[:-1].transform(X))
    y = rows["runtime_ms"].to_numpy(dtype="float64")
    parts = (rows["phase"].map(PHASE_LABEL).fillna(rows["phase"]).astype(str).to_numpy() if task == "attention"
             else np.full(len(rows), ""))
    out: dict[str, Any] = {"model": k0.choice.name, "train_rows": k0.choice.train_rows,
                           "calibration_quantile": float(cal.quantiles()[0]), "scaled": bool(cal.scaled), "parts": {}}
    for part in pd.unique(parts):
        sel = parts == part
        summary = part_summary(pred[sel], lo[sel], hi[sel], y[sel],
                               {"sigma_d": sigma[sel], "sibling_stretch": stretch[sel],
                                "half_log": np.log(hi[sel] / pred[sel])})
        finite = np.isfinite(own_hi[sel])
        summary["sibling_own_interval"] = {"coverage": metrics.coverage(y[sel][finite], own_lo[sel][finite],
                                                                       own_hi[sel][finite]),
                                           "half_width": metrics.mean_width(own_lo[sel][finite],
                                                                            own_hi[sel][finite]) / 2,
                                           "finite_share": float(finite.mean())}
        out["parts"][part or "gemm"] = summary
    return out


def verdict(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The leave-one-sibling-GPU-out pick per part (and, for attention, pooled over its phases) and the criterion."""
    table: dict[str, dict[str, dict[float, float]]] = {}
    half: dict[str, dict[str, dict[float, float]]] = {}
    for res in results:
        for dev, got in res["left_out"].items():
            for part, v in got["parts"].items():
                table.setdefault(part, {})[dev] = {float(s): c["coverage"] for s, c in v["per_scale"].items()}
                half.setdefault(part, {})[dev] = {float(s): c["half_width"] for s, c in v["per_scale"].items()}
    picked = {part: pick_scales(cov) for part, cov in table.items()}
    now = {(p, d): table[p][d][1.0] for p in table for d in table[p]}
    new = {(p, d): table[p][d][picked[p][d]] for p in table for d in table[p]}

    def dist(cov: dict[Any, float]) -> float:
        return float(np.mean([abs(c - TARGET) for c in cov.values()]))

    inside = all(BAND[0] <= c <= BAND[1] for c in new.values())
    pooled = _pooled_attention(results, table)
    return {"picked": picked, "secondary_pooled_attention": pooled,
            "coverage_now": {f"{p} {d}": c for (p, d), c in now.items()},
            "coverage_picked": {f"{p} {d}": c for (p, d), c in new.items()},
            "half_width_picked": {f"{p} {d}": half[p][d][picked[p][d]] for p in table for d in table[p]},
            "mean_abs_dev_now": dist(now), "mean_abs_dev_picked": dist(new), "all_in_band": inside,
            "criterion_met": inside and dist(new) < dist(now)}


def _pooled_attention(results: Sequence[dict[str, Any]], table: dict[str, dict[str, dict[float, float]]]
                      ) -> dict[str, Any] | None:
    """The secondary pick: one s per GPU for both attention phases, from their row-weighted pooled coverage."""
    phases = [p for p in ("context", "generation") if p in table]
    if len(phases) < 2:
        return None
    n = {d: {p: got["parts"][p]["n"] for p in phases}
         for res in results for d, got in res["left_out"].items() if set(phases) <= set(got["parts"])}
    pooled = {d: {s: float(np.average([table[p][d][s] for p in phases], weights=[n[d][p] for p in phases]))
                  for s in table[phases[0]][d]} for d in n}
    picked = pick_scales(pooled)
    return {"picked": picked, "coverage": {f"{p} {d}": table[p][d][picked[d]] for p in phases for d in n}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", nargs="?", choices=["gemm", "attention"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--summary", type=Path, nargs="+", help="the verdict over existing --json files")
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    args = parser.parse_args(argv)
    if args.summary:
        print(json.dumps(verdict([json.loads(p.read_text(encoding="utf-8")) for p in args.summary]), indent=1))
        return
    if args.task is None or args.json is None:
        parser.error("give a task and --json (or --summary FILES)")
    seed, result = 0, {"task": args.task, "scales": list(SCALES), "seed": 0, "left_out": {}}
    with tempfile.TemporaryDirectory() as tmp:
        records = Workspace(args.data_root, Path(tmp)).records("aiconfigurator", args.task)
        for dev in sorted(records["device_id"].dropna().unique()):
            got = fit_device(args.task, dev, records, seed)
            if got is None:
                continue
            result["left_out"][dev] = got
            for part, v in got["parts"].items():
                print(f"{dev} {part}: n {v['n']} coverage at s=1 {100 * v['per_scale']['1.0']['coverage']:.1f}% "
                      f"half-width {100 * v['per_scale']['1.0']['half_width']:.1f}%", flush=True)
            args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
