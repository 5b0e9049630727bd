"""Which objective should choose the aiconfigurator-adapt intervals at K > 0, judged on training GPUs only
(benchmarks/ANALYSIS_adapt.md, round 17a).

    python benchmarks/adapt_interval_objective.py SCORES.json [SCORES.json ...] [--match-class] [--json OUT.json]

SCORES.json: files of ``benchmarks/adapt_grid_scores.py record`` (every setting's mean APE and every interval
variant's 90% coverage per left-out GPU, phase and K). Per part family and K > 0, the choice is redone as the
protocol's ``select_settings`` makes it for a left-out GPU t: the setting of least mean APE over the other GPUs, then,
for it, the interval variant the objective scores best over the other GPUs' phases (ties: the earlier variant).
Objectives (:data:`OBJECTIVES`): ``level``, the protocol's (mean |coverage - 90%|); ``band``, the mean distance
outside the K's band (``coverage_goal``; the issue asks every GPU's coverage in it), then ``level``; ``count``, the
share of the other GPUs' phases outside the band, then ``level``.

``--match-class`` (round 17b): the variant is scored over the other GPUs of the left-out GPU's class only (a family
sibling among the pool's GPUs or not, :func:`peers`), the setting still over all of them.

Why double-nested: the objective is a choice about the protocol, so it must be judged on GPUs its choices did not
see. For left-out t, each other GPU u gets the setting and variant chosen over the GPUs other than t and u, and u's
own phases are judged in or out of the band; summed over t and u. The single-nested counts (each t's own phases
with the choice made over the others: what the protocol would report) are printed too, as a report.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perfcast.experiments.adapt_bench import LEVEL
from perfcast.experiments.baselines import sibling_devices
from perfcast.experiments.results import coverage_goal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_grid_scores import Scores, pick  # noqa: E402 - a sibling script, as accuracy.py's are

Band = tuple[float, float]


def outside(x: np.ndarray, band: Band) -> np.ndarray:
    """How far each coverage is outside ``band`` (0 inside)."""
    return np.maximum(0.0, np.maximum(band[0] - x, x - band[1]))


#: objective -> (coverages of the GPUs' phases, band) -> a key to minimise (rounded so float noise never decides)
OBJECTIVES: dict[str, Callable[[np.ndarray, Band], tuple[float, ...]]] = {
    "level": lambda x, band: (round(float(np.mean(np.abs(x - LEVEL))), 12),),
    "band": lambda x, band: (round(float(np.mean(outside(x, band))), 12), round(float(np.mean(np.abs(x - LEVEL))), 12)),
    "count": lambda x, band: (round(float(np.mean(outside(x, band) > 0)), 12),
                              round(float(np.mean(np.abs(x - LEVEL))), 12)),
}


def variants_of(scores: dict[str, dict[str, Any]]) -> list[str]:
    """The recorded interval variants (their ``repr``) in the protocol's order; refused where the file has none or
    has variants weighted for the plan's shift (the protocol offers those only after a second leave-one-GPU-out,
    which this script does not redo)."""
    first = next(iter(next(iter(scores.values())).values()))
    if "coverage" not in first:
        raise SystemExit("adapt_interval_objective.py: the scores file has no coverage per interval variant; record "
                         "it again with benchmarks/adapt_grid_scores.py record (round 17a or later)")
    found = list(first["coverage"])
    if any(len(v) > 3 and v[3] for v in map(ast.literal_eval, found)):
        raise SystemExit("adapt_interval_objective.py: the file has variants weighted for the plan's shift "
                         "(`shift_weighted` in the preset); their second leave-one-GPU-out is not redone here")
    return found


def peers(target: str, on: Sequence[str], least: int = 2) -> list[str]:
    """The GPUs of ``on`` in ``target``'s class: with a family sibling among the other GPUs of the pool ``on`` +
    ``target`` or without (:func:`~perfcast.experiments.baselines.sibling_devices`, the rule of the K = 0 default);
    all of ``on`` when fewer than ``least`` are, so a class never chooses from one GPU's coverage alone."""
    pool = [*on, target]

    def has_sibling(d: str) -> bool:
        return bool(sibling_devices(d, [c for c in pool if c != d]))

    mine = has_sibling(target)
    same = [d for d in on if has_sibling(d) == mine]
    return same if len(same) >= least else list(on)


def choose(scores: dict[str, dict[str, Any]], on: Sequence[str], objective: str, band: Band,
           judge_on: Sequence[str] | None = None) -> tuple[str, str]:
    """(setting, interval variant) the protocol would choose from the GPUs ``on``: the setting of least mean APE
    (:func:`~adapt_grid_scores.pick`), then the variant ``objective`` scores best over the phases of ``judge_on``
    (default: ``on``)."""
    grid = list(next(iter(scores.values())))
    setting = pick(scores, list(on), grid)
    candidates = variants_of(scores)
    score = OBJECTIVES[objective]
    judge_on = on if judge_on is None else judge_on

    def key(v: str) -> tuple[Any, ...]:
        x = np.array([c for d in judge_on for c in scores[d][setting]["coverage"][v].values()], dtype="float64")
        return (*score(x, band), candidates.index(v))

    return setting, min(candidates, key=key)


def coverage(scores: dict[str, dict[str, Any]], device: str, chosen: tuple[str, str]) -> dict[str, float]:
    """``device``'s coverage per phase with the (setting, variant) ``chosen``."""
    return scores[device][chosen[0]]["coverage"][chosen[1]]


def judged(scores: dict[str, dict[str, Any]], objective: str, band: Band, match_class: bool = False
           ) -> dict[str, Any]:
    """Per phase, the double-nested [in band, judged] counts, mean distance outside the band and mean |coverage -
    90%| (pairs (t, u)), and the single-nested ones (each left-out GPU's own coverage, with the choice made over the
    others: a report), with each GPU's single-nested coverage and choice. ``match_class``: each variant judged on
    the left-out GPU's class :func:`peers` among the GPUs its choice is made over."""
    gpus = sorted(scores)
    double: dict[str, list[float]] = {}
    single: dict[str, dict[str, float]] = {}
    picked: dict[str, list[str]] = {}

    def chosen_for(target: str, on: list[str]) -> tuple[str, str]:
        return choose(scores, on, objective, band, peers(target, on) if match_class else None)

    for t in gpus:
        others = [d for d in gpus if d != t]
        chosen = chosen_for(t, others)
        picked[t] = list(chosen)
        for phase, c in coverage(scores, t, chosen).items():
            single.setdefault(phase, {})[t] = c
        for u in others:
            for phase, c in coverage(scores, u, chosen_for(u, [d for d in others if d != u])).items():
                double.setdefault(phase, []).append(c)

    def summary(x: Sequence[float]) -> dict[str, Any]:
        a = np.asarray(x, dtype="float64")
        return {"in_band": [int(np.sum(outside(a, band) == 0)), len(a)], "outside_pt": 100 * float(np.mean(outside(
            a, band))), "from_level_pt": 100 * float(np.mean(np.abs(a - LEVEL)))}

    return {"band": list(band), "double_nested": {p: summary(x) for p, x in double.items()},
            "single_nested": {p: {**summary(list(x.values())), "coverage": x} for p, x in single.items()},
            "chosen": picked}


def score_files(paths: Sequence[Path], protocol: str = "aiconfigurator-adapt", match_class: bool = False
                ) -> dict[str, Any]:
    """objective -> part family -> K -> :func:`judged`, for every K > 0 of the files (K = 0 has its own zero-shot
    choice, ``select_variants``)."""
    out: dict[str, Any] = {name: {} for name in OBJECTIVES}
    for path in paths:
        recorded: Scores = json.loads(path.read_text(encoding="utf-8"))
        for part, by_k in recorded.items():
            for k, scores in by_k.items():
                if int(k) == 0:
                    continue
                for name in OBJECTIVES:
                    out[name].setdefault(part, {})[k] = judged(scores, name, coverage_goal(protocol, int(k)), match_class)
    return out


def totals(found: dict[str, Any], nesting: str = "double_nested") -> dict[str, dict[str, list[int]]]:
    """objective -> K -> [in band, judged] summed over part families and phases."""
    out: dict[str, dict[str, list[int]]] = {}
    for name, by_part in found.items():
        for by_k in by_part.values():
            for k, res in by_k.items():
                got = out.setdefault(name, {}).setdefault(k, [0, 0])
                for phase in res[nesting].values():
                    got[0] += phase["in_band"][0]
                    got[1] += phase["in_band"][1]
    return out


def render(found: dict[str, Any]) -> str:
    """A Markdown table per nesting: one row per part, phase and K, one column per objective."""
    names = list(found)
    lines = []
    for nesting in ("double_nested", "single_nested"):
        lines += ["", f"{nesting.replace('_', '-')}: in band / judged, mean distance outside the band, mean "
                  "|coverage - 90%| (pt)", "", "| part | K | band | " + " | ".join(names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        first = found[names[0]]
        for part, by_k in first.items():
            for k, res in sorted(by_k.items(), key=lambda kv: int(kv[0])):
                for phase in res[nesting]:
                    cells = []
                    for name in names:
                        r = found[name][part][k][nesting][phase]
                        cells.append(f"{r['in_band'][0]}/{r['in_band'][1]}, {r['outside_pt']:.2f}, "
                                     f"{r['from_level_pt']:.2f}")
                    lo, hi = res["band"]
                    lines.append(f"| {part}{f' ({phase})' if phase else ''} | {k} | {100 * lo:.0f}-{100 * hi:.0f}% | "
                                 + " | ".join(cells) + " |")
        summed = totals(found, nesting)
        for k in sorted(summed[names[0]], key=int):
            lines.append(f"| all | {k} | | " + " | ".join(f"{summed[n][k][0]}/{summed[n][k][1]}" for n in names)
                         + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scores", type=Path, nargs="+", help="files of benchmarks/adapt_grid_scores.py record")
    parser.add_argument("--protocol", default="aiconfigurator-adapt", help="whose coverage band per K applies")
    parser.add_argument("--match-class", action="store_true", help="judge the variants on the left-out GPU's class "
                        "(family sibling in training or not) only, round 17b")
    parser.add_argument("--json", type=Path, help="also write every number (fractions in 'band', pt elsewhere)")
    args = parser.parse_args(argv)
    found = score_files(args.scores, args.protocol, args.match_class)
    print(render(found))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
