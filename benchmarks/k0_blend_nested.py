"""Round 16d, stage 1: is a K = 0 blend with the nearest training GPU's measured latency worth building?

    PYTHONPATH=. nice -n 10 python benchmarks/k0_blend_nested.py gemm --json benchmarks/results_k0blend_nested_gemm.json

For each left-out GPU L of the aiconfigurator-adapt protocol (its split, its preset's base model fitted as the
protocol fits it), the blend ``log ŷ = (1 - w) log f(x) + w log y_near(x)`` is scored on the base's cross-fitted
training rows only: each entry is predicted by the fold model that did not see its device D, and ``y_near`` is the
latency measured for the same configuration on D's nearest OTHER training GPU by spec sheet (L is never among
them); rows that GPU did not measure keep f(x). Per part (GEMM; attention context and generation) the nested mean
APE (per training GPU, then the mean over the training GPUs) is reported for every w of the grid, over two
populations: the training GPUs without a family sibling among the run's other training GPUs (``lone``: those the
blend would serve; the primary one) and all training GPUs (``all``). w is chosen on ``lone`` (ties: the smaller).
The left-out GPU's own test rows (the protocol's K = 0 sample) at the chosen w are printed as a report only.
With λ = 1 the blend also carries the base's ratio: ``ŷ = f(x) · (y_near(x) / f(x, near))^w``, where
``f(x, near)`` is the row's prediction with the nearest GPU's spec sheet; scored with the fold models refitted as the
calibration fitted them, D paired with its nearest GPU among its fold model's fitting GPUs (at test, the final model
has fitted the left-out GPU's nearest too). ``lambda0_any`` copies, as the protocol's nearest-GPU baseline does, the
nearest GPU that measured the configuration. The criterion (λ = 0 with the nearest GPU only; the other two were
added after its result, reported): benchmarks/ANALYSIS_adapt.md, round 16d. ``--summary`` prints its verdict.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.baselines import CONFIG_KEYS, PHASE_LABEL, copy_from_devices, nearest_devices, \
    sibling_devices
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import Workspace
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.training.config import IntervalsConfig
from perfcast.records.schema import columns
from perfcast.training.train import fit_conformal, model_input

PROTOCOL = "aiconfigurator-adapt"
WEIGHTS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
#: the blends scored: λ = 0 with the nearest GPU's latency (the criterion's), λ = 1, and λ = 0 with the latency of
#: the nearest GPU that measured the configuration (``lambda0_any``, as the protocol's nearest-GPU baseline copies)
VARIANTS: tuple[str, ...] = ("lambda0", "lambda1", "lambda0_any")


def blend(pred: np.ndarray, near: np.ndarray, w: float) -> np.ndarray:
    """The geometric blend of the base's prediction and the nearest GPU's latency (the base where none)."""
    ok = np.isfinite(near) & (near > 0)
    out = pred.copy()
    out[ok] = np.exp((1.0 - w) * np.log(pred[ok]) + w * np.log(near[ok]))
    return out


def part_labels(rows: pd.DataFrame, task: str) -> np.ndarray:
    """Each row's protocol part: '' for GEMM, the attention phase's name otherwise."""
    if task != "attention":
        return np.full(len(rows), "", dtype=object)
    return rows["phase"].map(PHASE_LABEL).fillna(rows["phase"]).astype(str).to_numpy()


def cross_fitted(base: Any, fit_rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index into ``fit_rows``, fold prediction, fold number) of every entry whose device its fold model did
    not see."""
    cf = base.cross_fitted_
    devices = fit_rows["device_id"].astype(str).to_numpy()
    rows, preds, folds, start = [], [], [], 0
    for i, (fit_idx, held_idx) in enumerate(cf.folds):
        part = slice(start, start + len(held_idx))
        unseen = ~np.isin(devices[held_idx], devices[fit_idx])
        rows.append(cf.row[part][unseen])
        preds.append(cf.pred[part, 0][unseen])
        folds.append(np.full(int(unseen.sum()), i))
        start += len(held_idx)
    row, pred, fold = np.concatenate(rows), np.concatenate(preds), np.concatenate(folds)
    keep = np.isfinite(pred) & (pred > 0)
    return row[keep], pred[keep], fold[keep]


def as_device(model: Any, rows: pd.DataFrame, donor: pd.DataFrame, task: str) -> np.ndarray:
    """``model``'s prediction of ``rows`` run on ``donor``'s device (its first row's hardware columns)."""
    swapped = rows.copy()
    for c in [c for c in columns(task) if columns(task)[c].group == "hardware" and c in rows.columns]:
        swapped[c] = donor[c].iloc[0]
    return np.asarray(model.predict(model_input(swapped, task)), dtype="float64").reshape(len(rows), -1)[:, 0]


def ratio_blend(pred: np.ndarray, near: np.ndarray, near_pred: np.ndarray, w: float) -> np.ndarray:
    """λ = 1: the base's prediction times (the nearest GPU's latency / the base's prediction of it) ** w, i.e.
    the geometric blend with ``near`` times the base's ratio f(x, dev) / f(x, near) (the base where no latency)."""
    ok = np.isfinite(near) & (near > 0) & np.isfinite(near_pred) & (near_pred > 0)
    out = pred.copy()
    out[ok] = pred[ok] * np.exp(w * (np.log(near[ok]) - np.log(near_pred[ok])))
    return out


def _choice(per_gpu: dict[str, list[float]], lone: list[str], weights: tuple[float, ...]) -> dict[str, Any]:
    """The two populations' nested means per w, the w chosen on ``lone`` and its gain over w = 0 (pt)."""
    means = {name: np.mean([per_gpu[d] for d in among], axis=0).tolist() if among else None
             for name, among in (("lone", lone), ("all", list(per_gpu)))}
    pick = int(np.argmin(means["lone"])) if means["lone"] else 0
    return {"per_gpu": per_gpu, "mean": means, "chosen_w": weights[pick],
            "gain_pt": 100.0 * (means["lone"][0] - means["lone"][pick]) if means["lone"] else 0.0,
            "all_chosen_w": weights[int(np.argmin(means["all"]))]}


def nested(task: str, base: Any, train: pd.DataFrame, fit_rows: pd.DataFrame, weights: tuple[float, ...]
           ) -> dict[str, Any]:
    """Per part: every training GPU's cross-fitted mean APE at each w and the two populations' means, for λ = 0
    (``lambda0``: D paired with its nearest other training GPU; ``lambda0_any``: with the nearest one that measured
    the configuration) and λ = 1 (``lambda1``: D paired with its nearest
    GPU among its fold model's fitting GPUs, as the final model has fitted the left-out GPU's nearest; the fold
    models refitted as the base's calibration fitted them)."""
    row, pred, fold = cross_fitted(base, fit_rows)
    rows = fit_rows.iloc[row].reset_index(drop=True)
    y = rows["runtime_ms"].to_numpy(dtype="float64")
    dev = rows["device_id"].astype(str).to_numpy()
    labels = part_labels(rows, task)
    gpus = sorted(set(dev))
    near, near_any, near_f, near_pred = (np.full(len(rows), np.nan) for _ in range(4))
    info: dict[str, Any] = {d: {"nearest": nearest_devices(d, gpus)[0], "lone": not sibling_devices(d, gpus)}
                            for d in gpus}
    X, Y = model_input(fit_rows, task), fit_rows[["runtime_ms"]].astype("float64")
    devices = fit_rows["device_id"].astype(str).to_numpy()
    for i, (fit_idx, _) in enumerate(base.cross_fitted_.folds):
        model = clone(base.estimator).fit(X.iloc[fit_idx], Y.iloc[fit_idx])
        seen = sorted(set(devices[fit_idx]))
        for d in sorted(set(dev[fold == i])):
            sel = (dev == d) & (fold == i)
            fitted = nearest_devices(d, seen)[0]
            info[d][f"fold_nearest_{i}"] = fitted
            check = np.asarray(model.predict(model_input(rows[sel], task)), dtype="float64").ravel()
            info[d]["refit_max_rel_diff"] = max(info[d].get("refit_max_rel_diff", 0.0),
                                                float(np.max(np.abs(check / pred[sel] - 1.0))))
            near_f[sel] = copy_from_devices(train, rows[sel], [fitted], CONFIG_KEYS[task])
            near_pred[sel] = as_device(model, rows[sel], fit_rows[devices == fitted], task)
    for d in gpus:
        sel = dev == d
        near[sel] = copy_from_devices(train, rows[sel], [info[d]["nearest"]], CONFIG_KEYS[task])
        near_any[sel] = copy_from_devices(train, rows[sel], nearest_devices(d, gpus), CONFIG_KEYS[task])
        info[d]["copied"] = float(np.isfinite(near[sel]).mean())
    out: dict[str, Any] = {"gpus": info, "parts": {}}
    for label in sorted(set(labels)):
        masks = {d: m for d in gpus if (m := (labels == label) & (dev == d)).any()}
        lone = [d for d in masks if info[d]["lone"]]
        plain = {d: [float(np.mean(np.abs(blend(pred[m], near[m], w) / y[m] - 1.0))) for w in weights]
                 for d, m in masks.items()}
        ratio = {d: [float(np.mean(np.abs(ratio_blend(pred[m], near_f[m], near_pred[m], w) / y[m] - 1.0)))
                     for w in weights] for d, m in masks.items()}
        anyone = {d: [float(np.mean(np.abs(blend(pred[m], near_any[m], w) / y[m] - 1.0))) for w in weights]
                  for d, m in masks.items()}
        out["parts"][label] = {"lambda0": _choice(plain, lone, weights), "lambda1": _choice(ratio, lone, weights),
                               "lambda0_any": _choice(anyone, lone, weights)}
    return out


def test_report(task: str, base: Any, train: pd.DataFrame, test: pd.DataFrame, rows: int, seed: int,
                chosen: dict[str, dict[str, float]], weights: tuple[float, ...]) -> dict[str, Any]:
    """The left-out GPU's K = 0 test sample (the protocol's seeded ``rows`` rows, scored where some training GPU
    measured the configuration, as the protocol scores them beside its nearest-GPU baseline): mean APE per part at
    every w (a report: never used to choose)."""
    test = test.reset_index(drop=True)
    if len(test) > rows:
        test = test.iloc[np.sort(np.random.default_rng(seed).choice(len(test), rows, replace=False))]
    dev = str(test["device_id"].iloc[0])
    donors = nearest_devices(dev, sorted(train["device_id"].dropna().astype(str).unique()))
    near_any = copy_from_devices(train, test, donors, CONFIG_KEYS[task])
    test, near_any = test[np.isfinite(near_any)], near_any[np.isfinite(near_any)]
    nearest = donors[0]
    pred = AdaptedModel(base).parts(test)[1]  # the protocol's K = 0 prediction: the base unadapted
    near = copy_from_devices(train, test, [nearest], CONFIG_KEYS[task])
    near_pred = as_device(base, test, train[(train["device_id"] == nearest).to_numpy()], task)
    y = test["runtime_ms"].to_numpy(dtype="float64")
    labels = part_labels(test, task)
    out: dict[str, Any] = {"nearest": nearest, "rows": len(test), "copied": float(np.isfinite(near).mean()),
                           "parts": {}}
    for label in sorted(set(labels)):
        m = labels == label
        plain = [float(np.mean(np.abs(blend(pred[m], near[m], w) / y[m] - 1.0))) for w in weights]
        ratio = [float(np.mean(np.abs(ratio_blend(pred[m], near[m], near_pred[m], w) / y[m] - 1.0))) for w in weights]
        anyone = [float(np.mean(np.abs(blend(pred[m], near_any[m], w) / y[m] - 1.0))) for w in weights]
        out["parts"][label] = {lam: {"per_w": ape, "at_chosen": ape[weights.index(chosen[label][lam])]}
                               for lam, ape in zip(VARIANTS, (plain, ratio, anyone))}
    return out


def verdict(result: dict[str, Any], gap_pt: float = 0.5, needed: int = 4) -> dict[str, Any]:
    """Round 16d's criterion per part and λ: on how many left-out GPUs without a family sibling in training the
    chosen w > 0 gains at least ``gap_pt`` on the lone training GPUs (worth building: ``needed`` of them), and
    their test means (a report) at w = 0 and at the chosen w."""
    lone = {d: v for d, v in result["left_out"].items() if not v["sibling_in_training"]}
    out: dict[str, Any] = {}
    for part in next(iter(lone.values()))["parts"]:
        for lam in VARIANTS:
            passed = [d for d, v in lone.items()
                      if v["parts"][part][lam]["chosen_w"] > 0 and v["parts"][part][lam]["gain_pt"] >= gap_pt]
            tests = [v["test_report"]["parts"][part][lam] for v in lone.values()]
            secondary = [d for d, v in lone.items() if _gain_all(v["parts"][part][lam]) >= gap_pt]
            out[f"{part or 'gemm'} {lam}"] = {
                "passed": passed, "of": len(lone), "worth_building": len(passed) >= needed,
                "passed_all_population": secondary,
                "test_mean_w0": float(np.mean([t["per_w"][0] for t in tests])),
                "test_mean_chosen": float(np.mean([t["at_chosen"] for t in tests]))}
    return out


def _gain_all(choice: dict[str, Any]) -> float:
    """The secondary population's gain (pt) of its own chosen w over w = 0 (0 when it chooses w = 0)."""
    means = choice["mean"]["all"]
    return 100.0 * (means[0] - min(means))


def _pct(values: list[float] | None) -> list[float] | None:
    return None if values is None else np.round(np.multiply(values, 100), 2).tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["gemm", "attention"])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--devices", default="", help="comma-separated left-out GPUs (default: every one)")
    parser.add_argument("--summary", action="store_true", help="only the criterion's verdict of an existing --json")
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    args = parser.parse_args(argv)
    if args.summary:
        for name, v in verdict(json.loads(args.json.read_text(encoding="utf-8"))).items():
            print(f"{name}: passed on {len(v['passed'])} of {v['of']} ({', '.join(v['passed']) or 'none'}), worth "
                  f"building {v['worth_building']} (all training GPUs: {len(v['passed_all_population'])}); "
                  f"test mean (report) {100 * v['test_mean_w0']:.2f} -> {100 * v['test_mean_chosen']:.2f}%")
        return
    choice = choose(PROTOCOL, None)
    name, params, options, seed = choice.name, choice.params, choice.options, 0
    intervals = choice.config.intervals if args.task == choice.config.task else IntervalsConfig(
        **options.get(f"{args.task}_intervals", {}))
    config = choice.config.model_copy(update={"task": args.task, "intervals": intervals})
    result: dict[str, Any] = {"task": args.task, "weights": list(WEIGHTS), "left_out": {}}
    with tempfile.TemporaryDirectory() as tmp:
        records = Workspace(args.data_root, Path(tmp)).records("aiconfigurator", args.task)
        devices = [d for d in sorted(records["device_id"].dropna().unique())
                   if not args.devices or d in args.devices.split(",")]
        for dev in devices:
            train, test = unseen_hardware_split(records, test_devices=[dev])
            fit_rows, fit_params, _ = budget_rows(name, params, train, choice.train_rows, seed)
            base = fit_conformal(config, fit_rows, fit_params, seed=seed)
            got = nested(args.task, base, train, fit_rows.reset_index(drop=True), WEIGHTS)
            got["test_report"] = test_report(args.task, base, train, test, int(options["test_rows"]), seed,
                                             {p: {lam: v[lam]["chosen_w"] for lam in VARIANTS}
                                              for p, v in got["parts"].items()}, WEIGHTS)
            got["sibling_in_training"] = bool(sibling_devices(dev, sorted(train["device_id"].dropna().unique())))
            result["left_out"][dev] = got
            for part, v in got["parts"].items():
                for lam in VARIANTS:
                    c, t = v[lam], got["test_report"]["parts"][part][lam]["per_w"]
                    print(f"{dev} {part or 'gemm'} {lam}: lone {_pct(c['mean']['lone'])} all {_pct(c['mean']['all'])} "
                          f"chosen w {c['chosen_w']} gain {c['gain_pt']:.2f} pt; test (report) {_pct(t)}", flush=True)
            args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
