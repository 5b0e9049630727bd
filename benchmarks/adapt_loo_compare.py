"""Two aiconfigurator-adapt attention runs compared as the protocol judges a setting: leave one GPU out.

    python benchmarks/adapt_loo_compare.py BEFORE.json AFTER.json

Per K, for every left-out GPU t the change (after - before, points) of the mean over the OTHER GPUs of their
two-phase (context, generation) mean APE, and its worst over t (what a criterion such as ANALYSIS_adapt.md round
12a's bounds: t's own rows are a report, not a choice); then every GPU's context and generation mean APE before ->
after, the mean over the GPUs, and each GPU's adaptation time (``wall_s``: fit + predict) before -> after.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

PHASES = ("context", "generation")


def load(path: Path) -> tuple[dict[tuple[str, str, int], float], dict[tuple[str, int], float]]:
    """(device, phase, K) -> mean APE, and (device, K) -> wall_s, of a run's attention rows."""
    mape, wall = {}, {}
    for row in json.loads(path.read_text()):
        found = re.match(r"runtime_ms \((\w+)\), K=(\d+)", row["target"])
        if row["task"] != "attention" or row["metric"] != "mape" or not found:
            continue
        key = (row["device"], found.group(1), int(found.group(2)))
        mape[key] = row["value"]
        wall[(key[0], key[2])] = row.get("wall_s") or float("nan")
    return mape, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    (a, wa), (b, wb) = load(args.before), load(args.after)
    gpus = sorted({d for d, _, _ in a if d != "mean"})
    for k in sorted({k for _, _, k in b}):
        both = [g for g in gpus if all((g, p, k) in a and (g, p, k) in b for p in PHASES)]
        change = {g: 100 * np.mean([b[(g, p, k)] - a[(g, p, k)] for p in PHASES]) for g in both}
        others = {t: float(np.mean([change[g] for g in both if g != t])) for t in both}
        if not others:
            continue
        worst = max(others, key=others.get)
        print(f"K = {k}: worst over the left-out GPU of the others' two-phase change {others[worst]:+.3f} pt "
              f"(left out: {worst}); per left-out GPU " + ", ".join(f"{t} {v:+.3f}" for t, v in others.items()))
        for p in PHASES:
            print(f"  {p}: " + "; ".join(f"{g} {100 * a[(g, p, k)]:.2f} -> {100 * b[(g, p, k)]:.2f}" for g in both)
                  + (f" | mean {100 * a[('mean', p, k)]:.2f} -> {100 * b[('mean', p, k)]:.2f}"
                     if ("mean", p, k) in a and ("mean", p, k) in b else ""))
        print("  wall_s: " + "; ".join(f"{g} {wa.get((g, k), np.nan):.1f} -> {wb.get((g, k), np.nan):.1f}"
                                       for g in both))


if __name__ == "__main__":
    main()
