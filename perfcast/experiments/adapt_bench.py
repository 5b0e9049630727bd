"""Adaptation protocols: a trained model corrected for an unseen GPU from K measurements of it.

Why this protocol is honest: for each GPU left out, the base model is fitted on the other GPUs only (the
left-out one is known to it by its spec sheet). The probe plan (:func:`perfcast.perf_probe.plan.adaptation_plan`)
then picks K configurations from the list of shapes the GPU's table holds, reading only configuration
columns (never a latency); those K rows are revealed, the model is adapted on them
(:mod:`perfcast.models.estimators.adapt`), and every other row of that GPU is the test set. K = 0 is the base model
(or, for a GPU with a family sibling in training, the unseen-GPU default: :mod:`~perfcast.experiments.adapt_k0`).
The adaptation is offered the nearest training GPU's measurements as a second starting point (a sibling's
latencies beat any model on its siblings), and keeps it only when it cross-validates better on the K rows.

Baselines on the same rows: ``nearest GPU × K-median``, the latency measured for the same configuration on
the nearest training GPU by spec sheet (:func:`~perfcast.experiments.baselines.nearest_devices`) times the K rows'
median ratio of measured to copied latency; and ``K rows alone``, a small hybrid model (roofline × learned
efficiency) fitted on the K rows only.

Cost: the base model is fitted once per left-out GPU (on the preset's ``train_rows`` rows drawn with the run's seed;
every result says so) and reused for every K, and the base features and predictions of the GPU's rows are
computed once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval.protocols import neusight_ood_split, unseen_hardware_split
from perfcast.experiments.adapt_k0 import (K0_KEY, START, SiblingK0, k0_choice, pick_k0, pick_start, sibling_start,
                                           take_k0, take_start, with_starts)
from perfcast.experiments.baselines import CONFIG_KEYS, PHASE_LABEL, copy_from_devices, nearest_devices
from perfcast.experiments.presets import budget_rows, choose, sample_rows
from perfcast.experiments.results import ADAPT_COVERAGE_GOALS, Goal, Result, RunConfig, Workspace
from perfcast.experiments.scoring import macro_mean, score
from perfcast.models import make_model
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.models.estimators.adapt_donors import StartTable
from perfcast.models.estimators.adapt_krige import krige_rule
from perfcast.models.estimators.donor_mix import DonorTable
from perfcast.models.uncertainty.zero_shot import (
    OBJECTIVES,
    PRESET,
    CrossFittedScores,
    Variant,
    describe,
    objective_of,
    select_variants,
    zero_shot_variants,
)
from perfcast.perf_probe.plan import adaptation_plan, random_share_for, represented
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal, model_input

#: the K-rows-alone baseline: a small hybrid, as strongly regularised as the adaptation's shape term
ALONE_PARAMS: dict[str, Any] = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 8, "min_child_samples": 5,
                                "reg_lambda": 5.0}
NEAREST_K, ALONE = "nearest GPU × K-median", "K rows alone"
#: the issue's goals (mean over left-out GPUs) per K and kernel family
GOALS: dict[tuple[str, int], float] = {("gemm", 128): 0.05, ("gemm", 512): 0.038, ("attention", 128): 0.06,
                                       ("attention", 512): 0.045, ("gemm", 0): 0.12, ("attention", 0): 0.15}
#: NeuSight's bmm/linear configuration keys
NEUSIGHT_KEYS: tuple[str, ...] = ("op", "m", "n", "k", "batch", "dtype")
#: one way of drawing an adapted model's intervals: (Mondrian threshold, None: pooled; groups by kernel kind rather
#: than attention phase; scale of the conformity scores, one number or per attention phase ((label, scale), ...)),
#: and, as a fourth element True when present, the scores weighted for the plan's covariate shift; see
#: ``Adaptation.regrouped``
Interval = tuple[int | None, bool, float | tuple[tuple[str, float], ...]] | tuple[
    int | None, bool, float | tuple[tuple[str, float], ...], bool]
#: the attention phases' Mondrian labels (``group_labels`` of ``INTERVAL_GROUPS``) under the parts' names
PHASE_GROUPS: dict[str, str] = {"context": "none", "generation": "is_decode"}
#: one adaptation variant of a device: (donor setting, interval variant; at K = 0 a zero-shot one)
Key = tuple[str, Interval | Variant]
#: the coverage the adapted intervals aim at (the threshold is chosen for it, see :func:`select_settings`)
LEVEL = 0.9
#: the issue's band for every GPU's K = 0 coverage: the zero-shot interval variant is chosen for it
K0_BAND = ADAPT_COVERAGE_GOALS[0]


def copy_scaled(train: pd.DataFrame, revealed: pd.DataFrame, test: pd.DataFrame, donors: Sequence[str],
                keys: Sequence[str]) -> np.ndarray:
    """The donors' latency for each test row times the median measured/copied ratio over the ``revealed`` rows
    (ratio 1 without any; NaN where no donor measured the configuration)."""
    ratio = np.array([])
    if len(revealed):
        ratio = revealed["runtime_ms"].to_numpy(dtype="float64") / copy_from_devices(train, revealed, donors, keys)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return copy_from_devices(train, test, donors, keys) * (float(np.median(ratio)) if len(ratio) else 1.0)


def alone(task: str, revealed: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The K-rows-alone baseline's predictions (NaN for K = 0: nothing to learn from)."""
    if len(revealed) < 2:
        return np.full(len(test), np.nan)
    model = make_model("hybrid", task, ["runtime_ms"], ALONE_PARAMS).fit(revealed, revealed[["runtime_ms"]])
    return np.asarray(model.predict(test), dtype="float64").ravel()


def donor_table(base: Any, train: pd.DataFrame, rows: pd.DataFrame, donors: Sequence[str], keys: Sequence[str],
                task: str, errors: bool) -> DonorTable:
    """Every training GPU's measured latencies (``donors``, nearest first) for the configurations of ``rows``,
    with ``errors``, the base model's error on each (only the configurations asked for are read: a GPU's
    table is 100,000 rows)."""
    keys = list(keys)
    wanted = rows[keys].drop_duplicates().assign(_hit=True)
    hit = train[keys].merge(wanted, on=keys, how="left")["_hit"].notna().to_numpy()
    found = train[hit & train["device_id"].isin(donors).to_numpy()]
    model = AdaptedModel(base)
    F, pred = model.parts(found) if errors else (model.base.estimator_[0].transform(found), None)
    return DonorTable.build(list(donors), F, found["runtime_ms"].to_numpy(dtype="float64"), task,
                            device_of=found["device_id"].astype(str).to_numpy(), base=pred)


def interval_variants(options: dict[str, Any], phased: bool = False, task: str | None = None) -> list[Interval]:
    """The preset's interval variants: pooled, and per Mondrian group (``group_by``: ``phase`` and/or ``kind``)
    from each of its ``group_rows``, each with every one of its ``score_scales`` (default 1); with ``phased``
    (attention) and the preset's ``phase_scales``, the grouped variants also with every pair of different scales
    for context and generation (after the common-scale variants, which win ties); with ``True`` among the preset's
    ``shift_weighted`` (a list, or a table of lists by ``task``), every variant again weighted for the plan's
    covariate shift, last (the plain ones win ties)."""
    by = [b == "kind" for b in options.get("group_by", ["phase"])]
    scales = [float(s) for s in options.get("score_scales", [1.0])]
    grouped = [(g, k) for k in by for g in options.get("group_rows", [])]
    common = [(g, k, s) for s in scales for g, k in [(None, False), *grouped]]
    if phased and options.get("phase_scales", False):
        common += [(g, k, tuple(zip(PHASE_GROUPS.values(), pair))) for g, k in grouped
                   for pair in product(scales, scales) if pair[0] != pair[1]]
    return common + [(*v, True) for v in common] if True in shift_weighted(options, task) else common


def shift_weighted(options: dict[str, Any], task: str | None) -> list[bool]:
    """The preset's ``shift_weighted`` choices for ``task`` (default: plain only)."""
    offered = options.get("shift_weighted", [False])
    return [bool(v) for v in (offered.get(task, [False]) if isinstance(offered, dict) else offered)]


def adapter_of(base: Any, chosen: dict[str, Any], options: dict[str, Any], task: str, seed: int,
               table: DonorTable | None) -> AdaptedModel:
    """The (unfitted) adaptation of ``base`` one setting of the preset's ``settings`` asks for (``chosen``; its
    floor, if it names none, the preset's ``<task>_floor``), with the donors' ``table``."""
    return AdaptedModel(base, seed=seed, donors=table, mixes=tuple(chosen.get("mixes", ())),
                        shape_donors=bool(chosen.get("shape_donors", False)), smooth=bool(chosen.get("smooth", False)),
                        kind_shapes=bool(chosen.get("kind_shapes", False)),
                        krige=krige_rule(chosen.get("krige"), chosen.get("krige_inputs"), chosen.get("krige_scales"),
                                         task),
                        per_phase=chosen.get("per_phase"), per_phase_stack=bool(chosen.get("per_phase_stack", False)),
                        floor=chosen.get("floor", options.get(f"{task}_floor")),
                        grow_trees=bool(chosen.get("grow_trees", False)))


def adapt_device(protocol: str, task: str, base: Any, train: pd.DataFrame, test: pd.DataFrame, parts: pd.Series,
                 keys: Sequence[str], model_name: str, fit_s: float, seed: int, options: dict[str, Any],
                 zero_shot: CrossFittedScores | None = None, k0_model: SiblingK0 | None = None
                 ) -> dict[tuple[str, int], dict[Key, Result]]:
    """Every K's rows for one left-out device: (part label, K) -> {(setting, interval groups): Result on that
    device's unrevealed rows}, one per donor setting of the preset's ``settings`` and per interval variant
    (:func:`interval_variants`; K from its ``budgets``, at most its ``test_rows`` unrevealed rows scored; the plan
    draws its ``plan_random_share`` of K at random). At K = 0 with ``zero_shot`` (the base's cross-fitted rows), the
    variants are the preset's ``k0_intervals`` (:func:`~perfcast.models.uncertainty.zero_shot.zero_shot_variants`)
    instead. With ``k0_model`` (:mod:`~perfcast.experiments.adapt_k0`), its K = 0 rows too, under ``K0_KEY``, and
    with the preset's ``sibling_start``, every K > 0 variant again adapted from its start, under ``(START, key)``."""
    test_rows = int(options["test_rows"])
    dev = str(test["device_id"].iloc[0])
    test = test.reset_index(drop=True)
    parts = pd.Series(np.asarray(parts), index=test.index)
    candidates = test.drop(columns=["runtime_ms"])  # what a probe knows before measuring: the shapes it can run
    donors = nearest_devices(dev, sorted(train["device_id"].dropna().unique()))
    plans = {}
    for k in options["budgets"]:
        picked = test.index.isin(adaptation_plan(candidates, task, k,
                                                 random_share=random_share_for(options.get("plan_random_share"),
                                                                               task, "plan_random_share")))
        rest = ~picked
        if not rest.any():  # a table no bigger than K: every row revealed, none left to score at this K
            continue
        if rest.sum() > test_rows:  # the same seeded sample of the unrevealed rows for the model and the baselines
            keep = np.random.default_rng(seed).choice(np.flatnonzero(rest), test_rows, replace=False)
            rest = np.isin(np.arange(len(test)), keep)
        plans[k] = (picked, rest)
    weights = {k: represented(candidates, candidates[picked], task) for k, (picked, _) in plans.items()
               if k and True in shift_weighted(options, task)}
    needed = np.logical_or.reduce([p | r for p, r in plans.values()])
    start = time.perf_counter()
    errors = any(m.startswith("error") for c in options["settings"].values() for m in c.get("mixes", ()))
    table = donor_table(base, train, test[needed], donors, keys, task, errors)
    table_s = time.perf_counter() - start
    precomputed = AdaptedModel(base).parts(test)
    tables: list[tuple[str | None, DonorTable, float]] = [(None, table, 0.0)]
    if k0_model is not None and sibling_start(options, task, protocol) and any(options["budgets"]):
        start_pred, start_s = k0_model.point(test[needed])
        tables.append((START, StartTable.of(table, "the unseen-GPU default", precomputed[0][needed], start_pred,
                                            task), start_s))
    out: dict[tuple[str, int], dict[Key, Result]] = {}
    for k, (picked, rest) in plans.items():
        base_rows = {NEAREST_K: copy_scaled(train, test[picked], test[rest], donors, keys)}
        if k:
            base_rows[ALONE] = alone(task, test[picked], test[rest])
        elif k0_model is not None:
            *drawn, k0_s = k0_model(test[rest])
            _score_parts(out, protocol, dev, k, K0_KEY, parts[rest], test.loc[rest, "runtime_ms"], tuple(drawn),
                         base_rows, donors, k0_model, k0_model.choice.name, k0_s)
        for setting, chosen in options["settings"].items():
            if task not in chosen.get("tasks", (task,)):  # a setting offered to some kernel families only
                continue
            for tag, donors_of, start_s in tables if k else tables[:1]:
                start = time.perf_counter()
                adapter = adapter_of(base, chosen, options, task, seed, donors_of)
                adapter.fit(test[picked], parts=tuple(p[picked] for p in precomputed))
                wall = time.perf_counter() - start + fit_s + table_s + start_s
                found = adapter.adaptation_
                held = tuple(p[rest] for p in precomputed)
                pred = adapter.predict_with_interval(test[rest], parts=held)[0]
                k0 = zero_shot_variants(options.get("k0_intervals")) if k == 0 and zero_shot is not None else None
                for variant in k0 or interval_variants(options, phased=task == "attention", task=task):
                    if k0:
                        lo, hi, ood = zero_shot.bounds(variant, held[0], pred, base.calibration_.noise(
                            test[rest], int(rest.sum()))[:, 0], LEVEL)
                    else:
                        least, by_kind, scale, *weighted = variant
                        adapter.adaptation_ = found.regrouped(least, by_kind,
                                                              dict(scale) if isinstance(scale, tuple) else scale,
                                                              weights.get(k) if weighted else None)
                        lo, hi = adapter.interval(test[rest], pred, held)
                    key = (setting, variant) if tag is None else (tag, (setting, variant))
                    _score_parts(out, protocol, dev, k, key, parts[rest], test.loc[rest, "runtime_ms"],
                                 (pred, lo, hi), base_rows, donors, adapter.adaptation_, model_name, wall)
                    if k0 and ood.any():  # the zero-shot OOD rule: a vendor no training GPU has
                        for label in parts.unique():
                            out[(label, k)][key].notes.append(
                                "out of distribution: no training GPU has this GPU's vendor; interval at least the "
                                "largest held-out GPU's cross-fitted quantile")
    return out


def _score_parts(out: dict[tuple[str, int], dict[Key, Result]], protocol: str, dev: str, k: int, key: Key,
                 parts: pd.Series, measured: pd.Series, predicted: tuple[np.ndarray, np.ndarray, np.ndarray],
                 base_rows: dict[str, np.ndarray], donors: Sequence[str], found: Any, model_name: str, wall: float
                 ) -> None:
    """One Result per part (kernel family / phase) of one device's unrevealed rows, into ``out[(part, K)][key]``."""
    pred, lo, hi = predicted
    for label in parts.unique():
        sel = (parts == label).to_numpy()
        target = f"runtime_ms ({label}), K={k}" if label else f"runtime_ms, K={k}"
        extra = [f"nearest GPUs by spec sheet: {', '.join(donors[:3])}",
                 f"correction chosen by cross-validation on the K rows: {found.describe()}"]
        kept = {}
        for n, v in base_rows.items():
            if np.isfinite(v[sel]).any():
                kept[n] = v[sel]
            else:
                extra.append(f"{n}: no training GPU measured these configurations, so no value")
        res = score(protocol, target, dev, measured.to_numpy()[sel], pred[sel],
                    model_name, wall, baselines=kept, interval=(lo[sel], hi[sel]), notes=extra)
        res.probe_budget = k
        out.setdefault((label, k), {})[key] = res


def select_settings(per_device: dict[tuple[str, int], list[dict[Key, Result]]], guard: bool = False,
                    objective: str = OBJECTIVES[0]) -> dict[tuple[str, int], list[Result]]:
    """Per left-out GPU and K, leave-one-GPU-out on the *other* GPUs only (every part, each GPU adapted with its
    own base model and plan), so no GPU's test rows choose its own settings: first the donor setting of least
    mean APE, then, for it, the interval variant (Mondrian groups and score scale) whose coverage is nearest the
    level (mean over the other GPUs and parts of |coverage - level|; at K = 0, :func:`select_variants`, with the
    preset's intervals as its ``guard`` when ``guard``, and its ``objective``). One candidate: kept as is. Choices
    and nested scores go in the notes. Variants weighted for the plan's shift are candidates for a GPU only where a
    second leave-one-GPU-out over its training GPUs finds them better (:func:`_offers_weighted`)."""
    out: dict[tuple[str, int], list[Result]] = {}
    for k in sorted({k for _, k in per_device}):
        labels = [key for key in per_device if key[1] == k]
        variants = list(per_device[labels[0]][0])
        names = list(dict.fromkeys(s for s, _ in variants))
        thresholds = list(dict.fromkeys(g for _, g in variants))
        devices = [r[variants[0]].device for r in per_device[labels[0]]]
        err = {(d, v): np.mean([per_device[key][i][v].ours for key in labels]) for i, d in enumerate(devices)
               for v in variants}
        miss = {(d, v): np.mean([abs(per_device[key][i][v].coverage - LEVEL) for key in labels])
                for i, d in enumerate(devices) for v in variants}
        for i, dev in enumerate(devices):
            others = [d for d in devices if d != dev] or [dev]
            nested = {s: float(np.mean([err[(d, (s, thresholds[0]))] for d in others])) for s in names}
            chosen = min(names, key=lambda s: (round(nested[s], 12), names.index(s)))
            among, why_grid = _offers_weighted(thresholds, others, chosen, miss)
            off = {g: float(np.mean([miss[(d, (chosen, g))] for d in others])) for g in among}
            group = min(among, key=lambda g: (round(off[g], 12), among.index(g)))
            if isinstance(group[0], str):  # K = 0, the base's zero-shot variants: least of the others out of band
                cov = {(d, key, g): per_device[key][j][(chosen, g)].coverage for j, d in enumerate(devices)
                       for key in labels for g in thresholds}
                picked, why = select_variants(cov, {d: labels for d in devices}, thresholds, LEVEL, K0_BAND,
                                              PRESET if guard and PRESET in thresholds else None, objective)
                group = picked[dev]
            for key in labels:
                res = per_device[key][i][(chosen, group)]
                if len(names) > 1:
                    res.notes.append(f"donor-mix setting chosen by leave-one-GPU-out on the other GPUs: {chosen} "
                                     f"(their mean APE {100 * nested[chosen]:.2f}%; "
                                     + ", ".join(f"{s} {100 * v:.2f}%" for s, v in nested.items()) + ")")
                if len(thresholds) > 1:
                    best = sorted(off, key=lambda g: off[g])[:3]
                    res.notes.append("intervals chosen by leave-one-GPU-out on the other GPUs' coverage: "
                                     + _threshold(group) + (f" (theirs: {why[dev]}; " if isinstance(group[0], str)
                                                            else " (") + "their mean |coverage - 90%|, the best three: "
                                     + ", ".join(f"{_threshold(g)} {100 * off[g]:.2f} pt" for g in best) + ")")
                if why_grid:
                    res.notes.append(why_grid)
                out.setdefault(key, []).append(res)
    return {key: out[key] for key in per_device}


def _offers_weighted(variants: list[Any], others: list[str], setting: str, miss: dict[tuple[str, Key], float]
                     ) -> tuple[list[Any], str]:
    """(the interval variants a GPU chooses among, a note): with variants weighted for the plan's shift among
    ``variants``, a second leave-one-GPU-out over the GPU's training GPUs ``others``: for each of them g, the
    variant of least mean |coverage - level| over the others but g, once among the plain variants and once among
    all, scored by g's own miss; all are offered only if their mean over g is smaller (ties: plain). The GPU's own
    rows never enter. Without weighted variants (or with fewer than 3 GPUs): ``variants``, no note."""
    plain = [v for v in variants if isinstance(v[0], str) or len(v) < 4]
    if len(plain) == len(variants) or len(others) < 2:
        return variants, ""

    def scored(grid: list[Any]) -> float:
        total = 0.0
        for g in others:
            rest = [d for d in others if d != g]
            pick = min(grid, key=lambda v: (round(float(np.mean([miss[(d, (setting, v))] for d in rest])), 12),
                                            grid.index(v)))
            total += miss[(g, (setting, pick))]
        return total / len(others)

    inner = {"plain": scored(plain), "weighted": scored(variants)}
    use = round(inner["weighted"], 12) < round(inner["plain"], 12)
    return (variants if use else plain), (
        f"intervals weighted for the plan's shift {'offered' if use else 'not offered'}: a second leave-one-GPU-out "
        f"over the training GPUs finds their mean |coverage - 90%| {100 * inner['weighted']:.2f} pt with them, "
        f"{100 * inner['plain']:.2f} pt without")


def _threshold(variant: Interval) -> str:
    if isinstance(variant[0], str):  # a zero-shot variant (width rule, groups, scale, vendor matching)
        return describe(variant)
    rows, by_kind, scale, *weighted = variant
    text = "pooled" if rows is None else f"per {'kernel kind' if by_kind else 'phase'} from {rows} rows"
    text += ", weighted for the plan's shift" if weighted else ""
    if isinstance(scale, tuple):
        named = {label: part for part, label in PHASE_GROUPS.items()}
        return f"{text}, scores " + ", ".join(f"{named[label]} x {s:g}" for label, s in scale)
    return text if scale == 1.0 else f"{text}, scores x {scale:g}"


def summarize(protocol: str, family: str, per_device: dict[tuple[str, int], list[Result]], common: Sequence[str]
              ) -> list[Result]:
    """Per (part, K): the mean over devices (with the issue's goal) followed by the per-device rows. A device scored
    at some K of a part but not at this one (its table no bigger than K: no row left to score) is named in the mean's
    notes, so a mean over fewer GPUs says so."""
    rows = []
    scored: dict[str, set[str]] = {}
    for (label, _), results in per_device.items():
        scored.setdefault(label, set()).update(r.device for r in results)
    for (label, k), results in per_device.items():
        absent = sorted(scored[label] - {r.device for r in results})
        left = [f"not scored at K = {k} (no row left once K rows are revealed): {', '.join(absent)}"] if absent else []
        mean = macro_mean(results, "every GPU left out", notes=[*common, *left])
        mean.probe_budget, mean.model = k, " + ".join(dict.fromkeys(r.model for r in results))
        goal = GOALS.get((family, k))
        if goal is not None:
            mean.goal = Goal(goal)
        rows.append(mean)
        rows.extend(results)
    return rows


def _collect(per_device: dict[tuple[str, int], list[dict[Key, Result]]], found: dict[tuple[str, int], dict[Key, Result]]
             ) -> None:
    for key, res in found.items():
        per_device.setdefault(key, []).append(res)


def aiconfigurator_adapt(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Leave one aiconfigurator GPU out, adapt on K planned rows of it, score its other rows (GEMM, then
    context and generation attention; only those of ``cfg.parts`` when it names some)."""
    protocol = "aiconfigurator-adapt"
    choice = choose(protocol, cfg.model)
    name, params, options = choice.name, choice.params, choice.options
    rows: list[Result] = []
    for task in [t for t in ("gemm", "attention") if not cfg.parts or t in cfg.parts]:
        k0, k0_rows, starts = k0_choice(options, task, protocol), {}, {}
        intervals = choice.config.intervals if task == choice.config.task else IntervalsConfig(
            **options.get(f"{task}_intervals", {}))
        config = choice.config.model_copy(update={"task": task, "intervals": intervals})
        records = ws.records("aiconfigurator", task)
        per_device: dict[tuple[str, int], list[dict[Key, Result]]] = {}
        pools = []
        for dev in sorted(records["device_id"].dropna().unique()):
            train, test = unseen_hardware_split(records, test_devices=[dev])
            fit_rows, fit_params, _ = budget_rows(name, params, train, choice.train_rows, cfg.seed)
            pools.append(len(train))
            start = time.perf_counter()
            base = fit_conformal(config, fit_rows, fit_params, seed=cfg.seed)
            fit_s = time.perf_counter() - start
            cross = CrossFittedScores.of(base, model_input(fit_rows, task), fit_rows["runtime_ms"].to_numpy(
                dtype="float64"), fit_rows["device_id"].astype(str).to_numpy()) if "k0_intervals" in options else None
            parts = (test["phase"].map(PHASE_LABEL).fillna(test["phase"]).astype(str) if task == "attention"
                     else pd.Series("", index=test.index))
            found = adapt_device(protocol, task, base, train, test, parts, CONFIG_KEYS[task], name, fit_s, cfg.seed,
                                 options, cross, SiblingK0.of(k0, dev, train, cfg.seed))
            take_k0(found, k0_rows)
            take_start(found, starts)
            _collect(per_device, found)
        common = [f"per left-out GPU: the base model ({name}, {params.get('n_estimators', 'default')} trees) fitted "
                  f"once on {choice.train_rows:,} rows drawn (seed {cfg.seed}) from the other GPUs' "
                  f"{min(pools):,}-{max(pools):,} and reused for every K",
                  "K rows picked by the probe plan from every configuration of the GPU (latencies unread); the "
                  f"test set: {options['test_rows']:,} rows drawn (seed {cfg.seed}) from the rest of the GPU's rows"]
        guard = bool((options.get("k0_intervals") or {}).get("guard", False))
        objective = objective_of(options.get("k0_intervals"))
        alt = select_settings(with_starts(per_device, starts), guard, objective) if starts else None
        rows.extend(summarize(protocol, task, pick_k0(pick_start(select_settings(per_device, guard, objective), alt,
                                                                  sorted(starts)), k0_rows), common))
    return rows


def neusight_adapt(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """NeuSight's unseen GPUs (bmm and linear): the neusight-ood model adapted on K planned rows of each."""
    protocol = "neusight-adapt"
    choice = choose(protocol, cfg.model)
    train, test = neusight_ood_split(ws.records("neusight", "gemm"))
    fit_rows, note = sample_rows(train, choice.train_rows, cfg.seed)
    start = time.perf_counter()
    model = choice.fit(fit_rows, cfg.seed)
    fit_s = time.perf_counter() - start
    per_device: dict[tuple[str, int], list[dict[Key, Result]]] = {}
    for dev in sorted(test["device_id"].dropna().unique()):
        rows_dev = test[(test["device_id"] == dev).to_numpy()]
        _collect(per_device, adapt_device(protocol, "gemm", model, train, rows_dev, rows_dev["op"].astype(str),
                                          NEUSIGHT_KEYS, choice.name, fit_s, cfg.seed, choice.options))
    common = ["the neusight-ood default model without its seed bag, fitted once on NeuSight's training GPUs"
              + (f" ({note})" if note else "") + ", adapted per unseen GPU"]
    return summarize(protocol, "gemm", select_settings(per_device), common)
