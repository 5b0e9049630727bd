"""Two aiconfigurator-adapt runs that differ in the probe plan, picked per GPU as the protocol picks a setting.

    python benchmarks/adapt_plan_pick.py BEFORE.json AFTER.json [--part gemm|attention]

Per K > 0 and left-out GPU d: d takes AFTER's plan only if the mean APE over the OTHER GPUs at that K is lower in
AFTER than in BEFORE (d's own rows never choose its plan). A GPU's mean APE of a part with phases (attention:
context and generation) is the mean over its phases, as the protocol's setting choice reads it; each phase's
means are printed too. Prints, per K, the plain means over the GPUs in both runs,
the picked mean and its change, each GPU's mean APE before -> after with its pick, and the picked rows' coverage of
the 90% interval and whether they beat every baseline; then whether round 16c's criterion (ANALYSIS_adapt.md) holds:
the picked mean at most ``--worse`` pt above BEFORE's at every K and at least ``--gain`` pt below it at one of
``--gain-at``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

Row = dict[str, Any]
#: a left-out GPU's rows at one K: phase ("" for a part without phases) -> the run's row
Rows = dict[str, Row]


def per_gpu(path: Path, part: str) -> dict[int, dict[str, Rows]]:
    """K -> device -> phase -> the run's row of that left-out GPU (the 'mean' rows left out)."""
    out: dict[int, dict[str, Rows]] = {}
    for row in json.loads(path.read_text()):
        found = re.fullmatch(r"runtime_ms(?: \((\w+)\))?, K=(\d+)", row["target"])
        if row["task"] != part or row["metric"] != "mape" or not found or row["device"] == "mean":
            continue
        out.setdefault(int(found.group(2)), {}).setdefault(row["device"], {})[found.group(1) or ""] = row
    return out


def value(rows: Rows, phase: str | None = None) -> float:
    """A GPU's mean APE: of ``phase``, or the mean over its phases."""
    return rows[phase]["value"] if phase is not None else mean([r["value"] for r in rows.values()])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def pick(before: dict[str, Rows], after: dict[str, Rows]) -> dict[str, bool]:
    """Per GPU: whether AFTER's plan is picked (lower mean APE over the other GPUs)."""
    gpus = sorted(set(before) & set(after))
    return {d: mean([value(after[o]) for o in gpus if o != d]) < mean([value(before[o]) for o in gpus if o != d])
            for d in gpus}


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--part", default="gemm")
    parser.add_argument("--worse", type=float, default=0.05, help="largest loss of the picked mean at any K (pt)")
    parser.add_argument("--gain", type=float, default=0.2, help="least gain of the picked mean at one --gain-at K (pt)")
    parser.add_argument("--gain-at", default="128,512", help="the K (comma-separated) where the gain may come")
    args = parser.parse_args()
    before, after = per_gpu(args.before, args.part), per_gpu(args.after, args.part)
    budgets = sorted(k for k in set(before) & set(after) if k > 0)
    phases = sorted({ph for per_k in before.values() for rows in per_k.values() for ph in rows})
    changes: dict[int, float] = {}
    print("| K | phase | mean before | mean after (plain) | picked mean | change (pt) | GPUs picking after |")
    print("|---|---|---|---|---|---|---|")
    tables = []
    for k in budgets:
        chosen = pick(before[k], after[k])
        rows = {d: (after[k] if use else before[k])[d] for d, use in chosen.items()}
        for phase in ([None] if len(phases) == 1 else [None, *phases]):
            b = mean([value(before[k][d], phase) for d in chosen])
            a = mean([value(after[k][d], phase) for d in chosen])
            p = mean([value(r, phase) for r in rows.values()])
            if phase is None:
                changes[k] = 100 * (p - b)
            print(f"| {k} | {phase or 'all'} | {pct(b)} | {pct(a)} | {pct(p)} | {100 * (p - b):+.3f} | "
                  f"{sum(chosen.values())} of {len(chosen)} |")
        tables.append((k, chosen, rows))
    print("\n| K | GPU | phase | mean APE before -> after (%) | picked | picked coverage (%) | beats both baselines |")
    print("|---|---|---|---|---|---|---|")
    for k, chosen, rows in tables:
        for d, use in chosen.items():
            for phase in phases:
                print(f"| {k} | {d} | {phase or 'all'} | {pct(value(before[k][d], phase))} -> "
                      f"{pct(value(after[k][d], phase))} | {'after' if use else 'before'} | "
                      f"{pct(rows[d][phase]['coverage'])} | {rows[d][phase]['beats_ref']} |")
    gain_at = [int(k) for k in args.gain_at.split(",")]
    met = all(c <= args.worse for c in changes.values()) and any(-changes.get(k, 0.0) >= args.gain for k in gain_at)
    print(f"\ncriterion (picked mean <= +{args.worse} pt at every K, >= {args.gain} pt better at K in {gain_at}): "
          f"{'met' if met else 'not met'}")

if __name__ == "__main__":
    main()
