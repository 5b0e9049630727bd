"""Property: for any forest LightGBM grows on any data, the compiled walker sums what ``Booster.predict`` does, bit
for bit, on any rows (random forests on random data, beside tests/test_compiled.py's real-data cases).

Hypothesis draws the data's shape, how discrete and how often missing each column is, the forest's size and
objective, and rows to predict that hold the forest's own thresholds, their neighbouring doubles, zeros of both
signs, infinities and NaN; a failure shrinks to a small forest and a short list of rows.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perfcast.models.persistence.compiled import compile_lightgbm
from perfcast.models.persistence import kernels
from perfcast.models.persistence.kernels import BLOCK


@st.composite
def forests(draw: st.DrawFn) -> tuple[lgb.Booster, np.ndarray]:
    """A LightGBM regression forest trained on random data, and rows to predict."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, cols = draw(st.integers(30, 400)), draw(st.integers(1, 6))
    A = rng.normal(size=(rows, cols)) * 10.0 ** rng.integers(-3, 4, cols)
    for j in range(cols):
        if draw(st.booleans()):  # a discrete column: ties, and thresholds between few values
            A[:, j] = np.round(A[:, j] / A[:, j].std())
        A[rng.random(rows) < draw(st.sampled_from([0.0, 0.0, 0.1, 0.5])), j] = np.nan  # learns a NaN side
    y = np.nansum(A * rng.normal(size=cols), axis=1) + rng.normal(size=rows)
    params = {"n_estimators": draw(st.integers(1, 25)), "num_leaves": draw(st.integers(2, 64)),
              "min_child_samples": draw(st.integers(1, 20)), "max_bin": draw(st.sampled_from([4, 63, 255, 1023])),
              "objective": draw(st.sampled_from(["regression", "regression_l1", "huber", "quantile"])),
              "learning_rate": draw(st.sampled_from([0.05, 0.3, 1.0])), "verbose": -1}
    booster = lgb.LGBMRegressor(**params).fit(A, y).booster_
    n = draw(st.integers(1, 3 * BLOCK + 20))  # one row, several parallel blocks, a partial group of lanes
    X = A[rng.integers(0, rows, n)]
    dump = booster.dump_model()["tree_info"]
    thresholds = np.array([t for tree in dump for t in _thresholds(tree["tree_structure"])] or [0.0])
    edges = np.concatenate([thresholds, np.nextafter(thresholds, -np.inf), np.nextafter(thresholds, np.inf),
                            [0.0, -0.0, np.inf, -np.inf, np.nan]])
    at_edge = rng.random(X.shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    X[at_edge] = rng.choice(edges, int(at_edge.sum()))
    return booster, X


def _thresholds(node: dict) -> list[float]:
    if "threshold" not in node:
        return []
    return [float(node["threshold"]), *_thresholds(node["left_child"]), *_thresholds(node["right_child"])]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(forests(), st.sampled_from([1, 2]))
def test_any_forest_sums_what_lightgbm_predicts_on_any_rows(case, threads):
    booster, X = case
    forest = compile_lightgbm(booster.model_to_string())
    assert forest is not None  # numerical splits, identity objectives: all covered
    expected = booster.predict(X)
    np.testing.assert_array_equal(forest.predict(X, threads), expected)
    np.testing.assert_array_equal(forest.predict(np.asfortranarray(X), threads), expected)
    perm = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_array_equal(forest.predict(X[perm], threads), expected[perm])
    alone = [kernels.walk(forest.layout, X[i:i + 1], threads)[0] for i in range(min(len(X), 40))]  # a request's
    np.testing.assert_array_equal(alone, expected[:40])  # walk: trees in lanes, not rows
