"""benchmarks/adapt_grid_scores.py ``keep`` and benchmarks/adapt_interval_objective.py: the recorded coverage per
interval variant, and the offline choice redoing the protocol's (round 17a of benchmarks/ANALYSIS_adapt.md)."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perfcast.experiments.adapt_bench import select_settings
from perfcast.experiments.results import Result, coverage_goal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import adapt_grid_scores  # noqa: E402
import adapt_interval_objective as objective  # noqa: E402

PROTOCOL = "aiconfigurator-adapt"
GPUS = ["a", "b", "c", "d", "e"]
SETTINGS = ["donors", "krige"]
VARIANTS = [(None, False, 1.0), (20, False, 1.0), (None, False, 0.9), (20, True, 1.1)]


def per_device_of(seed: int, phases: tuple[str, ...] = ("context", "generation"), k: int = 128
                  ) -> dict[tuple[str, int], list[dict[Any, Result]]]:
    """What the protocol hands ``select_settings``: random mean APE per (GPU, setting) and coverage per (GPU,
    setting, variant, phase), as Results."""
    rng = np.random.default_rng(seed)
    out: dict[tuple[str, int], list[dict[Any, Result]]] = {}
    for phase in phases:
        target = f"runtime_ms ({phase}), K={k}" if phase else f"runtime_ms, K={k}"
        out[(phase, k)] = [{(s, v): Result(PROTOCOL, target, d, "mape", float(rng.uniform(0.02, 0.2)), "hybrid", 100,
                                           1.0, coverage=float(rng.uniform(0.75, 0.99)), probe_budget=k)
                            for s in SETTINGS for v in VARIANTS} for d in GPUS]
    # the setting's mean APE is one number for all its interval variants, as in the protocol
    for found in out.values():
        for results in found:
            for s in SETTINGS:
                for v in VARIANTS:
                    results[(s, v)].ours = results[(s, VARIANTS[0])].ours
    return out


def recorded(per_device: dict[tuple[str, int], list[dict[Any, Result]]]) -> adapt_grid_scores.Scores:
    kept: adapt_grid_scores.Scores = {}
    adapt_grid_scores.keep(kept, per_device)
    return json.loads(json.dumps(kept))  # as the file is read back


@pytest.mark.parametrize("phases", [("context", "generation"), ("",)])
def test_level_redoes_the_protocols_choice(phases: tuple[str, ...]) -> None:
    """The offline ``level`` choice over the other GPUs is the one ``select_settings`` makes, for every GPU."""
    per_device = per_device_of(3, phases)
    kept = recorded(per_device)
    part = "attention" if phases[0] else "gemm"
    scores = kept[part]["128"]
    assert list(scores["a"]["krige"]["coverage"]) == [repr(v) for v in VARIANTS]
    assert set(scores["a"]["krige"]["coverage"][repr(VARIANTS[1])]) == set(phases)
    reported = select_settings(per_device)
    for i, dev in enumerate(GPUS):
        setting, variant = objective.choose(scores, [d for d in GPUS if d != dev], "level", coverage_goal(PROTOCOL, 128))
        chosen = per_device[(phases[0], 128)][i][(setting, ast.literal_eval(variant))]
        assert reported[(phases[0], 128)][i] is chosen


def test_band_prefers_every_gpu_inside_the_band() -> None:
    """``band`` takes the variant with every GPU inside 85-95% where ``level`` takes one nearer 90% on average with
    GPUs outside; single- and double-nested counts follow (worked out by hand)."""
    tight, wide = repr((None, False, 1.0)), repr((20, True, 1.1))
    cov = {tight: [0.90, 0.90, 0.84, 0.84], wide: [0.95, 0.95, 0.86, 0.86]}
    gpus = ["a", "b", "c", "d"]
    scores = {d: {"donors": {"mape": 0.1, "coverage": {v: {"": c[i]} for v, c in cov.items()}}}
              for i, d in enumerate(gpus)}
    band = coverage_goal(PROTOCOL, 128)
    # mean |cov - 90%|: tight 3 pt, wide 4.5 pt; outside 85-95%: tight 0.5 pt, wide 0
    assert objective.choose(scores, gpus, "level", band) == ("donors", tight)
    assert objective.choose(scores, gpus, "band", band) == ("donors", wide)
    level, inside = objective.judged(scores, "level", band), objective.judged(scores, "band", band)
    assert all(c == ["donors", tight] for c in level["chosen"].values())
    assert all(c == ["donors", wide] for c in inside["chosen"].values())
    assert level["single_nested"][""]["in_band"] == [2, 4]
    assert inside["single_nested"][""]["in_band"] == [4, 4]
    # double-nested, the choice over the two GPUs other than t and u: level never gives c or d the wide variant
    # (only {c, d} would choose it); band gives the tight one only over {a, b} (a tie at 0 outside, then level)
    assert level["double_nested"][""]["in_band"] == [6, 12]
    assert inside["double_nested"][""]["in_band"] == [10, 12]



SIBLINGS, LONE = ["b300_sxm", "gb200", "gb300"], ["a100_sxm", "h100_sxm", "l40s"]


def test_peers_are_the_class_within_the_pool_or_all() -> None:
    """A GPU's class peers: the GPUs with (or without) a family sibling among the pool's other GPUs; all of them
    when fewer than two, and the class follows the pool (B300 alone beside A100 has no sibling)."""
    assert objective.peers("gb200", ["b300_sxm", "gb300", *LONE]) == ["b300_sxm", "gb300"]
    assert objective.peers("a100_sxm", [*SIBLINGS, "h100_sxm", "l40s"]) == ["h100_sxm", "l40s"]
    # one peer left: the fallback to every GPU of the choice
    assert objective.peers("gb200", ["b300_sxm", *LONE]) == ["b300_sxm", *LONE]
    assert objective.peers("a100_sxm", [*SIBLINGS, "h100_sxm"]) == [*SIBLINGS, "h100_sxm"]
    # B300 without GB200 / GB300 in the pool is a lone GPU like A100's other peers
    assert objective.peers("a100_sxm", ["b300_sxm", "h100_sxm", "l40s"]) == ["b300_sxm", "h100_sxm", "l40s"]


def test_match_class_gives_each_class_its_variant() -> None:
    """Siblings under-cover with the tight variant, lone GPUs over-cover with the wide one; ``level`` over all other
    GPUs gives each the other class's variant, over the class each its own (worked out by hand, 85-95% band)."""
    tight, wide = repr((None, False, 1.0)), repr((20, True, 1.1))
    cov = {d: {tight: 0.84, wide: 0.89} for d in SIBLINGS} | {d: {tight: 0.90, wide: 0.96} for d in LONE}
    scores = {d: {"donors": {"mape": 0.1, "coverage": {v: {"": c} for v, c in cov[d].items()}}} for d in cov}
    band = coverage_goal(PROTOCOL, 128)
    # sibling t over 2 siblings + 3 lone: tight 2.4 pt, wide 4 pt; over the 2 siblings: tight 6, wide 1
    on = [d for d in cov if d != "gb200"]
    assert objective.choose(scores, on, "level", band) == ("donors", tight)
    assert objective.choose(scores, on, "level", band, objective.peers("gb200", on)) == ("donors", wide)
    plain, matched = objective.judged(scores, "level", band), objective.judged(scores, "level", band, True)
    assert plain["chosen"] == {d: ["donors", tight if d in SIBLINGS else wide] for d in cov}
    assert matched["chosen"] == {d: ["donors", wide if d in SIBLINGS else tight] for d in cov}
    assert plain["single_nested"][""]["in_band"] == [0, 6]
    assert matched["single_nested"][""]["in_band"] == [6, 6]
    # double-nested (t, u), the choice over the four others: u sibling, t lone (9 pairs) and u lone, t sibling (9)
    # get their class's variant (in band); u sibling, t sibling (6) has one sibling peer left and u lone, t lone (6)
    # one lone peer: the fallback to all four, which picks the other class's variant (out). level: only u lone,
    # t sibling is in band (over 2 siblings + 2 lone GPUs tight 3 pt, wide 3.5 pt: the lone u gets tight)
    assert matched["double_nested"][""]["in_band"] == [18, 30]
    assert plain["double_nested"][""]["in_band"] == [9, 30]

def test_files_without_coverage_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"gemm": {"32": {"a": {"donors": {"mape": 0.1}}, "b": {"donors": {"mape": 0.1}}}}}))
    with pytest.raises(SystemExit, match="no coverage per interval variant"):
        objective.score_files([path])


def test_totals_sum_parts_and_phases() -> None:
    per_device = per_device_of(5)
    kept = recorded(per_device)
    found = {"level": {"attention": {"128": objective.judged(kept["attention"]["128"], "level",
                                                           coverage_goal(PROTOCOL, 128))}}}
    got = objective.totals(found)["level"]["128"]
    assert got[1] == 2 * len(GPUS) * (len(GPUS) - 1)
    assert got[0] == sum(p["in_band"][0] for p in found["level"]["attention"]["128"]["double_nested"].values())


@pytest.mark.parametrize("part", ["gemm", "attention"])
def test_level_reproduces_the_recorded_protocol_rows(part: str) -> None:
    """On the recorded runs (round 17a): ``level``'s single-nested coverage of every GPU, phase and K > 0 is the
    protocol's reported row's."""
    rows = [r for r in json.loads((REPO / "benchmarks" / f"covband_{part}_rows.json").read_text())
            if r["device"] != "mean" and r.get("probe_budget", 0) > 0 and r["metric"] == "mape"]
    found = objective.score_files([REPO / "benchmarks" / f"covband_{part}.json"])["level"][part]
    assert len(rows) == 8 * 3 * (2 if part == "attention" else 1)
    for r in rows:
        phase = r["target"].split("(")[1].split(")")[0] if "(" in r["target"] else ""
        assert found[str(r["probe_budget"])]["single_nested"][phase]["coverage"][r["label"]] == pytest.approx(
            r["coverage"], abs=1e-12)
