"""The linear-leaf walker gives LightGBM's predictions on real adaptation models, NaN inputs included, and refuses
damaged model files.

Models are the adaptation's ``smooth`` shape term (LightGBM ``linear_tree``, the parameters
:func:`~perfcast.models.estimators.adapt_correction.shape_params` gives) trained on real aiconfigurator GEMM
features, with missing values in training (splits that learn a NaN direction) and at prediction time in split
columns and in the columns a leaf's linear model reads (LightGBM then falls back to the leaf's constant).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.features import GemmFeatures
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.estimators.adapt_correction import fit_correction, shape_columns, shape_matrix, shape_params
from perfcast.models.persistence.kernels import BLOCK
from perfcast.models.persistence.compiled_linear import LinearForest, compile_linear_lightgbm
from perfcast.models.persistence.errors import CorruptModelError


@pytest.fixture(scope="module")
def gemm(data_root: Path) -> pd.DataFrame:
    """1,400 real GEMM rows of the L40S, a GPU the adaptation benchmark adapts to."""
    imp, data = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    tables = [imp.load(data, u)["gemm"] for u in imp.units(data) if "/l40s/gemm/" in u.as_posix()]
    return pd.concat(tables, ignore_index=True).sample(1400, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def smooth(gemm: pd.DataFrame) -> tuple[lgb.Booster, np.ndarray]:
    """The smooth shape term's LightGBM on real features (log2_m missing on every 7th training row)."""
    F = GemmFeatures().fit(gemm).transform(gemm)
    cols = shape_columns(F, "gemm")
    A = F[cols].to_numpy(dtype="float64").copy()
    A[::7, 0] = np.nan
    y = np.log(gemm["runtime_ms"].to_numpy(dtype="float64"))
    y = y - np.median(y)
    booster = lgb.LGBMRegressor(**shape_params(len(A), 0, "smooth")).fit(A, y).booster_
    return booster, A


def _probe(A: np.ndarray) -> np.ndarray:
    """The training rows, and 300 again with NaN where training had none (split and leaf-model columns)."""
    X = np.vstack([A, A[:300]])
    X[-300:, 1] = np.nan
    X[-300::3, 2] = np.nan
    X[-150:, :] = np.where(np.arange(A.shape[1]) % 2 == 0, np.nan, X[-150:, :])
    return X


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(theirs))))


def test_linear_leaves_predict_what_lightgbm_does_nan_included(smooth):
    booster, A = smooth
    text = booster.model_to_string()
    assert "is_linear=1" in text and "leaf_coeff=" in text
    forest = compile_linear_lightgbm(text)
    assert isinstance(forest, LinearForest) and len(forest.coef_value) > 0
    X = _probe(A)
    theirs = booster.predict(X)
    assert len(X) > 2 * BLOCK  # the parallel path, and each one-row request the serial one
    _close(forest.predict(X, threads=2), theirs)
    _close(np.array([forest.predict(X[i:i + 1])[0] for i in range(len(X) - 40, len(X))]), theirs[-40:])
    # the NaN fallback is exercised: rows with a NaN among a leaf's features differ from their NaN-free twins
    assert not np.allclose(theirs[-300:], theirs[:300])


def test_the_smooth_correction_is_served_by_the_linear_walker(gemm):
    F = GemmFeatures().fit(gemm).transform(gemm)
    y = gemm["runtime_ms"].to_numpy(dtype="float64")
    base = y * np.exp(np.random.default_rng(0).normal(0.0, 0.3, len(y)))
    corr = fit_correction(F, base, y, "smooth", "gemm")
    booster = lgb.Booster(model_str=corr.shape_text)
    level = kernel_kinds(F).map(corr.levels).to_numpy(dtype="float64")  # each kernel kind's level, then the term
    theirs = booster.predict(shape_matrix(F, corr.columns, base)) + level
    _close(corr.log_ratio(F, base), theirs)


def test_a_row_alone_is_its_batch_value_to_the_bit(smooth):
    """Serving promises a configuration the same number alone or in a batch: a batch walks rows in step in the
    order of a column, in parallel blocks (and the rows past the last full group of lanes alone); a request walks
    its trees in step. Real rows, NaN fallbacks included, a batch of several blocks not a multiple of the lanes."""
    from perfcast.models.persistence.kernels import LANES

    booster, A = smooth
    forest = compile_linear_lightgbm(booster.model_to_string())
    X = _probe(A)[-(5 * BLOCK + LANES + 3):]  # the NaN rows at the end
    batch = forest.predict(X, threads=2)
    assert len(X) % LANES and np.array_equal(forest.predict(X, threads=1), batch)
    alone = np.array([forest.predict(X[i:i + 1])[0] for i in range(len(X))])
    np.testing.assert_array_equal(alone, batch)
    _close(batch, booster.predict(X))


def test_damaged_linear_leaves_are_refused(smooth):
    booster, _ = smooth
    text = booster.model_to_string()
    lines = text.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("leaf_features=") and line[14:].split())
    lines[at] = "leaf_features=" + " ".join(["99", *lines[at][14:].split()[1:]])  # a tree with leaf terms
    with pytest.raises(CorruptModelError, match="shape.txt, tree .*: leaf_features names a feature outside"):
        compile_linear_lightgbm("\n".join(lines), "shape.txt")
    with pytest.raises(CorruptModelError, match="shape.txt, tree 0: leaf_coeff has"):
        compile_linear_lightgbm(text.replace("leaf_coeff=", "leaf_coeff=1.5 ", 1), "shape.txt")


def test_models_the_linear_walker_does_not_cover_are_left_to_lightgbm(smooth):
    booster, A = smooth
    text = booster.model_to_string().replace("objective=regression", "objective=poisson", 1)
    assert compile_linear_lightgbm(text) is None


def test_a_few_rows_are_walked_in_numpy_to_the_kernels_bits(smooth):
    """A fresh process's first small requests never import numba (loading an adapted bundle and answering a few
    configurations stays cheap), and give the kernels' numbers to the bit, NaN fallbacks included."""
    from perfcast.models.persistence import linear_kernels

    booster, A = smooth
    forest = compile_linear_lightgbm(booster.model_to_string())
    X = _probe(A)
    kernels = linear_kernels.walk(X, forest.kernel_args, forest.key, 1)
    for lo in range(0, len(X), 13):  # requests of 13 rows (<= small_walk.SMALL), NaN rows at the end
        np.testing.assert_array_equal(forest._small(X[lo:lo + 13]), kernels[lo:lo + 13])
    _close(kernels, booster.predict(X))
    where = Path(tempfile.mkdtemp())
    (where / "smooth.txt").write_text(booster.model_to_string())
    np.save(where / "rows.npy", X[-3:])  # NaN among them
    code = ("import sys, numpy as np; from perfcast.models.persistence.compiled_linear import compile_linear_lightgbm;"
            f" f = compile_linear_lightgbm(open({str(where / 'smooth.txt')!r}).read());"
            f" print(f.predict(np.load({str(where / 'rows.npy')!r})).tolist(), 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "False", out

