"""The aiconfigurator-adapt protocol with every setting's scores kept, and a setting grid judged by double-nested
leave-one-GPU-out (benchmarks/ANALYSIS_adapt.md, round 13a).

    PYTHONPATH=. python benchmarks/adapt_grid_scores.py record SCORES.json --protocol aiconfigurator-adapt ...
    python benchmarks/adapt_grid_scores.py score SCORES.json --new krige_small,krige_phase_small [--drop OTHERS]

``record``: benchmarks/accuracy.py with the rest of the arguments, and per part, K, left-out GPU and setting the mean
APE (mean over the part's phases, as the protocol's choice reads it), each phase's, ``wall_s`` and every interval
variant's 90% coverage per phase written to SCORES.json (benchmarks/adapt_interval_objective.py judges the interval
choice on them). ``score``: per part and K, with the full grid and with the grid minus the ``--new`` settings: the
protocol's nested score (the chosen setting's mean APE over the other GPUs, averaged over the left-out GPUs), the
double-nested score, and the left-out GPUs' own mean APE (a report); then the same of each phase's rows alone, the
settings still chosen by the mean over the phases (files recorded before round 14b have no phases).

Why: the protocol keeps only each GPU's chosen setting (nested scores in its notes, to 0.01%). Whether a grid with
more settings selects better is a choice about the grid, so it must be judged on training GPUs only. The nested
score cannot say it: a setting added to the grid can only lower a minimum over the same GPUs. The double-nested
score can: for a left-out GPU t, each other GPU u gets the setting of least mean APE over the GPUs other than t and
u, scored on u's own rows; its mean over u is what the grid's choice achieves on GPUs it did not see, t never used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: part -> K -> left-out GPU -> setting -> {"mape": ..., "wall_s": ..., "phases": {phase: mape},
#: "coverage": {repr(interval variant): {phase: 90% coverage}}} (variants in the protocol's order; files recorded
#: before round 17a have no "coverage")
Scores = dict[str, dict[str, dict[str, dict[str, dict[str, Any]]]]]


def keep(kept: Scores, per_device: dict[tuple[Any, int], list[dict[Any, Any]]]) -> None:
    """Add to ``kept`` every setting's scores of ``per_device`` (what the protocol passes ``select_settings``:
    (phase, K) -> per left-out GPU {(setting, interval variant): Result}), and each (setting, variant)'s coverage per
    phase under ``repr(variant)``, in the protocol's order (its ties go to the earlier)."""
    for k in sorted({k for _, k in per_device}):
        labels = [key for key in per_device if key[1] == k]
        first = per_device[labels[0]]
        variant = next(iter(first[0]))[1]  # the setting's mean APE is the same for every interval variant
        settings = list(dict.fromkeys(s for s, _ in first[0]))
        for i, found in enumerate(first):
            part = found[(settings[0], variant)].task
            kept.setdefault(part, {}).setdefault(str(k), {})[found[(settings[0], variant)].device] = {
                s: {"mape": float(np.mean([per_device[key][i][(s, variant)].ours for key in labels])),
                    "wall_s": float(found[(s, variant)].wall_s),
                    "phases": {str(key[0]): float(per_device[key][i][(s, variant)].ours) for key in labels},
                    "coverage": {repr(v): {str(key[0]): float(per_device[key][i][(s, v)].coverage) for key in labels}
                                 for s_v, v in first[0] if s_v == s}}
                for s in settings}


def record(path: Path, argv: list[str]) -> None:
    """benchmarks/accuracy.py ``argv``, every setting's scores written to ``path`` as the protocol chooses."""
    from perfcast.experiments import adapt_bench

    kept: Scores = {}
    choose = adapt_bench.select_settings

    def keeping(per_device: dict[tuple[str, int], list[dict[Any, Any]]], *args: Any, **kwargs: Any) -> Any:
        keep(kept, per_device)
        path.write_text(json.dumps(kept, indent=1), encoding="utf-8")
        return choose(per_device, *args, **kwargs)

    adapt_bench.select_settings = keeping
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import accuracy

    accuracy.main(argv)


def pick(scores: dict[str, dict[str, float]], on: list[str], grid: list[str]) -> str:
    """The setting of ``grid`` of least mean APE over the GPUs ``on`` (ties: the first in the grid), as the
    protocol chooses."""
    return min(grid, key=lambda s: (round(float(np.mean([scores[d][s]["mape"] for d in on])), 12), grid.index(s)))


def judged(scores: dict[str, dict[str, Any]], grid: list[str], phase: str | None = None) -> dict[str, float]:
    """Means over the left-out GPUs of: the nested score, the double-nested score, the GPU's own mean APE (with
    ``phase``: of that phase's rows only, the settings still chosen by the mean over the phases)."""
    gpus = sorted(scores)
    nested, double, own = [], [], []

    def mape(d: str, s: str) -> float:
        return scores[d][s]["mape"] if phase is None else scores[d][s]["phases"][phase]

    for t in gpus:
        others = [d for d in gpus if d != t]
        chosen = pick(scores, others, grid)
        nested.append(np.mean([mape(d, chosen) for d in others]))
        own.append(mape(t, chosen))
        double.append(np.mean([mape(u, pick(scores, [d for d in others if d != u], grid)) for u in others]))
    return {"nested": float(np.mean(nested)), "double_nested": float(np.mean(double)), "own": float(np.mean(own))}


def score(path: Path, new: list[str], drop: list[str] = ()) -> None:
    """Print, per part and K, the grid with and without ``new`` judged (see :func:`judged`), and the settings'
    adaptation time; settings in ``drop`` are in neither grid (one recorded run can then judge candidates apart)."""
    for part, by_k in json.loads(path.read_text(encoding="utf-8")).items():
        for k, scores in by_k.items():
            grid = [s for s in next(iter(scores.values())) if s not in drop]
            old = [s for s in grid if s not in new]
            phases = sorted(next(iter(next(iter(scores.values())).values())).get("phases", {}))
            for phase in [None, *phases] if len(phases) > 1 else [None]:
                before, after = judged(scores, old, phase), judged(scores, grid, phase)
                print(f"{part} K = {k}{'' if phase is None else f' ({phase} only)'}: " + "; ".join(
                    f"{name} {100 * before[name]:.3f} -> {100 * after[name]:.3f}% ({100 * (after[name] - before[name]):+.3f} pt)"
                    for name in ("double_nested", "nested", "own")))
            gpus = sorted(scores)
            chosen = {t: pick(scores, [d for d in gpus if d != t], grid) for t in gpus}
            print("  chosen with the new grid: " + ", ".join(f"{t} {s}" for t, s in chosen.items()))
            print("  mean wall_s per setting: " + ", ".join(
                f"{s} {np.mean([scores[t][s]['wall_s'] for t in gpus]):.1f}" for s in grid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("record", "score"))
    parser.add_argument("scores", type=Path)
    parser.add_argument("--new", default="", help="score: comma-separated settings the grid is judged without")
    parser.add_argument("--drop", default="", help="score: comma-separated settings left out of both grids")
    args, rest = parser.parse_known_args()
    if args.command == "record":
        record(args.scores, rest)
    elif rest:
        raise SystemExit(f"adapt_grid_scores.py score: unknown arguments {rest}")
    else:
        score(args.scores, [s for s in args.new.split(",") if s], [s for s in args.drop.split(",") if s])


if __name__ == "__main__":
    main()
