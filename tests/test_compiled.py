"""The compiled forest walker gives LightGBM's predictions bit for bit, and declines the models it does not cover.

Models are trained on real aiconfigurator GEMM features, with missing values in training (splits that learn a
NaN direction) and at prediction time in columns that had none in training (LightGBM reads them as 0.0).
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.builtin import bundle_path
from perfcast.datasets.importers import get_importer
from perfcast.features import GemmFeatures
from perfcast.models import make_model
from perfcast.models.estimators.hybrid import HybridRegressor
from perfcast.models.persistence.bundle import PerfcastModel, save_model
from perfcast.models.persistence.codecs import LightGBMLeaf
from perfcast.models.persistence.compiled import compile_lightgbm
from perfcast.models.persistence import kernels
from perfcast.models.persistence.kernels import BLOCK, LANES
from perfcast.models.persistence.small_walk import ZERO
from perfcast.models.uncertainty.intervals import ConformalRegressor


@pytest.fixture(scope="module")
def gemm(data_root: Path) -> pd.DataFrame:
    imp, data = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(data) if u.match("*/gemm/*/*/gemm_perf.parquet")][:3]
    return pd.concat([imp.load(data, u)["gemm"].sample(800, random_state=0) for u in units], ignore_index=True)


@pytest.fixture(scope="module")
def features(gemm: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    F = GemmFeatures().fit(gemm).transform(gemm)
    A = F.to_numpy(dtype="float64").copy()
    A[::7, 0] = np.nan  # log2_m: training rows without it, so its splits learn where NaN goes
    return A, np.log(gemm["runtime_ms"].to_numpy(dtype="float64"))


def _booster(A: np.ndarray, y: np.ndarray, **params) -> lgb.Booster:
    params = {"n_estimators": 60, "num_leaves": 31, "min_child_samples": 5, "verbose": -1, **params}
    return lgb.LGBMRegressor(**params).fit(A, y).booster_


def _probe(A: np.ndarray) -> np.ndarray:
    """Rows to predict: the training matrix with NaN also where training had none (read as 0.0 there)."""
    X = np.vstack([A, A[:300]])
    X[-300:, 1] = np.nan
    X[-300::3, 2] = np.nan
    return X


def at_every_threshold(forest, A: np.ndarray) -> np.ndarray:  # noqa: ANN001 - a CompiledForest
    """Four copies of the rows ``A`` with every split feature drawn from its thresholds, the doubles just below
    and above them, 0.0, -0.0, +-inf and NaN."""
    rng = np.random.default_rng(0)
    X = np.repeat(A, 4, axis=0)
    for f in np.unique(forest.feature):
        cuts = forest.threshold[forest.feature == f]
        edges = np.concatenate([cuts, np.nextafter(cuts, -np.inf), np.nextafter(cuts, np.inf),
                                [0.0, -0.0, np.inf, -np.inf, np.nan]])
        X[:, f] = rng.choice(edges, len(X))
    return X


@pytest.mark.parametrize("objective", ["regression", "regression_l1", "huber"])
def test_compiled_forest_sums_what_lightgbm_predicts_bit_for_bit(features, objective):
    A, y = features
    booster = _booster(A, y, objective=objective)
    forest = compile_lightgbm(booster.model_to_string())
    assert forest is not None and len(forest.roots) == booster.num_trees()
    X = _probe(A)
    assert len(X) > 2 * BLOCK  # the parallel walk splits it into blocks
    expected = booster.predict(X)
    np.testing.assert_array_equal(forest.predict(X), expected)
    np.testing.assert_array_equal(forest.predict(X, threads=2), expected)
    np.testing.assert_array_equal(forest.predict(X[5:6]), expected[5:6])


def test_a_one_leaf_tree_is_its_leaf(features):
    A, y = features
    booster = _booster(A[:50], y[:50], n_estimators=3, min_child_samples=40)  # too few rows to split
    forest = compile_lightgbm(booster.model_to_string())
    assert forest is not None and (forest.roots < 0).all()
    np.testing.assert_array_equal(forest.predict(A[:10]), booster.predict(A[:10]))


@pytest.mark.parametrize("params", [{"objective": "poisson"}, {"zero_as_missing": True}],
                         ids=["link-function", "zero-as-missing"])
def test_models_the_walker_does_not_cover_are_left_to_lightgbm(features, params):
    A, y = features
    target = np.exp(y) if params.get("objective") == "poisson" else y
    assert compile_lightgbm(_booster(A, target, **params).model_to_string()) is None


def test_categorical_splits_are_left_to_lightgbm(features):
    A, y = features
    X = A.copy()
    X[:, 0] = np.arange(len(X)) % 5
    booster = lgb.LGBMRegressor(n_estimators=20, verbose=-1, min_child_samples=5).fit(
        X, y + X[:, 0], categorical_feature=[0]).booster_
    assert compile_lightgbm(booster.model_to_string()) is None


def test_wrong_width_and_damaged_files_are_refused(features):
    A, y = features
    text = _booster(A, y, n_estimators=5).model_to_string()
    forest = compile_lightgbm(text)
    with pytest.raises(ValueError, match=rf"\(rows, {A.shape[1]}\)"):
        forest.predict(A[:, :-1])
    with pytest.raises(ValueError, match="end of trees"):
        compile_lightgbm(text[: text.index("end of trees")])
    first, second = text.index("\nTree=1"), text.index("\nTree=2")
    with pytest.raises(ValueError, match="lists 5 trees but holds 4"):
        compile_lightgbm(text[:first] + text[second:])


def test_a_saved_lightgbm_model_loads_compiled_and_predicts_as_trained(gemm, tmp_path):
    model = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 50}), n_splits=3)
    model.fit(gemm, gemm[["runtime_ms"]])
    loaded = PerfcastModel.load(save_model(model, "gemm", gemm, tmp_path / "m"))
    head = loaded.heads[0]
    assert isinstance(head, HybridRegressor) and isinstance(head.estimator_, LightGBMLeaf)
    assert head.estimator_.compiled is not None
    pred = loaded.predict_features(loaded.features.transform(gemm))[:, 0]
    np.testing.assert_allclose(pred, np.ravel(model.predict(gemm)), rtol=1e-12)


@pytest.mark.parametrize("task", ["gemm", "attention"])
def test_the_built_in_forests_sum_what_lightgbm_predicts_on_real_rows(task, data_root):
    """Every forest shipped in perfcast/builtin_models, on real aiconfigurator rows of its task (feature rows
    as the built-in model makes them, several GPUs and dtypes), walked serially and in parallel."""
    imp, data = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(data) if f"/{task}/" in u.as_posix()]
    records = pd.concat([imp.load(data, u)[task].sample(141, random_state=0, replace=True) for u in units[::2]],
                        ignore_index=True)
    records = records.iloc[: len(records) - len(records) % LANES - 3]  # a partial group of lanes at the end
    F = Predictor.load(bundle_path(task)).model.features.transform(records)
    assert records["device_id"].nunique() >= 3 and len(F) > 2 * BLOCK and len(F) % LANES
    paths = sorted(bundle_path(task).rglob("lightgbm.txt"))
    assert paths
    for path in paths:
        text = path.read_text()
        booster, forest = lgb.Booster(model_str=text), compile_lightgbm(text, str(path))
        X = F[booster.feature_name()].to_numpy(dtype="float64")
        expected = booster.predict(X)
        np.testing.assert_array_equal(forest.predict(X), expected)
        np.testing.assert_array_equal(forest.predict(X, threads=2), expected)


def test_deep_unbalanced_trees_walk_their_full_depth(features):
    """Trees of 255 leaves grown leaf-wise on few rows per leaf (long, uneven paths: the fixed-depth walk must
    take the deepest one), with a row count that leaves a partial group of lanes at the end."""
    A, y = features
    booster = _booster(A, y, n_estimators=20, num_leaves=255, min_child_samples=2)
    forest = compile_lightgbm(booster.model_to_string())
    roots, depth = forest.layout.roots, forest.layout.depth
    assert depth.max() >= 15 and len(roots) == booster.num_trees()
    X = _probe(A)[: 3 * BLOCK + LANES + 3]
    np.testing.assert_array_equal(forest.predict(X), booster.predict(X))
    np.testing.assert_array_equal(forest.predict(X, threads=2), booster.predict(X))


def test_values_at_and_beside_every_threshold_go_lightgbms_way(features):
    """The walk compares codes, not floats: rows holding each split's threshold itself, the doubles just
    below and above it, 0.0, -0.0, +-inf and NaN must still take LightGBM's side at every node."""
    A, y = features
    booster = _booster(A, y)
    forest = compile_lightgbm(booster.model_to_string())
    X = at_every_threshold(forest, A[:400])
    np.testing.assert_array_equal(forest.predict(X), booster.predict(X))
    np.testing.assert_array_equal(forest.predict(X, threads=2), booster.predict(X))


def test_values_within_lightgbms_zero_threshold_are_read_as_zero(features):
    """LightGBM's dense-row reader drops values within 1e-35 of zero (they predict as 0.0), and a column of
    negatives, zeros and positives gets splits at -1e-35 and +1e-35: values between them and beside them must
    go LightGBM's way (found by tests/test_compiled_property.py)."""
    A, y = features
    A = A.copy()
    A[:, 1] = np.sign(y - np.median(y)) * (np.arange(len(y)) % 3 > 0)  # -1, 0 or 1, telling
    booster = _booster(A, y, min_child_samples=2)
    forest = compile_lightgbm(booster.model_to_string())
    assert {-ZERO, ZERO} <= set(forest.threshold[forest.feature == 1])
    tiny = np.array([ZERO, np.nextafter(ZERO, 0.0), np.nextafter(ZERO, 1.0), 1e-300, 5e-324, 0.0, 0.5])
    X = np.repeat(A[:300], 2, axis=0)
    X[:, 1] = np.random.default_rng(0).choice(np.concatenate([tiny, -tiny]), len(X))
    np.testing.assert_array_equal(forest.predict(X), booster.predict(X))
    np.testing.assert_array_equal(forest.predict(X[:1]), booster.predict(X[:1]))


def test_features_with_hundreds_of_distinct_thresholds_get_wider_codes(features):
    A, y = features
    A = A.copy()
    A[:, 1] = y + np.random.default_rng(0).normal(0.0, 0.01, len(y))  # continuous and telling: split everywhere
    booster = _booster(A, y, n_estimators=100, num_leaves=63, max_bin=4095, min_child_samples=2)
    forest = compile_lightgbm(booster.model_to_string())
    assert forest.layout.nan_code.dtype == np.uint16  # a feature splits at more than 254 distinct values
    X = _probe(A)
    np.testing.assert_array_equal(forest.predict(X), booster.predict(X))
    np.testing.assert_array_equal(forest.predict(X, threads=2), booster.predict(X))


def test_a_rows_sum_does_not_depend_on_its_batch(features):
    """The batch walk orders rows by their codes before walking (rows with the same paths walk together): a
    row's prediction must not depend on which rows share its batch, where it stands in it, on repeated rows
    or on the thread count; each row alone (no ordering) gives the same bits, as does LightGBM."""
    A, y = features
    booster = _booster(A, y, n_estimators=80, num_leaves=63)
    forest = compile_lightgbm(booster.model_to_string())
    X = _probe(A)
    X = np.vstack([X, X[::5]])  # repeated rows: equal keys, the stable order keeps them apart
    perm = np.random.default_rng(1).permutation(len(X))
    expected = booster.predict(X)
    for threads in (1, 2):
        np.testing.assert_array_equal(forest.predict(X, threads), expected)
        np.testing.assert_array_equal(forest.predict(X[perm], threads), expected[perm])
        np.testing.assert_array_equal(forest.predict(np.asfortranarray(X), threads), expected)  # a frame's block
        np.testing.assert_array_equal(forest.predict(X[::2], threads), expected[::2])  # strided: copied
        np.testing.assert_array_equal(forest.predict(X[BLOCK + 1:3 * BLOCK + 4], threads),
                                      expected[BLOCK + 1:3 * BLOCK + 4])
    alone = np.concatenate([forest.predict(X[i:i + 1]) for i in range(0, len(X), 97)])
    np.testing.assert_array_equal(alone, expected[::97])


@pytest.mark.parametrize("params", [{"n_estimators": 60, "num_leaves": 31},
                                    {"n_estimators": 20, "num_leaves": 255, "min_child_samples": 2}],
                         ids=["lanes-and-a-partial-group", "deep-unbalanced"])
def test_a_single_rows_walk_sums_what_lightgbm_predicts(features, params):
    """A request's row walks :data:`LANES` trees in step (``kernels._walk_row``, as deep as the deepest of them),
    then the trees left over one by one: every row alone, at and beside every threshold, with NaN and +-inf,
    must give LightGBM's sum in every bit (60 trees leave a partial group of lanes; 255-leaf trees differ
    most in depth within a group)."""
    A, y = features
    booster = _booster(A, y, **params)
    forest = compile_lightgbm(booster.model_to_string())
    assert len(forest.roots) % LANES  # trees left over after the groups of lanes
    X = np.vstack([_probe(A)[::9], at_every_threshold(forest, A[:100])])
    alone = np.array([kernels.walk(forest.layout, X[i:i + 1], 1)[0] for i in range(len(X))])  # Numba, one row
    np.testing.assert_array_equal(alone, booster.predict(X))
