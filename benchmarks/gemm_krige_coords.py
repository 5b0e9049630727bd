"""Which GEMM columns could separate the kriging's residual regimes? The K rows' own fold error per candidate
coordinate (benchmarks/ANALYSIS_adapt.md, round 16b).

    PYTHONPATH=. nice -n 10 python benchmarks/gemm_krige_coords.py [--data-root ../shared/datasets]
        [--devices h100_sxm,l40s,a100_sxm] [--budgets 128,512]

Why: round 15a's rule (a feature column as a kriging coordinate, times a factor the kriging's folds choose) gained on
attention with the KV cache's dtype; for GEMM the column had to be picked first, and only on rows the adaptation
itself sees. Per left-out GPU, as the aiconfigurator-adapt protocol does (its GEMM base, donors and plan), the
preset's ``krige`` setting is fitted on the K planned rows and its kriging's inputs are kept (the rows' features,
base predictions, cross-fitted residuals before the kriging, the guard's folds). On them alone, each candidate rule's
best fold error (:func:`~perfcast.models.estimators.adapt_krige.choose_kriging`'s cross-validated mean APE, %) is
printed beside no kriging and the plain kriging. No unrevealed row is read. A report: it chooses nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import perfcast.models.estimators.adapt_krige as adapt_krige
from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import CONFIG_KEYS, adapter_of, donor_table
from perfcast.experiments.baselines import nearest_devices
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.models.estimators.adapt_krige import Kriging, KrigeRule, krige_columns
from perfcast.perf_probe.plan import adaptation_plan
from perfcast.training.train import fit_conformal

SCALES = (0.25, 0.5, 1.0, 2.0)
#: candidate -> (an extra column, its factors); None: the length scales only. The dtype flags' joint factor and the
#: L2 flag are not feature columns, so they are scored by :func:`fold_error` directly
COLUMNS: dict[str, tuple[str, tuple[float, ...]] | None] = {
    "scale 0.25": None,
    "log10_intensity": ("log10_intensity", (0.0, 0.5, 2.0)),
    "compute_memory_balance": ("compute_memory_balance", (0.0, 0.5, 2.0)),
    "last_wave_fill": ("last_wave_fill", (0.0, 0.5, 2.0)),
    "wave_efficiency": ("wave_efficiency", (0.0, 0.5, 2.0)),
    "log2_waves": ("log2_waves", (0.0, 0.5, 2.0)),
    "log10_bytes": ("log10_bytes", (0.0, 0.5, 2.0)),
    "a_bytes": ("a_bytes", (0.0, 0.5, 3.0)),
    "m_align128": ("m_align128", (0.0, 0.5, 3.0)),
}


def kriging_inputs(adapter: Any, rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list[Any]]:
    """(features, base predictions, residuals, folds) the fit of ``adapter`` on ``rows`` hands its kriging."""
    caught: list[tuple[pd.DataFrame, np.ndarray, np.ndarray, list[Any]]] = []
    choose_kriging = adapt_krige.choose_kriging

    def spy(F: pd.DataFrame, base: np.ndarray, residuals: np.ndarray, task: str, folds: Any, *rest: Any) -> Any:
        caught.append((F.copy(), np.array(base), np.array(residuals), list(folds)))
        return choose_kriging(F, base, residuals, task, folds, *rest)

    adapt_krige.choose_kriging = spy
    try:
        adapter.fit(rows)
    finally:
        adapt_krige.choose_kriging = choose_kriging
    return caught[0]


def fold_error(F: pd.DataFrame, base: np.ndarray, residuals: np.ndarray, folds: list[Any], extra: tuple[str, ...],
               stretches: list[dict[str, float]]) -> float:
    """The least cross-validated mean APE over length scales :data:`SCALES`, weights 0.5 and 1 and per-column
    factors ``stretches`` (a column not named: 1), the kriging's inputs plus the columns ``extra``."""
    columns = krige_columns(F, "gemm", extra)
    A = F[columns].to_numpy(dtype="float64")
    best = np.inf
    for ls in SCALES:
        for factors in stretches:
            stretch = np.array([factors.get(c, 1.0) for c in columns])
            oof = np.empty(len(residuals))
            for fit_idx, held_idx in folds:
                oof[held_idx] = Kriging.fit(A[fit_idx], base[fit_idx], residuals[fit_idx], columns, ls, 1.0,
                                            stretch).log_ratio(None, base[held_idx], A[held_idx], tuple(columns))
            for w in (0.5, 1.0):
                best = min(best, float(np.mean(np.abs(np.expm1(-(residuals - w * oof))))))
    return best


def errors(F: pd.DataFrame, base: np.ndarray, residuals: np.ndarray, folds: list[Any]) -> dict[str, float]:
    """Every candidate's best fold error (see the module's docstring)."""
    out = {"none": float(np.mean(np.abs(np.expm1(-residuals))))}
    rules = {"plain": KrigeRule(-1.0)} | {name: KrigeRule(-1.0, (col,) if col else (), SCALES)
                                          for name, col in COLUMNS.items()}
    for name, rule in rules.items():
        out[name] = min(adapt_krige.choose_kriging(F, base, residuals, "gemm", folds, rule)[1].values())
    F = F.assign(l2_resident=(F["log10_bytes"] < np.log10(F["l2_mb"] * 2 ** 20)).astype("float64"))
    out["L2 flag"] = fold_error(F, base, residuals, folds, ("l2_resident",),
                                [{"l2_resident": f} for f in (0.0, 0.5, 3.0)])
    dtype = [c for c in krige_columns(F, "gemm") if c.startswith("dtype_")]
    out["dtype flags' joint factor"] = fold_error(F, base, residuals, folds, (),
                                                  [dict.fromkeys(dtype, f) for f in (0.0, 0.5, 1.0, 3.0)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--devices", default="h100_sxm,l40s,a100_sxm")
    parser.add_argument("--budgets", default="128,512")
    args = parser.parse_args()
    choice = choose("aiconfigurator-adapt")
    config = choice.config.model_copy(update={"task": "gemm"})
    with workspace(args.data_root.resolve()) as ws:
        records = ws.records("aiconfigurator", "gemm")
        for dev in args.devices.split(","):
            train, test = unseen_hardware_split(records, test_devices=[dev])
            rows, fit_params, _ = budget_rows(choice.name, choice.params, train, choice.train_rows, 0)
            base = fit_conformal(config, rows, fit_params, seed=0)
            test = test.reset_index(drop=True)
            donors = nearest_devices(dev, sorted(train["device_id"].dropna().unique()))
            table = donor_table(base, train, test, donors, CONFIG_KEYS["gemm"], "gemm", False)
            for k in (int(b) for b in args.budgets.split(",")):
                picked = test.index.isin(adaptation_plan(test.drop(columns=["runtime_ms"]), "gemm", k))
                adapter = adapter_of(base, choice.options["settings"]["krige"], choice.options, "gemm", 0, table)
                found = errors(*kriging_inputs(adapter, test[picked]))
                print(f"{dev} K = {k}: " + ", ".join(f"{name} {100 * e:.2f}" for name, e in found.items()), flush=True)


if __name__ == "__main__":
    main()
