"""Round 11b's subset diagnosis of the adapted intervals' per-GPU coverage (benchmarks/ANALYSIS_adapt.md): is the
K rows' cross-fitted |residual| distributed like the test rows' |residual|, and does reweighting the K rows by how
many candidate shapes each stands for (weighted split-conformal) close the gap?

    nice -n 10 python benchmarks/adapt_wcp.py gemm b300_sxm,a100_sxm,rtx_pro_6000_server
    nice -n 10 python benchmarks/adapt_wcp.py gemm b300_sxm,a100_sxm,rtx_pro_6000_server distance
    nice -n 10 python benchmarks/adapt_wcp.py gemm b300_sxm donor

Each GPU is left out as in aiconfigurator-adapt (the same base model, donors, plan and the preset's ``krige``
setting; ``adapt_subset.left_out``) and scored on 5,000 of its unrevealed rows. Printed per K: the 90% conformal quantile of the K rows'
scores (plain and weighted) against the test rows' own 90% quantile, the coverage of each (no noise floor, no
score scale), and per size tercile / kernel kind the rows' shares and quantiles. With ``distance``: instead of the
terciles, how far each row is from the rows its residual's model saw (a K row: the nearest K row of its kind outside
its cross-validation fold; a test row: the nearest K row of its kind, in standardised log sizes), and the
quantiles per distance bin: the K rows' folds see their rows from further away than the final model sees a test row.
With ``donor``: the rows split by whether the nearest donor GPU measured their configuration.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
from adapt_subset import left_out  # run as a script from benchmarks/: its sibling

from perfcast.experiments.presets import choose
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.models.uncertainty.calibration import conformal_quantile
from perfcast.models.uncertainty.weighted_conformal import weighted_scores
from perfcast.perf_probe.plan import adaptation_plan, represented


def q90(x: np.ndarray) -> float:
    return conformal_quantile(np.sort(x), 0.9)


def nearest(x: np.ndarray, kinds: np.ndarray, seen: np.ndarray, asked: np.ndarray) -> np.ndarray:
    """Per row of ``asked``, the distance to the nearest row of ``seen`` (positions) of its kind (inf: none)."""
    out = np.full(len(asked), np.inf)
    for j, i in enumerate(asked):
        same = seen[kinds[seen] == kinds[i]]
        if len(same):
            out[j] = np.sqrt(((x[same] - x[i]) ** 2).sum(axis=1)).min()
    return out


def distances(test: pd.DataFrame, picked: np.ndarray, rest: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(K rows' distance to their fold's fit rows, test rows' distance to the K rows), as the docstring says."""
    from sklearn.model_selection import KFold

    cols = ["m", "n", "k"] if task == "gemm" else ["batch", "seq_q", "seq_kv"]
    x = np.log2(test[cols].astype(float).clip(lower=1).to_numpy())
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
    kinds = test["dtype"].astype(str).to_numpy()
    at = np.flatnonzero(picked)
    own = np.empty(len(at))
    for fit, held in KFold(n_splits=5, shuffle=True, random_state=0).split(at):  # the guard's folds (seed 0)
        own[held] = nearest(x, kinds, at[fit], at[held])
    return own, nearest(x, kinds, at, rest)


def main(task: str, devices: list[str], mode: str = "") -> None:
    setting = choose("aiconfigurator-adapt").options["settings"]["krige"]
    start = time.time()
    for dev, _, test, base, F, pred, _, table in left_out(task, devices):
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
            if mode == "donor":
                has = ~np.isclose(table.start(F, pred), pred)
                for g in (True, False):
                    kr, tr = has[picked] == g, has[rest] == g
                    print(f"    nearest donor measured it: {g}: share K {100 * kr.mean():.0f}% test "
                          f"{100 * tr.mean():.0f}% | q90 K {q90(s[kr]) if kr.sum() >= 9 else float('nan'):.4f} "
                          f"test {q90(t[tr]) if tr.any() else float('nan'):.4f}", flush=True)
                continue
            if mode == "distance":
                dk, dt = distances(test, picked, rest, task)
                edges = np.quantile(dt[np.isfinite(dt)], [1 / 3, 2 / 3])
                print(f"    distance median K rows {np.median(dk):.3f} test {np.median(dt):.3f}", flush=True)
                for b in range(3):
                    kr, tr = np.digitize(dk, edges) == b, np.digitize(dt, edges) == b
                    print(f"    distance bin {b}: share K {100 * kr.mean():.0f}% test {100 * tr.mean():.0f}% | "
                          f"q90 K {q90(s[kr]) if kr.sum() >= 9 else float('nan'):.4f} test {q90(t[tr]):.4f}",
                          flush=True)
                continue
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
    main(sys.argv[1], sys.argv[2].split(","), *sys.argv[3:])
