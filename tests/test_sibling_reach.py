"""A correction applies only as far as the nested folds validated it: beyond the largest sibling distance a
nested fold held out (the GB200, whose siblings are three times as far from it as B300 and GB300 are from
each other), the model copies its nearest sibling and calibrates the interval on copying's nested errors;
within it (a held-out B300, whose twin GB300 is nearer than the folds' pairs), the nested choice applies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perfcast.eval.metrics import mape
from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.aiconfigurator import SIBLING_GOALS
from perfcast.experiments.baselines import CONFIG_KEYS, SIBLING, copy_from_devices, sibling_devices
from perfcast.experiments.scoring import score
from perfcast.experiments.sibling import fitted_sibling
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.estimators.sibling import COPY_SCORES, SiblingShrink
from perfcast.models.uncertainty.calibration import conformal_quantile

# the GB200 / GB300 / B300 / H100 GEMM slice and the model fitted with the GB200 held out (tests/test_sibling.py)
from tests.test_sibling import PARAMS, gemm, held_out_gb200  # noqa: F401  (pytest fixtures)


def _copy(train, test):
    return copy_from_devices(train, test, sibling_devices(str(test["device_id"].iloc[0]),
                                                          sorted(train["device_id"].unique())),
                             list(CONFIG_KEYS["gemm"]))


def test_beyond_the_folds_reach_the_model_copies(held_out_gb200, tmp_path):
    train, test, pipe, est = held_out_gb200
    X = pipe[:-1].transform(test)
    mats = est._matrices(X, est.transfer_, est.tables_, est.info_)
    has = np.isfinite(mats["log_y"]).any(axis=1)
    kinds = kernel_kinds(X).to_numpy()
    ratio = np.concatenate([est._reach_ratio({k: v[[i]] for k, v in mats.items()}, str(kinds[i]))
                            for i in np.flatnonzero(has)])
    # the reach is the nested folds' own: B300 <-> GB300; every GB200 row's nearest sibling is farther
    assert est.n_nested_folds_ == 2 and (ratio > 1.0).all()
    # the folds chose a correction for some kind (it beat copying on both) ...
    assert any(s[1] > 0 for s in est.settings_.values())
    # ... yet every GB200 row gets exactly the copy-sibling baseline, and its interval is copying's
    copy = _copy(train, test)
    ok = np.isfinite(copy)
    ours = pipe.predict(test)[ok]
    np.testing.assert_allclose(ours, copy[ok], rtol=1e-9)
    # the report calls that a tie: neither "beats the reference" nor "below copy-sibling", whatever the last bits
    truth = test["runtime_ms"].to_numpy()[ok]
    for nudge in (1.0, 1.0 + 1e-15, 1.0 - 1e-15):
        row = score("p", "runtime_ms", "gb200", truth, ours * nudge, "sibling", 0.0,
                    baselines={SIBLING: copy[ok]})
        row.goal = SIBLING_GOALS["gemm"]
        assert row.beats() is False and not row.meets_goal()
    pred, lo, hi = est.predict_interval(X)
    stretch = est.distance_stretch(X)
    for kind in np.unique(kinds[ok]):
        sel = ok & (kinds == kind)
        scores = est.scores_.get(COPY_SCORES + str(kind), est.scores_[COPY_SCORES + "*"])
        np.testing.assert_allclose(np.log(hi[sel] / pred[sel]), conformal_quantile(scores, 0.9) * stretch[sel],
                                   rtol=1e-9)
    # the copying scores survive the state round trip (plain arrays), and so does the rule
    params, arrays = est.to_state()
    np.savez(tmp_path / "s.npz", **arrays)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as npz:
        back = SiblingShrink.from_state(json.loads(json.dumps(params)), {k: npz[k] for k in npz.files})
    back.transfer_ = est.transfer_
    for a, b in zip(back.predict_interval(X), (pred, lo, hi), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # a state saved without copying's scores (before this rule) is refused with a message, not half-loaded
    old = {**params, "score_kinds": [k for k in params["score_kinds"] if not k.startswith(COPY_SCORES)]}
    with pytest.raises(ValueError, match="refit"):
        SiblingShrink.from_state(old, arrays)


def test_within_the_folds_reach_the_nested_choice_applies(gemm):
    train, test = unseen_hardware_split(gemm, test_devices=["b300_sxm"])
    pipe, est = fitted_sibling(train, "gemm", PARAMS)
    X = pipe[:-1].transform(test)
    mats = est._matrices(X, est.transfer_, est.tables_, est.info_)
    has = np.isfinite(mats["log_y"]).any(axis=1)
    kinds = kernel_kinds(X).to_numpy()
    # the folds pair the far GB200 with GB300; the held-out B300's twin GB300 is nearer than that
    assert est.reach_["*"] > np.median(mats["dist"][has].min(axis=1))
    pred = pipe.predict(test)
    for kind in np.unique(kinds[has]):
        sel = has & (kinds == kind)
        setting = est.settings_.get(str(kind), est.pooled_)
        within = est._reach_ratio({k: v[sel] for k, v in mats.items()}, str(kind)) <= 1.0
        assert within.mean() > 0.9
        chosen = np.exp(est._candidate({k: v[sel] for k, v in mats.items()}, setting, est.transfer_.scale))
        np.testing.assert_allclose(pred[sel][within], chosen[within], rtol=1e-9)
    # and the model stays near copy-sibling on the held-out B300
    copy = _copy(train, test)
    ok = np.isfinite(copy)
    y = test["runtime_ms"].to_numpy()[ok]
    assert mape(y, pred[ok]) <= 1.05 * mape(y, copy[ok])
