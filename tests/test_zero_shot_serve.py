"""The chosen K = 0 interval rule is part of a fitted model's state: a bundle saved after fit and loaded by
``perfcast.Predictor`` serves, for a GPU with a spec sheet and no training rows, exactly the bounds the benchmark
scores (:meth:`CrossFittedScores.bounds`), and a GPU of a vendor no training GPU has gets the OOD floor and flag.
Real aiconfigurator GEMM latencies: three NVIDIA GPUs trained, the GB200 (NVIDIA) and the Intel B60 held out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.experiments.presets import choose
from perfcast.models import make_model
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.calibration import FOREIGN_VENDOR
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.models.uncertainty.zero_shot import PRESET, CrossFittedScores, describe
from perfcast.training.config import IntervalsConfig, ZeroShotConfig
from perfcast.training.train import fit_conformal, model_input

TRAIN = ["a100_sxm", "h100_sxm", "l40s"]
HELD = ["gb200", "b60"]
#: every part of a rule: a width line in distance, per-kind groups with their own lines, a scale, vendor matching
VARIANT = ("linear", "kind own", 1.1, True)


@pytest.fixture(scope="module")
def rows(data_root: Path) -> pd.DataFrame:
    """900 real trtllm/vllm GEMM rows of each training GPU, 400 of each held-out one."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "gemm" in u.name and any(f"/{d}/" in u.as_posix() for d in TRAIN + HELD)]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["runtime_ms"] > 0]
    return df.groupby("device_id").sample(n=900, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(rows: pd.DataFrame) -> tuple[ConformalRegressor, CrossFittedScores, pd.DataFrame]:
    train = rows[rows["device_id"].isin(TRAIN)].reset_index(drop=True)
    base = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 30}),
                              n_splits=3).fit(train, train[["runtime_ms"]])
    return base, CrossFittedScores.of(base, train, train["runtime_ms"].to_numpy(), train["device_id"].to_numpy()), train


def served(base: ConformalRegressor, scores: CrossFittedScores, train: pd.DataFrame, variant: Any, path: Path
           ) -> Predictor:
    """The base with ``variant``'s rule in its calibration, saved and loaded as a user would."""
    base.calibration_ = scores.calibration(variant)
    return Predictor.load(save_model(base, "gemm", train, path, {"model": "hybrid"}))


@pytest.mark.parametrize("variant", [VARIANT, PRESET])
def test_a_saved_bundle_serves_the_benchmarked_k0_interval(rows, fitted, tmp_path, variant) -> None:
    base, scores, train = fitted
    predictor = served(base, scores, train, variant, tmp_path / "model")
    doc = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert doc["calibration"]["zero_shot"]["rule"]  # data in the manifest, nothing pickled
    for dev in HELD:
        test = rows[rows["device_id"] == dev].head(400).reset_index(drop=True)
        F = base.estimator_[0].transform(test)
        assert (scores.novelty.distance(F) > 0).all()  # a GPU the model has no rows of
        pred, lo, hi = (np.asarray(v, dtype="float64").reshape(-1) for v in base.predict_with_interval(test))
        # what the benchmark scores: the same bounds
        b_lo, b_hi, ood = scores.bounds(variant, F, pred, base.calibration_.noise(test, len(test))[:, 0])
        np.testing.assert_array_equal(lo, b_lo)
        np.testing.assert_array_equal(hi, b_hi)
        got = predictor.predict(test.drop(columns=["runtime_ms"]))
        np.testing.assert_allclose(got["runtime_ms"], pred, rtol=1e-12)
        np.testing.assert_allclose(got["runtime_ms_lo"], lo, rtol=1e-12)
        np.testing.assert_allclose(got["runtime_ms_hi"], hi, rtol=1e-12)
        one = predictor.predict(test.drop(columns=["runtime_ms"]).iloc[0].to_dict())  # a request's one-row path
        assert one["runtime_ms_lo"] == pytest.approx(lo[0], rel=1e-12)
        assert one["runtime_ms_hi"] == pytest.approx(hi[0], rel=1e-12)
        # the B60 (Intel, no Intel GPU trained) is flagged and at least as wide as the OOD floor; the GB200 is not
        assert ood.all() == (dev == "b60") and ood.any() == (dev == "b60")
        flagged = got["ood_reason"].fillna("").str.contains(FOREIGN_VENDOR, regex=False)
        assert flagged.all() == (dev == "b60") and flagged.any() == (dev == "b60")
        if dev == "b60":
            assert not got["in_distribution"].any() and not one["in_distribution"]
            assert (np.log(hi / pred) >= scores.ood_half_width(0.9) - 1e-12).all()


def test_the_rule_changes_unseen_gpus_only_and_the_preset_keeps_the_model_s_intervals(rows, fitted, tmp_path):
    base, scores, train = fitted
    own = scores.base
    seen = train.groupby("device_id").head(50).reset_index(drop=True)
    gb200 = rows[rows["device_id"] == "gb200"].head(300).reset_index(drop=True)
    plain = {name: base.estimator_[0].transform(x) for name, x in (("seen", seen), ("gb200", gb200))}
    for variant, changes_gb200 in ((VARIANT, True), (PRESET, False)):
        cal = scores.calibration(variant)
        for name, F in plain.items():
            pred, n = np.ones((len(F), 1)), len(F)
            want = own.bounds(pred, own.noise(None, n), features=F)
            got = cal.bounds(pred, cal.noise(None, n), features=F)
            same = all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
            assert same == (name == "seen" or not changes_gb200), (variant, name)
        # at another level the rule (quantiles at 90%) steps aside: the model's own calibration serves
        F = plain["gb200"]
        np.testing.assert_array_equal(cal.bounds(np.ones((len(F), 1)), own.noise(None, len(F)), 0.8, features=F)[1],
                                      own.bounds(np.ones((len(F), 1)), own.noise(None, len(F)), 0.8, features=F)[1])


def test_a_training_config_fits_the_rule_into_the_model(rows, fitted, tmp_path) -> None:
    """``[intervals] zero_shot`` in a training config: the fitted model carries the rule (re-drawn from its own
    cross-fitted rows), and a bundle of it serves the rule's bounds for a GPU it has no rows of."""
    _, _, train = fitted
    base = choose("aiconfigurator-adapt").config
    rule = ZeroShotConfig(width=VARIANT[0], groups=VARIANT[1], scale=VARIANT[2], vendor_matched=VARIANT[3])
    config = base.model_copy(update={"intervals": IntervalsConfig(n_splits=3, zero_shot=rule)})
    model = fit_conformal(config, train, {"n_estimators": 30}, seed=0)
    assert model.calibration_.zero_shot is not None and model.calibration_.zero_shot.rule == describe(VARIANT)
    gb200 = rows[rows["device_id"] == "gb200"].head(200).reset_index(drop=True)
    X = model_input(gb200, "gemm")
    pred, lo, hi = (np.asarray(v).reshape(-1) for v in model.predict_with_interval(X, noise=gb200))
    own = replace(model.calibration_, zero_shot=None)
    F = model.estimator_[0].transform(X)
    plain_hi = own.bounds(pred.reshape(-1, 1), own.noise(gb200, len(gb200)), features=F)[1]
    assert not np.array_equal(hi, plain_hi[:, 0])  # the rule, not the model's own widths, serves the GB200
    got = Predictor.load(save_model(model, "gemm", train, tmp_path / "m")).predict(gb200.drop(columns=["runtime_ms"]))
    np.testing.assert_allclose(got["runtime_ms_hi"], hi, rtol=1e-12)
    with pytest.raises(ValueError, match="groups"):
        ZeroShotConfig(width="linear", groups="device")
