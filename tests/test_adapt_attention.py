"""Adapting attention on real aiconfigurator rows of a GPU the base never saw: per-phase (Mondrian) interval
quantiles (each from its phase's own cross-fitted residuals, the pooled one for a phase with too few rows; bundles
with and without groups load, and the served intervals are the in-memory ones), a conformity-score scale per phase
(stored as the scaled scores, so a bundle serves it), and a shape term per kernel kind."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.experiments.adapt_bench import PHASE_GROUPS, interval_variants
from perfcast.experiments.presets import choose
from perfcast.models import make_model
from perfcast.models.estimators.adapt import INTERVAL_GROUPS, AdaptedModel, AdaptedRegressor
from perfcast.models.estimators.adapt_correction import fit_correction, shape_matrix
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.persistence.adapted import adapt_loaded, save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.calibration import IntervalCalibration, conformal_quantile, group_labels
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.perf_probe.plan import adaptation_plan

TRAIN_GPUS = ["a100_sxm", "b300_sxm"]
TARGET_GPU = "h100_sxm"  # no family sibling among the training GPUs
K = 200


@pytest.fixture(scope="module")
def tables(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real trtllm attention latencies, both phases: 500 rows of each training GPU, 1,200 of the H100."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/trtllm/" in u.as_posix() and "attention" in u.name
             and any(f"/{d}/" in u.as_posix() for d in [*TRAIN_GPUS, TARGET_GPU])]
    df = pd.concat([imp.load(root, u)["attention"] for u in units], ignore_index=True)
    train = df[df["device_id"].isin(TRAIN_GPUS)].groupby(["device_id", "phase"]).sample(n=250, random_state=0)
    target = df[df["device_id"] == TARGET_GPU].groupby("phase").sample(n=600, random_state=0)
    return train.reset_index(drop=True), target.reset_index(drop=True)


@pytest.fixture(scope="module")
def base(tables) -> ConformalRegressor:
    train, _ = tables
    return ConformalRegressor(make_model("hybrid", "attention", ["runtime_ms"], {"n_estimators": 60}),
                              n_splits=2).fit(train, train[["runtime_ms"]])


@pytest.fixture(scope="module")
def split(tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    target = tables[1]
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "attention", K))
    return target[picked], target[~picked]


def test_each_phase_gets_the_quantile_of_its_own_residuals(base, split):
    revealed, test = split
    adapter = AdaptedModel(base, min_group_rows=20).fit(revealed)
    found = adapter.adaptation_
    cal = found.calibration
    assert cal.group_columns == list(INTERVAL_GROUPS) and set(cal.group_scores) == {"is_decode", "none"}
    q = {g: conformal_quantile(np.sort(found.scores[found.labels == g]), 0.9) for g in ("is_decode", "none")}
    assert q["is_decode"] != q["none"]  # the phases' errors differ: that is why they are grouped
    F, b = adapter.parts(test)
    pred, lo, hi = adapter.predict_with_interval(test, parts=(F, b))
    phase = group_labels(F, list(INTERVAL_GROUPS))
    assert (phase == "is_decode").tolist() == (test["phase"] == "decode").tolist()
    for g in q:  # above the noise floor, every row's half-width is its phase's quantile
        rows = phase == g
        np.testing.assert_allclose(np.log(hi[rows] / pred[rows]).max(), q[g], rtol=1e-9)
    pooled = found.regrouped(None).calibration
    assert not pooled.group_scores and pooled.quantiles()[0] == conformal_quantile(np.sort(found.scores), 0.9)


def test_a_phase_with_too_few_rows_keeps_the_pooled_quantile(base, split):
    revealed, _ = split
    found = AdaptedModel(base, min_group_rows=20).fit(revealed).adaptation_
    fewer = min(int((found.labels == g).sum()) for g in ("is_decode", "none"))
    regrouped = found.regrouped(fewer + 1).calibration
    assert len(regrouped.group_scores) == 1  # the larger phase alone; the other reads the pooled scores
    assert found.regrouped(len(found.labels) + 1).calibration.group_scores == {}


def test_groups_round_trip_and_older_calibrations_load_pooled(base, split):
    revealed, test = split
    adapter = AdaptedModel(base, min_group_rows=20).fit(revealed)
    cal = adapter.adaptation_.calibration
    doc = cal.to_json()
    again = IntervalCalibration.from_json(doc, cal.scores)
    F, b = adapter.parts(test)
    pred = b.reshape(-1, 1)
    noise = np.full_like(pred, np.nan)
    for x, y in zip(cal.bounds(pred, noise, features=F), again.bounds(pred, noise, features=F), strict=True):
        np.testing.assert_array_equal(x, y)
    old = {k: v for k, v in doc.items() if k != "groups"}  # a calibration written before Mondrian groups
    legacy = IntervalCalibration.from_json(old, cal.scores)
    assert legacy.group_scores == {}
    np.testing.assert_array_equal(legacy.bounds(pred, noise, features=F)[1], pred * np.exp(cal.quantiles()[0]))


def test_the_adapted_bundle_serves_per_phase_intervals(base, tables, split, tmp_path):
    revealed, test = split
    bundle = save_model(base, "attention", tables[0], tmp_path / "base", {"model": "hybrid"})
    adapted = Predictor.load(bundle).adapt(revealed)
    assert set(adapted.model.calibration.group_scores) == {"is_decode", "none"}  # both phases: >= MIN_GROUP_ROWS
    loaded = Predictor.load(save_adapted(adapted.model, tmp_path / "adapted"))
    ours, theirs = adapted.predict(test), loaded.predict(test)
    for col in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):
        np.testing.assert_array_equal(ours[col].to_numpy(), theirs[col].to_numpy())
    width = np.log(ours["runtime_ms_hi"] / ours["runtime_ms"]).groupby(test["phase"].to_numpy()).median()
    assert width.nunique() == 2  # one width per phase, not one pooled


def test_kernel_kinds_may_read_different_shape_terms_and_round_trip(base, split):
    revealed, test = split
    F, b = AdaptedModel(base).parts(revealed)
    Ft, bt = AdaptedModel(base).parts(test)
    y = revealed["runtime_ms"].to_numpy(dtype="float64")
    fine, smooth = (fit_correction(F, b, y, m, "attention") for m in ("fine", "smooth"))
    kinds = kernel_kinds(Ft)
    decode = next(k for k in kinds.unique() if "is_decode" in k)
    both = replace(fine, kind_modes={decode: "smooth"}, more_shapes={"smooth": smooth.shape_text})
    level = kinds.map(fine.levels).to_numpy(dtype="float64")
    rows = (kinds == decode).to_numpy()
    own = {m: lgb.Booster(model_str=c.shape_text).predict(shape_matrix(Ft, c.columns, bt))
           for m, c in (("fine", fine), ("smooth", smooth))}
    expected = level + np.where(rows, own["smooth"], own["fine"])  # decode reads its own term, the rest fine's
    np.testing.assert_allclose(both.log_ratio(Ft, bt), expected, rtol=1e-12, atol=1e-12)
    params, arrays = AdaptedRegressor(base.estimator_[-1], both).to_state()
    again = AdaptedRegressor.from_state(params, arrays)
    again.inner = base.estimator_[-1]
    np.testing.assert_array_equal(again.predict(Ft), AdaptedRegressor(base.estimator_[-1], both).predict(Ft))


PHASE_SCALES = {"none": 0.9, "is_decode": 1.1}  # context's scores shrunk, generation's grown


def test_a_scale_per_phase_scales_each_phase_s_own_scores(base, split):
    revealed, _ = split
    found = AdaptedModel(base, min_group_rows=20).fit(revealed).adaptation_
    level = found.calibration.level
    factor = np.where(found.labels == "is_decode", PHASE_SCALES["is_decode"], PHASE_SCALES["none"])
    for by_kind in (False, True):  # groups per phase, or per kernel kind (each kind within one phase)
        cal = found.regrouped(20, by_kind=by_kind, scale=PHASE_SCALES).calibration
        assert cal.grouping["score_scale"] == PHASE_SCALES
        labels = found.kind_labels if by_kind else found.labels
        assert cal.group_scores and set(cal.group_scores) <= set(labels)
        for g, per in cal.group_scores.items():
            own = found.scores[labels == g]
            scale = PHASE_SCALES["is_decode" if "is_decode" in g else "none"]
            assert set(factor[labels == g]) == {scale}
            np.testing.assert_allclose(conformal_quantile(per["runtime_ms"], level),
                                       scale * conformal_quantile(np.sort(own), level), rtol=1e-12)
        # the pooled scores (for a group with too few rows) are every row's score times its own phase's scale
        np.testing.assert_allclose(cal.scores["runtime_ms"], np.sort(found.scores * factor), rtol=1e-12)
    # one scale for both phases is the common scale; a phase not named keeps its scores
    same = found.regrouped(20, scale={"none": 0.9, "is_decode": 0.9}).calibration
    common = found.regrouped(20, scale=0.9).calibration
    np.testing.assert_array_equal(same.scores["runtime_ms"], common.scores["runtime_ms"])
    half = found.regrouped(20, scale={"is_decode": 1.1}).calibration
    np.testing.assert_array_equal(half.group_scores["none"]["runtime_ms"],
                                  found.regrouped(20).calibration.group_scores["none"]["runtime_ms"])


def test_per_phase_scales_round_trip_through_a_bundle(base, tables, split, tmp_path):
    revealed, test = split
    loaded = Predictor.load(save_model(base, "attention", tables[0], tmp_path / "base", {"model": "hybrid"}))
    model, found = adapt_loaded(loaded.model, revealed)
    scaled = Predictor(replace(model, calibration=found.regrouped(20, scale=PHASE_SCALES).calibration))
    again = Predictor.load(save_adapted(scaled.model, tmp_path / "adapted"))
    assert again.model.calibration.grouping["score_scale"] == PHASE_SCALES
    ours, theirs = scaled.predict(test), again.predict(test)
    for col in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):
        np.testing.assert_array_equal(ours[col].to_numpy(), theirs[col].to_numpy())
    # each phase's served half-width (most rows: above the noise floor) is its quantile times its own scale
    plain = Predictor(model).predict(test)
    half = np.log(theirs["runtime_ms_hi"] / theirs["runtime_ms"]).groupby(test["phase"].to_numpy()).median()
    before = np.log(plain["runtime_ms_hi"] / plain["runtime_ms"]).groupby(test["phase"].to_numpy()).median()
    np.testing.assert_allclose(half["prefill"], PHASE_SCALES["none"] * before["prefill"], rtol=1e-9)
    np.testing.assert_allclose(half["decode"], PHASE_SCALES["is_decode"] * before["decode"], rtol=1e-9)


def test_the_preset_grid_with_phase_scales_adds_a_scale_pair_per_grouped_variant():
    options = {**choose("aiconfigurator-adapt", None).options, "phase_scales": True}
    scales = [float(s) for s in options["score_scales"]]
    common = interval_variants(options)
    assert interval_variants(options, phased=False) == common  # GEMM and NeuSight: one scale per calibration
    phased = interval_variants(options, phased=True)
    assert phased[:len(common)] == common  # the common scales first: they win ties, as before
    pairs = phased[len(common):]
    grouped = {(g, k) for g, k, _ in common if g is not None}
    assert len(pairs) == len(grouped) * len(scales) * (len(scales) - 1)
    for g, k, scale in pairs:
        assert (g, k) in grouped and dict(scale).keys() == set(PHASE_GROUPS.values()) == {"none", *INTERVAL_GROUPS}
        assert len(set(dict(scale).values())) == 2


def test_intervals_weighted_for_the_plan_s_shift_round_trip_through_a_bundle(base, tables, split, tmp_path):
    revealed, test = split
    loaded = Predictor.load(save_model(base, "attention", tables[0], tmp_path / "base", {"model": "hybrid"}))
    candidates = tables[1].drop(columns=["runtime_ms"])  # the shapes the device will be asked about
    plain = adapt_loaded(loaded.model, revealed)[0].calibration
    model, found = adapt_loaded(loaded.model, revealed, candidates=candidates)
    cal = model.calibration
    assert cal.grouping["shift_weighted"] is True and "shift_weighted" not in plain.grouping
    assert set(cal.group_scores) == set(plain.group_scores) == {"is_decode", "none"}
    levels = (0.5, 0.7, 0.8, 0.9)  # the plan's rows are not drawn like the shapes: the weighted quantiles move
    assert any(cal.quantiles(a)[0] != plain.quantiles(a)[0] for a in levels)
    again = Predictor.load(save_adapted(model, tmp_path / "adapted"))
    assert again.model.calibration.grouping == cal.grouping
    ours, theirs = Predictor(model).predict(test), again.predict(test)
    for col in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):
        np.testing.assert_array_equal(ours[col].to_numpy(), theirs[col].to_numpy())
