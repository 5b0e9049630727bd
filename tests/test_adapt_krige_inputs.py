"""The kriging over more coordinates (a setting's ``krige_inputs``, :class:`KrigeRule`): on real aiconfigurator
attention rows of a GPU the base never saw, a residual that differs by the KV cache's dtype alone is reached by the
kriging only when it reads ``kv_bytes``; the kriging keeps the column, round-trips through a bundle's state and
serves one row as the batch; unknown columns are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfcast.models.estimators.adapt import AdaptedModel, AdaptedRegressor
from perfcast.models.estimators.adapt_krige import KrigeRule, choose_kriging, krige_columns, krige_rule
from perfcast.perf_probe.plan import adaptation_plan
from tests.test_adapt_attention import base, tables  # noqa: F401  (fixtures: real H100 attention rows)

K = 160
RULE = KrigeRule(-1.0, ("kv_bytes",))


@pytest.fixture(scope="module")
def split(tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    target = tables[1]
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "attention", K))
    return target[picked], target[~picked]


def test_a_rule_names_feature_columns_only():
    assert krige_rule(-1.0, None, "attention") == -1.0 and krige_rule(None, ["kv_bytes"], "attention") is None
    assert krige_rule(-1.0, ["kv_bytes"], "attention") == RULE
    with pytest.raises(ValueError, match=r"krige_inputs \['kv_dtype'\] are not attention feature columns"):
        krige_rule(-1.0, ["kv_dtype"], "attention")


def test_a_kv_dtype_residual_is_reached_only_with_kv_bytes(base, split):
    revealed, _ = split
    F, b = AdaptedModel(base).parts(revealed)
    kv = F["kv_bytes"].to_numpy()
    assert len(np.unique(kv)) == 2, "the H100 rows should have bf16 and fp8 KV caches"
    assert "kv_bytes" not in krige_columns(F, "attention")
    assert krige_columns(F, "attention", RULE.inputs)[-1] == "kv_bytes"
    rng = np.random.default_rng(0)
    r = np.where(kv < 1.5, 0.3, -0.3) + rng.normal(0.0, 0.05, len(kv))  # fp8 KV slower, bf16 faster
    folds = [(np.setdiff1d(np.arange(len(r)), held), held) for held in np.array_split(rng.permutation(len(r)), 5)]
    plain, _, left_plain = choose_kriging(F, b, r, "attention", folds, min_gain=-1.0)
    ruled, _, left_ruled = choose_kriging(F, b, r, "attention", folds, min_gain=RULE)
    assert "kv_bytes" in ruled.columns and "kv_bytes" not in plain.columns
    assert np.mean(np.abs(left_ruled)) < 0.5 * np.mean(np.abs(left_plain)), (
        np.mean(np.abs(left_ruled)), np.mean(np.abs(left_plain)))


def test_a_kriging_over_kv_bytes_round_trips_and_serves_one_row_as_a_batch(base, split):
    revealed, rest = split
    model = AdaptedModel(base, smooth=True, krige=RULE).fit(revealed)
    inner = base.estimator_[-1]
    adapted = model.adaptation_.regressor(inner)
    assert adapted.krige is not None and "kv_bytes" in adapted.krige.columns
    params, arrays = adapted.to_state()
    again = AdaptedRegressor.from_state(params, arrays)
    again.inner, again.alone = inner, adapted.alone  # the children the persistence layer restores
    Ft = base.estimator_[0].transform(rest)
    np.testing.assert_array_equal(again.predict(Ft), adapted.predict(Ft))
    names, A = tuple(Ft.columns), Ft.to_numpy(dtype="float64")
    np.testing.assert_allclose(np.concatenate([again.predict_rows(A[i:i + 1], names) for i in range(5)]),
                               adapted.predict(Ft.iloc[:5]), rtol=1e-12)
