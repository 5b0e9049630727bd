"""The power model on real GB200 rows: physics + correction beat the baselines on held-out shapes, energy is power
x runtime, GPUs are predicted through their spec sheet, and a bundle round-trips into a Predictor that returns
power and energy with intervals and ranks by energy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.eval.protocols import unseen_shape_split
from perfcast.models import make_model
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.models.estimators.power import LOWER, UPPER, PowerPhysics, PowerRegressor, energy_interval

SMALL = {"runtime": {"n_estimators": 120}, "correction": {"n_estimators": 120}}
TABLE = "gb200/gemm/trtllm/1.3.0rc17/gemm_perf.parquet"


@pytest.fixture(scope="module")
def rows(data_root: Path) -> pd.DataFrame:
    root = data_root / "aiconfigurator-power"
    df = get_importer("aiconfigurator-power").load(root, root / TABLE)["gemm"]
    return df.iloc[::25].reset_index(drop=True).assign(task="gemm")


@pytest.fixture(scope="module")
def split(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return unseen_shape_split(rows, seed=0)


@pytest.fixture(scope="module")
def fitted(split) -> ConformalRegressor:
    train, _ = split
    targets = ["runtime_ms", "power_w", "energy_j"]
    return ConformalRegressor(make_model("power", "gemm", targets, SMALL), n_splits=3).fit(train, train[targets])


def _inner(model: ConformalRegressor) -> PowerRegressor:
    return model.estimator_[-1].estimators_[0]


def test_unseen_shapes_beat_the_physics_alone_and_a_constant_share(fitted, split) -> None:
    train, test = split
    pred = fitted.predict(test)
    ape = lambda p: float(np.mean(np.abs(p - test["power_w"]) / test["power_w"]))  # noqa: E731
    est = _inner(fitted)
    features = fitted.estimator_[0].transform(test)
    physics = est.physics_.predict(features, PowerPhysics.utilisation(features, pred[:, 0]))
    constant = float(np.median(train["power_w"] / 1200.0)) * 1200.0
    assert ape(pred[:, 1]) < ape(physics) < ape(np.full(len(test), constant))
    assert ape(pred[:, 1]) < 0.2
    # the physics parameters are fitted inside their bounds and say something: idle is a minority of the limit
    theta = (est.physics_.idle_share, est.physics_.compute_weight, est.physics_.memory_weight)
    assert all(lo <= v <= hi for v, lo, hi in zip(theta, LOWER, UPPER, strict=True))
    assert 0.05 < est.physics_.idle_share < 0.5
    np.testing.assert_allclose(pred[:, 2], pred[:, 0] * pred[:, 1] / 1e3, rtol=1e-12)
    # the measured runtime can stand in for the predicted one
    given = est.power_at(features, test["runtime_ms"].to_numpy())
    assert ape(given) < ape(np.full(len(test), constant))


def test_another_gpu_is_predicted_through_its_spec_sheet(fitted, split) -> None:
    _, test = split
    big = test[test["m"] * test["n"] * test["k"] >= 2**36]  # compute-bound: near the limit on any board
    on_gb200 = fitted.predict(big)[:, 1]
    on_l40s = fitted.predict(big.assign(device_id="l40s", device_name="NVIDIA L40S"))[:, 1]
    assert np.median(on_gb200) > 600 and np.median(on_l40s) < 350 * 1.2  # the L40S's limit is 350 W
    assert np.median(on_l40s / on_gb200) == pytest.approx(350 / 1200, rel=0.35)


def test_targets_and_tasks_are_checked() -> None:
    with pytest.raises(ValueError, match="predicts power_w"):
        make_model("power", "gemm", ["runtime_ms"])
    with pytest.raises(ValueError, match="add runtime_ms"):
        make_model("power", "gemm", ["power_w", "energy_j"])
    with pytest.raises(ValueError, match="task 'cpu_bench'"):
        make_model("power", "cpu_bench", ["power_w"])
    with pytest.raises(ValueError, match="runtime must be a table"):
        make_model("power", "gemm", ["power_w"], {"runtime": 3})


def test_power_alone_uses_the_roofline_time(split) -> None:
    train, test = split
    model = make_model("power", "gemm", ["power_w"], SMALL).fit(train, train[["power_w"]])
    pred = model.predict(test)
    assert pred.shape == (len(test),) and np.isfinite(pred).all() and (pred > 0).all()


def test_bundle_round_trip_and_predictor_energy(fitted, split, tmp_path: Path) -> None:
    train, test = split
    path = save_model(fitted, "gemm", train, tmp_path / "full", {"model": "power"})
    p = Predictor.load(path)
    out = p.predict(test)
    pred, lo, hi = fitted.predict_with_interval(test)
    for j, t in enumerate(["runtime_ms", "power_w", "energy_j"]):
        np.testing.assert_allclose(out[t], pred[:, j], rtol=1e-9)
        np.testing.assert_allclose(out[f"{t}_lo"], lo[:, j], rtol=1e-9)
        np.testing.assert_allclose(out[f"{t}_hi"], hi[:, j], rtol=1e-9)
    cover = ((test["power_w"] >= out["power_w_lo"]) & (test["power_w"] <= out["power_w_hi"])).mean()
    assert 0.75 < cover <= 1.0
    assert out["in_distribution"].mean() > 0.9  # held-out shapes inside the trained sizes
    # the domain guard flags power asked of a GPU outside the trained hardware, as it does for runtime
    other = p.predict({"m": 4096, "n": 4096, "k": 4096, "dtype": "bfloat16", "device": "l40s"})
    assert other["in_distribution"] is False and other["ood_reason"]


def test_predictor_derives_energy_and_ranks_by_it(split, tmp_path: Path) -> None:
    train, _ = split
    targets = ["runtime_ms", "power_w"]
    model = ConformalRegressor(make_model("power", "gemm", targets, SMALL), n_splits=3).fit(train, train[targets])
    p = Predictor.load(save_model(model, "gemm", train, tmp_path / "rp", {"model": "power"}))
    one = p.predict({"m": 8192, "n": 8192, "k": 8192, "dtype": "bfloat16", "device": "gb200", "backend": "trtllm"})
    assert one["energy_j"] == pytest.approx(one["power_w"] * one["runtime_ms"] / 1e3, rel=1e-12)
    assert one["energy_j_lo"] < one["energy_j"] < one["energy_j_hi"]
    # the combined interval is wider than either factor's and no wider than both stacked
    width = np.log(one["energy_j_hi"] / one["energy_j"])
    parts = [np.log(one[f"{t}_hi"] / one[t]) for t in targets]
    assert max(parts) <= width <= sum(parts) + 1e-12
    ranked = p.rank({"m": 4096, "n": 4096, "k": 4096, "dtype": "bfloat16"}, ["gb200", "h100_sxm", "l40s"],
                    by="energy_j")
    assert list(ranked["rank"]) == [1, 2, 3] and ranked["energy_j"].is_monotonic_increasing
    with pytest.raises(ValueError, match="energy_j"):
        p.rank({"m": 64, "n": 64, "k": 64, "dtype": "bfloat16"}, ["gb200"], by="score")


def test_energy_interval_combines_in_quadrature() -> None:
    e, lo, hi = energy_interval((np.array([2.0]), np.array([1.0]), np.array([4.0])),
                                (np.array([100.0]), np.array([100.0]), np.array([100.0])))
    assert e[0] == pytest.approx(0.2) and lo[0] == pytest.approx(0.1) and hi[0] == pytest.approx(0.4)
