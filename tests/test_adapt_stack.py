"""The adaptation's round-5 candidates on real data: a model of the K rows alone stacked with the correction
(weight chosen by the guard's cross-fitted predictions, saved in the bundle), and intervals per kernel kind
with a scale of the conformity scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.estimators import adapt_stack
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.models.persistence.adapted import save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.calibration import conformal_quantile, group_labels
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.perf_probe.plan import adaptation_plan
from tests.test_predict_one_row import GEMM_KEYS, _configs, assert_same_as_frame

TRAIN_GPUS = ["a100_sxm", "h100_sxm", "b300_sxm", "rtx_pro_6000_server"]
TARGET_GPU = "l40s"  # no family sibling among the training GPUs
K = 256


@pytest.fixture(scope="module")
def rows(data_root: Path) -> tuple[ConformalRegressor, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A small base model on 400 real bf16/fp8 GEMMs of each training GPU; K planned L40S rows and the rest of
    3,000 L40S rows."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix()]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"].isin(["bfloat16", "fp8"])]
    train = df[df["device_id"].isin(TRAIN_GPUS)].groupby("device_id").sample(n=400, random_state=0)
    target = df[df["device_id"] == TARGET_GPU].sample(3000, random_state=0).reset_index(drop=True)
    base = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 80}), n_splits=3)
    base.fit(train, train[["runtime_ms"]])
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "gemm", K))
    return base, train, target[picked], target[~picked]


def _mape(y: pd.Series, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, dtype="float64") / y.to_numpy(dtype="float64") - 1)))


def test_the_k_rows_model_is_weighed_by_cross_validation_and_helps(rows, monkeypatch):
    base, _, revealed, test = rows
    stacked = AdaptedModel(base).fit(revealed)
    found = stacked.adaptation_
    stack = {k: v for k, v in found.cv_error.items() if k.startswith("stack")}
    assert sorted(stack) == [f"stack {w:g}" for w in adapt_stack.WEIGHTS if w]
    # the weight chosen is the one of least cross-validated APE, the unstacked correction among the candidates
    assert found.alone_weight > 0 and found.alone is not None
    assert stack[f"stack {found.alone_weight:g}"] == min(stack.values())
    assert min(stack.values()) < found.cv_error[found.correction.mode]
    # the intervals are the stack's own cross-fitted residuals
    np.testing.assert_array_equal(found.calibration.scores["runtime_ms"], np.sort(found.scores))
    # on the rest of the GPU: better than the same adaptation without the stack, and than the K rows alone
    monkeypatch.setattr(adapt_stack, "MIN_STACK_ROWS", len(revealed) + 1)
    plain = AdaptedModel(base).fit(revealed)
    assert plain.adaptation_.alone is None and not any(k.startswith("stack") for k in plain.adaptation_.cv_error)
    alone = adapt_stack.fit_alone(base.estimator_[0].transform(revealed), revealed["runtime_ms"].to_numpy(),
                                  "runtime_ms", 0)
    got = _mape(test["runtime_ms"], stacked.predict(test))
    assert got < _mape(test["runtime_ms"], plain.predict(test))
    assert got < _mape(test["runtime_ms"], alone.predict(base.estimator_[0].transform(test)))
    pred, lo, hi = stacked.predict_with_interval(test)
    y = test["runtime_ms"].to_numpy()
    assert 0.85 <= float(np.mean((y >= lo) & (y <= hi))) <= 0.97


def test_too_few_rows_are_never_stacked(rows):
    base, _, revealed, _ = rows
    few = revealed.iloc[: adapt_stack.MIN_STACK_ROWS - 1]
    found = AdaptedModel(base).fit(few).adaptation_
    assert found.alone is None and found.alone_weight == 0.0
    assert not any(k.startswith("stack") for k in found.cv_error)


def test_a_stacked_bundle_round_trips_and_zero_rows_is_the_base(rows, tmp_path):
    base, train, revealed, test = rows
    bundle = save_model(base, "gemm", train, tmp_path / "base", {"model": "hybrid"})
    loaded_base = Predictor.load(bundle)
    adapted = loaded_base.adapt(revealed)
    lineage = adapted.model.metadata["adaptation"]
    assert lineage["k_rows_model_weight"] > 0
    path = save_adapted(adapted.model, tmp_path / "adapted")
    head = json.loads((path / "manifest.json").read_text())["estimators"]["heads"][0]
    assert head["kind"] == "adapted" and head["children"]["alone"]["kind"] == "hybrid"
    assert head["params"]["alone_weight"] == lineage["k_rows_model_weight"]
    again = Predictor.load(path)
    pd.testing.assert_frame_equal(again.predict(test), adapted.predict(test))
    # one configuration at a time (the one-row path) blends the K-rows model as the batch does, to the bit
    assert_same_as_frame(again, _configs(test.head(12), GEMM_KEYS, "m"))
    # the in-memory adaptation of the fitted model agrees with the loaded bundle's
    np.testing.assert_allclose(AdaptedModel(base).fit(revealed).predict(test), adapted.predict(test)["runtime_ms"],
                               rtol=1e-9)
    pd.testing.assert_frame_equal(loaded_base.adapt(revealed.iloc[:0]).predict(test), loaded_base.predict(test))


def test_intervals_per_kernel_kind_and_scaled_scores(rows):
    base, _, revealed, test = rows
    model = AdaptedModel(base).fit(revealed)
    found = model.adaptation_
    level = found.calibration.level
    # GEMM has no attention phase: per phase is pooled; per kernel kind, one quantile per dtype
    assert found.regrouped(20).calibration.group_scores == {}
    by_kind = found.regrouped(20, by_kind=True)
    kinds = set(found.kind_labels)
    assert len(kinds) == 2 and set(by_kind.calibration.group_scores) == kinds
    model.adaptation_ = by_kind
    F = base.estimator_[0].transform(test)
    pred, lo, hi = model.predict_with_interval(test)
    half = np.log(hi / pred)
    tested = group_labels(F, list(found.kind_columns))
    for kind in kinds:
        q = conformal_quantile(np.sort(found.scores[found.kind_labels == kind]), level)
        np.testing.assert_allclose(half[tested == kind], q, rtol=1e-9)
    # a scale multiplies every quantile (pooled and per group) and is noted in the calibration
    pooled = found.regrouped(None).calibration
    scaled = found.regrouped(None, scale=0.9).calibration
    assert scaled.grouping["score_scale"] == 0.9
    np.testing.assert_allclose(scaled.quantiles(level), 0.9 * pooled.quantiles(level), rtol=1e-12)
