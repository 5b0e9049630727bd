"""Two siblings against one: on a held-out GPU whose two siblings both measured a configuration, the mean of
their measurements, each shifted to the nearest one's level (learned on training configurations only), is
closer than copying the nearest; and the interval widens for a sibling farther than the nested folds reached."""

from __future__ import annotations

import numpy as np
import pytest

from perfcast.eval.metrics import mape
from perfcast.experiments.baselines import CONFIG_KEYS, copy_from_devices, sibling_devices
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.estimators.transfer import row_keys

# the GB200 / GB300 / B300 / H100 GEMM slice and the model fitted with the GB200 held out (tests/test_sibling.py)
from tests.test_sibling import gemm, held_out_gb200  # noqa: F401  (pytest fixtures)


def test_level_aligned_mean_of_two_siblings_beats_copying_one(held_out_gb200):
    train, test, pipe, est = held_out_gb200
    X = pipe[:-1].transform(test)
    mats = est._matrices(X, est.transfer_, est.tables_, est.info_)
    truth = np.log(test["runtime_ms"].to_numpy(dtype="float64"))
    nearest = est._candidate(mats, ("base", 0.0, "nearest"), est.transfer_.scale)
    aligned = est._candidate(mats, ("base", 0.0, "aligned"), est.transfer_.scale)
    both = np.isfinite(mats["log_y"]).sum(axis=1) == 2  # rows that B300 and GB300 both measured
    assert both.mean() > 0.9
    # λ = 0 with the nearest donor is the copy-sibling baseline, row for row
    copy = copy_from_devices(train, test, sibling_devices("gb200", sorted(train["device_id"].unique())),
                             list(CONFIG_KEYS["gemm"]))
    np.testing.assert_allclose(np.exp(nearest[both]), copy[both], rtol=1e-9)
    y = np.exp(truth[both])
    assert mape(y, np.exp(aligned[both])) < 0.97 * mape(y, np.exp(nearest[both]))
    # the levels it removes are the training siblings' own: B300 over GB300 on the bf16 configurations, by hand
    keys = list(CONFIG_KEYS["gemm"])
    bf16 = train[train["dtype"] == "bfloat16"]
    log_y = np.log(bf16.groupby(keys + ["device_id"], observed=True)["runtime_ms"].mean()).unstack("device_id")
    by_hand = float(np.nanmedian(log_y["b300_sxm"] - log_y["gb300"]))
    features = pipe[:-1].transform(train)
    device = dict(zip(train["device_id"], row_keys(features, est.transfer_.device_columns), strict=True))
    i, j = (est.offset_devices_.index(device[d]) for d in ("b300_sxm", "gb300"))
    assert est.offsets_[est.offset_kinds_.index("dtype_bf16"), i, j] == pytest.approx(by_hand, abs=1e-9)


def test_interval_widens_beyond_the_validated_distance(held_out_gb200):
    _, test, pipe, est = held_out_gb200
    X = pipe[:-1].transform(test)
    pred, lo, hi = est.predict_interval(X)
    stretch = est.distance_stretch(X)
    has = np.isfinite(hi)
    # the GB200 is farther from B300 and GB300 than they are from each other (the nested folds' distance)
    assert (stretch[has] > 1.0).mean() > 0.5
    half = np.log(hi[has] / pred[has])
    # widths are the nested quantile of the row's kernel kind times the stretch: dividing it out leaves one
    # width per kind, the one the nested folds calibrated
    kinds = kernel_kinds(X).to_numpy()[has]
    for kind in np.unique(kinds):
        sel = kinds == kind
        assert np.ptp(half[sel] / stretch[has][sel]) < 1e-9
