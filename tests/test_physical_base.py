"""The hybrid's physical base (perfcast.models.estimators.physical_base): the board's power limit fitted on real
NeuSight training rows of the five training GPUs, and wave quantisation, with the hybrid's state round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers.neusight import NeuSightImporter
from perfcast.eval.protocols import neusight_ood_split
from perfcast.features.gemm import GemmFeatures
from perfcast.models import make_model
from perfcast.models.estimators.hybrid import HybridRegressor
from perfcast.models.estimators.layout_split import LayoutSplit, layout_rows
from perfcast.models.estimators.physical_base import (
    device_rates,
    fit_power_limit,
    fit_size_trend,
    layout_keys,
    physical_roofline,
    power_slowdown,
    size_trend_factor,
    tile_times,
)
from perfcast.models.estimators.roofline import baseline_rows
from perfcast.models.persistence.bundle import PerfcastModel, save_model
from perfcast.models.registry import hybrid_estimator
from perfcast.models.uncertainty.intervals import ConformalRegressor


@pytest.fixture(scope="module")
def split(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """600 rows per training file of the five training GPUs and 300 of each test file."""
    root, imp = data_root / "neusight", NeuSightImporter()
    frames = []
    for unit in imp.units(root):
        recs = imp.load(root, unit)["gemm"]
        frames.append(recs.sample(min(len(recs), 600 if "collect" in unit.parts else 300), random_state=0))
    return neusight_ood_split(pd.concat(frames, ignore_index=True))


@pytest.fixture(scope="module")
def features(split) -> tuple[GemmFeatures, pd.DataFrame, np.ndarray]:
    train, _ = split
    gf = GemmFeatures().fit(train)
    return gf, gf.transform(train), train["runtime_ms"].to_numpy(dtype="float64")


@pytest.mark.parametrize("kind", ["global", "generation"])
def test_power_limit_slows_the_low_power_cards_only(features, kind: str) -> None:
    """Fitted on the five GPUs' largest shapes, the limit binds for the 70-75 W P4 and T4, whose large GEMMs run
    2-3x below their roofline, hardest for one of them (with E per generation, harder than for any 250 W
    card); and it never exceeds what training saw."""
    _, X, y = features
    rates = device_rates(X, y)
    assert len(rates) == 5
    params = fit_power_limit(X, y, kind)
    assert 0.5 <= params["cap"] <= 1.0
    slow = power_slowdown(rates["peak_tflops"], rates["tdp_w"], rates["compute_capability"], params)
    low_power = rates["tdp_w"].to_numpy() < 100
    assert slow[low_power].min() > 1.3
    assert slow[low_power].max() == slow.max()
    if kind == "generation":  # one E for every silicon also slows the Ampere card; per generation it does not
        assert slow[low_power].min() > slow[~low_power].max()
    assert slow.max() == pytest.approx(params["max_slowdown"])
    # a board with far less power per peak FLOP/s than any training card is slowed no more than the worst one
    far = power_slowdown(np.array([31.3]), np.array([7.2]), np.array([8.9]), params)
    assert far[0] == pytest.approx(params["max_slowdown"])
    # missing spec numbers: no correction rather than NaN
    assert power_slowdown(np.array([10.0]), np.array([np.nan]), np.array([7.0]), params)[0] == 1.0
    if kind == "global":
        assert params["slope"] == 0.0


def test_unknown_power_limit_names_the_choices(features) -> None:
    _, X, y = features
    with pytest.raises(ValueError, match="power_limit must be one of"):
        fit_power_limit(X, y, "tdp")


@pytest.mark.parametrize("kind", ["global-dvfs", "generation-dvfs"])
def test_dvfs_power_limit_slows_by_the_cube_root_unclipped(features, kind: str) -> None:
    """The DVFS law on real rows: a board needing r times its TDP runs r^(1/3) slower; the low-power cards are
    slowed more than the 250 W ones, and a board far outside the training budgets is carried past the
    training devices' largest slowdown (no clip), but by less than the linear law would."""
    _, X, y = features
    params = fit_power_limit(X, y, kind)
    assert params["exponent"] == pytest.approx(1.0 / 3.0) and "max_slowdown" not in params
    rates = device_rates(X, y)
    slow = power_slowdown(rates["peak_tflops"], rates["tdp_w"], rates["compute_capability"], params)
    low_power = rates["tdp_w"].to_numpy() < 100
    assert slow[low_power].max() == slow.max() > 1.3
    far = power_slowdown(np.array([31.3]), np.array([7.2]), np.array([8.9]), params)[0]
    assert far > slow.max()
    linear = power_slowdown(np.array([31.3]), np.array([7.2]), np.array([8.9]), {**params, "exponent": 1.0})[0]
    assert far == pytest.approx(linear ** (1.0 / 3.0))
    unit = {"cap": 1.0, "log10_e": 0.0, "slope": 0.0, "exponent": 1.0 / 3.0}  # 8 TFLOP/s needed per 1 W x 1
    assert power_slowdown(np.array([8.0]), np.array([1.0]), np.array([8.0]), unit)[0] == pytest.approx(2.0)


def test_size_trend_continues_bmm_past_the_training_flops(split, features) -> None:
    """The size trend on real rows: bmm (``nn``) runs nearer its roofline as it grows on every training GPU, so
    its slope is negative, linear's is clipped at 0 or below; inside the training FLOPs the hybrid predicts
    what it does without the trend, past them bmm is predicted faster but never below the plain roofline."""
    gf, X, y = features
    _, test = split
    params = {"power_limit": "generation", "size_trend": "op", "num_leaves": 7, "n_estimators": 40}
    make_model("hybrid", "gemm", ["runtime_ms"], params)  # the registry accepts the switch by name
    hybrid = hybrid_estimator("gemm", params).fit(X, y)
    A, names = X.to_numpy(dtype="float64"), tuple(X.columns)
    groups = np.asarray(layout_keys(A, names, "op"))
    assert sorted(hybrid.trend_) == ["nn", "tn"]
    assert hybrid.trend_["nn"]["slope"] < 0.0 <= -hybrid.trend_["tn"]["slope"]
    for g, trend in hybrid.trend_.items():
        assert trend["start"] == pytest.approx(X["log10_flops"].to_numpy()[groups == g].max())
    F = gf.transform(test)
    pred = hybrid.predict(F)
    state, arrays = hybrid.to_state()
    flat = HybridRegressor.from_state({k: v for k, v in state.items() if k not in ("size_trend", "trend")}, arrays)
    flat.estimator_ = hybrid.estimator_
    assert flat.trend_ is None  # a hybrid saved before the trend existed restores without it
    plain = flat.predict(F)
    beyond = F["log10_flops"].to_numpy() > hybrid.trend_["nn"]["start"]
    bmm = np.asarray(layout_keys(F.to_numpy(dtype="float64"), tuple(F.columns), "op")) == "nn"
    assert (beyond & bmm).sum() >= 10  # the test GPU's bmm reaches past the training FLOPs
    np.testing.assert_array_equal(pred[~beyond], plain[~beyond])
    roofline = 10.0 ** F["log10_roofline_ms"].to_numpy()
    faster = beyond & bmm & (plain > roofline)
    assert faster.sum() >= 5 and (pred[faster] < plain[faster]).all()
    assert (pred >= np.minimum(plain, roofline) * (1 - 1e-12)).all()
    back = HybridRegressor.from_state(state, arrays)
    back.estimator_ = hybrid.estimator_
    np.testing.assert_allclose(back.predict(F), pred)
    factor = size_trend_factor(F.to_numpy(dtype="float64"), tuple(F.columns), "op", hybrid.trend_)
    assert (factor <= 1.0).all() and (factor[~beyond] == 1.0).all()


def test_size_trend_pooled_has_one_group_and_refuses_unknown_kinds(features) -> None:
    _, X, y = features
    log_ratio = np.log(y / baseline_rows(X.to_numpy(dtype="float64"), tuple(X.columns), "runtime_ms"))
    pooled = fit_size_trend(X, log_ratio, "pooled")
    assert list(pooled) == ["all"] and pooled["all"]["slope"] <= 0.0
    assert pooled["all"]["start"] == pytest.approx(X["log10_flops"].max())
    with pytest.raises(ValueError, match="size_trend must be one of"):
        fit_size_trend(X, log_ratio, "per-device")


def test_wave_base_only_lengthens_the_compute_term(features) -> None:
    _, X, _ = features
    A, names = X.to_numpy(dtype="float64"), tuple(X.columns)
    plain = baseline_rows(A, names, "runtime_ms")
    waves = physical_roofline(A, names, None, waves=True)
    np.testing.assert_allclose(physical_roofline(A, names, None, waves=False), plain)
    assert (waves >= plain * (1 - 1e-12)).all()
    partial = X["wave_efficiency"].to_numpy() < 0.5
    compute_bound = X["compute_memory_balance"].to_numpy() > 0.5
    assert (waves[partial & compute_bound] > plain[partial & compute_bound]).all()


def test_hybrid_on_a_power_base_round_trips_its_state(split, features) -> None:
    gf, X, y = features
    _, test = split
    params = {"power_limit": "generation", "wave_quantised": True, "num_leaves": 7, "n_estimators": 40}
    make_model("hybrid", "gemm", ["runtime_ms"], params)  # the registry accepts both switches by name
    hybrid = hybrid_estimator("gemm", params)
    assert isinstance(hybrid, HybridRegressor)
    hybrid.fit(X, y)
    assert hybrid.power_ is not None and hybrid.power_["max_slowdown"] > 1.0
    F = gf.transform(test)
    pred = hybrid.predict(F)
    assert np.isfinite(pred).all() and (pred > 0).all()
    state, arrays = hybrid.to_state()
    back = HybridRegressor.from_state(state, arrays)
    back.estimator_ = hybrid.estimator_
    np.testing.assert_allclose(back.predict(F), pred)
    # a hybrid saved before these switches existed restores without them
    old = {k: v for k, v in state.items() if k not in ("power", "wave_quantised")}
    plain = HybridRegressor.from_state(old, arrays)
    assert plain.power_ is None and not plain.wave_quantised


def test_tile_base_quantises_tiles_and_waves(features) -> None:
    """NeuSight's tile formulation on real rows: never below the plain roofline (whole tiles in whole waves,
    each tile reading its own panels), equal to it where one tile per SM fills every wave exactly, and
    far above it on the P4, whose tile panels need more bandwidth than its SMs' share."""
    _, X, y = features
    A, names = X.to_numpy(dtype="float64"), tuple(X.columns)
    plain = baseline_rows(A, names, "runtime_ms")
    tiles = physical_roofline(A, names, None, waves=False, tiles=True)
    assert np.isfinite(tiles).all()
    assert (tiles >= plain * (1 - 1e-9)).all()
    compute, memory = tile_times(A, names)
    # beyond one tile: the roofline's compute over the waves' efficiency, times the output padded to whole tiles
    m, n = np.rint(2.0 ** X["log2_m"].to_numpy()), np.rint(2.0 ** X["log2_n"].to_numpy())
    tm, tn = X["tile_m"].to_numpy(), X["tile_n"].to_numpy()
    big = (m >= tm) & (n >= tn)
    assert big.sum() >= 100
    padding = np.ceil(m / tm) * tm * np.ceil(n / tn) * tn / (m * n)
    np.testing.assert_allclose((compute * X["wave_efficiency"].to_numpy())[big],
                               (10.0 ** X["log10_compute_ms"].to_numpy() * padding)[big], rtol=1e-6)
    # the batch runs as waves: doubling it (past one wave) doubles the time of a full-wave bmm
    B = A.copy()
    B[:, names.index("log2_batch")] += 1.0
    doubled = tile_times(B, names)[0]
    full = np.isclose(X["wave_efficiency"].to_numpy(), 1.0)
    assert full.sum() >= 10
    np.testing.assert_allclose(doubled[full], 2 * compute[full], rtol=1e-9)
    # the P4's large GEMMs: the tile base explains more of their slowness than the roofline does
    p4 = (X["peak_tflops"].to_numpy() < 6.0) & (X["log10_flops"].to_numpy() > np.quantile(X["log10_flops"], 0.75))
    assert np.median(y[p4] / tiles[p4]) < np.median(y[p4] / plain[p4])
    assert (memory[p4] > 0).all()
    # a missing SM count: the plain roofline rather than NaN
    A = A.copy()
    A[:, names.index("sm_count")] = np.nan
    np.testing.assert_allclose(physical_roofline(A, names, None, waves=False, tiles=True), plain)


def test_hybrid_on_a_tile_base_round_trips_its_state(split, features) -> None:
    gf, X, y = features
    _, test = split
    params = {"tiles": True, "power_limit": "generation", "monotone": {"log2_waves": -1}, "num_leaves": 7,
              "n_estimators": 40}
    make_model("hybrid", "gemm", ["runtime_ms"], params)  # the registry accepts the switch by name
    hybrid = hybrid_estimator("gemm", params).fit(X, y)
    F = gf.transform(test)
    pred = hybrid.predict(F)
    assert np.isfinite(pred).all() and (pred > 0).all()
    state, arrays = hybrid.to_state()
    assert state["tiles"] is True
    back = HybridRegressor.from_state(state, arrays)
    back.estimator_ = hybrid.estimator_
    np.testing.assert_allclose(back.predict(F), pred)
    # the base differs from the power base alone, so the switch is really used
    plain = HybridRegressor.from_state({**state, "tiles": False}, arrays)
    plain.estimator_ = hybrid.estimator_
    assert not np.allclose(plain.predict(F), pred)


def test_layout_split_fits_bmm_and_linear_apart(split, features) -> None:
    """NeuSight's per-op members on real rows: the bmm (``nn``) and linear (``tn``) rows get a hybrid each, with
    its own power fit; a request is routed like a batch, and the split survives a save and load."""
    gf, X, y = features
    _, test = split
    labels = layout_rows(X.to_numpy(dtype="float64"), tuple(X.columns))
    assert set(labels) == {"nn", "tn"}
    params = {"by_layout": True, "tiles": True, "power_limit": "generation", "num_leaves": 7, "n_estimators": 40}
    model = hybrid_estimator("gemm", params)
    assert isinstance(model, LayoutSplit)
    model.fit(X, y)
    assert sorted(model.vendors_) == ["nn", "tn"]
    bmm, linear = (model.estimators_[model.vendors_.index(k)] for k in ("nn", "tn"))
    assert bmm.power_ != linear.power_  # each op's own fit of the board's power limit
    F = gf.transform(test)
    pred = model.predict(F)
    assert np.isfinite(pred).all() and (pred > 0).all()
    A, names = F.to_numpy(dtype="float64"), tuple(F.columns)
    np.testing.assert_allclose([model.predict_rows(A[i:i + 1], names)[0] for i in range(0, len(A), 97)],
                               pred[::97], rtol=1e-12)
    # a row of unknown layout goes to the layout with the most training rows
    A = A.copy()
    A[:, names.index("trans_a")] = np.nan
    most = model.estimators_[0]
    np.testing.assert_allclose(model.predict_rows(A, names), most.predict_rows(A, names))


def test_layout_split_round_trips_through_a_bundle(tmp_path: Path, split) -> None:
    """Both ops' hybrids on the tile base are saved and loaded (kind "layout") and predict what they did."""
    train, test = split
    params = {"by_layout": True, "tiles": True, "power_limit": "generation", "num_leaves": 7, "n_estimators": 30}
    model = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], params), n_splits=2)
    model.fit(train, train[["runtime_ms"]])
    F = model.estimator_[0].transform(test)
    expected = np.asarray(model.estimator_[-1].predict(F), dtype="float64").reshape(len(F), -1)
    path = save_model(model, "gemm", train, tmp_path / "layout")
    loaded = PerfcastModel.load(path)
    assert isinstance(loaded.heads[0], LayoutSplit) and sorted(loaded.heads[0].vendors_) == ["nn", "tn"]
    np.testing.assert_array_equal(loaded.predict_features(F), expected)


def test_balance_ops_weighs_bmm_and_linear_alike(split, features) -> None:
    """NeuSight has about three bmm rows per linear one (kept here: a third of the sample's linear rows);
    weighed alike, each op's rows carry half the fit (mean weight 1), the trees change, and the switch is
    saved in the state."""
    gf, X, y = features
    _, test = split
    keep = (X["trans_a"].to_numpy() < 0.5) | (np.arange(len(X)) % 3 == 0)
    X, y = X[keep], y[keep]
    params = {"power_limit": "generation", "balance_ops": True, "num_leaves": 7, "n_estimators": 40}
    make_model("hybrid", "gemm", ["runtime_ms"], params)  # the registry accepts the switch by name
    hybrid = hybrid_estimator("gemm", params)
    weights = hybrid._op_weights(X)["sample_weight"]
    bmm = X["trans_a"].to_numpy() < 0.5
    assert 2.0 < bmm.sum() / (~bmm).sum() < 4.0
    assert weights[bmm].sum() == pytest.approx(weights[~bmm].sum()) and weights.mean() == pytest.approx(1.0)
    hybrid.fit(X, y)
    plain = hybrid_estimator("gemm", {**params, "balance_ops": False}).fit(X, y)
    F = gf.transform(test)
    assert not np.allclose(hybrid.predict(F), plain.predict(F))
    assert hybrid.to_state()[0]["balance_ops"] is True
