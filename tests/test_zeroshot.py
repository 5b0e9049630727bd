"""Zero-shot GPU model pieces on a real aiconfigurator slice: device-relative features and the per-vendor split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.features import feature_transformer
from perfcast.features.extrapolation import RELATIVE, relative_features
from perfcast.models.estimators.vendor import VendorSplit, vendors
from perfcast.models.registry import make_model, hybrid_estimator

GPUS = ("h100_sxm", "l40s", "b60")


@pytest.fixture(scope="module")
def gemm(data_root: Path) -> pd.DataFrame:
    """bf16 GEMM latencies of two NVIDIA GPUs and the Intel B60 (150 rows each)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if u.match("*/gemm/*/*/gemm_perf.parquet") and u.parts[-5] in GPUS]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"] == "bfloat16"]
    return df.groupby("device_id").sample(n=150, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def features(gemm: pd.DataFrame) -> pd.DataFrame:
    return feature_transformer("gemm").fit(gemm).transform(gemm)


def test_relative_features_are_finite_and_follow_the_spec_sheet(gemm, features):
    F = relative_features(features, list(RELATIVE))
    assert np.isfinite(F["log10_ridge"]).all()
    # finite wherever the sheet gives an L2, unknown (NaN, a tree's missing branch) where it does not
    known = np.isfinite(features["l2_mb"].to_numpy())
    assert known.any() and np.array_equal(np.isfinite(F["log10_bytes_over_l2"].to_numpy()), known)
    # ridge point: peak / bandwidth, so a faster memory lowers it and a faster peak raises it
    faster_memory = features.assign(mem_bw_gbs=features["mem_bw_gbs"] * 2)
    faster_peak = features.assign(peak_tflops=features["peak_tflops"] * 2)
    assert (relative_features(faster_memory, ["log10_ridge"])["log10_ridge"] < F["log10_ridge"]).all()
    assert (relative_features(faster_peak, ["log10_ridge"])["log10_ridge"] > F["log10_ridge"]).all()
    # a bigger L2 holds more of the operands: bytes over L2 falls; more bytes: it rises
    bigger_l2 = features.assign(l2_mb=features["l2_mb"] * 4)
    assert (relative_features(bigger_l2, ["log10_bytes_over_l2"])["log10_bytes_over_l2"][known]
            < F["log10_bytes_over_l2"][known]).all()
    order = np.argsort(features["log10_bytes"].to_numpy())
    same_device = (gemm["device_id"] == "h100_sxm").to_numpy()[order]
    assert np.all(np.diff(F["log10_bytes_over_l2"].to_numpy()[order][same_device]) >= 0)
    with pytest.raises(ValueError, match="unknown device-relative feature"):
        relative_features(features, ["log10_nonsense"])


def test_a_hybrid_asks_for_relative_features_by_name(gemm, features):
    model = hybrid_estimator("gemm", {"n_estimators": 10, "columns": ["shape", "log10_ridge"]})
    model.fit(features, gemm["runtime_ms"])
    assert "log10_ridge" in model.estimator_.feature_name_
    assert np.isfinite(model.predict(features)).all()


def test_vendor_split_fits_each_vendor_on_its_own_rows(gemm, features):
    labels = vendors(features)
    assert set(labels) == {"nvidia", "intel"}
    assert (labels[(gemm["device_id"] == "b60").to_numpy()] == "intel").all()
    params = {"n_estimators": 15, "random_state": 0}
    split = hybrid_estimator("gemm", {**params, "by_vendor": True}).fit(features, gemm["runtime_ms"])
    assert isinstance(split, VendorSplit) and split.vendors_[0] == "nvidia"  # 300 rows against 150
    nvidia = labels == "nvidia"
    alone = hybrid_estimator("gemm", params).fit(features[nvidia], gemm["runtime_ms"][nvidia])
    # an NVIDIA row is predicted by the model that saw only NVIDIA rows, an Intel row by the Intel one
    np.testing.assert_allclose(split.predict(features[nvidia]), alone.predict(features[nvidia]))
    pooled = hybrid_estimator("gemm", params).fit(features, gemm["runtime_ms"])
    assert not np.allclose(split.predict(features[nvidia]), pooled.predict(features[nvidia]))
    # a vendor no training row has goes to the vendor with the most rows
    amd = features[nvidia].assign(vendor_nvidia=0.0, vendor_amd=1.0)
    np.testing.assert_allclose(split.predict(amd), split.estimators_[0].predict(amd))


def test_a_vendor_split_model_trains_and_predicts_through_the_registry(gemm):
    model = make_model("transfer", "gemm", ["runtime_ms"], {"n_estimators": 10, "by_vendor": True})
    model.fit(gemm, gemm[["runtime_ms"]])
    pred = model.predict(gemm)
    assert np.isfinite(np.asarray(pred, dtype="float64")).all()
    with pytest.raises(ValueError, match="by_vendor"):
        make_model("hybrid", "gemm", ["runtime_ms"], {"by_vendor": "yes"})
