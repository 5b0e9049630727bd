"""The rule that adopts a correction of the sibling copy (:mod:`perfcast.models.estimators.sibling_rule`), on real
rows: B300 and GB300 GEMMs of the shared slice, each copied from the other (two folds, as the nested folds pair
the training siblings). A gain that comes from one layer (one weight shape swept over m) passes the 1% margin's
point estimate and a test over independent rows, and must not pass the test over layers; a gain that clears the
margin by less than its noise must not pass either."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfcast.features import feature_transformer
from perfcast.experiments.sibling import setting_notes
from perfcast.features.groups import feature_groups
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.estimators.sibling_rule import (MARGIN, Z, fold_gains, layer_keys, paired_gain,
                                                     passes)

# the GB200 / GB300 / B300 / H100 GEMM slice (tests/test_sibling.py)
from tests.test_sibling import gemm, held_out_gb200  # noqa: F401  (pytest fixtures)

LAYER = ["dtype", "n", "k"]


def beats_copying(ape: np.ndarray, ape_copy: np.ndarray, fold: np.ndarray, layer: np.ndarray,
                  margin: float = MARGIN, z: float | None = Z) -> bool:
    """The rule as SiblingShrink applies it to one setting: :func:`passes` on its :func:`fold_gains`."""
    return passes(fold_gains(ape, ape_copy, fold, layer, margin), z)


@pytest.fixture(scope="module")
def folds(gemm) -> pd.DataFrame:  # noqa: F811
    """Per (fold, configuration): the target's log latency, the copied sibling's, and the row's layer key
    (fold 0: GB300 copied from B300; fold 1: B300 copied from GB300)."""
    pair = gemm[gemm["device_id"].isin(["b300_sxm", "gb300"])]
    wide = (pair.groupby([*LAYER, "m", "device_id"], observed=True)["runtime_ms"].mean().apply(np.log)
            .unstack("device_id").dropna().reset_index())
    parts = [wide.assign(fold=0, truth=wide["gb300"], copy=wide["b300_sxm"]),
             wide.assign(fold=1, truth=wide["b300_sxm"], copy=wide["gb300"])]
    out = pd.concat(parts, ignore_index=True)
    out["layer"] = out.groupby(LAYER, observed=True).ngroup()
    return out


def ape(log_pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.abs(np.expm1(log_pred - truth))


def test_the_layer_is_the_configuration_without_its_sweep(gemm):  # noqa: F811
    """On featurized GEMMs, :func:`layer_keys` groups the rows exactly by (dtype, n, k): m is the sweep."""
    rows = gemm[gemm["device_id"] == "gb300"].reset_index(drop=True)
    X = feature_transformer("gemm").fit(rows).transform(rows)
    groups = feature_groups("gemm")
    keys = layer_keys(X, [*groups["shape"], *groups["dtype"]])
    by_hand = rows.groupby(LAYER, observed=True).ngroup().to_numpy()
    assert len(np.unique(keys)) == len(np.unique(by_hand)) > 20
    assert pd.crosstab(keys, by_hand).astype(bool).sum(axis=1).eq(1).all()  # one layer per key, and back
    assert pd.crosstab(by_hand, keys).astype(bool).sum(axis=1).eq(1).all()


def test_with_one_row_per_layer_the_standard_error_is_the_paired_t_tests(folds):
    one = folds[folds["fold"] == 0]
    copy = ape(one["copy"].to_numpy(), one["truth"].to_numpy())
    half = ape(0.5 * (one["copy"] + one["truth"]).to_numpy(), one["truth"].to_numpy())
    excess, se, copy_mean = paired_gain(half, copy, np.arange(len(one)))
    diff = (1.0 - MARGIN) * copy - half
    assert excess == pytest.approx(diff.mean()) and copy_mean == pytest.approx(copy.mean())
    assert se == pytest.approx(diff.std(ddof=1) / np.sqrt(len(diff)), rel=1e-9)
    # rows of a layer move together: over layers the standard error is larger
    assert paired_gain(half, copy, one["layer"].to_numpy())[1] > 1.5 * se


def test_a_gain_from_one_layer_is_not_adopted(folds):
    """The copy corrected exactly on the layer where copying misses most, and left alone elsewhere: on both
    folds it gains more than the margin, and a test over independent rows calls it significant, but the gain
    is one layer's, so over layers it is within the noise and copying stays."""
    truth, copy_log = folds["truth"].to_numpy(), folds["copy"].to_numpy()
    fold, layer = folds["fold"].to_numpy(), folds["layer"].to_numpy()
    copy = ape(copy_log, truth)
    worst = pd.Series(copy).groupby(layer).sum().idxmax()
    one_layer = ape(np.where(layer == worst, truth, copy_log), truth)
    table = fold_gains(one_layer, copy, fold, layer)
    assert len(table) == 2 and (table["excess"] >= 0).all()
    assert passes(table, z=None)                                       # the margin's point estimate adopts it
    assert beats_copying(one_layer, copy, fold, np.arange(len(fold)))  # so does a test over rows
    assert not beats_copying(one_layer, copy, fold, layer)             # over layers it is noise
    assert (table["excess"] / table["se"]).max() < Z


def test_a_gain_just_over_the_margin_is_not_adopted(folds):
    """A correction that scales every row's log error by 0.985 passes; the same with a layer-to-layer spread
    (each layer's scale drawn once, sd 0.05) still clears the 1% margin on both folds, but by less than its
    standard error over layers, so copying stays."""
    truth, copy_log = folds["truth"].to_numpy(), folds["copy"].to_numpy()
    fold, layer = folds["fold"].to_numpy(), folds["layer"].to_numpy()
    copy = ape(copy_log, truth)
    err = copy_log - truth
    steady = ape(truth + 0.985 * err, truth)
    assert beats_copying(steady, copy, fold, layer)
    shake = np.random.default_rng(0).normal(0.0, 0.05, layer.max() + 1)[layer]
    noisy = ape(truth + (0.985 + shake) * err, truth)
    table = fold_gains(noisy, copy, fold, layer)
    if not passes(table, z=None):  # the draw must leave the point estimate over the margin (seeded)
        pytest.fail(f"seeded layer noise moved the gain under the margin: {table}")
    assert not beats_copying(noisy, copy, fold, layer)


def test_a_gain_on_every_layer_is_adopted_and_one_fold_is_not_enough(folds):
    """Halving the copy's log error on every row is adopted; the same on one fold only (copying on the other)
    is not: the correction must beat copying on every held-out sibling."""
    truth, copy_log = folds["truth"].to_numpy(), folds["copy"].to_numpy()
    fold, layer = folds["fold"].to_numpy(), folds["layer"].to_numpy()
    copy = ape(copy_log, truth)
    half = ape(0.5 * (copy_log + truth), truth)
    assert beats_copying(half, copy, fold, layer)
    assert not beats_copying(np.where(fold == 0, half, copy), copy, fold, layer)
    # and a correction that makes things worse never passes, however strict or lax the test
    assert not beats_copying(ape(copy_log + (copy_log - truth), truth), copy, fold, layer, z=-10.0)


def test_the_protocol_notes_say_how_far_the_rule_was_cleared(held_out_gb200):  # noqa: F811
    """The sibling protocol's notes name, per kernel kind, the nested test's margin of safety (or that nothing
    cleared the margin), beside the chosen setting."""
    _, test, pipe, est = held_out_gb200
    X = pipe[:-1].transform(test)
    kinds = kernel_kinds(X).to_numpy()
    truth = test["runtime_ms"].to_numpy(dtype="float64")
    pred = est.predict(X)
    notes = setting_notes(est, kinds, truth, pred, pred, np.zeros(len(X), dtype=bool))
    assert len(notes) == len(pd.unique(kinds))
    for kind, note in zip(sorted(pd.unique(kinds)), notes, strict=True):
        nested = est.nested_.get(str(kind), est.nested_["*"])
        assert ("standard errors over layers" in note) == ("z" in nested)
        assert "nan" not in note
