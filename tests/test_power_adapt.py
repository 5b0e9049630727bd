"""Adapting a runtime + power model to a shifted setting from K measured rows, on real GB200 rows: a model of
TensorRT-LLM's GEMMs adapted to vLLM's (same GPU, another kernel library: other watts) predicts vLLM's power on
shapes it never saw better than before, keeps energy = power x runtime, recalibrates intervals, and saves and
loads as a bundle; rows without a power reading adapt runtime only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.eval.protocols import unseen_shape_split
from perfcast.models import make_model
from perfcast.models.estimators.power_adapt import AdaptedJointRegressor, adapts_jointly, quadrature
from perfcast.models.persistence.adapted import save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor

SMALL = {"runtime": {"n_estimators": 120}, "correction": {"n_estimators": 120}}
TARGETS = ["runtime_ms", "power_w", "energy_j"]
TABLES = {"trtllm": "gb200/gemm/trtllm/1.3.0rc17/gemm_perf.parquet", "vllm": "gb200/gemm/vllm/0.22.0/gemm_perf.parquet"}


def _rows(data_root: Path, lib: str, step: int) -> pd.DataFrame:
    root = data_root / "aiconfigurator-power"
    df = get_importer("aiconfigurator-power").load(root, root / TABLES[lib])["gemm"]
    return df.iloc[::step].reset_index(drop=True).assign(task="gemm")


@pytest.fixture(scope="module")
def base(data_root: Path, tmp_path_factory) -> Predictor:
    train = _rows(data_root, "trtllm", 40)
    model = ConformalRegressor(make_model("power", "gemm", TARGETS, SMALL), n_splits=3).fit(train, train[TARGETS])
    return Predictor.load(save_model(model, "gemm", train, tmp_path_factory.mktemp("power") / "base"))


@pytest.fixture(scope="module")
def vllm(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    pool, test = unseen_shape_split(_rows(data_root, "vllm", 20), seed=0)
    return pool.sample(256, random_state=0), test.sample(min(len(test), 3000), random_state=0)


def _ape(pred: pd.Series, truth: pd.Series) -> float:
    return float(np.mean(np.abs(pred.to_numpy() / truth.to_numpy() - 1)))


def test_adapting_to_another_library_improves_power_on_unseen_shapes(base, vllm) -> None:
    revealed, test = vllm
    adapted = base.adapt(revealed, seed=0)
    assert isinstance(adapted.model.heads[0], AdaptedJointRegressor)
    before, after = base.predict(test), adapted.predict(test)
    assert _ape(after["power_w"], test["power_w"]) < 0.9 * _ape(before["power_w"], test["power_w"])
    assert _ape(after["runtime_ms"], test["runtime_ms"]) <= _ape(before["runtime_ms"], test["runtime_ms"]) * 1.02
    np.testing.assert_allclose(after["energy_j"], after["power_w"] * after["runtime_ms"] / 1e3, rtol=1e-9)
    # the intervals are recalibrated on the revealed rows' cross-fitted residuals and cover held-out vLLM rows
    inside = (test["power_w"] >= after["power_w_lo"]) & (test["power_w"] <= after["power_w_hi"])
    assert 0.8 <= inside.mean() <= 0.97
    report = adapted.metadata["adaptation"]
    assert set(report["targets"]) == {"runtime_ms", "power_w"} and report["rows"] == 256
    assert report["cv_mean_ape"]["power_w level"] < report["cv_mean_ape"]["power_w none"]


def test_an_adapted_power_model_saves_and_loads_as_a_bundle(base, vllm, tmp_path: Path) -> None:
    revealed, test = vllm
    adapted = base.adapt(revealed, seed=0)
    loaded = Predictor.load(save_adapted(adapted.model, tmp_path / "adapted"))
    assert loaded.model.joint and isinstance(loaded.model.heads[0], AdaptedJointRegressor)
    pd.testing.assert_frame_equal(loaded.predict(test.iloc[:200]), adapted.predict(test.iloc[:200]))
    # re-adapting a loaded adapted model starts from the base again
    again = loaded.adapt(revealed, seed=0)
    np.testing.assert_allclose(again.predict(test.iloc[:200])["power_w"], adapted.predict(test.iloc[:200])["power_w"])


def test_rows_without_a_power_reading_adapt_runtime_only(base, vllm) -> None:
    revealed, test = vllm
    adapted = base.adapt(revealed.assign(power_w=np.nan), seed=0)
    before, after = base.predict(test.iloc[:500]), adapted.predict(test.iloc[:500])
    np.testing.assert_allclose(after["power_w"], before["power_w"])
    assert set(adapted.metadata["adaptation"]["targets"]) == {"runtime_ms", "power_w"}
    assert adapted.metadata["adaptation"]["targets"]["power_w"]["mode"] == "none"


def test_which_models_adapt_jointly_and_energy_widths_add_in_quadrature() -> None:
    assert adapts_jointly(TARGETS) and adapts_jointly(["runtime_ms", "power_w"])
    assert not adapts_jointly(["power_w"]) and not adapts_jointly(["runtime_ms"])
    a = np.sort(np.random.default_rng(0).exponential(0.1, 400))
    b = np.sort(np.random.default_rng(1).exponential(0.2, 300))
    q = quadrature(a, b)
    assert np.quantile(q, 0.9) == pytest.approx(np.hypot(np.quantile(a, 0.9), np.quantile(b, 0.9)), rel=0.02)


def test_perfcast_adapt_carries_power_through_the_workflow(base, vllm, tmp_path: Path) -> None:
    from perfcast.workflows.adapt import adapt_from_store

    revealed, test = vllm
    done = adapt_from_store(base.model.path, tmp_path / "store", tmp_path / "here", records=revealed, device="gb200")
    assert done.rows == 256 and set(done.report["targets"]) == {"runtime_ms", "power_w"}
    got = done.predictor.predict(test.iloc[:300])
    assert {"power_w", "power_w_lo", "power_w_hi", "energy_j"} <= set(got.columns)
    pd.testing.assert_frame_equal(got, base.adapt(revealed).predict(test.iloc[:300]))
