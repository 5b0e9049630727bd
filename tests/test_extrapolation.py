"""Work relative to the device (perfcast.features.extrapolation), the hybrid that reads it, and the nested
neusight-ood selection's folds, on real NeuSight rows (T4 and V100 training files, a slice of the test file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers.neusight import NeuSightImporter
from perfcast.eval.protocols import neusight_ood_split
from perfcast.experiments import neusight_selection as sel
from perfcast.experiments.presets import choose
from perfcast.features.extrapolation import (
    DEVICE_RATIOS,
    EFFICIENCY_DIRECTION,
    RELATIVE,
    outside_training,
    relative_features,
)
from perfcast.features.gemm import GemmFeatures
from perfcast.models import make_model
from perfcast.models.estimators.hybrid import HybridRegressor
from perfcast.models.registry import hybrid_estimator

GPUS = ("Tesla T4", "Tesla V100-PCIE-32GB")


@pytest.fixture(scope="module")
def records(data_root: Path) -> pd.DataFrame:
    """400 rows per (GPU, op) of two training GPUs' files and 300 rows of each test file."""
    root, imp = data_root / "neusight", NeuSightImporter()
    frames = []
    for unit in imp.units(root):
        if "collect" in unit.parts and not any(g in unit.name for g in GPUS):
            continue
        recs = imp.load(root, unit)["gemm"]
        frames.append(recs.sample(min(len(recs), 400 if "collect" in unit.parts else 300), random_state=0))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def split(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return neusight_ood_split(records)


def test_relative_columns_are_finite_and_physical(split) -> None:
    train, test = split
    rows = pd.concat([train, test], ignore_index=True)
    F = GemmFeatures().fit(rows).transform(rows)
    R = relative_features(F)
    assert list(R.columns) == list(RELATIVE)
    assert np.isfinite(R.to_numpy()).all()
    assert (R["wave_loss"] >= 0).all()  # a launched wave never does more than its blocks' work
    # intensity over the ridge point (the transformer's compute_memory_balance) is the intensity minus
    # log10(peak FLOP/s / bandwidth): the relative columns need not repeat it
    ridge = np.log10(F["peak_tflops"] * 1e12 / (F["mem_bw_gbs"] * 1e9))
    np.testing.assert_allclose(F["compute_memory_balance"], F["log10_intensity"] - ridge, atol=1e-9)
    # the same shape on a device with more SMs is less work per SM (V100: 80 SMs, T4: 40)
    same = rows.assign(device_id="v100_pcie_32gb"), rows.assign(device_id="t4")
    per_sm = [relative_features(GemmFeatures().fit(r).transform(r))["log10_flops_per_sm"] for r in same]
    np.testing.assert_allclose(per_sm[1] - per_sm[0], np.log10(80 / 40))
    # issue width per SM and clock: 64 FP32 FMA lanes on Turing, Volta and GA100 (128 FLOPs), 128 on the P4's GP104
    width = (2.0 ** R["log2_flops_per_sm_clock"]).groupby(rows["device_id"].to_numpy()).median()
    np.testing.assert_allclose(width[["t4", "v100_pcie_32gb", "a100_pcie", "a100_pcie_40gb"]], 128, rtol=0.01)
    np.testing.assert_allclose(width["p4"], 256, rtol=0.01)


def test_relative_features_name_what_they_lack() -> None:
    with pytest.raises(ValueError, match="sm_count"):
        relative_features(pd.DataFrame({"log10_flops": [1.0]}))


def test_hybrid_learns_monotone_efficiency_on_relative_work(split) -> None:
    train, test = split
    params = {"columns": ["log10_flops_per_sm", "wave_loss", "compute_memory_balance", "m_align64"],
              "relative": True, "monotone": dict(EFFICIENCY_DIRECTION), "n_estimators": 60}
    make_model("hybrid", "gemm", ["runtime_ms"], params)  # the registry accepts the switch by name
    hybrid = hybrid_estimator("gemm", params)
    assert isinstance(hybrid, HybridRegressor) and hybrid.relative
    features = GemmFeatures().fit(train)
    hybrid.fit(features.transform(train), train["runtime_ms"].to_numpy(dtype="float64"))
    F = features.transform(test)
    pred = hybrid.predict(F)
    assert np.isfinite(pred).all() and (pred > 0).all()
    base = hybrid._inputs(F).iloc[:50].copy()
    for col, sign in EFFICIENCY_DIRECTION.items():
        lo, hi = base.copy(), base.copy()
        hi[col] = base[col] + 0.5
        step = hybrid.estimator_.predict(hi) - hybrid.estimator_.predict(lo)
        assert (sign * step >= -1e-12).all(), col  # learned log(measured / roofline) moves only the physical way
    # the state carries the switch: a restored hybrid builds the same inputs
    params_, arrays = hybrid.to_state()
    back = HybridRegressor.from_state(params_, arrays)
    back.estimator_ = hybrid.estimator_
    np.testing.assert_allclose(back.predict(F), hybrid.predict(F))


def test_selection_folds_hold_out_a_training_gpu_and_its_largest_shapes(split) -> None:
    train, test = split
    seen = set()
    flops = sel.flops(train)
    for dev, kind, fit, val in sel.folds(train):
        seen.add((dev, kind))
        assert set(val["device_id"]) == {dev} and dev not in set(fit["device_id"])
        assert set(val.index) <= set(train.index) and set(fit.index) <= set(train.index)  # never a test row
        for op in sel.OPS:
            cut = flops[train["op"] == op].quantile(1 - sel.LARGEST)
            assert (flops[val.index[val["op"] == op]] > cut).all()
            if kind == "device+size":  # the fit stops below the shapes it is scored on
                assert (flops[fit.index[fit["op"] == op]] <= cut).all()
    assert seen == {(d, k) for d in ("t4", "v100_pcie_32gb") for k in sel.FOLD_KINDS}


def test_relative_ood_flags_a_new_kind_of_device_not_a_bigger_one(split) -> None:
    """Trained on T4 and V100: the A100 80GB (more bandwidth, more SMs than either, the same build ratios) is
    not flagged by the device's ratios; the L4 (3.5x less board power per peak FLOP/s than the T4) is, on
    every row."""
    train, test = split
    features = GemmFeatures().fit(train)
    F_train = features.transform(train)
    a100 = test[test["device_id"] == "a100_pcie"]
    flagged = outside_training(F_train, features.transform(a100), DEVICE_RATIOS)
    assert not flagged
    l4 = outside_training(F_train, features.transform(a100.assign(device_id="l4", device_name=pd.NA)), DEVICE_RATIOS)
    assert l4["log10_watts_per_tflop"].all()


def test_the_preset_is_the_candidate_the_nested_selection_chose() -> None:
    """configs/neusight_ood_hybrid.toml holds the chosen candidate (with its seed bag) and says what it was
    selected on, which is never the test GPU."""
    chosen = next(c for c in sel.CANDIDATES if c.label == sel.CHOSEN)
    choice = choose("neusight-ood")
    assert choice.name == chosen.model
    assert choice.params == {**{k: v for k, v in chosen.params.items() if v is not None}, "seeds": sel.FINAL_SEEDS}
    assert choice.selected_on.startswith("nested") and "A100 80GB" not in choice.selected_on


def test_spec_diagnostic_reads_the_test_shapes_on_each_spec_sheet(split) -> None:
    """The H100 / L4 diagnostic: the test's large shapes re-featurized on each spec sheet; the roofline model
    answers exactly its roofline on every one (ratio 1), a hybrid answers a different ratio per device, and the
    test GPU's measured ratio is its own (no H100 or L4 row exists in the shared copy)."""
    train, test = split
    roofline = next(c for c in sel.CANDIDATES if c.label == "roofline")
    diag = sel.spec_diagnostic(roofline, train, test, seed=0)
    assert set(diag) == {"measured", *sel.SPEC_DEVICES}
    for device in sel.SPEC_DEVICES:
        assert set(diag[device]) == set(sel.OPS)
        assert all(v == pytest.approx(1.0) for v in diag[device].values())
    assert all(v > 1.0 for v in diag["measured"].values())
    hybrid = next(c for c in sel.CANDIDATES if c.label == sel.CHOSEN)
    ratios = sel.spec_diagnostic(hybrid, train, test, seed=0)
    assert len({round(ratios[d]["bmm"], 6) for d in sel.SPEC_DEVICES}) == len(sel.SPEC_DEVICES)
