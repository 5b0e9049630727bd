"""Nested selection of the aiconfigurator unseen-GPU presets (GEMM and attention): the transfer's members
(``variants``), its trees and its interval calibration are chosen inside the training GPUs of each fold.

Why: ``by_vendor`` was chosen by nested leave-one-training-GPU-out (benchmarks/ANALYSIS_zeroshot.md), but the
members, the 400 trees and the interval settings were still the ones tuned on GB200, GB300 and B300, GPUs the
benchmark also scores (issue 17). Here, for every GPU the protocol holds out (the *outer* GPU), each setting is
scored only on the other GPUs:

* each other GPU left out in turn (a *device* fold), fitted on the rest (never the outer GPU);
* a family of two or more other GPUs left out whole (a *family* fold: the Blackwell GB200 / GB300 / B300), so a
  GPU whose siblings are all unseen is among the folds too.

A setting's inner score for an outer GPU is the mean over those folds' GPUs of the mean over the table's parts
(GEMM: one; attention: context and generation). Point settings (members, trees) are scored by mean APE with the
preset's intervals left aside; interval settings (``scale``) by the mean over GPUs of |coverage - 90%|.
The outer GPU gets its inner winner, and that winner's error on it is the nested (select-then-fit) test score.
The preset holds the setting most outer GPUs chose (ties: the lowest mean inner score).

Affordable on 2 shared cores by subsampling (both stated in the output): a seeded share of the configurations
(every GPU's rows of a drawn configuration kept, so siblings stay aligned for the transfer's residual table) and
a cap on the base model's fit rows. Fits are shared between the folds that leave out the same GPUs.

    python -m perfcast.experiments.aiconfigurator_selection gemm|attention [--share 0.01] [--base-rows 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.experiments.baselines import CONFIG_KEYS, device_family
from perfcast.experiments.presets import Choice, budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.experiments.sibling import config_sample

Log = Callable[[str], None]
#: kernel columns only: the member of the preset's pair that sees no hardware group
_KERNEL = ["shape", "dtype", "work", "tiling"]


@dataclass(frozen=True)
class Setting:
    """One setting the selection may choose: overrides of the preset's model parameters, or of its
    ``[intervals]`` (an interval setting is scored by coverage, a point setting by mean APE)."""

    label: str
    params: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, Any] | None = None


#: what the point selection chooses among: the preset's two members or one of them, 400 or 200 trees
POINT: tuple[Setting, ...] = (
    Setting("pair, 400 trees", {"variants": [{}, {"columns": _KERNEL}], "n_estimators": 400}),
    Setting("pair, 200 trees", {"variants": [{}, {"columns": _KERNEL}], "n_estimators": 200}),
    Setting("every column only, 400 trees", {"variants": [{}], "n_estimators": 400}),
)
#: what the interval selection chooses among (3 device folds, as the presets): widths scaled by spec-sheet
#: distance or plain; fitted with 50 trees, an eighth of the cost (the widths follow the held-out residuals)
INTERVALS: tuple[Setting, ...] = (
    Setting("intervals scaled by spec distance", {"n_estimators": 50}, {"scale": True, "n_splits": 3}),
    Setting("intervals plain", {"n_estimators": 50}, {"scale": False, "n_splits": 3}),
)


def protocol(task: str) -> str:
    return f"aiconfigurator-unseen-gpu-{task}"


def held_out_sets(devices: list[str]) -> list[frozenset[str]]:
    """Leave-one-GPU-out and leave-one-family-out over ``devices``: each GPU, and each family of two or more
    of them (when a GPU outside it remains to fit on)."""
    folds = [frozenset([d]) for d in devices]
    fam = device_family(devices) if devices else pd.Series(dtype="string")
    for members in fam.groupby(fam).groups.values():
        if 1 < len(members) < len(devices):
            folds.append(frozenset(members))
    return folds


def inner_folds(outer: str, devices: list[str]) -> list[frozenset[str]]:
    """The GPU sets left out around ``outer``: :func:`held_out_sets` of the other GPUs."""
    return held_out_sets([d for d in devices if d != outer])


def parts(task: str, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Row masks of the table's parts (attention: context and generation phases, scored apart)."""
    if task != "attention":
        return {"all": np.ones(len(rows), dtype=bool)}
    return {str(p): (rows["phase"] == p).to_numpy() for p in sorted(rows["phase"].dropna().unique())}


class Fitter:
    """Fits one setting on every record but a set of GPUs and predicts those GPUs' rows, once per set."""

    def __init__(self, task: str, records: pd.DataFrame, base_rows: int, seed: int):
        self.task, self.records, self.base_rows, self.seed = task, records, base_rows, seed
        self.choice: Choice = choose(protocol(task))
        self._cache: dict[tuple[str, frozenset[str]], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def predict(self, setting: Setting, out: frozenset[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, lo, hi) for the rows of the GPUs ``out``, fitted without them (lo, hi NaN for a
        point setting)."""
        key = (setting.label, out)
        if key not in self._cache:
            held = self.records["device_id"].isin(out).to_numpy()
            fit, test = self.records[~held], self.records[held]
            choice = self.choice
            if setting.intervals is not None:
                intervals = choice.config.intervals.model_copy(update=setting.intervals)
                choice = replace(choice, config=choice.config.model_copy(update={"intervals": intervals}))
            fit, params, _ = budget_rows(choice.name, {**choice.params, **setting.params}, fit, self.base_rows,
                                         self.seed)
            if setting.intervals is None:
                pred = choice.predict(choice.fit_point(fit, self.seed, params), test)[:, 0]
                lo = hi = np.full(len(test), np.nan)
            else:
                pred, lo, hi = choice.predict_interval(choice.fit(fit, self.seed, params), test)
            self._cache[key] = (pred, lo, hi)
        return self._cache[key]

    def scores(self, setting: Setting, out: frozenset[str], scored: frozenset[str]
               ) -> dict[str, dict[str, dict[str, float]]]:
        """GPU -> part -> {ape, covered, width} (means over its rows) of the GPUs ``scored`` (a subset of
        ``out``), ``setting`` fitted with ``out`` left out. Only the latencies of ``scored`` are read."""
        pred, lo, hi = self.predict(setting, out)
        rows = self.records[self.records["device_id"].isin(out).to_numpy()]
        y = rows["runtime_ms"].to_numpy(dtype="float64")
        result: dict[str, dict[str, dict[str, float]]] = {}
        for dev in sorted(scored):
            on = (rows["device_id"] == dev).to_numpy()
            result[dev] = {}
            for part, sel in parts(self.task, rows).items():
                s = on & sel
                if s.any():
                    result[dev][part] = {"ape": float(np.mean(np.abs(pred[s] - y[s]) / y[s])),
                                         "covered": float(np.mean((lo[s] <= y[s]) & (y[s] <= hi[s]))),
                                         "width": float(np.mean((hi[s] - lo[s]) / (2 * pred[s])))}
        return result


def loss(setting: Setting, per: dict[str, dict[str, float]], level: float) -> float:
    """A setting's loss on one GPU (mean over parts): mean APE, or the coverage's distance from ``level``."""
    if setting.intervals is None:
        return float(np.mean([p["ape"] for p in per.values()]))
    return float(np.mean([abs(p["covered"] - level) for p in per.values()]))


def inner_scores(fitter: Fitter, outer: str, settings: tuple[Setting, ...], level: float = 0.9
                 ) -> dict[str, float]:
    """Each setting's inner score for ``outer``: the mean loss over the GPUs of every inner fold, each fitted
    without the fold and without ``outer``, whose latencies are never read."""
    devices = sorted(fitter.records["device_id"].unique())
    inner: dict[str, float] = {}
    for setting in settings:
        losses = [loss(setting, per, level)
                  for fold in inner_folds(outer, devices)
                  for per in fitter.scores(setting, fold | {outer}, fold).values()]
        inner[setting.label] = float(np.mean(losses))
    return inner


def winner(inner: dict[str, float]) -> str:
    return min(inner, key=inner.__getitem__)


def select(fitter: Fitter, settings: tuple[Setting, ...], level: float = 0.9, log: Log = lambda s: None
           ) -> dict[str, Any]:
    """Per outer GPU: every setting's inner score, the inner winner, every setting's score on the outer GPU
    (recorded beside, never chosen on); the nested (select-then-fit) mean and the preset's choice."""
    devices = sorted(fitter.records["device_id"].unique())
    out: dict[str, Any] = {"inner": {}, "outer": {}, "chosen": {}}
    for dev in devices:
        start = time.perf_counter()
        out["inner"][dev] = inner_scores(fitter, dev, settings, level)
        out["chosen"][dev] = winner(out["inner"][dev])
        out["outer"][dev] = {s.label: fitter.scores(s, frozenset([dev]), frozenset([dev]))[dev] for s in settings}
        log(f"{dev}: chose {out['chosen'][dev]} "
            + ", ".join(f"{k} {v:.2%}" for k, v in out["inner"][dev].items())
            + f" ({time.perf_counter() - start:.0f} s)")
    votes = Counter(out["chosen"].values())
    mean_inner = {s.label: float(np.mean([out["inner"][d][s.label] for d in devices])) for s in settings}
    out["mean_inner"] = mean_inner
    out["preset"] = min(mean_inner, key=lambda k: (-votes.get(k, 0), mean_inner[k]))
    by_label = {s.label: s for s in settings}
    out["nested"] = float(np.mean([loss(by_label[out["chosen"][d]], out["outer"][d][out["chosen"][d]], level)
                                   for d in devices]))
    out["test_per_setting"] = {s.label: float(np.mean([loss(s, out["outer"][d][s.label], level) for d in devices]))
                               for s in settings}
    return out


def markdown(result: dict[str, Any], metric: str) -> str:
    """Per outer GPU: each setting's inner score / its score on that GPU, and the inner winner."""
    labels = list(result["mean_inner"])
    out = [f"| outer GPU | {' | '.join(labels)} | inner winner |", "|---|" + "---|" * (len(labels) + 1)]
    for dev, inner in result["inner"].items():
        cells = []
        for label in labels:
            per = result["outer"][dev][label]
            test = np.mean([p[metric] for p in per.values()])
            cells.append(f"{inner[label]:.2%} / {test:.2%}")
        out.append(f"| {dev} | {' | '.join(cells)} | {result['chosen'][dev]} |")
    means = [f"**{result['mean_inner'][k]:.2%} / {result['test_per_setting'][k]:.2%}**" for k in labels]
    out.append(f"| mean | {' | '.join(means)} | preset: {result['preset']}; nested {result['nested']:.2%} |")
    return "\n".join(out)


def load(data_root: Path, task: str, share: float, seed: int) -> pd.DataFrame:
    """A seeded ``share`` of the configurations of aiconfigurator's ``task`` table, every GPU's rows of each."""
    with workspace(data_root) as ws:
        records = ws.records("aiconfigurator", task)
    records = records[records["runtime_ms"] > 0]
    return config_sample(records, list(CONFIG_KEYS[task]), share, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["gemm", "attention"])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--share", type=float, default=0.01, help="seeded share of the configurations kept")
    parser.add_argument("--base-rows", type=int, default=2000, help="cap on the base model's fit rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-intervals", action="store_true")
    parser.add_argument("--json", type=Path, help="write the selection here")
    args = parser.parse_args(argv)
    records = load(args.data_root, args.task, args.share, args.seed)
    print(f"{len(records):,} rows ({args.share:.0%} of the configurations, seed {args.seed}); base model on at most "
          f"{args.base_rows:,} rows", flush=True)
    fitter = Fitter(args.task, records, args.base_rows, args.seed)
    result = {"rows": len(records), "share": args.share, "base_rows": args.base_rows,
              "point": select(fitter, POINT, log=lambda s: print(s, flush=True))}
    print(markdown(result["point"], "ape"), flush=True)
    if not args.skip_intervals:
        result["intervals"] = select(fitter, INTERVALS, log=lambda s: print(s, flush=True))
        print(markdown(result["intervals"], "covered"), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
