"""Round 7's subset experiments on the adaptation (benchmarks/ANALYSIS_adapt.md): which K rows to measure, and a
residual prior pre-trained on the training GPUs.

    nice -n 10 python benchmarks/adapt_subset.py plan gemm h100_sxm,l40s,a100_sxm
    nice -n 10 python benchmarks/adapt_subset.py plan attention h100_sxm
    nice -n 10 python benchmarks/adapt_subset.py prior gemm h100_sxm
    nice -n 10 python benchmarks/adapt_subset.py krige gemm h100_sxm,l40s

Each GPU is left out as in aiconfigurator-adapt (the same base model, donors and the preset's ``smooth`` setting),
and scored on 5,000 of its rows revealed by no draw, among those the nearest-GPU baseline covers.

* ``plan``: the K rows drawn by the probe plan, at random (two seeds), or half by the plan and half at random
  (``adaptation_plan(..., random_share=0.5)`` up to the seed of the random half);
* ``prior``: the adaptation from the base model, or from the base times a prior: a LightGBM model of the base
  model's log error fitted on 6,000 rows of each training GPU with that GPU's three nearest other training GPUs as
  donors (its inputs: the shape term's columns, log base, the donors' log latency over the base, their mean and
  count), predicted on the left-out GPU from its three nearest donors.
* ``krige`` (round 8): the plan's K rows, adapted as the preset's ``smooth`` setting, then with the kriging of the
  residuals left offered to the guard (:mod:`perfcast.models.estimators.adapt_krige`), used where it cuts their
  cross-validated error by 2%, or always (``forced``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import donor_table
from perfcast.experiments.baselines import CONFIG_KEYS, PHASE_LABEL, copy_from_devices, nearest_devices
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.models.estimators.adapt_correction import shape_columns
from perfcast.perf_probe.plan import adaptation_plan
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal

#: donors of the prior (nearest first)
PRIOR_DONORS = 3
#: ``krige`` mode: per variant, the share by which the kriging must cut the K rows' cross-validated error (None: not
#: offered; -1: used whatever the folds find)
KRIGE_VARIANTS: dict[str, float | None] = {"smooth": None, "krige": 0.02, "forced": -1.0}


def prior_inputs(base, train: pd.DataFrame, rows: pd.DataFrame, donors: list[str], F: pd.DataFrame,
                 pred: np.ndarray, task: str) -> np.ndarray:
    """The prior's inputs for ``rows`` (features ``F``, base predictions ``pred``) from ``donors``' latencies."""
    D = donor_table(base, train, rows, donors, CONFIG_KEYS[task], task, False).latencies(F, np.log(pred))
    has = D != 0
    mean = np.where(has.any(1), D.sum(1) / np.maximum(has.sum(1), 1), 0)
    return np.column_stack([F[shape_columns(F, task)].to_numpy(float), np.log(pred), D, mean, has.sum(1)])


def fit_prior(base, train: pd.DataFrame, task: str):
    """The prior: every training GPU in turn the target of its nearest other training GPUs."""
    import lightgbm as lgb

    gpus = sorted(train["device_id"].unique())
    X, r = [], []
    for g in gpus:
        rows = train[train["device_id"] == g].sample(n=min(6000, int((train["device_id"] == g).sum())), random_state=1)
        F, pred = AdaptedModel(base).parts(rows)
        X.append(prior_inputs(base, train, rows, nearest_devices(g, [h for h in gpus if h != g])[:PRIOR_DONORS], F,
                              pred, task))
        r.append(np.log(rows["runtime_ms"].to_numpy(float) / pred))
    return lgb.LGBMRegressor(n_estimators=400, learning_rate=0.05, num_leaves=31, min_child_samples=20, subsample=0.8,
                             subsample_freq=1, colsample_bytree=0.8, verbose=-1, n_jobs=2).fit(np.vstack(X),
                                                                                               np.concatenate(r))


def left_out(task: str, devices: list[str]) -> Iterator[tuple]:
    """Per GPU of ``devices``, left out as in aiconfigurator-adapt: (GPU, its training rows, its rows, the base model,
    the rows' features and base predictions, its donors nearest first, their table)."""
    choice = choose("aiconfigurator-adapt")
    with workspace(Path(__file__).resolve().parents[2] / "shared" / "datasets") as ws:
        intervals = choice.config.intervals if task == choice.config.task else IntervalsConfig(
            **choice.options.get(f"{task}_intervals", {}))
        config = choice.config.model_copy(update={"task": task, "intervals": intervals})
        records = ws.records("aiconfigurator", task)
        for dev in devices:
            train, test = unseen_hardware_split(records, test_devices=[dev])
            fit_rows, fit_params, _ = budget_rows(choice.name, choice.params, train, choice.train_rows, 0)
            base = fit_conformal(config, fit_rows, fit_params, seed=0)
            test = test.reset_index(drop=True)
            F, pred = AdaptedModel(base).parts(test)
            donors = nearest_devices(dev, sorted(train["device_id"].unique()))
            yield dev, train, test, base, F, pred, donors, donor_table(base, train, test, donors, CONFIG_KEYS[task],
                                                                        task, False)


def main(mode: str, task: str, devices: list[str]) -> None:
    start = time.time()
    for dev, train, test, base, F, pred, donors, table in left_out(task, devices):
        starts = {"base": pred}
        if mode == "prior":
            prior = fit_prior(base, train, task)
            starts["prior"] = pred * np.exp(prior.predict(prior_inputs(base, train, test, donors[:PRIOR_DONORS],
                                                                       F, pred, task)))
        parts = (test["phase"].map(PHASE_LABEL).fillna(test["phase"]).astype(str).to_numpy()
                 if task == "attention" else np.full(len(test), "gemm"))
        y = test["runtime_ms"].to_numpy(float)
        covered = np.isfinite(copy_from_devices(train, test, donors, CONFIG_KEYS[task]))
        candidates = test.drop(columns=["runtime_ms"])
        rng = np.random.default_rng(5)
        for k in (128, 512):
            draws = {"plan": np.flatnonzero(test.index.isin(adaptation_plan(candidates, task, k)))}
            if mode == "plan":
                half = np.flatnonzero(test.index.isin(adaptation_plan(candidates, task, k // 2)))
                for s in range(2):
                    draws[f"random{s}"] = rng.choice(len(test), k, replace=False)
                    extra = rng.choice(np.setdiff1d(np.arange(len(test)), half), k - len(half), replace=False)
                    draws[f"half{s}"] = np.concatenate([half, extra])
            rest = np.setdiff1d(np.flatnonzero(covered), np.concatenate(list(draws.values())))
            rest = np.random.default_rng(0).choice(rest, min(5000, len(rest)), replace=False)
            variants = KRIGE_VARIANTS if mode == "krige" else {"smooth": None}
            for (name, picked), (begin, b), (variant, krige) in [
                    (d, s, v) for d in draws.items() for s in starts.items() for v in variants.items()]:
                m, began = AdaptedModel(base, donors=table, mixes=("latency",), shape_donors=True, smooth=True,
                                         krige=krige), time.time()
                m.fit(test.iloc[picked], parts=(F.iloc[picked], b[picked]))
                p, lo, hi = m.predict_with_interval(test.iloc[rest], parts=(F.iloc[rest], b[rest]))
                err = {str(pt): round(100 * float(np.mean(np.abs(p / y[rest] - 1)[parts[rest] == pt])), 2)
                       for pt in np.unique(parts)}
                cov = round(100 * float(np.mean((y[rest] >= lo) & (y[rest] <= hi))), 1)
                print(dev, f"K={k}", name, f"from {begin}", variant, err, f"coverage {cov}%", m.adaptation_.describe(),
                      f"fit {time.time() - began:.1f} s", f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
