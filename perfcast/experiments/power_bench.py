"""The ``aiconfigurator-power`` protocol: per-kernel board power on unseen shapes, unseen GPUs and another library.

Three parts, each scoring perfcast's power model (:mod:`perfcast.models.estimators.power`) beside the baselines a
practitioner would otherwise use, on the same rows:

(a) **unseen shapes**: on every GPU of the data root with power tables, per kernel library (``backend``) and
    task, 20 % of the shapes held out (seeded); one model per (GPU, library, kernel kind: GEMM, context or
    generation attention) fitted on that GPU's training shapes, with conformal 90 % intervals calibrated on
    held-out configurations of the same kind. Baselines: log-linear
    interpolation on the measured (m, n, k) grid (GEMM) and a constant share of the power limit.
(b) **unseen GPU**: every GPU with power tables left out in turn, predicted from its spec sheet (it contributes no
    rows); runs only when the root holds two or more. Baselines: the nearest GPU's watts for the same
    configuration and library (``copy nearest GPU``), those watts scaled by the power-limit ratio, a constant
    share of the limit. Whatever the root holds, the cross-GPU pair this copy can measure is also run,
    GB200 <-> RTX 4070 (GPPerf's CUTLASS SGEMM, whose nvidia-smi readings were taken around the kernel, mostly
    after it): a different dtype (FP32 SIMT vs tensor-core formats), library and power-reading method, labelled
    as such; "copy" baselines there match (m, n, k) only.
(c) **other library**: per GPU and task, trained on one library and tested on the other (same GPU, same
    shapes): with the runtime the model predicts, and with the test library's measured runtime (power given
    a measured latency); no intervals (they are calibrated within a library). Baselines: the other library's
    measured watts for the same configuration, a constant share of the limit.
(d) **adaptation**: per GPU, the model of one library saved, loaded and adapted to the other library from K of
    its rows (:meth:`perfcast.Predictor.adapt`, K in :data:`ADAPT_K`), scored on held-out shapes of it, with
    the adapted intervals; baselines as in (c).

GPUs are discovered from the data: whatever ``<root>/aiconfigurator-power/<gpu>/...`` holds is evaluated the
same way. Fits use at most the preset's row budgets (seeded) so the protocol stays within minutes on 2 cores;
the model's settings (the preset, :func:`settings`) were chosen on a split of GB200's training shapes (see
benchmarks/ANALYSIS_power.md), never on a test split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from perfcast.eval.protocols import NOTE, unseen_shape_split
from perfcast.experiments.baselines import GRID, NEAREST, copy_from_devices, grid_interpolate, nearest_devices
from perfcast.experiments.presets import Choice, choose, sample_rows
from perfcast.experiments.results import Goal, Result, RunConfig, Workspace
from perfcast.experiments.scoring import macro_mean, score
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.training.config import TrainConfig
from perfcast.training.train import fit_conformal, fit_model

PROTOCOL = "aiconfigurator-power"
DATASET = "aiconfigurator-power"
TASKS: tuple[str, ...] = ("gemm", "attention")
TARGETS: list[str] = ["runtime_ms", "power_w", "energy_j"]
#: the preset's settings (configs/aiconfigurator_power_unseen_shape.toml: model parameters, intervals, and under
#: [benchmark] options the row budgets ``train_rows`` per task, ``cross_rows`` per fit of the unseen-GPU and
#: other-library parts, ``test_rows`` where a part predicts a whole other table), chosen on a split of GB200's
#: training shapes (benchmarks/ANALYSIS_power.md), never on a test split


def settings() -> Choice:
    """The protocol's preset (the power model always: ``--model`` does not apply to a power protocol)."""
    return choose(PROTOCOL)


#: the cross-GPU pair the shared copy can measure: GPPerf's CUTLASS sweep (RTX 4070) beside the power tables
GPPERF = "gpperf-cutlass"
#: the columns that make two rows the same configuration (library included: it is configuration)
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k", "dtype", "backend"),
    "attention": ("phase", "batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "window", "dtype",
                  "kv_dtype", "backend"),
}
PHASES = {"prefill": "context", "decode": "generation"}
CONST, SCALED, OTHER_LIB = "constant share of limit", "nearest GPU x limit ratio", "other library's watts"
#: the issue's goals: unseen-shape power per library, unseen GPU by family
SHAPE_GOAL = Goal(0.02)
ENERGY_NOTE = "energy_j baselines: the baseline's power x the measured runtime"


@dataclass
class PowerResult(Result):
    """A :class:`Result` whose record task is given (the protocol scores GEMM and attention rows under one name)."""

    kind: str = "gemm"

    @property
    def task(self) -> str:
        return self.kind


def _tagged(row: Result, kind: str) -> PowerResult:
    return PowerResult(**vars(row), kind=kind)


def _limit(rows: pd.DataFrame) -> np.ndarray:
    """Each row's power limit: measured (``power_limit_w``) where recorded, else the spec sheet's ``tdp_w``."""
    from perfcast.records.hardware_specs import spec_table

    sheet = spec_table()["tdp_w"].reindex(rows["device_id"].astype(str).to_numpy()).to_numpy(dtype="float64")
    own = (pd.to_numeric(rows["power_limit_w"], errors="coerce").to_numpy(dtype="float64")
           if "power_limit_w" in rows.columns else np.full(len(rows), np.nan))
    return np.where(np.isfinite(own), own, sheet)


def constant_share(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """The training rows' median power / limit, times each test row's limit."""
    return float(np.median(train["power_w"].to_numpy() / _limit(train))) * _limit(test)


def fit(task: str, train: pd.DataFrame, seed: int, targets: Sequence[str] = TARGETS
        ) -> tuple[ConformalRegressor, float]:
    """The preset's power model with its intervals (calibration folds hold out configurations) fitted on
    ``train`` for ``task`` and ``targets``, and the fitting seconds."""
    start = time.perf_counter()
    model = fit_conformal(_config(task, targets), train, seed=seed)
    return model, time.perf_counter() - start


def _config(task: str, targets: Sequence[str]) -> TrainConfig:
    """The preset for another kernel task or target list (its model and parameters apply to both tasks)."""
    return settings().config.model_copy(update={"task": task, "targets": list(targets)})


def power_given_runtime(pipeline: Pipeline, test: pd.DataFrame) -> np.ndarray:
    """The fitted power pipeline's watts for ``test`` at its measured runtime (power given a measured latency)."""
    return pipeline[-1].estimators_[0].power_at(pipeline[0].transform(test), test["runtime_ms"].to_numpy())


def _parts(task: str, test: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) per kernel kind: GEMM whole, attention per phase (in :data:`PHASES` order, phases present
    only)."""
    if task == "gemm":
        return [("gemm", np.ones(len(test), dtype=bool))]
    return [(f"attention {PHASES.get(p, p)}", (test["phase"] == p).to_numpy()) for p in PHASES
            if (test["phase"] == p).any()]


def _measured(ws: Workspace, task: str) -> pd.DataFrame:
    rows = ws.records(DATASET, task)
    return rows[rows["power_w"].notna().to_numpy() & rows["device_id"].notna().to_numpy()].reset_index(drop=True)


# ========================================================================================== (a) shapes
def unseen_shapes(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Part (a): unseen shapes per GPU, library and kernel kind (one model each); summary rows per library."""
    out: list[Result] = []
    per_library: dict[str, list[Result]] = {}
    for task in TASKS:
        records = _measured(ws, task)
        for dev in sorted(records["device_id"].unique()):
            for lib in sorted(records.loc[records["device_id"] == dev, "backend"].dropna().unique()):
                rows = records[(records["device_id"] == dev).to_numpy() & (records["backend"] == lib).to_numpy()]
                train_all, test_all = unseen_shape_split(rows, seed=cfg.seed)
                for (label, on_train), (_, on_test) in zip(_parts(task, train_all), _parts(task, test_all),
                                                           strict=True):
                    train, test = train_all[on_train], test_all[on_test]
                    fit_rows, note = sample_rows(train, settings().options["train_rows"][task], cfg.seed)
                    model, wall = fit(task, fit_rows, cfg.seed)
                    pred, lo, hi = (np.asarray(a, dtype="float64") for a in model.predict_with_interval(test))
                    base = {CONST: constant_share(train, test)}
                    if task == "gemm":
                        base[GRID] = grid_interpolate(train, test, by=["dtype"], target="power_w")[0]
                    notes = [test_all.attrs[NOTE], *([note] if note else [])]
                    for j, target in ((1, "power_w"), (2, "energy_j")):
                        factor = 1.0 if target == "power_w" else test["runtime_ms"].to_numpy() / 1e3
                        baselines = {k: v * factor for k, v in base.items()}
                        res = _tagged(score(PROTOCOL, f"{target} ({label}, {lib}; unseen shapes)", dev, test[target],
                                            pred[:, j], "power", wall, baselines=baselines,
                                            interval=(lo[:, j], hi[:, j]), notes=notes), task)
                        if target == "power_w":
                            res.goal = SHAPE_GOAL
                            per_library.setdefault(lib, []).append(res)
                        out.append(res)
    summary = []
    for lib, rows in per_library.items():
        mean = macro_mean(rows, "mean", notes=[ENERGY_NOTE])
        mean.target = f"power_w ({lib}; unseen shapes)"
        mean.notes[0] = (f"mean over {len(rows)} (GPU, kernel kind) rows: "
                         + ", ".join(f"{r.device} {r.target.split(' (')[1].split(',')[0]}" for r in rows)
                         + "; coverage and width pooled over their rows")
        mean.goal = SHAPE_GOAL
        summary.append(_tagged(mean, "gemm"))
    return summary + out


# ========================================================================================== (b) GPUs
def _gpperf_power(ws: Workspace) -> pd.DataFrame:
    rows = ws.records(GPPERF, "gemm")
    return rows[rows["power_w"].notna().to_numpy()].reset_index(drop=True)


def copy_watts(train: pd.DataFrame, test: pd.DataFrame, donors: Sequence[str], keys: Sequence[str]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(the first donor's measured watts for each test row's configuration, that donor's limit) (NaN where none)."""
    watts = copy_from_devices(train, test, donors, keys, target="power_w")
    with_limit = train.assign(_limit=_limit(train))
    return watts, copy_from_devices(with_limit, test, donors, keys, target="_limit")


def _cross(task: str, train: pd.DataFrame, test: pd.DataFrame, keys: Sequence[str], label: str, seed: int,
           notes: list[str]) -> list[Result]:
    """One held-out GPU predicted by a model of the others: power with the predicted and the measured runtime."""
    options = settings().options
    fit_rows, note = sample_rows(train, options["cross_rows"], seed)
    test, _ = sample_rows(test, options["test_rows"], seed)
    targets = ["runtime_ms", "power_w"]
    model, wall = fit(task, fit_rows, seed, targets)
    pred, lo, hi = (np.asarray(a, dtype="float64") for a in model.predict_with_interval(test))
    given = power_given_runtime(model.estimator_, test)
    dev = str(test["device_id"].iloc[0])
    donors = nearest_devices(dev, sorted(train["device_id"].unique()))
    watts, donor_limit = copy_watts(train, test, donors, keys)
    base = {NEAREST: watts, SCALED: watts * _limit(test) / donor_limit, CONST: constant_share(train, test)}
    notes = [*notes, *([note] if note else []), f"trained on {', '.join(donors)}; {len(test):,} test rows"]
    for name in [k for k, v in base.items() if not np.isfinite(v).any()]:
        del base[name]
        notes.append(f"{name}: no training GPU measured any of these configurations")
    out = []
    for part, sel in _parts(task, test):
        b = {k: v[sel] for k, v in base.items()}
        out.append(score(PROTOCOL, f"power_w ({part}; unseen GPU{label})", dev, test.loc[sel, "power_w"],
                         pred[sel, 1], "power", wall, baselines=b, interval=(lo[sel, 1], hi[sel, 1]), notes=notes))
        out.append(score(PROTOCOL, f"power_w ({part}; unseen GPU{label}, measured runtime given)", dev,
                         test.loc[sel, "power_w"], given[sel], "power", wall, baselines=b, notes=notes))
    return [_tagged(r, task) for r in out]


def unseen_gpus(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Part (b): leave each GPU with power tables out (two or more needed), then GB200 <-> RTX 4070."""
    out: list[Result] = []
    for task in TASKS:
        records = _measured(ws, task)
        devices = sorted(records["device_id"].unique())
        if len(devices) < 2:
            continue
        for dev in devices:
            held = (records["device_id"] == dev).to_numpy()
            out.extend(_cross(task, records[~held], records[held], CONFIG_KEYS[task], "", cfg.seed,
                              ["held-out GPU known only by its spec sheet; every library pooled in training"]))
    if not (ws.data_root / GPPERF).is_dir():
        return out
    gemm, rtx = _measured(ws, "gemm"), _gpperf_power(ws)
    keys = ("m", "n", "k")
    pair_note = ("cross-GPU pair this data root can measure: GPPerf's RTX 4070 CUTLASS FP32 SGEMM (nvidia-smi "
                 "power around the run, mostly after it; ~84% of rows without power dropped) vs aiconfigurator's "
                 "tensor-core GEMMs; copy baselines match (m, n, k) only (no dtype or library in common)")
    for dev in sorted(gemm["device_id"].unique()):
        on = gemm[gemm["device_id"] == dev]
        out.extend(_cross("gemm", on, rtx, keys, f" from {dev}", cfg.seed, [pair_note]))
        out.extend(_cross("gemm", rtx, on, keys, " from rtx_4070", cfg.seed, [pair_note]))
    return out


# ====================================================================================== (c) libraries
def other_library(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Part (c): per GPU and task, train on one library's rows, test on the other's."""
    out: list[Result] = []
    for task in TASKS:
        records = _measured(ws, task)
        keys = [k for k in CONFIG_KEYS[task] if k != "backend"]
        for dev in sorted(records["device_id"].unique()):
            rows = records[records["device_id"] == dev]
            libs = sorted(rows["backend"].dropna().unique())
            for src in libs:
                for dst in (lib for lib in libs if lib != src):
                    options = settings().options
                    train, note = sample_rows(rows[rows["backend"] == src], options["cross_rows"], cfg.seed)
                    test, _ = sample_rows(rows[rows["backend"] == dst], options["test_rows"], cfg.seed)
                    start = time.perf_counter()
                    model = fit_model(_config(task, ["runtime_ms", "power_w"]), train, seed=cfg.seed)
                    pred = np.asarray(model.predict(test), dtype="float64")
                    given = power_given_runtime(model, test)
                    wall = time.perf_counter() - start
                    other = copy_from_devices(rows[rows["backend"] == src], test, [dev], keys, target="power_w")
                    base = {OTHER_LIB: other, CONST: constant_share(train, test)}
                    notes = [*([note] if note else []), f"trained on {src} only, tested on {len(test):,} {dst} rows; "
                             f"{OTHER_LIB}: {src}'s measured watts for the same configuration"]
                    for part, sel in _parts(task, test):
                        b = {k: v[sel] for k, v in base.items()}
                        label = f"power_w ({part}; {src} -> {dst})"
                        out.append(_tagged(score(PROTOCOL, label, dev, test.loc[sel, "power_w"], pred[sel, 1], "power",
                                                 wall, baselines=b, notes=notes), task))
                        out.append(_tagged(score(PROTOCOL, label.replace(")", ", measured runtime given)"), dev,
                                                 test.loc[sel, "power_w"], given[sel], "power", wall, baselines=b,
                                                 notes=notes), task))
    return out


# ===================================================================================== (d) adaptation
#: revealed rows of the new setting the adapted model sees (0: the model as trained)
ADAPT_K: tuple[int, ...] = (0, 32, 128, 512)


def adapted_library(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Part (d): per GPU, a GEMM model of runtime, power and energy trained on one library, saved as a bundle and
    adapted (:meth:`perfcast.Predictor.adapt`) to the other library from K of its rows (drawn from 80 % of its
    shapes), scored on the other 20 % of its shapes: the short-probe adaptation applied to power."""
    import tempfile
    from pathlib import Path

    from perfcast.models.persistence.bundle import save_model
    from perfcast.predictor import Predictor

    out: list[Result] = []
    records, options = _measured(ws, "gemm"), settings().options
    keys = [k for k in CONFIG_KEYS["gemm"] if k != "backend"]
    for dev in sorted(records["device_id"].unique()):
        rows = records[records["device_id"] == dev]
        libs = sorted(rows["backend"].dropna().unique())
        for src, dst in ((a, b) for a in libs for b in libs if a != b):
            train, note = sample_rows(rows[rows["backend"] == src], options["cross_rows"], cfg.seed)
            model, wall = fit("gemm", train, cfg.seed)
            with tempfile.TemporaryDirectory() as tmp:
                base = Predictor.load(save_model(model, "gemm", train, Path(tmp) / "base"))
            pool, test = unseen_shape_split(rows[rows["backend"] == dst].reset_index(drop=True), seed=cfg.seed)
            test, _ = sample_rows(test, options["test_rows"], cfg.seed)
            base_w = {OTHER_LIB: copy_from_devices(rows[rows["backend"] == src], test, [dev], keys, target="power_w"),
                      CONST: constant_share(train, test)}
            for k in ADAPT_K:
                start = time.perf_counter()
                p = base.adapt(pool.sample(min(k, len(pool)), random_state=cfg.seed), seed=cfg.seed) if k else base
                got = p.predict(test)
                mode = p.metadata.get("adaptation", {}).get("mode", "none") if k else "none"
                runtime_ape = float(np.mean(np.abs(got["runtime_ms"].to_numpy() / test["runtime_ms"].to_numpy() - 1)))
                notes = [*([note] if note else []), f"trained on {src} only; adapted on {k} {dst} rows of other "
                         f"shapes; tested on {len(test):,} {dst} rows of held-out shapes; {OTHER_LIB}: {src}'s "
                         f"measured watts for the same configuration", f"correction chosen: {mode}; runtime mean APE "
                         f"{runtime_ape:.2%} on the same rows"]
                out.append(_tagged(score(PROTOCOL, f"power_w (gemm; {src} -> {dst}, adapted on K={k} rows)", dev,
                                         test["power_w"], got["power_w"], "power",
                                         wall + time.perf_counter() - start, baselines=base_w,
                                         interval=(got["power_w_lo"], got["power_w_hi"]), notes=notes), "gemm"))
    return out


def aiconfigurator_power(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Every part of the protocol, in order (a), (b), (c), (d)."""
    return [*unseen_shapes(ws, cfg), *unseen_gpus(ws, cfg), *other_library(ws, cfg), *adapted_library(ws, cfg)]
