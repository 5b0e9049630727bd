"""The ``smooth`` shape term (LightGBM with a linear model per leaf): offered only when asked for, learns the
efficiency curve of a real unseen GPU from planned rows, and survives a bundle's state round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.estimators.adapt import AdaptedRegressor, fit_adaptation, fit_correction
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.perf_probe.plan import adaptation_plan

TRAIN_GPUS = ["a100_sxm", "h100_sxm", "b300_sxm"]
TARGET_GPU = "l40s"  # no family sibling among the training GPUs
K = 256


@pytest.fixture(scope="module")
def rows(data_root: Path) -> tuple[ConformalRegressor, pd.DataFrame, pd.DataFrame]:
    """A small base model on 400 real bf16 GEMMs of each training GPU; K planned L40S rows and 2,000 others."""
    return planned_gemm_rows(data_root, TRAIN_GPUS, TARGET_GPU, ["bfloat16"], K)


def planned_gemm_rows(data_root: Path, train_gpus: list[str], target_gpu: str, dtypes: list[str], k: int
                      ) -> tuple[ConformalRegressor, pd.DataFrame, pd.DataFrame]:
    """A small base model on 400 real TensorRT-LLM GEMMs of ``dtypes`` of each training GPU; ``k`` rows of the
    target GPU chosen by the adaptation plan, and 2,000 others."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix()
             and any(f"/{d}/" in u.as_posix() for d in [*train_gpus, target_gpu])]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"].isin(dtypes)]
    train = df[df["device_id"].isin(train_gpus)].groupby("device_id").sample(n=400, random_state=0)
    target = df[df["device_id"] == target_gpu].sample(2000 + k, random_state=0).reset_index(drop=True)
    base = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 60}), n_splits=2)
    base.fit(train, train[["runtime_ms"]])
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "gemm", k))
    return base, target[picked], target[~picked]


def _parts(base: ConformalRegressor, X: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    F = base.estimator_[0].transform(X)
    return F, np.asarray(base.estimator_[-1].predict(F), dtype="float64").ravel()


def _mape(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(pred / y - 1)))


def test_smooth_is_a_candidate_only_when_asked_for(rows):
    base, revealed, _ = rows
    F, b = _parts(base, revealed)
    y = revealed["runtime_ms"].to_numpy(dtype="float64")
    plain = fit_adaptation(F, b, y, task="gemm", smooth=False)
    offered = fit_adaptation(F, b, y, task="gemm", smooth=True)
    assert "smooth" not in plain.cv_error and "smooth" in offered.cv_error
    # same folds, same other candidates (the stack's and the kriging's scores follow whichever correction was chosen)
    assert all(offered.cv_error[m] == v for m, v in plain.cv_error.items() if not m.startswith(("stack", "krige")))


def test_the_smooth_term_learns_the_unseen_gpus_curve_and_round_trips(rows):
    base, revealed, test = rows
    F, b = _parts(base, revealed)
    Ft, bt = _parts(base, test)
    y, yt = (x["runtime_ms"].to_numpy(dtype="float64") for x in (revealed, test))
    level = fit_correction(F, b, y, "level", "gemm")
    smooth = fit_correction(F, b, y, "smooth", "gemm")
    assert smooth.mode == "smooth" and "is_linear=1" in smooth.shape_text  # LightGBM's text, linear leaves
    ours = _mape(yt, bt * np.exp(smooth.log_ratio(Ft, bt)))
    assert ours < 0.9 * _mape(yt, bt * np.exp(level.log_ratio(Ft, bt))), ours
    params, arrays = AdaptedRegressor(base.estimator_[-1], smooth).to_state()
    again = AdaptedRegressor.from_state(params, arrays)
    again.inner = base.estimator_[-1]
    np.testing.assert_array_equal(again.predict(Ft), AdaptedRegressor(base.estimator_[-1], smooth).predict(Ft))


@pytest.mark.parametrize("mode", ["shape", "fine", "smooth"])
def test_a_folds_unsaved_correction_predicts_what_its_saved_twin_does(rows, mode):
    """The guard's fold corrections skip the text and the compiled walkers (an adaptation's largest cost after the
    fits themselves) and predict with the fitted booster: the same trees, so the same held-out residuals (the
    linear walker sums to 1e-12), and no text to save by mistake."""
    base, revealed, others = rows
    F, b = _parts(base, revealed)
    y = revealed["runtime_ms"].to_numpy(dtype="float64")
    saved = fit_correction(F, b, y, mode, "gemm", seed=3)
    unsaved = fit_correction(F, b, y, mode, "gemm", seed=3, saved=False)
    assert saved.shape_text is not None and unsaved.shape_text is None and unsaved.live is not None
    assert unsaved.to_json() == saved.to_json()
    Fo, bo = _parts(base, others)
    ours, theirs = unsaved.log_ratio(Fo, bo), saved.log_ratio(Fo, bo)
    assert np.ptp(theirs) > 0.01  # a shape term that moves the rows, not only their level
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
