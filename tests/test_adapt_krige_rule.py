"""The kriging over a stretched coordinate and other length scales (a setting's ``krige_inputs`` and
``krige_scales``, :class:`KrigeRule`): on real aiconfigurator attention rows of a GPU the base never saw, factor 0
is exactly the plain kriging; a residual that differs by the KV cache's dtype alone is reached only when the folds
may stretch ``kv_bytes``; the chosen kriging round-trips through a bundle's state and serves one row as the batch;
bad settings are refused with what to write instead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfcast.experiments.adapt_bench import adapter_of
from perfcast.experiments.presets import choose
from perfcast.models.estimators.adapt import AdaptedModel, AdaptedRegressor
from perfcast.models.estimators.adapt_krige import (LENGTH_SCALES, Kriging, KrigeRule, choose_kriging, krige_columns,
                                                    krige_rule)
from perfcast.perf_probe.plan import adaptation_plan
from tests.test_adapt_attention import base, tables  # noqa: F401  (fixtures: real H100 attention rows)

K = 160
KV = (("kv_bytes", (0.0, 0.5, 3.0)),)
#: the round-15a settings and the settings they extend
PARENTS = {"krige_phase_kvw": "krige_phase", "krige_phase_stack_kvw": "krige_phase_stack"}


@pytest.fixture(scope="module")
def rows(base, tables) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """(the plan's K H100 rows' features, their base predictions, the H100's other rows)."""
    target = tables[1]
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "attention", K))
    F, b = AdaptedModel(base).parts(target[picked])
    assert len(np.unique(F["kv_bytes"])) == 2, "the H100 rows should have bf16 and fp8 KV caches"
    return F, b, target


def _folds(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.setdiff1d(np.arange(n), held), held) for held in np.array_split(rng.permutation(n), 5)]


def test_a_setting_becomes_a_rule_only_with_the_new_keys_and_bad_values_are_refused():
    assert krige_rule(-1.0, None, None, "attention") == -1.0 and krige_rule(None, None, None, "attention") is None
    assert krige_rule(-1.0, {"kv_bytes": [0, 0.5, 3]}, [0.25, 0.5, 1, 2], "attention") == \
        KrigeRule(-1.0, KV, (0.25, 0.5, 1.0, 2.0))
    assert krige_rule(0.02, None, [0.25], "attention") == KrigeRule(0.02, (), (0.25,))
    assert krige_rule(0.02, {"kv_bytes": [1]}, None, "attention").length_scales == LENGTH_SCALES
    bad = [((None, {"kv_bytes": [1.0]}, None), "needs krige"),
           ((-1.0, ["kv_bytes"], None), "maps each feature column to the factors"),
           ((-1.0, {"kv_dtype": [1.0]}, None), r"\['kv_dtype'\] are not attention feature columns"),
           ((-1.0, {"kv_bytes": []}, None), "one or more finite factors >= 0"),
           ((-1.0, {"kv_bytes": [-1.0]}, None), "one or more finite factors >= 0"),
           ((-1.0, {"kv_bytes": "3"}, None), "one or more finite factors >= 0"),
           ((-1.0, None, [0.0, 1.0]), "finite length scales > 0"),
           ((-1.0, None, [float("inf")]), "finite length scales > 0")]
    for args, message in bad:
        with pytest.raises(ValueError, match=message):
            krige_rule(*args, "attention")


def test_factor_zero_is_exactly_the_plain_kriging(rows):
    F, b, _ = rows
    rng = np.random.default_rng(0)
    r = rng.normal(0.0, 0.2, len(F))
    plain_cols = krige_columns(F, "attention")
    cols = krige_columns(F, "attention", ("kv_bytes",))
    assert cols == [*plain_cols, "kv_bytes"]
    stretch = np.ones(len(cols))
    stretch[-1] = 0.0
    one = Kriging.fit(F[plain_cols].to_numpy(), b, r, plain_cols, 0.5, 1.0)
    other = Kriging.fit(F[cols].to_numpy(), b, r, cols, 0.5, 1.0, stretch)
    assert other.columns == one.columns
    for a, c in zip(one.state()[1].values(), other.state()[1].values(), strict=True):
        np.testing.assert_array_equal(a, c)
    folds = _folds(len(r), rng)
    plain, errors, left = choose_kriging(F, b, r, "attention", folds, min_gain=-1.0)
    ruled, ruled_errors, ruled_left = choose_kriging(F, b, r, "attention", folds,
                                                     min_gain=KrigeRule(-1.0, (("kv_bytes", (0.0,)),)))
    assert ruled_errors == {f"{k} kv_bytes x0": v for k, v in errors.items()}
    np.testing.assert_array_equal(ruled_left, left)
    np.testing.assert_array_equal(ruled.alpha, plain.alpha)


def test_a_kv_dtype_residual_is_reached_only_where_the_folds_may_stretch_kv_bytes(rows):
    F, b, _ = rows
    kv = F["kv_bytes"].to_numpy()
    rng = np.random.default_rng(0)
    r = np.where(kv < 1.5, 0.3, -0.3) + rng.normal(0.0, 0.05, len(kv))  # fp8 KV slower, bf16 faster
    folds = _folds(len(r), rng)
    plain, _, left_plain = choose_kriging(F, b, r, "attention", folds, min_gain=-1.0)
    rule = KrigeRule(-1.0, KV, (0.25, 0.5, 1.0, 2.0))
    ruled, errors, left_ruled = choose_kriging(F, b, r, "attention", folds, min_gain=rule)
    assert len(errors) == 4 * 3 * 2 and "krige 0.25 1 kv_bytes x3" in errors  # every length scale x factor x weight
    assert "kv_bytes" in ruled.columns and "kv_bytes" not in plain.columns
    assert np.mean(np.abs(left_ruled)) < 0.5 * np.mean(np.abs(left_plain)), (
        np.mean(np.abs(left_ruled)), np.mean(np.abs(left_plain)))
    # rows of one KV dtype: the column has no spread, so it is tried at its first factor only
    bf16 = np.flatnonzero(kv > 1.5)
    _, one_dtype, _ = choose_kriging(F.iloc[bf16], b[bf16], r[bf16], "attention", _folds(len(bf16), rng),
                                     min_gain=rule)
    assert len(one_dtype) == 4 * 2 and all(k.endswith("kv_bytes x0") for k in one_dtype)


def test_a_stretched_kriging_round_trips_and_serves_one_row_as_a_batch(base, rows):
    F, _, target = rows
    picked = target.index.isin(F.index)
    model = AdaptedModel(base, smooth=True, krige=KrigeRule(-1.0, (("kv_bytes", (3.0,)),), (0.25, 0.5))).fit(
        target[picked])
    inner = base.estimator_[-1]
    adapted = model.adaptation_.regressor(inner)
    assert adapted.krige is not None and "kv_bytes" in adapted.krige.columns
    assert adapted.krige.length_scale in (0.25, 0.5)
    params, arrays = adapted.to_state()
    again = AdaptedRegressor.from_state(params, arrays)
    again.inner, again.alone = inner, adapted.alone  # the children the persistence layer restores
    Ft = base.estimator_[0].transform(target[~picked])
    np.testing.assert_array_equal(again.predict(Ft), adapted.predict(Ft))
    names, A = tuple(Ft.columns), Ft.to_numpy(dtype="float64")
    np.testing.assert_allclose(np.concatenate([again.predict_rows(A[i:i + 1], names) for i in range(5)]),
                               adapted.predict(Ft.iloc[:5]), rtol=1e-12)


def test_the_grid_offers_the_kv_settings_last_for_attention_and_the_old_ones_unchanged():
    options = choose("aiconfigurator-adapt").options
    grid = options["settings"]
    names = list(grid)
    assert names[-len(PARENTS):] == list(PARENTS)
    for new, parent in PARENTS.items():
        assert grid[new] == {**grid[parent], "krige_inputs": {"kv_bytes": [0.0, 0.5, 3.0]},
                             "krige_scales": [0.25, 0.5, 1.0, 2.0]}
        assert adapter_of(None, grid[new], options, "attention", 0, None).krige == \
            KrigeRule(-1.0, KV, (0.25, 0.5, 1.0, 2.0))
    for name in names[:-len(PARENTS)]:
        assert adapter_of(None, grid[name], options, "attention", 0, None).krige == grid[name].get("krige")
