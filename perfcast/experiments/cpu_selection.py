"""Nested selection of the CPU presets: every model and parameter choice is made inside the training data.

Why: a default tuned until the test year looks good does not carry to the next year (issue 17: the SPEC
model tuned on the 2024 test year missed the 2025 generation step). Here the test rows are never passed to
the selection at all:

* SPEC CPU2017 ``future``: forward-chaining by year *inside* the training years. For a cutoff C each
  candidate is fitted on the years before Y and scored on year Y, for the last ``n_folds`` training years Y
  (C-1, C-2, ...); the candidate with the lowest mean over folds of (all-processor APE + never-seen-processor
  APE) / 2 is chosen (each candidate on one seed), then refitted with a seed bag on every training year
  and scored once on the test years.
* PerfCastDB (NCPP): the public sample has no ``test_data.csv``; the outer split is held-out repeats
  (random 20 %), and the selection splits the outer *training* rows again the same way.

    python -m perfcast.experiments.cpu_selection spec --cutoff 2023 --cutoff 2024 [--json out.json]
    python -m perfcast.experiments.cpu_selection perfcastdb [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from perfcast.eval import metrics
from perfcast.eval.protocols import future_split, random_split
from perfcast.experiments.baselines import group_mean
from perfcast.experiments.results import workspace
from perfcast.features.cpu import (
    SCORE_RISES_WITH, SCORE_RISES_WITH_CORES, SCORE_RISES_WITH_GENERATION, SCORE_RISES_WITH_PER_CORE,
)
from perfcast.models import make_model
from perfcast.models.estimators.generation_step import GenerationStep
from perfcast.models.uncertainty.intervals import ConformalRegressor

DATE = "published_at"


@dataclass(frozen=True)
class Candidate:
    """One setting the selection may choose: a registered model name and its parameters."""

    label: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    #: wrap the model in :class:`~perfcast.models.estimators.generation_step.GenerationStep` (a learned level
    #: step for a generation newer than any fitted); experiment-only, no preset can name it yet
    generation_step: bool = False


_SPEC_GROUPS = ["workload_code", "vendor_intel", "vendor_amd"]
_SPEC_LAW = ["log2_cores", "log2_core_ghz", "log10_mem_bw_gbs", "threads_per_core"]


#: the seed bag of the chosen SPEC model: candidates are compared on one seed (a third of the cost; the bag
#: steadies every candidate alike), the chosen one is refitted and tested with the bag
FINAL_SEEDS: list[int] = [0, 1, 2]


def _spec(label: str, scale_by: Sequence[str], **params: Any) -> Candidate:
    return Candidate(label, "normalized", {"base": "lightgbm", "group_by": list(_SPEC_GROUPS),
                                           "scale_by": list(scale_by), "seeds": [0], **params})


def bagged(candidate: Candidate) -> Candidate:
    """``candidate`` with the final seed bag: what the preset trains and the test scores."""
    return replace(candidate, params={**candidate.params, "seeds": list(FINAL_SEEDS)})


_WITH_GEN = [*_SPEC_LAW[:2], "cpu_generation", *_SPEC_LAW[2:]]
#: what the SPEC selection chooses among: the previous default (a power law with a generation term), the
#: law without it (a new generation then gets no extrapolated step, only what the trees saw), the law by
#: processor family (a new SKU of a known family starts from its own family's law: the physics-first
#: "previous generation scaled by its spec ratios"), the trees' capacity, and monotone constraints
SPEC_CANDIDATES: tuple[Candidate, ...] = (
    _spec("law with generation (previous default)", _WITH_GEN),
    _spec("law without generation", _SPEC_LAW),
    _spec("law without generation, per family", _SPEC_LAW, group_by=[*_SPEC_GROUPS, "family_code"]),
    _spec("law without generation, 31 leaves", _SPEC_LAW, num_leaves=31),
    _spec("law with generation, monotone", _WITH_GEN, monotone=SCORE_RISES_WITH,
          monotone_constraints_method="advanced"),
    _spec("law without generation, monotone", _SPEC_LAW, monotone=SCORE_RISES_WITH,
          monotone_constraints_method="advanced"),
    _spec("law without generation, monotone per core", _SPEC_LAW, monotone=SCORE_RISES_WITH_PER_CORE,
          monotone_constraints_method="advanced"),
    _spec("law without generation, monotone per core and cores", _SPEC_LAW, monotone=SCORE_RISES_WITH_CORES,
          monotone_constraints_method="advanced"),
    # round C1 (issue 17, a CPU generation step): the generation term again, now beside the per-core
    # constraints; the same per processor family (each family's own step per generation, a new family falls
    # back to its (suite, vendor) law); and no extrapolated step, but the trees' ratio may not fall with the
    # generation (a new generation gets at least the latest one's ratio)
    _spec("law with generation, monotone per core", _WITH_GEN, monotone=SCORE_RISES_WITH_PER_CORE,
          monotone_constraints_method="advanced"),
    _spec("law with generation per family, monotone per core", _WITH_GEN, group_by=[*_SPEC_GROUPS, "family_code"],
          monotone=SCORE_RISES_WITH_PER_CORE, monotone_constraints_method="advanced"),
    _spec("law without generation, monotone per core and generation", _SPEC_LAW,
          monotone=SCORE_RISES_WITH_GENERATION, monotone_constraints_method="advanced"),
)
#: round C1's exploratory candidate, added after the selection above had run (so outside it, and no preset):
#: the chosen law with a new-generation step learned on held-out latest generations; ``--generation-step``
#: scores it beside SPEC_CANDIDATES
SPEC_GENERATION_STEP = Candidate("law without generation, monotone per core and generation, learned step",
                                 "normalized", SPEC_CANDIDATES[-1].params, generation_step=True)
#: the candidate ``python -m perfcast.experiments.cpu_selection spec --cutoff 2024`` chose (nested scores in
#: benchmarks/ANALYSIS_cpu.md); configs/spec_cpu2017_future.toml holds it with the seed bag
SPEC_CHOSEN = "law without generation, monotone per core and generation"

_PCDB_NORM = {"group_by": ["benchmark_code", "workload_code"]}
#: what the PerfCastDB selection chooses among (the network's schedule and width, and the trees)
PCDB_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("normalized group_attention", "normalized", {"base": "group_attention", **_PCDB_NORM}),
    Candidate("normalized group_attention, d_model 32", "normalized",
              {"base": "group_attention", "d_model": 32, **_PCDB_NORM}),
    Candidate("normalized rf", "normalized", {"base": "rf", **_PCDB_NORM}),
    Candidate("normalized lightgbm", "normalized", {"base": "lightgbm", "min_child_samples": 5, **_PCDB_NORM}),
    # trees that cannot split: the prediction is the (workload, sub-test)'s geometric mean, the repeat floor
    Candidate("normalized, geometric mean only", "normalized",
              {"base": "lightgbm", "n_estimators": 1, "min_child_samples": 10_000, **_PCDB_NORM}),
)


def spec_base_rows(records: pd.DataFrame) -> pd.DataFrame:
    """SPEC base results without the reference machine's own (score 1 by definition: ``x_suspect``)."""
    keep = (records["variant"] == "base").fillna(False).to_numpy() & ~records["x_suspect"].fillna(False).astype(bool)
    return records[keep.to_numpy()]


def forward_folds(train: pd.DataFrame, n_folds: int = 2) -> list[tuple[int, pd.DataFrame, pd.DataFrame]]:
    """(year Y, rows before Y, rows of Y) for the last ``n_folds`` years of ``train``, latest first.

    Only ``train`` is looked at: the test years cannot enter a fold."""
    years = pd.to_datetime(train[DATE], utc=True).dt.year
    distinct = sorted(years.unique())
    if len(distinct) < n_folds + 1:
        raise ValueError(f"forward folds: {n_folds} fold(s) need {n_folds + 1} training years, the rows span "
                         f"{len(distinct)} ({', '.join(map(str, distinct))}); lower n_folds or move the cutoff")
    return [(int(y), train[(years < y).to_numpy()], train[(years == y).to_numpy()])
            for y in distinct[::-1][:n_folds]]


def _never_seen(fit: pd.DataFrame, val: pd.DataFrame) -> np.ndarray:
    return ~val["device_name"].isin(set(fit["device_name"])).to_numpy()


def fit_predict(candidate: Candidate, fit: pd.DataFrame, val: pd.DataFrame) -> np.ndarray:
    """The candidate fitted on ``fit``'s scores, its predictions of ``val``."""
    model = make_model(candidate.model, "cpu_bench", ["score"], candidate.params)
    if candidate.generation_step:
        model.set_params(model__estimator=GenerationStep(model.named_steps["model"].estimator))
    model.fit(fit, fit[["score"]])
    return np.asarray(model.predict(val), dtype="float64").ravel()


def spec_score(candidate: Candidate, fit: pd.DataFrame, val: pd.DataFrame) -> dict[str, float]:
    """Mean APE on every validation row and on the rows of processors ``fit`` never had."""
    pred, y, unseen = fit_predict(candidate, fit, val), val["score"].to_numpy(dtype="float64"), _never_seen(fit, val)
    never_seen = metrics.mape(y[unseen], pred[unseen]) if unseen.any() else np.nan
    return {"all": metrics.mape(y, pred), "never_seen": never_seen, "rows": float(len(val)),
            "never_seen_rows": float(unseen.sum())}


def criterion(scores: dict[str, float]) -> float:
    """What the selection minimises per fold: the two goals of the issue (all, never-seen) weighed alike."""
    return float(np.nanmean([scores["all"], scores["never_seen"]]))


@dataclass
class Selection:
    """Every candidate's nested scores, per fold, and the chosen one."""

    selected_on: str
    folds: dict[str, dict[str, dict[str, float]]]  # candidate label -> fold name -> scores
    chosen: str

    def mean(self, label: str) -> float:
        return float(np.mean([criterion(s) for s in self.folds[label].values()]))


def select_spec(train: pd.DataFrame, candidates: Sequence[Candidate] = SPEC_CANDIDATES, n_folds: int = 2,
                cache: dict[tuple[str, int], dict[str, float]] | None = None, log: Any = None) -> Selection:
    """Choose among ``candidates`` by forward-chaining over the last ``n_folds`` years of ``train`` only.

    ``cache`` (label, year) -> scores lets two cutoffs share the folds they have in common (a fold is the
    same fit whatever cutoff it is nested in)."""
    cache = {} if cache is None else cache
    folds = forward_folds(train, n_folds)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for cand in candidates:
        for year, fit, val in folds:
            if (cand.label, year) not in cache:
                start = time.perf_counter()
                cache[(cand.label, year)] = spec_score(cand, fit, val)
                if log:
                    got = cache[(cand.label, year)]
                    log(f"  {cand.label} | validate {year}: {got['all']:.2%} all, {got['never_seen']:.2%} "
                        f"never-seen ({time.perf_counter() - start:.0f} s)")
            table.setdefault(cand.label, {})[f"{year} (fit < {year})"] = cache[(cand.label, year)]
    where = ", ".join(f"validate {y} (fit < {y})" for y, _, _ in folds)
    sel = Selection(f"forward-chaining inside the training years: {where}", table, "")
    sel.chosen = min(table, key=sel.mean)
    return sel


def spec_report(rows: pd.DataFrame, cutoffs: Sequence[int], candidates: Sequence[Candidate] = SPEC_CANDIDATES,
                n_folds: int = 2, log: Any = None) -> list[dict[str, Any]]:
    """Per cutoff: the nested selection on the training years, then the chosen candidate's test score."""
    by_label = {c.label: c for c in candidates}
    cache: dict[tuple[str, int], dict[str, float]] = {}
    out = []
    for cutoff in cutoffs:
        train, test = future_split(rows, cutoff=f"{cutoff}-01-01")
        sel = select_spec(train, candidates, n_folds, cache, log)
        start = time.perf_counter()
        final = bagged(by_label[sel.chosen])
        test_scores = spec_score(final, train, test)
        if log:
            log(f"cutoff {cutoff}: chose {sel.chosen!r}; test {test_scores['all']:.2%} all, "
                f"{test_scores['never_seen']:.2%} never-seen ({time.perf_counter() - start:.0f} s)")
        out.append({"cutoff": cutoff, **asdict(sel), "nested": {k: sel.mean(k) for k in sel.folds},
                    "params": final.params, "test": test_scores})
    return out


# =========================================================================================== PerfCastDB
def pcdb_score(candidate: Candidate, fit: pd.DataFrame, val: pd.DataFrame, seed: int) -> np.ndarray:
    """Absolute percentage errors of ``candidate`` (seeded) on ``val``."""
    params = {**candidate.params, "random_state": seed}
    model = make_model(candidate.model, "cpu_bench", ["score"], params).fit(fit, fit[["score"]])
    return metrics.ape(val["score"], np.asarray(model.predict(val), dtype="float64").ravel())


def pcdb_interval(candidate: Candidate, train: pd.DataFrame, test: pd.DataFrame, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction, lo, hi) of ``test``: a 90 % interval calibrated on held-out repeats of the training rows
    (5 random folds), the kind of row the outer test holds; hardware-configuration folds would hold out whole
    workloads whose unit no model can know, and give every row a useless +-100 % interval."""
    model = ConformalRegressor(make_model(candidate.model, "cpu_bench", ["score"],
                                          {**candidate.params, "random_state": seed}),
                               cv=KFold(5, shuffle=True, random_state=seed)).fit(train, train[["score"]])
    pred, lo, hi = (np.asarray(a, dtype="float64").reshape(len(test), -1)[:, 0]
                    for a in model.predict_with_interval(test))
    return pred, lo, hi


def pcdb_report(rows: pd.DataFrame, seeds: int = 3, candidates: Sequence[Candidate] = PCDB_CANDIDATES,
                log: Any = None) -> list[dict[str, Any]]:
    """Per outer seed: held-out repeats as the test, and the same split again inside its training rows as the
    selection; the chosen candidate is scored once on the outer test rows."""
    by_label = {c.label: c for c in candidates}
    out = []
    for seed in range(seeds):
        train, test = random_split(rows, seed=seed)
        fit, val = random_split(train, seed=seed + 1000)
        nested = {c.label: float(np.mean(pcdb_score(c, fit, val, seed))) for c in candidates}
        chosen = min(nested, key=nested.__getitem__)
        pred, lo, hi = pcdb_interval(by_label[chosen], train, test, seed)
        y, mean = test["score"].to_numpy(dtype="float64"), group_mean(train, test, ["benchmark", "subtest"], "score")[0]
        seen = np.isfinite(mean)  # the per-(workload, sub-test) mean exists only for trained sub-tests
        test_scores = {"all": metrics.mape(y, pred), "median": metrics.median_ape(y, pred), "rows": len(test),
                       "seen_rows": int(seen.sum()), "seen": metrics.mape(y[seen], pred[seen]),
                       "workload_mean_seen": metrics.mape(y[seen], mean[seen]),
                       "coverage": metrics.coverage(y, lo, hi), "width": metrics.mean_width(lo, hi),
                       "width_seen": metrics.mean_width(lo[seen], hi[seen])}
        if log:
            log(f"seed {seed}: chose {chosen!r} (nested {nested[chosen]:.2%}); test {test_scores['all']:.2%}, on "
                f"the {int(seen.sum())} rows of trained sub-tests {test_scores['seen']:.2%} (their mean "
                f"{test_scores['workload_mean_seen']:.2%}); 90% interval covers {test_scores['coverage']:.1%}, "
                f"width {test_scores['width']:.1%} ({test_scores['width_seen']:.1%} on trained sub-tests)")
        out.append({"seed": seed, "selected_on": f"random 20 % of the outer training rows (seed {seed + 1000})",
                    "nested": nested, "chosen": chosen, "params": by_label[chosen].params, "test": test_scores})
    return out


def spec_markdown(result: list[dict[str, Any]]) -> str:
    """Per cutoff: every candidate's nested scores per fold (all / never-seen) and mean, the chosen one in bold
    with its test score beside."""
    out = []
    for run in result:
        folds = list(next(iter(run["folds"].values())))
        out += [f"Cutoff {run['cutoff']}: selected on {run['selected_on'].split(': ', 1)[1]}.", "",
                "| candidate | " + " | ".join(f"validate {f}" for f in folds) + " | nested | test (bag of 3) |",
                "|---|" + "---|" * (len(folds) + 2)]
        for label, per_fold in run["folds"].items():
            cells = [f"{s['all']:.2%} / {s['never_seen']:.2%}" for s in per_fold.values()]
            test = (f"{run['test']['all']:.2%} / {run['test']['never_seen']:.2%}" if label == run["chosen"] else "")
            name = f"**{label}**" if label == run["chosen"] else label
            out.append(f"| {name} | " + " | ".join(cells) + f" | {run['nested'][label]:.2%} | {test} |")
        out.append("")
    return "\n".join(out)


def pcdb_markdown(result: list[dict[str, Any]]) -> str:
    """Per outer seed: the candidates' nested mean APE, the chosen one's test score, the per-(workload,
    sub-test) mean on the same rows, and the interval's coverage and width."""
    labels = list(result[0]["nested"])
    out = ["| outer seed | " + " | ".join(labels) + " | chosen: test (trained sub-tests) | workload mean "
           "(trained sub-tests) | 90 % coverage | width (trained sub-tests) |", "|---|" + "---|" * (len(labels) + 4)]
    for run in result:
        t = run["test"]
        cells = [f"**{run['nested'][k]:.2%}**" if k == run["chosen"] else f"{run['nested'][k]:.2%}" for k in labels]
        out.append(f"| {run['seed']} | " + " | ".join(cells) + f" | {t['all']:.2%} ({t['seen']:.2%}) | "
                   f"{t['workload_mean_seen']:.2%} | {t['coverage']:.1%} | {t['width']:.1%} ({t['width_seen']:.1%}) |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["spec", "perfcastdb"])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--cutoff", type=int, action="append", help="SPEC test cutoff year (repeatable; default 2024)")
    parser.add_argument("--folds", type=int, default=2, help="SPEC forward folds inside the training years")
    parser.add_argument("--seeds", type=int, default=3, help="PerfCastDB outer splits")
    parser.add_argument("--json", type=Path, help="write the selections here")
    parser.add_argument("--seed", type=int, default=0, help="SPEC: the one seed each candidate is compared on")
    parser.add_argument("--generation-step", action="store_true",
                        help="SPEC: score round C1's exploratory learned-step candidate beside the others")
    args = parser.parse_args(argv)
    with workspace(args.data_root) as ws:
        if args.dataset == "spec":
            rows = spec_base_rows(ws.records("spec-cpu2017", "cpu_bench"))
            cands = [replace(c, params={**c.params, "seeds": [args.seed]}) for c in
                     ((*SPEC_CANDIDATES, SPEC_GENERATION_STEP) if args.generation_step else SPEC_CANDIDATES)]
            result = spec_report(rows, args.cutoff or [2024], cands, n_folds=args.folds,
                                 log=lambda s: print(s, flush=True))
        else:
            result = pcdb_report(ws.records("perfcastdb-sample", "cpu_bench"), args.seeds,
                                 log=lambda s: print(s, flush=True))
    print((spec_markdown if args.dataset == "spec" else pcdb_markdown)(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
