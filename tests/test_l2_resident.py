"""The hybrid's opt-in L2-resident roofline base on real aiconfigurator GEMM rows: a GEMM whose operands fit in the
L2 gets a lower memory time than the DRAM roofline, one that does not keeps it; the default base is untouched; the
L2 rate is fitted on training rows, saved in the state, and a row featurized for another device reads that
device's L2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.features import feature_transformer
from perfcast.features.groups import GPU_HARDWARE
from perfcast.features.on_device import featurize_on_device
from perfcast.models import make_model
from perfcast.models.estimators.hybrid import L2_SPEEDUP, HybridRegressor
from perfcast.models.estimators.physical_base import L2_BYTES_PER_CLOCK, fit_rate, l2_speedup, physical_roofline
from perfcast.models.estimators.roofline import baseline_rows
from perfcast.models.persistence.bundle import PerfcastModel, save_model
from perfcast.models.registry import hybrid_estimator
from perfcast.models.uncertainty.intervals import ConformalRegressor

GPUS = ("a100_sxm", "h100_sxm", "l40s", "rtx_pro_6000_server")


@pytest.fixture(scope="module")
def gemm(data_root: Path) -> pd.DataFrame:
    """bf16 GEMM latencies of four GPUs (300 rows each), the L40S's 96 MB and the A100's 40 MB L2 among them."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if u.match("*/gemm/*/*/gemm_perf.parquet") and u.parts[-5] in GPUS]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[(df["dtype"] == "bfloat16") & (df["runtime_ms"] > 0)]
    return df.groupby("device_id").sample(n=300, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def features(gemm: pd.DataFrame) -> pd.DataFrame:
    return feature_transformer("gemm").fit(gemm).transform(gemm)


def _dram(F: pd.DataFrame) -> np.ndarray:
    return np.maximum(10.0 ** F["log10_compute_ms"].to_numpy(), 10.0 ** F["log10_memory_ms"].to_numpy())


def test_a_gemm_that_fits_the_l2_gets_a_lower_roofline_time(gemm, features) -> None:
    """On the L40S (96 MB L2, 864 GB/s DRAM), at 8 bytes per SM per clock (2.9 TB/s), a memory-bound GEMM whose
    bytes fit in the L2 is faster than its DRAM roofline; a GEMM larger than the L2 keeps its DRAM time. On the
    A100 the same rate is below its DRAM bandwidth, so nothing changes there (the L2 is never slower than DRAM)."""
    A, names = features.to_numpy(dtype="float64"), tuple(features.columns)
    dram, l2 = _dram(features), physical_roofline(A, names, None, False, l2_bytes_per_clock=8.0)
    nbytes = 10.0 ** features["log10_bytes"].to_numpy()
    memory_bound = features["log10_memory_ms"].to_numpy() > features["log10_compute_ms"].to_numpy()
    l40s = (gemm["device_id"] == "l40s").to_numpy()
    fits = l40s & memory_bound & (nbytes <= 96e6)
    assert fits.sum() > 20
    t_c, t_m = (10.0 ** features[c].to_numpy()[fits] for c in ("log10_compute_ms", "log10_memory_ms"))
    np.testing.assert_allclose(l2[fits], np.maximum(t_c, t_m * 864.0 / (8.0 * 142 * 2.52)), rtol=1e-9)
    assert (l2[fits] < dram[fits]).all()
    too_big = l40s & (nbytes > 96e6)
    assert too_big.any()
    np.testing.assert_allclose(l2[too_big], dram[too_big], rtol=1e-12)
    a100 = (gemm["device_id"] == "a100_sxm").to_numpy()
    np.testing.assert_allclose(l2[a100], dram[a100], rtol=1e-12)
    assert (l2 <= dram * (1 + 1e-12)).all()


def test_the_default_base_is_the_plain_roofline_bit_for_bit(gemm, features) -> None:
    """Without the option the base is the roofline model's own (plus the floor) and the state has no L2 key, so
    a bundle saved by default is what it was."""
    A, names = features.to_numpy(dtype="float64"), tuple(features.columns)
    np.testing.assert_array_equal(physical_roofline(A, names, None, False), _dram(features))
    model = hybrid_estimator("gemm", {"n_estimators": 10})
    assert isinstance(model, HybridRegressor) and not model.l2_resident
    model.fit(features, gemm["runtime_ms"])
    assert model.l2_rate_ == 0.0 and "l2_rate" not in model.to_state()[0]
    np.testing.assert_array_equal(model._baseline(A, names),
                                  baseline_rows(A, names, "runtime_ms") + model._floor(A, names))


def test_the_l2_rate_fit_finds_the_rate_that_made_the_data(gemm, features) -> None:
    """Runtimes made by a 16 B/clock L2 (times a level per device) are fitted at 16; runtimes of the plain DRAM
    roofline at 0 (the term is off when it does not help)."""
    A, names = features.to_numpy(dtype="float64"), tuple(features.columns)
    level = gemm["device_id"].map(dict(zip(GPUS, (1.3, 1.1, 2.0, 1.6), strict=True))).to_numpy()

    def base(rate: float) -> np.ndarray:
        return physical_roofline(A, names, None, False, l2_bytes_per_clock=rate)

    assert fit_rate(features, base(16.0) * level, base, L2_BYTES_PER_CLOCK) == 16.0
    assert fit_rate(features, base(0.0) * level, base, L2_BYTES_PER_CLOCK) == 0.0


def test_an_l2_hybrid_fits_its_rate_on_real_rows_and_round_trips(gemm, features) -> None:
    """On the real runtimes of the four GPUs the fit turns the term on (a rate of the grid above 0), and the state
    restores it: the restored hybrid predicts what the fitted one did; a state without the key restores without it."""
    params = {"l2_resident": True, "n_estimators": 30, "num_leaves": 7}
    make_model("hybrid", "gemm", ["runtime_ms"], params)  # the registry accepts the switch by name
    model = hybrid_estimator("gemm", params)
    model.fit(features, gemm["runtime_ms"])
    assert model.l2_rate_ in L2_BYTES_PER_CLOCK and model.l2_rate_ > 0
    pred = model.predict(features)
    state, arrays = model.to_state()
    assert state["l2_rate"] == model.l2_rate_
    back = HybridRegressor.from_state(state, arrays)
    back.estimator_ = model.estimator_
    np.testing.assert_array_equal(back.predict(features), pred)
    plain = HybridRegressor.from_state({k: v for k, v in state.items() if k != "l2_rate"}, arrays)
    assert plain.l2_rate_ == 0.0 and not plain.l2_resident


def test_a_row_featurized_for_another_device_reads_that_devices_l2(gemm, features) -> None:
    """A100 GEMMs of 40-96 MB do not fit its 40 MB L2 but fit the L40S's 96 MB: featurized on the L40S's sheet
    (perfcast.features.on_device), the L2 base lowers their memory time; on the A100 it does not."""
    nbytes = 10.0 ** features["log10_bytes"].to_numpy()
    a100, l40s = ((gemm["device_id"] == d).to_numpy() for d in ("a100_sxm", "l40s"))
    rows = features[a100 & (nbytes > 40e6) & (nbytes <= 96e6)]
    assert len(rows) > 5
    sheet = features[l40s].iloc[0]
    moved = featurize_on_device(rows, {c: float(sheet[c]) for c in GPU_HARDWARE})

    def memory(F: pd.DataFrame) -> np.ndarray:
        A, names = F.to_numpy(dtype="float64", copy=True), tuple(F.columns)
        # compute at zero cost: the roofline is then the memory time alone
        A[:, names.index("log10_compute_ms")] = -np.inf
        return physical_roofline(A, names, None, False, l2_bytes_per_clock=8.0)

    np.testing.assert_allclose(memory(rows), 10.0 ** rows["log10_memory_ms"].to_numpy(), rtol=1e-12)
    assert (memory(moved) < 0.5 * 10.0 ** moved["log10_memory_ms"].to_numpy()).all()


def test_the_l2_speedup_column_is_zero_on_hbm_and_positive_where_the_l2_term_acts(gemm, features) -> None:
    """log10(DRAM / L2-resident memory time): 0 on the A100 and H100 (their HBM outruns the L2 rate), 0 on an L40S
    GEMM larger than its L2, log10 of the rates' ratio on an L40S GEMM that fits (8 B/clock x 142 SMs x 2.52 GHz over
    864 GB/s); 0 everywhere at rate 0."""
    A, names = features.to_numpy(dtype="float64"), tuple(features.columns)
    speedup = l2_speedup(A, names, 8.0)
    nbytes = 10.0 ** features["log10_bytes"].to_numpy()
    hbm = gemm["device_id"].isin(["a100_sxm", "h100_sxm"]).to_numpy()
    l40s = (gemm["device_id"] == "l40s").to_numpy()
    assert hbm.sum() == 600 and (speedup[hbm] == 0.0).all()
    assert (speedup[l40s & (nbytes > 96e6)] == 0.0).all()
    fits = l40s & (nbytes <= 96e6)
    assert fits.sum() > 20
    np.testing.assert_allclose(speedup[fits], np.log10(8.0 * 142 * 2.52 / 864.0), rtol=1e-9)
    assert (l2_speedup(A, names, 0.0) == 0.0).all()


def test_an_l2_feature_hybrid_gives_its_trees_the_column_and_round_trips(gemm, features) -> None:
    """With ``l2_feature`` the trees read the speedup column (last); the state restores the switch, the restored
    hybrid predicts what the fitted one did, by frame and by array (a loaded forest's path), one row as in a batch;
    the switch without the L2 base is refused."""
    params = {"l2_resident": True, "l2_feature": True, "n_estimators": 30, "num_leaves": 7,
              "columns": ["log10_flops", "log10_bytes"]}
    make_model("hybrid", "gemm", ["runtime_ms"], params)  # the registry accepts the switch by name
    model = hybrid_estimator("gemm", params).fit(features, gemm["runtime_ms"])
    assert model.l2_rate_ > 0
    inputs = model._inputs(features)
    assert list(inputs.columns) == ["log10_flops", "log10_bytes", L2_SPEEDUP]
    A, names = features.to_numpy(dtype="float64"), tuple(features.columns)
    np.testing.assert_array_equal(inputs[L2_SPEEDUP].to_numpy(), l2_speedup(A, names, model.l2_rate_))
    np.testing.assert_array_equal(model._input_array(A, names), inputs.to_numpy())
    pred = model.predict(features)
    state, arrays = model.to_state()
    assert state["l2_feature"] is True
    back = HybridRegressor.from_state(state, arrays)
    back.estimator_ = model.estimator_
    np.testing.assert_array_equal(back.predict(features), pred)
    np.testing.assert_allclose(back.predict_rows(A[5:6], names), pred[5:6], rtol=1e-12)
    assert "l2_feature" not in hybrid_estimator("gemm", {"l2_resident": True, "n_estimators": 5}).fit(
        features, gemm["runtime_ms"]).to_state()[0]
    with pytest.raises(ValueError, match="l2_resident"):
        hybrid_estimator("gemm", {"l2_feature": True, "n_estimators": 5}).fit(features, gemm["runtime_ms"])


def test_an_l2_feature_hybrid_round_trips_through_a_bundle(gemm, tmp_path: Path) -> None:
    """Saved and loaded (its forest then read by array), the hybrid with the speedup column predicts what it did,
    one row as in a batch."""
    params = {"l2_resident": True, "l2_feature": True, "num_leaves": 7, "n_estimators": 30}
    model = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], params), n_splits=2)
    model.fit(gemm, gemm[["runtime_ms"]])
    F = model.estimator_[0].transform(gemm)
    expected = np.asarray(model.estimator_[-1].predict(F), dtype="float64").reshape(len(F), -1)
    loaded = PerfcastModel.load(save_model(model, "gemm", gemm, tmp_path / "l2flag"))
    np.testing.assert_allclose(loaded.predict_features(F), expected, rtol=1e-12)
    np.testing.assert_allclose(loaded.predict_features(F.iloc[[7]]), expected[[7]], rtol=1e-12)
