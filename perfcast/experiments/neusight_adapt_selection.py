"""Nested selection of the neusight-adapt preset's base model: chosen by adapting to NeuSight's *training* GPUs.

Why: the preset carried the neusight-ood settings of an earlier round, chosen on the held-out A100 80GB PCIe,
the GPU neusight-adapt scores (issue 17). Here each training GPU (P4, P100, V100, T4, A100-40GB) is left out in
turn, and the Pascal pair (P4, P100) as a family: the candidate base model is fitted on the other training GPUs
and adapted, exactly as the protocol adapts to its unseen GPU (:func:`perfcast.experiments.adapt_bench.adapt_device`:
the probe plan's K rows revealed, the rest scored), for every K of the preset's budgets. The criterion is the
mean over folds' GPUs, budgets and ops (bmm, linear) of mean APE; the test GPU's rows are never read.

Affordable on 2 shared cores by subsampling (stated in the output): the base model is fitted on at most
``--rows`` seeded rows (the preset: 20,000), and at most ``--test-rows`` unrevealed rows are scored per GPU.

    python -m perfcast.experiments.neusight_adapt_selection [--rows 4000] [--test-rows 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval.protocols import neusight_ood_split
from perfcast.experiments.adapt_bench import NEUSIGHT_KEYS, adapt_device
from perfcast.experiments.aiconfigurator_selection import held_out_sets
from perfcast.experiments.cpu_selection import Candidate
from perfcast.experiments.neusight_selection import CANDIDATES as OOD_CANDIDATES
from perfcast.experiments.presets import choose, sample_rows
from perfcast.experiments.results import workspace

PROTOCOL = "neusight-adapt"
#: the preset's base model before this selection, the neusight-ood nested choices (one seed; round 8 and round 9's
#: power-limited base) and two runners-up: a plain hybrid on every column, and work relative to the device with
#: monotone efficiency
CANDIDATES: tuple[Candidate, ...] = tuple(
    c for c in OOD_CANDIDATES if c.label in ("previous default", "every column", "every column, tiny trees",
                                             "relative work, monotone",
                                             "tiny trees, power base (generation), no power columns"))


def fold_scores(candidate: Candidate, train_rows: pd.DataFrame, out: frozenset[str], rows: int, test_rows: int,
                seed: int) -> dict[str, dict[str, float]]:
    """GPU -> "op, K" -> mean APE of ``candidate`` fitted without the GPUs ``out`` and adapted to each of them."""
    choice = choose(PROTOCOL, candidate.model)
    params = {**candidate.params, "seeds": [seed]} if "seeds" in candidate.params else dict(candidate.params)
    held = train_rows["device_id"].isin(out).to_numpy()
    fit, _ = sample_rows(train_rows[~held], rows, seed)
    start = time.perf_counter()
    base = choice.fit(fit, seed, params)
    fit_s = time.perf_counter() - start
    options = {**choice.options, "test_rows": test_rows}
    result: dict[str, dict[str, float]] = {}
    for dev in sorted(out):
        dev_rows = train_rows[(train_rows["device_id"] == dev).to_numpy()]
        found = adapt_device(PROTOCOL, "gemm", base, train_rows[~held], dev_rows, dev_rows["op"].astype(str),
                             NEUSIGHT_KEYS, choice.name, fit_s, seed, options)
        result[dev] = {f"{op}, K={k}": float(np.mean([r.ours for r in by_setting.values()]))
                       for (op, k), by_setting in found.items()}
    return result


def select(train_rows: pd.DataFrame, candidates: tuple[Candidate, ...] = CANDIDATES, rows: int = 4000,
           test_rows: int = 1000, seed: int = 0, log: Any = lambda s: None) -> dict[str, Any]:
    """Every candidate's per-GPU scores over :func:`held_out_sets` of the training GPUs, its criterion, and
    the label of the lowest."""
    devices = sorted(train_rows["device_id"].dropna().unique())
    per: dict[str, dict[str, dict[str, float]]] = {}
    for cand in candidates:
        start, per[cand.label] = time.perf_counter(), {}
        for out in held_out_sets(devices):
            name = "+".join(sorted(out))
            for dev, scores in fold_scores(cand, train_rows, out, rows, test_rows, seed).items():
                per[cand.label][f"{dev} (without {name})" if len(out) > 1 else dev] = scores
        log(f"{cand.label}: nested {criterion(per[cand.label]):.2%} ({time.perf_counter() - start:.0f} s)")
    nested = {label: criterion(s) for label, s in per.items()}
    return {"folds": per, "nested": nested, "chosen": min(nested, key=nested.__getitem__)}


def criterion(per_gpu: dict[str, dict[str, float]]) -> float:
    """Mean over GPUs of the mean over (op, K): every budget and both ops weigh alike."""
    return float(np.mean([np.mean(list(s.values())) for s in per_gpu.values()]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--rows", type=int, default=4000, help="seeded base-model fit rows per fold")
    parser.add_argument("--test-rows", type=int, default=1000, help="unrevealed rows scored per GPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", action="append", help="score only this candidate label (repeatable)")
    parser.add_argument("--json", type=Path, help="write the selection here")
    args = parser.parse_args(argv)
    candidates = tuple(c for c in CANDIDATES if not args.only or c.label in args.only)
    with workspace(args.data_root) as ws:
        train_rows, _ = neusight_ood_split(ws.records("neusight", "gemm"))  # the test GPU's rows are dropped here
    result = select(train_rows, candidates, rows=args.rows, test_rows=args.test_rows, seed=args.seed,
                    log=lambda s: print(s, flush=True))
    result.update(rows=args.rows, test_rows=args.test_rows)
    print("| candidate | nested | per fold |\n|---|---|---|")
    for label, per in result["folds"].items():
        folds = ", ".join(f"{g} {np.mean(list(s.values())):.2%}" for g, s in per.items())
        print(f"| {label} | {result['nested'][label]:.2%} | {folds} |")
    print(f"chosen: {result['chosen']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
