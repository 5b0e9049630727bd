"""One sibling GPU of the aiconfigurator-adapt protocol at one K: the adaptation from the nearest donor's start and
from the unseen-GPU default's (round 16a of benchmarks/ANALYSIS_adapt.md), with what each guard chose, beside the
default's prediction alone and the nearest donor's copy x K-median on the same test rows. A diagnosis: it chooses
nothing.

    PYTHONPATH=. python benchmarks/sibstart_diagnose.py --part gemm --device gb300 --k 32 --setting krige_grow

The base model, plan, test rows and donor table are the protocol's (``adapt_device`` with the preset's options, its
settings restricted to ``--setting`` and its intervals to the pooled one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.eval import metrics
from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import NEAREST_K, adapt_device
from perfcast.experiments.adapt_k0 import START, SiblingK0, k0_choice
from perfcast.experiments.baselines import CONFIG_KEYS, PHASE_LABEL
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.perf_probe.plan import adaptation_plan
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal

PROTOCOL = "aiconfigurator-adapt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    ap.add_argument("--part", choices=("gemm", "attention"), default="gemm")
    ap.add_argument("--device", default="gb300")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--setting", default="krige_grow")
    args = ap.parse_args()
    choice = choose(PROTOCOL)
    task, seed = args.part, 0
    options = {**choice.options, "budgets": [args.k], "sibling_start": True, "group_rows": [], "score_scales": [1.0],
               "settings": {args.setting: choice.options["settings"][args.setting]}}
    intervals = choice.config.intervals if task == choice.config.task else IntervalsConfig(
        **options.get(f"{task}_intervals", {}))
    config = choice.config.model_copy(update={"task": task, "intervals": intervals})
    with workspace(args.data_root) as ws:
        train, test = unseen_hardware_split(ws.records("aiconfigurator", task), test_devices=[args.device])
    rows, params, _ = budget_rows(choice.name, choice.params, train, choice.train_rows, seed)
    base = fit_conformal(config, rows, params, seed=seed)
    parts = (test["phase"].map(PHASE_LABEL).fillna(test["phase"]).astype(str) if task == "attention"
             else pd.Series("", index=test.index))
    k0 = SiblingK0.of(k0_choice(options, task, PROTOCOL), args.device, train, seed)
    if k0 is None:
        raise SystemExit(f"{args.device} has no family sibling in training: nothing to compare")
    found = adapt_device(PROTOCOL, task, base, train, test, parts, CONFIG_KEYS[task], choice.name, 0.0, seed, options,
                         None, k0)
    # the protocol's test rows at this K, drawn as adapt_device draws them, for the default alone
    test = test.reset_index(drop=True)
    picked = test.index.isin(adaptation_plan(test.drop(columns=["runtime_ms"]), task, args.k,
                                             random_share=float(options.get("plan_random_share", 0.0))))
    rest = ~picked
    if rest.sum() > int(options["test_rows"]):
        keep = np.random.default_rng(seed).choice(np.flatnonzero(rest), int(options["test_rows"]), replace=False)
        rest = np.isin(np.arange(len(test)), keep)
    alone = k0.point(test[rest])[0]
    labels = parts.reset_index(drop=True)[rest].to_numpy()
    for (label, k), variants in found.items():
        sel = labels == label
        print(f"## {args.device} {task} {label or ''} K = {k}")
        print(f"the default alone: {100 * metrics.mape(test.loc[rest, 'runtime_ms'][sel], alone[sel]):.2f}%")
        for key, res in variants.items():
            name = "from the default's start" if key[0] == START else "from the nearest donor's start"
            print(f"{name}: {100 * res.ours:.2f}% (coverage {100 * res.coverage:.2f}%); {NEAREST_K} "
                  f"{100 * res.baselines[NEAREST_K]:.2f}%")
            print("   " + next(n for n in res.notes if n.startswith("correction chosen")))


if __name__ == "__main__":
    main()
