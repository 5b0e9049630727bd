"""Diagnosis behind ANALYSIS_sibling.md, Rounds 10-11: which corrections of the sibling copy the nested folds see
winning, beside what they do on the held-out GPU. A diagnosis, not a selection: it reads the held-out GPUs'
labels, and nothing it prints sets a default.

    nice -n 10 python benchmarks/sibling_diagnosis.py [--data-root ../shared/datasets] [--share 0.1]

Part 1 (measurements only, GEMM): copying the nearest sibling after smoothing its measurement along ``m``, and
after moving it toward the level-aligned shape of the non-sibling GPUs. Part 2 (the model, fitted per held-out
GPU on a ``share`` of the configurations with nested folds on all of them): per kernel kind, per nested fold
and on the held-out GPU, the mean APE of copying, of the ``resid`` correction at λ = 0.5, of the ``shape``
correction at λ = 0.5 (the transfer's correction minus its level on fixed reference configurations featurized
for the target: Round 11's predictor), and of the transfer's correction minus its per-kind median over the
rows themselves (Round 10's measure, which needs the rows of the whole table: not a predictor).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.baselines import CONFIG_KEYS, sibling_devices
from perfcast.experiments.presets import choose
from perfcast.experiments.results import Workspace
from perfcast.experiments.sibling import config_sample
from perfcast.models import make_model
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.estimators.sibling import SiblingShrink

SIBLINGS = ("b300_sxm", "gb200", "gb300")


def ape(log_err: np.ndarray) -> float:
    return float(np.mean(np.abs(np.expm1(log_err))))


class Recording(SiblingShrink):
    """The model, keeping its nested folds' matrices and log errors for the diagnosis."""

    def _matrices(self, X, transfer, tables, info, shape=True):
        out = super()._matrices(X, transfer, tables, info, shape)
        self.__dict__.setdefault("seen_", []).append(out)
        return out

    def _choose(self, settings, scores, transfer_err, nested_kind, nested_fold, nested_layer):
        self.copy_err_ = np.concatenate(scores[repr(settings[0])])
        self.fold_kind_ = nested_kind
        self.fold_mats_ = list(self.__dict__.get("seen_", []))
        super()._choose(settings, scores, transfer_err, nested_kind, nested_fold, nested_layer)


def variants(mats: dict[str, np.ndarray], truth: np.ndarray, sel: np.ndarray) -> list[float]:
    """Copying, resid λ = 0.5, shape λ = 0.5, in-batch shape λ = 0.5 (nearest sibling) on rows ``sel``."""
    j = np.argmin(mats["rank"], axis=1)
    rows = np.arange(len(j))
    copy = mats["log_y"][rows, j][sel]
    resid = np.nan_to_num(mats["resid"][rows, j])[sel]
    level_free = np.nan_to_num(mats["shape"][rows, j])[sel]
    shape = np.nan_to_num(mats["transfer"][rows, j])[sel]
    t = truth[sel]
    return [ape(copy - t), ape(copy + 0.5 * resid - t), ape(copy + 0.5 * level_free - t),
            ape(copy + 0.5 * (shape - np.median(shape)) - t)]


def measurements_only(records: pd.DataFrame) -> None:
    piv = (records.groupby(["dtype", "n", "k", "m", "device_id"], observed=True)["runtime_ms"].mean()
           .apply(np.log).unstack().sort_index())
    kind = piv.index.get_level_values("dtype")
    others = [d for d in piv.columns if d not in SIBLINGS]
    print("| target <- sibling | copy | smoothed along m (μ = 0.25) | + non-sibling shape (w = 0.1) |")
    print("|---|---|---|---|")
    for t, s in itertools.permutations(SIBLINGS, 2):
        ys = piv[s]
        near = pd.concat([ys.groupby(level=["dtype", "n", "k"]).shift(k) for k in (1, -1)], axis=1).mean(axis=1)
        smooth = 0.75 * ys + 0.25 * near.fillna(ys)
        dev = pd.DataFrame({o: (piv[o] - ys) - (piv[o] - ys).groupby(kind).transform("median") for o in others})
        consensus = ys + 0.1 * dev.mean(axis=1).fillna(0.0)
        ok = piv[t].notna() & ys.notna()
        print(f"| {t} <- {s} | " + " | ".join(f"{ape((p - piv[t])[ok].to_numpy()):.2%}"
                                               for p in (ys, smooth, consensus)) + " |")


def model_folds(ws: Workspace, task: str, share: float) -> None:
    preset = choose(f"aiconfigurator-sibling-{task}")
    params = {**preset.params, "max_rows": preset.train_rows, "nested_max_rows": preset.train_rows,
              "nested_share": 1.0}
    records = config_sample(ws.records("aiconfigurator", task), list(CONFIG_KEYS[task]), share, 0)
    print(f"\n| {task} GPU | kind | nested copy (per fold) | nested resid 0.5 | nested shape 0.5 | "
          f"nested in-batch shape 0.5 | test copy / resid / shape / in-batch shape (0.5) | chosen |")
    print("|---|---|---|---|---|---|---|---|")
    for dev in SIBLINGS:
        train, test = unseen_hardware_split(records, test_devices=[dev])
        if not sibling_devices(dev, sorted(train["device_id"].unique())):
            continue
        pipe = make_model("sibling", task, ["runtime_ms"], params)
        pipe.set_params(model__estimator=Recording(**pipe[-1].estimator.get_params(deep=False)))
        pipe.fit(train, train[["runtime_ms"]])
        est = pipe[-1].estimators_[0]
        X = pipe[:-1].transform(test)
        mats = SiblingShrink._matrices(est, X, est.transfer_, est.tables_, est.info_)
        truth = np.log(test["runtime_ms"].to_numpy(dtype="float64"))
        kinds, has = kernel_kinds(X).to_numpy(), np.isfinite(mats["log_y"]).any(axis=1)
        folds = []
        for fold_mats, fold_kind in zip(est.fold_mats_, est.fold_kind_, strict=True):
            seen = np.isfinite(fold_mats["log_y"]).any(axis=1)
            sub = {n: v[seen] for n, v in fold_mats.items()}
            j = np.argmin(sub["rank"], axis=1)
            copy_err = est.copy_err_[sum(len(f[1]) for f in folds):][:len(j)]
            folds.append((sub, fold_kind, sub["log_y"][np.arange(len(j)), j] - copy_err))
        for k in sorted(pd.unique(kinds)):
            per_fold = [variants(sub, t, fk == k) for sub, fk, t in folds]
            cells = ["/".join(f"{f[i]:.2%}" for f in per_fold) for i in range(4)]
            test_cells = " / ".join(f"{v:.2%}" for v in variants(mats, truth, (kinds == k) & has))
            chosen = est.settings_.get(str(k), est.pooled_)
            print(f"| {dev} | {k} | {' | '.join(cells)} | {test_cells} | {chosen[0]}, {chosen[1]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--share", type=float, default=0.1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(args.data_root, Path(tmp))
        gemm = ws.records("aiconfigurator", "gemm")
        measurements_only(gemm[gemm["device_id"].isin(SIBLINGS + ("h100_sxm", "a100_sxm", "l40s", "b60",
                                                                    "rtx_pro_6000_server"))])
        for task in ("gemm", "attention"):
            model_folds(ws, task, args.share)


if __name__ == "__main__":
    main()
