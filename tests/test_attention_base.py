"""The attention options of the hybrid's physical base on hand-computed rows: the work model they read (a decode
row's KV-cache bytes with GQA and an FP8 cache, a causal prefill row's FLOPs), the softmax exponentials' time, the
L2-resident memory time restricted to decode rows, the rate fits, the state round trip, and one model per phase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.features import feature_transformer
from perfcast.models import make_model
from perfcast.models.estimators.hybrid import HybridRegressor
from perfcast.models.estimators.phase_split import PhaseSplit, phase_rows
from perfcast.models.estimators.physical_base import (EXP_PER_CLOCK, L2_BYTES_PER_CLOCK, decode_rows, fit_rate,
                                                      physical_roofline, softmax_ms)
from perfcast.models.persistence.bundle import PerfcastModel, save_model
from perfcast.models.registry import hybrid_estimator
from perfcast.models.uncertainty.intervals import ConformalRegressor

GPUS = ("h100_sxm", "l40s")


@pytest.fixture(scope="module")
def records(data_root: Path) -> pd.DataFrame:
    """200 context and 200 generation attention rows each of the H100 (50 MB L2, HBM) and the L40S (96 MB L2,
    GDDR)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if u.parts[-5] in GPUS and "attention" in u.name]
    parts = [imp.load(root, u)["attention"] for u in units]
    df = pd.concat([p[p["runtime_ms"] > 0].sample(n=200, random_state=0) for p in parts], ignore_index=True)
    return df


@pytest.fixture(scope="module")
def features(records: pd.DataFrame) -> pd.DataFrame:
    return feature_transformer("attention").fit(records).transform(records)


def _hand_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Two H100 rows with hand-set shapes: a decode step (batch 4, 32 query heads over 8 KV heads, 4,096 cached
    tokens, head_dim 128, bf16 queries, FP8 cache) and a causal bf16 prefill (batch 2, 8 heads, 1,024 tokens,
    head_dim 128)."""
    h100 = records[records["device_id"] == "h100_sxm"]
    dec = h100[h100["phase"] == "decode"].iloc[[0]].assign(
        batch=4, heads=32, kv_heads=8, seq_q=1, seq_kv=4096, head_dim=128, window=0, dtype="bfloat16", kv_dtype="fp8")
    pre = h100[h100["phase"] == "prefill"].iloc[[0]].assign(
        batch=2, heads=8, kv_heads=8, seq_q=1024, seq_kv=1024, head_dim=128, window=0, dtype="bfloat16",
        kv_dtype="bfloat16")
    return pd.concat([dec, pre], ignore_index=True)


def test_the_work_model_of_a_decode_and_a_prefill_row_by_hand(records) -> None:
    """Decode: K and V of 8 KV heads x 4,096 tokens x 128 at 1 byte = 2 x 4 x 8 x 4096 x 128 = 33,554,432 bytes
    (the 32 query heads share them), plus Q and O, 2 x 4 x 32 x 128 x 2 = 65,536 bytes; FLOPs 4 x 4 x 32 x 128 x
    4096 = 268,435,456. Prefill: causal, 1024 x 1025 / 2 = 524,800 pairs per head, FLOPs 4 x 2 x 8 x 128 x 524,800
    = 4,299,161,600 (half the unmasked 8,589,934,592 plus the diagonal)."""
    rows = _hand_rows(records)
    X = feature_transformer("attention").fit(records).transform(rows)
    dec, pre = X.iloc[0], X.iloc[1]
    assert 10.0 ** dec["log10_kv_bytes"] == pytest.approx(33_554_432, rel=1e-12)
    assert 10.0 ** dec["log10_bytes"] == pytest.approx(33_554_432 + 65_536, rel=1e-12)
    assert 10.0 ** dec["log10_flops"] == pytest.approx(268_435_456, rel=1e-12)
    assert 10.0 ** pre["log10_flops"] == pytest.approx(4_299_161_600, rel=1e-12)
    assert 10.0 ** pre["log10_bytes"] == pytest.approx(4 * 2 * 8 * 1024 * 128 * 2, rel=1e-12)  # Q, K, V, O once


def test_the_softmax_time_of_a_prefill_row_by_hand(records) -> None:
    """The prefill row's 2 x 8 x 524,800 = 8,396,800 exponentials at 16 per SM per clock on 132 SMs at 1,980 MHz
    (4.18 x 10^12 per second) take 0.002008 ms, less than its 4.30 GFLOP at the 989 TFLOP/s bf16 peak (0.004346 ms):
    the base keeps the tensor time. At 4 per clock they take 0.008032 ms and bound the compute term."""
    X = feature_transformer("attention").fit(records).transform(_hand_rows(records))
    A, names = X.to_numpy(dtype="float64"), tuple(X.columns)
    assert (X["sm_count"].iloc[1], X["max_clock_mhz"].iloc[1], X["peak_tflops"].iloc[1]) == (132, 1980, 989)
    assert softmax_ms(A, names, 16.0)[1] == pytest.approx(8_396_800 / (16 * 132 * 1980e3), rel=1e-12)
    assert softmax_ms(A, names, 16.0)[1] == pytest.approx(0.0020079, rel=1e-4)
    tensor = 4_299_161_600 / 989e9
    memory = 10.0 ** X["log10_memory_ms"].iloc[1]
    assert physical_roofline(A, names, None, False, exps_per_clock=16.0)[1] == pytest.approx(max(tensor, memory))
    assert physical_roofline(A, names, None, False, exps_per_clock=4.0)[1] == pytest.approx(
        8_396_800 / (4 * 132 * 1980e3), rel=1e-12)


def test_the_softmax_term_is_off_where_the_sheet_lacks_the_sm_count(features) -> None:
    """A sheet without an SM count (the Blackwell SXM boards') leaves the plain roofline; the term never lowers
    a row's base."""
    A, names = features.to_numpy(dtype="float64", copy=True), tuple(features.columns)
    plain = physical_roofline(A, names, None, False)
    assert (physical_roofline(A, names, None, False, exps_per_clock=4.0) >= plain).all()
    A[:, names.index("sm_count")] = np.nan
    np.testing.assert_array_equal(physical_roofline(A, names, None, False, exps_per_clock=4.0), plain)


def test_the_decode_only_l2_time_leaves_prefill_rows_alone(records, features) -> None:
    """With ``l2_rows="decode"`` only decode rows move; on the L40S (864 GB/s GDDR, 16 B/SM/clock x 142 SMs x
    2.52 GHz = 5.7 TB/s) a decode row whose bytes fit its 96 MB L2 gets the L2 rate; on every row the result is
    the all-rows L2 time where the row decodes and the DRAM roofline elsewhere."""
    A, names = features.to_numpy(dtype="float64"), tuple(features.columns)
    plain = physical_roofline(A, names, None, False)
    every = physical_roofline(A, names, None, False, l2_bytes_per_clock=16.0)
    decode = physical_roofline(A, names, None, False, l2_bytes_per_clock=16.0, l2_rows="decode")
    is_dec = decode_rows(A, names)
    np.testing.assert_array_equal(is_dec, features["is_decode"].to_numpy() == 1.0)
    np.testing.assert_array_equal(decode, np.where(is_dec, every, plain))
    l40s = (records["device_id"] == "l40s").to_numpy()
    fits = l40s & is_dec & (10.0 ** features["log10_bytes"].to_numpy() <= 96e6) & (
        features["log10_memory_ms"].to_numpy() > features["log10_compute_ms"].to_numpy())
    assert fits.sum() > 20
    np.testing.assert_allclose(decode[fits], np.maximum(10.0 ** features["log10_compute_ms"].to_numpy()[fits],
                                                        10.0 ** features["log10_memory_ms"].to_numpy()[fits]
                                                        * 864.0 / (16.0 * 142 * 2.52)), rtol=1e-9)
    with pytest.raises(ValueError, match="l2_rows must be one of"):
        physical_roofline(A, names, None, False, l2_bytes_per_clock=16.0, l2_rows="prefill")


def test_the_rate_fits_find_the_rates_that_made_the_data(records, features) -> None:
    """Runtimes made by a softmax bound at 8 per clock (times a level per device) are fitted at 8; runtimes made by
    a decode-only L2 at 32 bytes per clock are fitted at 32 on the decode rows; the plain roofline at 0 (off)."""
    A, names = features.to_numpy(dtype="float64"), tuple(features.columns)
    level = records["device_id"].map({"h100_sxm": 1.4, "l40s": 2.2}).to_numpy()

    def exp_base(rate: float) -> np.ndarray:
        return physical_roofline(A, names, None, False, exps_per_clock=rate)

    def l2_base(rate: float) -> np.ndarray:
        return physical_roofline(A, names, None, False, l2_bytes_per_clock=rate, l2_rows="decode")

    assert fit_rate(features, exp_base(8.0) * level, exp_base, EXP_PER_CLOCK) == 8.0
    assert fit_rate(features, exp_base(0.0) * level, exp_base, EXP_PER_CLOCK) == 0.0
    rows = decode_rows(A, names)
    assert fit_rate(features, l2_base(32.0) * level, l2_base, L2_BYTES_PER_CLOCK, rows) == 32.0


def test_a_hybrid_with_both_options_fits_and_round_trips(records, features) -> None:
    """The registry takes both options by name; the fitted rates are grid values; the state restores them (the
    restored hybrid predicts what the fitted one did), and the default hybrid's state has neither key."""
    params = {"softmax_exp": True, "l2_resident": True, "l2_rows": "decode", "n_estimators": 20, "num_leaves": 7}
    make_model("hybrid", "attention", ["runtime_ms"], params)
    model = hybrid_estimator("attention", params).fit(features, records["runtime_ms"])
    assert model.exp_rate_ in EXP_PER_CLOCK and model.l2_rate_ in L2_BYTES_PER_CLOCK
    state, arrays = model.to_state()
    back = HybridRegressor.from_state(state, arrays)
    back.estimator_ = model.estimator_
    assert (back.exp_rate_, back.l2_rate_) == (model.exp_rate_, model.l2_rate_)
    assert back.l2_rows == ("decode" if model.l2_rate_ > 0 else "all")
    np.testing.assert_array_equal(back.predict(features), model.predict(features))
    plain = hybrid_estimator("attention", {"n_estimators": 5}).fit(features, records["runtime_ms"])
    assert not {"exp_rate", "l2_rate", "l2_rows"} & set(plain.to_state()[0])
    with pytest.raises(ValueError, match="l2_rows must be one of"):
        hybrid_estimator("attention", {"l2_rows": "prefill", "n_estimators": 5}).fit(features, records["runtime_ms"])


def test_one_model_per_phase_fits_each_phase_apart_and_round_trips(records, features, tmp_path) -> None:
    """``by_phase`` fits one hybrid on the prefill rows and one on the decode rows: each phase's predictions are
    those of a hybrid fitted on that phase alone; a saved bundle predicts what the model did."""
    y = records["runtime_ms"].to_numpy()
    params = {"n_estimators": 15, "num_leaves": 7}
    split = hybrid_estimator("attention", {**params, "by_phase": True}).fit(features, y)
    assert isinstance(split, PhaseSplit) and sorted(split.vendors_) == ["decode", "prefill"]
    np.testing.assert_array_equal(phase_rows(features.to_numpy(dtype="float64"), tuple(features.columns)),
                                  np.where(features["is_decode"] == 1.0, "decode", "prefill"))
    pred = split.predict(features)
    for flag in (0.0, 1.0):
        rows = (features["is_decode"] == flag).to_numpy()
        alone = hybrid_estimator("attention", params).fit(features[rows], y[rows])
        np.testing.assert_allclose(pred[rows], alone.predict(features[rows]), rtol=1e-12)
    model = ConformalRegressor(make_model("hybrid", "attention", ["runtime_ms"], {**params, "by_phase": True}),
                               n_splits=2).fit(records, records[["runtime_ms"]])
    path = save_model(model, "attention", records, tmp_path / "phase")
    F = model.estimator_[0].transform(records)
    expected = np.asarray(model.estimator_[-1].predict(F), dtype="float64").reshape(len(F), -1)
    np.testing.assert_array_equal(PerfcastModel.load(path).predict_features(F), expected)
