"""The transfer's residual part as a correction of its own ("resid"): the training devices' similarity-weighted
residual on the configuration minus the sibling's own residual, with no base-model device ratio in it, so it
cannot move the copy's level by a spec-sheet ratio (what misleads across the GB200 / B300 architecture step)."""

from __future__ import annotations

import numpy as np

from perfcast.models.estimators.sibling import SOURCES
from perfcast.models.estimators.transfer import row_keys

# the GB200 / GB300 / B300 / H100 GEMM slice and the model fitted with the GB200 held out (tests/test_sibling.py)
from tests.test_sibling import gemm, held_out_gb200  # noqa: F401  (pytest fixtures)


def test_resid_is_the_transfer_correction_minus_the_siblings_residual(held_out_gb200):
    _, test, pipe, est = held_out_gb200
    X = pipe[:-1].transform(test)
    mats = est._matrices(X, est.transfer_, est.tables_, est.info_)
    keys = row_keys(X, est.transfer_.config_columns)
    mix = est.transfer_.correction(X)
    for j, dev in enumerate(est.transfer_.devices_):
        seen = np.isfinite(mats["log_y"][:, j])
        if not seen.any():  # the H100: no sibling of the GB200
            assert np.isnan(mats["resid"][:, j]).all()
            continue
        own = est.transfer_.residuals_[dev].reindex(keys).to_numpy(dtype="float64")
        np.testing.assert_allclose(mats["resid"][seen, j], (mix - own)[seen], rtol=1e-9, atol=1e-12)
        # ... which is the transfer's correction of the copy without the base model's ratio
        np.testing.assert_allclose(mats["resid"][seen, j], (mats["transfer"] - mats["base"])[seen, j], atol=1e-12)
    # it corrects the copy configuration by configuration (not a constant), and it is in the nested grid
    near = np.argmin(mats["rank"], axis=1)
    values = mats["resid"][np.arange(len(X)), near]
    assert np.nanstd(values) > 1e-3
    assert "resid" in SOURCES and any(s[0] == "resid" for s in est.grid())
    assert repr(("resid", 0.5, "nearest")) in est.nested_["*"]  # scored on the nested folds like the others
