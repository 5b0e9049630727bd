"""The level-free correction of the sibling copy ("shape"): the transfer's correction minus its level, the level
measured on fixed reference configurations featurized for the target's spec sheet, so that it is a property of
(target, sibling, kernel kind) and a one-row request gets what a batch gets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from perfcast.experiments.baselines import CONFIG_KEYS
from perfcast.features import feature_transformer
from perfcast.features.groups import GPU_HARDWARE
from perfcast.features.on_device import featurize_on_device
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.estimators.sibling import SOURCES, SiblingShrink
from perfcast.models.estimators.sibling_level import REFERENCE_ROWS
from perfcast.models.estimators.transfer import row_keys

# the GB200 / GB300 / B300 / H100 GEMM slice and the model fitted with the GB200 held out (tests/test_sibling.py)
from tests.test_sibling import gemm, held_out_gb200  # noqa: F401  (pytest fixtures)


@pytest.mark.parametrize(("source", "target"), [("b300_sxm", "gb200"), ("gb200", "h100_sxm")])
def test_configurations_featurized_for_another_device_equal_that_devices_own_features(gemm, source, target):
    """B300's measured configurations featurized for the GB200 (another SM count, peaks, bandwidth) and GB200's
    for the H100 (another architecture) are what the transformer gives the target's own records of them."""
    keys = [k for k in CONFIG_KEYS["gemm"] if k != "device_id"]
    shared = gemm[gemm["device_id"] == source].drop_duplicates(keys).merge(
        gemm.loc[gemm["device_id"] == target, keys].drop_duplicates(), on=keys).reset_index(drop=True)
    assert len(shared) > 100
    tf = feature_transformer("gemm").fit(shared)
    mine = tf.transform(shared)
    theirs = tf.transform(shared.assign(device_id=target))
    kinds = kernel_kinds(mine).to_numpy()
    moved = 0
    for kind in pd.unique(kinds):
        sel = kinds == kind
        hardware = theirs.loc[sel, list(GPU_HARDWARE)].iloc[0]
        out = featurize_on_device(mine.loc[sel], hardware)
        np.testing.assert_allclose(out.to_numpy(), theirs.loc[sel].to_numpy(), rtol=1e-12, atol=1e-12)
        moved += int((out["log2_waves"] != mine.loc[sel, "log2_waves"]).sum())
    assert moved > 0  # the wave quantisation was recomputed, not carried over
    # on its own device a configuration comes back bit for bit
    sel = kinds == kinds[0]
    same = featurize_on_device(mine.loc[sel], mine.loc[sel, list(GPU_HARDWARE)].iloc[0])
    assert same is mine.loc[sel] or same.equals(mine.loc[sel])
    with pytest.raises(ValueError, match="lacks"):
        featurize_on_device(mine, {"sm_count": 148.0})


def _with_shape(est: SiblingShrink) -> SiblingShrink:
    """The fitted model with every kind set to the shape correction at λ = 0.5 (whatever nested chose)."""
    est.settings_ = {k: ("shape", 0.5, "nearest") for k in est.settings_}
    est.pooled_ = ("shape", 0.5, "nearest")
    est.reach_ = {k: np.inf for k in est.reach_}  # every row within reach: the correction applies
    return est


def test_the_level_is_fixed_per_target_sibling_and_kind(held_out_gb200):
    _, test, pipe, est = held_out_gb200
    assert "shape" in SOURCES and any(s[0] == "shape" for s in est.grid())
    assert repr(("shape", 0.5, "nearest")) in est.nested_["*"]  # scored on the nested folds like the others
    X = pipe[:-1].transform(test)
    mats = est._matrices(X, est.transfer_, est.tables_, est.info_)
    level = mats["transfer"] - mats["shape"]
    kinds = kernel_kinds(X).to_numpy()
    checked = 0
    for j, dev in enumerate(est.transfer_.devices_):
        for kind in pd.unique(kinds):
            values = level[(kinds == kind) & np.isfinite(level[:, j]), j]
            if not len(values):
                continue
            assert np.ptp(values) < 1e-12  # one level per (target, sibling, kind), whichever rows are asked
            # ... the median correction over the sibling's reference configurations, featurized for the GB200
            ref = est.reference_
            sel = (ref.device == dev) & (ref.kind == kind)
            assert 0 < sel.sum() <= REFERENCE_ROWS
            rows = featurize_on_device(ref.rows[sel], X.loc[kinds == kind, list(GPU_HARDWARE)].iloc[0])
            own = np.log(est.transfer_.estimator_.predict(rows)) + est.transfer_.correction(rows)
            keys = row_keys(rows, est.transfer_.config_columns)
            measured = est.tables_["log_y"].xs(dev, level="device").reindex(keys)
            assert values[0] == pytest.approx(np.median(own - measured.to_numpy()), abs=1e-12)
            checked += 1
    assert checked >= 4  # B300 and GB300, bf16 / fp8 / nvfp4
    # the shape moves row by row; the level is not zero (what "shape" removes)
    near = np.argmin(mats["rank"], axis=1)
    assert np.nanstd(mats["shape"][np.arange(len(X)), near]) > 1e-3
    assert np.nanmax(np.abs(level)) > 1e-3


def test_one_row_predicts_what_the_batch_predicts_and_the_state_round_trips(held_out_gb200, tmp_path):
    _, test, pipe, fitted = held_out_gb200
    params, arrays = fitted.to_state()
    est = SiblingShrink.from_state(json.loads(json.dumps(params)), arrays)
    est.transfer_ = fitted.transfer_
    est = _with_shape(est)
    X = pipe[:-1].transform(test)
    batch = est.predict(X)
    copy = np.exp(est._candidate(est._matrices(X, est.transfer_, est.tables_, est.info_),
                                 ("shape", 0.0, "nearest"), 1.0))
    assert np.nanmean(np.abs(np.log(batch / copy))) > 1e-3  # the shape correction moves the copy
    rows = np.random.default_rng(0).choice(len(X), 12, replace=False)
    fresh = SiblingShrink.from_state(json.loads(json.dumps(params)), arrays)  # no level computed yet
    fresh.transfer_ = fitted.transfer_
    fresh = _with_shape(fresh)
    for i in rows:
        np.testing.assert_array_equal(fresh.predict(X.iloc[[i]]), batch[[i]])
    # the reference configurations are plain arrays in the state and give back the same predictions
    np.savez(tmp_path / "sibling.npz", **est.to_state()[1])
    with np.load(tmp_path / "sibling.npz", allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    back = SiblingShrink.from_state(json.loads(json.dumps(est.to_state()[0])), loaded)
    back.transfer_ = fitted.transfer_
    assert back.settings_ == est.settings_
    back.reach_ = est.reach_
    np.testing.assert_array_equal(back.predict(X), batch)
