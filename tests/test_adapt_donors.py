"""Adapting with donors: the training GPUs' own measurements of the same configurations inform the correction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.estimators.adapt import fit_correction
from perfcast.models.estimators.adapt_donors import StartTable
from perfcast.models.estimators.donor_mix import DonorTable
from perfcast.models.persistence.adapted import save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.perf_probe.plan import adaptation_plan

DONORS = ["h100_sxm", "a100_sxm"]  # nearest first
TARGET = "rtx_pro_6000_server"
K = 256


@pytest.fixture(scope="module")
def gemm(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Real aiconfigurator bf16/fp8 GEMMs: 500 training rows of each donor (the base model's data), every row of
    the donors for the target's configurations, and 2,500 rows of the target."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix()
             and any(f"/{d}/" in u.as_posix() for d in [*DONORS, TARGET])]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"].isin(["bfloat16", "fp8"])]
    target = df[df["device_id"] == TARGET].sample(2500, random_state=0).reset_index(drop=True)
    donors = df[df["device_id"].isin(DONORS)]
    train = donors.groupby("device_id").sample(n=500, random_state=0).reset_index(drop=True)
    keys = ["m", "n", "k", "dtype"]
    donors = donors.merge(target[keys].drop_duplicates(), on=keys)
    donors = donors.sort_values("device_id", key=lambda s: s.map(DONORS.index), kind="stable")
    return train, donors.reset_index(drop=True), target


@pytest.fixture(scope="module")
def adapted(gemm, tmp_path_factory):
    train, donors, target = gemm
    base = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 80}), n_splits=2)
    path = save_model(base.fit(train, train[["runtime_ms"]]), "gemm", train,
                      tmp_path_factory.mktemp("models") / "base", {"model": "hybrid"})
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "gemm", K))
    model = Predictor.load(path)
    return model, model.adapt(target[picked], donors=donors), target[picked], target[~picked]


def _mape(y: pd.Series, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) / y.to_numpy() - 1)))


def test_the_donors_beat_a_level_only_correction_on_the_targets_other_rows(adapted):
    base, model, revealed, test = adapted
    report = model.metadata["adaptation"]
    assert report["donors"] == DONORS
    assert report["shape_reads_donors"] or report["donor_mix"] or report["starts_from"] != "base model"
    assert any(k.startswith(("donor ", "mix ")) for k in report["cv_mean_ape"])  # the donor candidates were validated
    head = model.model.heads[0]
    F, Ft = (model.model.features.transform(x) for x in (revealed, test))
    level = fit_correction(F, head.inner.predict(F).ravel(), revealed["runtime_ms"].to_numpy(), "level", "gemm")
    start = head.inner.predict(Ft).ravel()
    level_only = _mape(test["runtime_ms"], start * np.exp(level.log_ratio(Ft, start)))
    ours = _mape(test["runtime_ms"], model.predict(test)["runtime_ms"].to_numpy())
    assert ours < 0.9 * level_only, (ours, level_only)


def test_a_donor_adapted_bundle_round_trips_bit_for_bit(adapted, gemm, tmp_path):
    _, model, _, test = adapted
    head = model.model.heads[0]
    loaded = Predictor.load(save_adapted(model.model, tmp_path / "adapted"))
    again = loaded.model.heads[0]
    assert again.donors.devices == head.donors.devices and again.from_donor == head.from_donor
    np.testing.assert_array_equal(again.donors.log_latency, head.donors.log_latency)
    for rows in (test, gemm[1]):  # the target's unrevealed rows and the donors' own
        pd.testing.assert_frame_equal(loaded.predict(rows), model.predict(rows), check_exact=True)


def test_a_start_table_starts_from_the_other_model_and_keeps_the_donors_for_the_rest() -> None:
    F = pd.DataFrame({"log2_m": [1.0, 2.0, 3.0, 4.0], "log2_n": [1.0, 1.0, 2.0, 2.0], "log2_k": [4.0, 5.0, 6.0, 7.0],
                      "a_bytes": [2.0, 2.0, 2.0, 2.0]})
    base = np.array([1.0, 1.0, 1.0, 1.0])
    donors = DonorTable.build(["near", "far"], F.iloc[:3], np.array([2.0, 3.0, 4.0]), "gemm",
                              device_of=np.array(["near", "far", "near"]))
    starts = StartTable.of(donors, "the default", F.iloc[:3], np.array([5.0, 6.0, 7.0]), "gemm")
    # the nearest donor starts where it measured (else the base); the start table from its model's prediction
    assert donors.start(F, base) == pytest.approx([2.0, 1.0, 4.0, 1.0])
    assert starts.start(F, base) == pytest.approx([5.0, 6.0, 7.0, 1.0])
    assert starts.device == "the default" and starts.devices == ["near", "far"]
    # the donor mix and the shape term read the real donors' latencies, as before
    assert np.array_equal(starts.latencies(F, np.zeros(4)), donors.latencies(F, np.zeros(4)))
    with pytest.raises(ValueError, match="cannot be saved in a bundle"):
        starts.state()
