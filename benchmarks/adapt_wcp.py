"""Round 11b's subset diagnosis of the adapted intervals' per-GPU coverage (benchmarks/ANALYSIS_adapt.md): is the
K rows' cross-fitted |residual| distributed like the test rows' |residual|, and does reweighting the K rows by how
many candidate shapes each stands for (weighted split-conformal) close the gap?

    nice -n 10 python benchmarks/adapt_wcp.py gemm b300_sxm,a100_sxm,rtx_pro_6000_server

Each GPU is left out as in aiconfigurator-adapt (the same base model, donors, plan and the preset's ``krige``
setting) and scored on 5,000 of its unrevealed rows. Printed per K: the 90% conformal quantile of the K rows'
scores (plain and weighted) against the test rows' own 90% quantile, the coverage of each (no noise floor, no
score scale), and per size tercile / kernel kind the rows' shares and quantiles.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import donor_table
from perfcast.experiments.baselines import CONFIG_KEYS, nearest_devices
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.models.uncertainty.calibration import conformal_quantile
from perfcast.models.uncertainty.weighted_conformal import weighted_scores
from perfcast.perf_probe.plan import adaptation_plan, represented
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal


def q90(x: np.ndarray) -> float:
    return conformal_quantile(np.sort(x), 0.9)


def main(task: str, devices: list[str]) -> None:
    choice = choose("aiconfigurator-adapt")
    setting = choice.options["settings"]["krige"]
    start = time.time()
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
            table = donor_table(base, train, test, nearest_devices(dev, sorted(train["device_id"].unique())),
                                CONFIG_KEYS[task], task, False)
            y = test["runtime_ms"].to_numpy(float)
            candidates = test.drop(columns=["runtime_ms"])
            size = np.log2(test[["m", "n", "k"]].astype(float).prod(axis=1).to_numpy()) if task == "gemm" else \
                np.log2(test[["batch", "seq_q", "seq_kv"]].astype(float).prod(axis=1).to_numpy())
            edges = np.quantile(size, [1 / 3, 2 / 3])
            tercile = np.digitize(size, edges)
            kind = test["dtype"].astype(str).to_numpy()
            for k in (32, 128, 512):
                planned = adaptation_plan(candidates, task, k)
                picked = test.index.isin(planned)
                rest = np.random.default_rng(0).choice(np.flatnonzero(~picked), min(5000, int((~picked).sum())),
                                                       replace=False)
                m = AdaptedModel(base, donors=table, mixes=tuple(setting["mixes"]), shape_donors=True, smooth=True,
                                 krige=setting["krige"])
                m.fit(test[picked], parts=(F[picked], pred[picked]))
                a = m.adaptation_
                p = m.predict_with_interval(test.iloc[rest], parts=(F.iloc[rest], pred[rest]))[0]
                t = np.abs(np.log(y[rest] / p))
                s = a.scores
                w = represented(candidates, candidates.loc[planned], task)
                qp, qw, qt = q90(s), conformal_quantile(weighted_scores(s, w), 0.9), q90(t)
                print(f"{dev} K={k} [{a.describe()}] scores: K rows q90 {qp:.4f} weighted {qw:.4f} test q90 {qt:.4f}"
                      f" | coverage plain {100 * np.mean(t <= qp):.1f}% weighted {100 * np.mean(t <= qw):.1f}%"
                      f" | mean |r| K {s.mean():.4f} weighted {np.average(s, weights=w):.4f} test {t.mean():.4f}"
                      f" | weight max/mean {w.max() / w.mean():.1f}", flush=True)
                for name, lab in (("size tercile", tercile), ("dtype", kind)):
                    for g in np.unique(lab):
                        kr, tr = lab[picked] == g, lab[rest] == g
                        if not tr.any():
                            continue
                        print(f"    {name} {g}: share K {100 * kr.mean():.0f}% (weighted {100 * w[kr].sum() / w.sum():.0f}%)"
                              f" test {100 * tr.mean():.0f}% | q90 K {q90(s[kr]) if kr.sum() >= 9 else float('nan'):.4f}"
                              f" test {q90(t[tr]):.4f} | mean |r| K {s[kr].mean() if kr.any() else float('nan'):.4f}"
                              f" test {t[tr].mean():.4f}", flush=True)
            print(f"{dev} done {time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))
