"""The NumPy walk a fresh process answers its first small requests with gives the Numba kernels' sums and
LightGBM's, bit for bit, and a process moves to the kernels when they pay (issue 18: load without numba)."""

from __future__ import annotations

import json
import subprocess
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from perfcast.builtin import bundle_path
from perfcast.datasets.importers import get_importer
from perfcast.models.persistence.bundle import PerfcastModel
from perfcast.models.persistence.compiled import compile_lightgbm
from perfcast.models.persistence.kernels import walk
from perfcast.models.persistence.small_walk import SMALL, TIER_UP, SmallWalk
from tests.test_compiled import _booster, _probe, at_every_threshold, features, gemm  # noqa: F401  (fixtures)


def _agree(forest, booster: lgb.Booster, X: np.ndarray) -> None:
    """The NumPy walk, request by request (<= SMALL rows) and whole, equals the kernels and LightGBM."""
    small = SmallWalk.of(forest)
    expected = booster.predict(X)
    np.testing.assert_array_equal(walk(forest.layout, X, 1), expected)
    np.testing.assert_array_equal(np.concatenate([small.predict(X[i:i + SMALL]) for i in range(0, len(X), SMALL)]),
                                  expected)
    np.testing.assert_array_equal(small.predict(X[:1]), expected[:1])


@pytest.mark.parametrize("params", [{}, {"objective": "huber"}, {"n_estimators": 20, "num_leaves": 255,
                                                                  "min_child_samples": 2}],
                         ids=["regression", "huber", "deep-unbalanced"])
def test_the_numpy_walk_sums_what_lightgbm_and_the_kernels_do(features, params):
    A, y = features  # NaN in training (learned NaN directions) and at prediction where training had none
    booster = _booster(A, y, **params)
    forest = compile_lightgbm(booster.model_to_string())
    assert forest is not None
    _agree(forest, booster, _probe(A)[:700])


def test_values_at_beside_and_past_every_threshold_and_one_leaf_trees(features):
    A, y = features
    booster = _booster(A, y)
    forest = compile_lightgbm(booster.model_to_string())
    _agree(forest, booster, at_every_threshold(forest, A[:100]))
    stump = _booster(A[:50], y[:50], n_estimators=3, min_child_samples=40)  # too few rows to split: leaves only
    _agree(compile_lightgbm(stump.model_to_string()), stump, A[:20])


@pytest.mark.parametrize("task", ["gemm", "attention"])
def test_the_built_in_forests_walk_alike_in_numpy_and_numba(task, data_root):
    """Every shipped forest on real aiconfigurator rows of its task (several GPUs and dtypes), featurised as the
    built-in model does."""
    imp, data = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(data) if f"/{task}/" in u.as_posix()][::3]
    records = pd.concat([imp.load(data, u)[task].sample(40, random_state=0, replace=True) for u in units],
                        ignore_index=True)
    F = PerfcastModel.load(bundle_path(task)).features.transform(records)
    assert records["device_id"].nunique() >= 3
    for path in sorted(bundle_path(task).rglob("lightgbm.txt")):
        text = path.read_text()
        booster, forest = lgb.Booster(model_str=text), compile_lightgbm(text, str(path))
        _agree(forest, booster, F[booster.feature_name()].to_numpy(dtype="float64"))


def _modules_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_process_loads_the_kernels_after_tier_up_rows_or_at_its_first_large_batch():
    load = (f"import numpy as np\nfrom perfcast.models.persistence.compiled import compile_lightgbm\n"
            f"text = open({str(next(bundle_path('gemm').rglob('lightgbm.txt')))!r}).read()\n"
            f"f = compile_lightgbm(text)\nX = np.ones((4, f.n_features))\n")
    few = _modules_after(load + "for _ in range(10): f.predict(X)")
    assert "perfcast.models.persistence.compiled" in few
    assert not {"numba", "perfcast.models.persistence.kernels"} & few
    many = _modules_after(load + f"for _ in range({TIER_UP // 4 + 1}): f.predict(X)")
    assert "perfcast.models.persistence.kernels" in many
    batch = _modules_after(load + f"f.predict(np.ones(({SMALL + 1}, f.n_features)))")
    assert "perfcast.models.persistence.kernels" in batch
