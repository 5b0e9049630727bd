"""An identical-spec sibling: nothing on the spec sheet tells the two apart, so no spec-ratio correction
(the base model's ratio, the roofline's) can move the copy, and the shrunk sibling copy must reduce to
copying it: the property that makes "never worse than copying" hold where the copy is all there is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.baselines import CONFIG_KEYS, copy_from_devices
from perfcast.experiments.sibling import fitted_sibling
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.records.hardware_specs import ENV_VAR, get_spec

# the GB200 / GB300 / B300 / H100 GEMM slice (tests/test_sibling.py)
from tests.test_sibling import PARAMS, gemm  # noqa: F401  (pytest fixture)

#: the corrections read off the spec sheet alone (the others, "transfer" and "resid", carry the training
#: devices' measured residuals, which differ between two devices of one sheet)
SPEC_SOURCES = ("base", "roofline")


def test_an_identical_spec_sibling_is_copied(gemm, tmp_path, monkeypatch):
    # the GB300's spec sheet under a second id (a user spec file, as a user adds a device)
    sheet = {k: v for k, v in get_spec("gb300").items() if k != "device_id" and v is not None}
    sheet["device_name"] = "NVIDIA GB300 (twin)"
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "devices": {"gb300_twin": sheet}}))
    monkeypatch.setenv(ENV_VAR, str(path))
    # a second GB300 (same device name, so the same spec sheet and features), whose measurements differ from
    # the GB300's by configuration-level noise only: a gap no spec difference explains
    twin = gemm[gemm["device_id"] == "gb300"].copy()
    twin["device_id"], twin["device_name"] = "gb300_twin", "NVIDIA GB300 (twin)"
    noise = np.random.default_rng(3).normal(0.0, 0.03, len(twin))
    twin["runtime_ms"] *= np.exp(noise)
    records = gemm.assign(device_id=gemm["device_id"].astype(str))
    train, test = unseen_hardware_split(
        pd.concat([records, twin], ignore_index=True),
        test_devices=["gb300_twin"])
    pipe, est = fitted_sibling(train, "gemm", PARAMS)
    X = pipe[:-1].transform(test)
    mats = est._matrices(X, est.transfer_, est.tables_, est.info_)
    rows = np.arange(len(X))
    nearest = np.argmin(mats["rank"], axis=1)
    # the nearest sibling is the GB300 itself, at spec distance 0, and both spec ratios are exactly 1
    assert (mats["dist"][rows, nearest] == 0).all()
    np.testing.assert_array_equal(mats["base"][rows, nearest], 0.0)
    np.testing.assert_array_equal(mats["roofline"][rows, nearest], 0.0)
    copy = copy_from_devices(train, test, ["gb300"], list(CONFIG_KEYS["gemm"]))
    assert np.isfinite(copy).all()
    for setting in est.grid():
        if setting[0] in SPEC_SOURCES and setting[2] == "nearest":  # any λ: a spec-ratio correction of 1
            np.testing.assert_allclose(np.exp(est._candidate(mats, setting, est.transfer_.scale)), copy, rtol=1e-12)
    # the model: the copy on every kind whose chosen correction is a spec ratio (or none), whatever its λ
    kinds = kernel_kinds(X).to_numpy()
    chosen = [est.settings_.get(str(k), est.pooled_) for k in kinds]
    spec = np.asarray([(s[0] in SPEC_SOURCES or s[1] == 0) and s[2] == "nearest" for s in chosen])
    assert spec.any()
    np.testing.assert_allclose(pipe.predict(test)[spec], copy[spec], rtol=1e-9)
    # and the copy is what the twin's own measurements are closest to: its noise is all the error left
    truth = test["runtime_ms"].to_numpy()
    assert np.mean(np.abs(copy / truth - 1)) < 0.03
