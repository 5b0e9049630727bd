"""Each attention phase adapted by its own guard where its rows' folds choose that (``per_phase``), on real
aiconfigurator attention rows of a GPU the base never saw: the phases' choices differ where their errors need
different corrections, each row is served by its phase's correction, bundles round-trip, one row is the batch, and
with no rows (or too few of a phase) nothing changes. With ``per_phase_stack`` a phase's own guard stacks the model
of all K rows, so it has the stack though its own rows are fewer than the stack needs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.models.estimators.adapt import INTERVAL_GROUPS, N_SPLITS, PHASE_NAMES, AdaptedModel, fit_adaptation
from perfcast.models.estimators.adapt_stack import MIN_STACK_ROWS, SharedAlone, fit_alone
from perfcast.models.persistence.adapted import adapt_loaded, save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.calibration import group_labels
from perfcast.perf_probe.plan import adaptation_plan
from tests.test_adapt_attention import base, tables  # noqa: F401  (fixtures: real H100 attention rows)

K = 160
#: a K whose phases each have fewer rows than the stack needs (70 context, 58 generation), K itself more
K_SHARED = 128
PER_PHASE = 40
PRESET = {"smooth": True, "krige": -1.0}


def planned(tables, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The plan's ``k`` rows of the H100, and the rest."""
    target = tables[1]
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "attention", k))
    return target[picked], target[~picked]


@pytest.fixture(scope="module")
def split(tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    return planned(tables, K)


@pytest.fixture(scope="module")
def split_shared(tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    return planned(tables, K_SHARED)


@pytest.fixture(scope="module")
def adapted(base, split) -> tuple[AdaptedModel, AdaptedModel]:
    """The same rows adapted by one guard, and per phase, with the preset's stages (smooth term, kriging)."""
    revealed, _ = split
    return (AdaptedModel(base, smooth=True, krige=-1.0).fit(revealed),
            AdaptedModel(base, smooth=True, krige=-1.0, per_phase=PER_PHASE).fit(revealed))


def test_a_phase_keeps_its_own_correction_where_its_folds_find_it_better(adapted, split):
    pooled, phased = (a.adaptation_ for a in adapted)
    # on these real rows the pooled guard chooses the shape term, the context's own folds the smooth one (the phases
    # need different corrections)
    assert phased.phases, "no phase chose its own adaptation"
    assert any(own.describe() != pooled.describe() for own in phased.phases.values())
    F, _ = adapted[0].parts(split[0])
    labels = group_labels(F, list(INTERVAL_GROUPS))
    for label, own in phased.phases.items():
        rows = labels == label
        assert own.n_rows == rows.sum() >= PER_PHASE
        name = PHASE_NAMES[label]  # kept only where its folds say it is better
        assert phased.cv_error[f"{name} alone"] < phased.cv_error[f"{name} pooled"]
        assert phased.cv_error[f"{name} pooled"] == pytest.approx(np.mean(np.abs(np.expm1(-pooled.residuals[rows]))))
        np.testing.assert_array_equal(phased.residuals[rows], own.residuals)
    kept = set(phased.phases)
    np.testing.assert_array_equal(phased.residuals[~np.isin(labels, list(kept))],
                                  pooled.residuals[~np.isin(labels, list(kept))])
    # the intervals are recalibrated on each row's chosen residual
    np.testing.assert_array_equal(phased.calibration.scores["runtime_ms"], np.sort(np.abs(phased.residuals)))
    assert "rows: their own" in phased.describe() and phased.report()["phases"].keys() == kept


def test_each_row_is_served_by_its_phase_s_correction(adapted, split):
    _, test = split
    pooled, phased = adapted
    F, b = phased.parts(test)
    labels = group_labels(F, list(INTERVAL_GROUPS))
    ours = phased.predict_with_interval(test, parts=(F, b))[0]
    theirs = pooled.predict_with_interval(test, parts=(F, b))[0]
    for label, own in phased.adaptation_.phases.items():
        rows = labels == label
        np.testing.assert_array_equal(ours[rows], own.regressor(None).adjust(F.loc[rows], b[rows]))
    others = ~np.isin(labels, list(phased.adaptation_.phases))
    np.testing.assert_array_equal(ours[others], theirs[others])
    assert not np.allclose(ours, theirs)


@pytest.mark.parametrize(("k", "stages"), [(K, {}), (K, PRESET), (K_SHARED, {**PRESET, "per_phase_stack": True})],
                         ids=["default", "kriged", "shared-stack"])
def test_a_phased_bundle_round_trips_and_one_row_is_the_batch(base, tables, tmp_path, k, stages):
    """The product default's stages and the preset's (smooth shape term, kriging: a phase's own kriging is arrays
    in its own folder), and a phase stacked with the model of all K rows (in its own folder too)."""
    revealed, test = planned(tables, k)
    loaded = Predictor.load(save_model(base, "attention", tables[0], tmp_path / "base", {"model": "hybrid"}))
    model, found = adapt_loaded(loaded.model, revealed, per_phase=PER_PHASE, **stages)
    assert found.phases and len(model.heads[0].phases) == len(found.phases)
    if stages.get("per_phase_stack"):  # the case this parameter is for: a phase stacked with the all-K-rows model
        assert any(own.alone_weight > 0 for own in found.phases.values())
    in_memory = Predictor(model)
    again = Predictor.load(save_adapted(model, tmp_path / "adapted"))
    head = again.model.heads[0]
    assert head.phase_labels == tuple(found.phases) and len(head.phases) == len(found.phases)
    assert again.metadata["adaptation"]["phases"].keys() == found.phases.keys()
    ours, theirs = in_memory.predict(test), again.predict(test)
    for col in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):
        np.testing.assert_array_equal(ours[col].to_numpy(), theirs[col].to_numpy(), err_msg=col)
    F = loaded.model.features.transform(test)
    np.testing.assert_array_equal(head.predict(F), found.regressor(base.estimator_[-1]).predict(F))
    rows = test.groupby("phase").head(5)
    configs = rows.drop(columns=["runtime_ms"]).to_dict("records")
    one, batch = pd.DataFrame([again.predict(c) for c in configs]), again.predict(rows)
    for col in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):  # a phase's own correction: one row = the batch
        np.testing.assert_array_equal(one[col].to_numpy(), batch[col].to_numpy(), err_msg=col)


def test_no_rows_or_too_few_of_a_phase_change_nothing(base, split):
    revealed, test = split
    empty = AdaptedModel(base, per_phase=PER_PHASE).fit(revealed.iloc[:0])
    pred, lo, hi = empty.predict_with_interval(test)
    expected = base.predict_with_interval(test)
    for ours, theirs in zip((pred, lo, hi), expected, strict=True):
        np.testing.assert_array_equal(ours, np.asarray(theirs, dtype="float64").reshape(len(test), -1)[:, 0])
    few = revealed.iloc[:PER_PHASE]  # fewer than PER_PHASE rows of each phase: the pooled adaptation only
    pooled = AdaptedModel(base).fit(few)
    phased = AdaptedModel(base, per_phase=PER_PHASE).fit(few)
    assert not phased.adaptation_.phases
    np.testing.assert_array_equal(phased.predict(test), pooled.predict(test))


def test_a_phase_s_own_guard_stacks_the_model_of_all_k_rows(base, split_shared):
    """At K = 128 each phase has fewer rows than the stack needs: its own guard had no stack, with
    ``per_phase_stack`` it is offered the model of all K rows, and on these rows the context keeps it; the pooled
    adaptation is the same either way (the same folds, the same model)."""
    revealed, _ = split_shared
    before = AdaptedModel(base, per_phase=PER_PHASE, **PRESET).fit(revealed)
    after = AdaptedModel(base, per_phase=PER_PHASE, per_phase_stack=True, **PRESET).fit(revealed)
    F, _ = after.parts(revealed)
    labels = group_labels(F, list(INTERVAL_GROUPS))
    assert len(revealed) >= MIN_STACK_ROWS > max((labels == label).sum() for label in set(labels))
    old, new = before.adaptation_, after.adaptation_
    pooled_keys = [key for key in old.cv_error if not key.endswith((" alone", " pooled"))]
    assert {key: new.cv_error[key] for key in pooled_keys} == {key: old.cv_error[key] for key in pooled_keys}
    assert new.alone_weight == old.alone_weight > 0 and new.describe().split(";")[0] == old.describe().split(";")[0]
    assert not any(key.startswith("stack") for own in old.phases.values() for key in own.cv_error)
    stacked = [own for own in new.phases.values() if own.alone_weight > 0]
    assert stacked, "no phase chose the stack of the model of all K rows"
    for own in stacked:
        assert own.n_rows < MIN_STACK_ROWS and own.alone is new.alone  # the one model of all K rows
        chosen = min((w for w in (0.25, 0.5, 0.75, 1.0)), key=lambda w: own.cv_error[f"stack {w:g}"])
        assert own.alone_weight == chosen


def test_the_shared_model_s_predictions_are_cross_fitted(base, split_shared):
    """Each row's prediction by the model of all K rows, as a phase's guard reads it, comes from a fit that never
    saw the row (the guard would otherwise favour the stack on rows the model has learnt)."""
    revealed, _ = split_shared
    F, _ = AdaptedModel(base).parts(revealed)
    y = revealed["runtime_ms"].to_numpy(dtype="float64")
    from sklearn.model_selection import KFold

    folds = list(KFold(n_splits=N_SPLITS, shuffle=True, random_state=0).split(np.arange(len(y))))
    shared = SharedAlone.fit(F, y, "runtime_ms", 0, folds)
    fit_idx, held_idx = folds[0]
    apart = np.log(fit_alone(F.iloc[fit_idx], y[fit_idx], "runtime_ms", 0).predict(F.iloc[held_idx]))
    np.testing.assert_array_equal(shared.oof[held_idx], apart)
    assert not np.allclose(shared.oof, np.log(shared.model.predict(F)))
    rows = np.arange(len(y)) % 2 == 0
    np.testing.assert_array_equal(shared.of(rows).oof, shared.oof[rows])
    assert SharedAlone.fit(F.iloc[:MIN_STACK_ROWS - 1], y[:MIN_STACK_ROWS - 1], "runtime_ms", 0, folds) is None


def test_per_phase_stack_needs_per_phase(base, split_shared):
    revealed, _ = split_shared
    F, b = AdaptedModel(base).parts(revealed)
    with pytest.raises(ValueError, match="per_phase_stack=True needs per_phase"):
        fit_adaptation(F, b, revealed["runtime_ms"].to_numpy(dtype="float64"), task="attention",
                       per_phase_stack=True)
