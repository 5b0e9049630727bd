"""Anchor protocol splits on the real datasets, and the metrics they are scored with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import mean_absolute_percentage_error, r2_score
from sklearn.model_selection import train_test_split

from perfcast.datasets.importers import get_importer
from perfcast.datasets.store import RecordStore
from perfcast.eval import metrics
from perfcast.eval.protocols import (
    NEUSIGHT_OBSERVED,
    gpperf_paper_split,
    neusight_ood_split,
)


@pytest.fixture(scope="module")
def gpperf(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    store = RecordStore(tmp_path_factory.mktemp("gpperf"))
    get_importer("gpperf-cutlass").run(data_root / "gpperf-cutlass", store)
    return store.read("gemm")


@pytest.fixture(scope="module")
def neusight(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    """The T4 bmm training file's first 500 rows and both test files (every test GPU)."""
    imp, root = get_importer("neusight"), data_root / "neusight"
    store = RecordStore(tmp_path_factory.mktemp("neusight"))
    for unit in imp.units(root):
        rel = unit.relative_to(root).as_posix()
        if rel.startswith("data/dataset/test/") or rel.endswith("bmm/p2.1.0/Tesla T4.csv.gz"):
            df = imp.load(root, unit)["gemm"]
            store.append(df if "test" in rel else df.head(500), "gemm")
    return store.read("gemm")


# ------------------------------------------------------------------------------------------------ gpperf
def test_gpperf_paper_split_reproduces_the_papers_rows(gpperf, data_root):
    train, test = gpperf_paper_split(gpperf.sample(frac=1.0, random_state=3))  # store order must not matter
    assert (len(train), len(test)) == (2076, 519)
    # the same steps on the raw CSV, written independently with pandas
    raw = pd.read_csv(data_root / "gpperf-cutlass" / "cutlass_rtx4070.csv.gz")
    cols = ["m", "n", "k", "block_m", "block_n", "block_k", "arithmetic_intensity", "bytes_fp32", "flops",
            "runtime_ms", "power_w"]
    for c in cols:
        raw[c] = raw[c].clip(*raw[c].quantile([0.01, 0.99]))
    raw = raw.dropna(subset=["power_w"])
    raw_train, raw_test = train_test_split(raw, test_size=0.2, random_state=42)
    assert test["x_record"].tolist() == raw_test["record"].tolist()
    np.testing.assert_allclose(test["runtime_ms"], raw_test["runtime_ms"])
    np.testing.assert_allclose(test["power_w"], raw_test["power_w"])
    np.testing.assert_allclose(test["x_arithmetic_intensity"], raw_test["arithmetic_intensity"], rtol=1e-3)
    np.testing.assert_allclose(train["x_flops"], raw_train["flops"])


def test_gpperf_paper_split_refuses_a_subset(gpperf):
    with pytest.raises(ValueError, match="clips over all 16128 rows"):
        gpperf_paper_split(gpperf.iloc[:1000])
    with pytest.raises(ValueError, match=r"lack column\(s\) \['x_record'\]"):
        gpperf_paper_split(gpperf.drop(columns="x_record"))


# ------------------------------------------------------------------------------------------------ neusight
def test_neusight_ood_split_tests_only_untrained_gpus(neusight):
    train, test = neusight_ood_split(neusight)
    assert set(train["device_id"]) == {"t4"} and len(train) == 500
    assert "t4" not in set(test["device_id"])
    assert {"a100_pcie", "a100_pcie_40gb"} <= set(test["device_id"])
    assert (test["x_split"] == "test").all() and set(test["op"]) == {"bmm", "linear"}
    for frame in (train, test):
        present = [c for c in NEUSIGHT_OBSERVED if c in frame.columns]
        assert "tile_m" in present and frame[present].isna().all().all()
    assert set(test.loc[test["op"] == "linear", "layout"]) == {"tn"}  # P4 ran nt kernels: not known beforehand
    only = neusight_ood_split(neusight, test_devices=["NVIDIA A100 80GB PCIe"])[1]
    assert set(only["device_id"]) == {"a100_pcie"} and len(only) == 2487 + 1040


def test_neusight_ood_split_rejects_trained_or_unknown_devices(neusight):
    with pytest.raises(ValueError, match=r"\['t4'\] are in the training split"):
        neusight_ood_split(neusight, test_devices=["Tesla T4"])
    with pytest.raises(ValueError, match="unknown device 'Tesla Z9'"):
        neusight_ood_split(neusight, test_devices=["Tesla Z9"])


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_by_hand():
    t, p = np.array([1.0, 2.0, 4.0, 10.0]), np.array([1.1, 1.0, 4.0, 12.0])   # APE 0.1, 0.5, 0, 0.2
    assert metrics.mape(t, p) == pytest.approx(0.2)
    assert metrics.median_ape(t, p) == pytest.approx(0.15)
    assert metrics.p90_ape(t, p) == pytest.approx(np.percentile([0.1, 0.5, 0.0, 0.2], 90))
    assert metrics.spearman(t, p) == pytest.approx(spearmanr(t, p).statistic)
    assert metrics.r2(t, p, log=True) == pytest.approx(r2_score(np.log(t), np.log(p)))


def test_metrics_agree_with_sklearn_on_real_values_and_skip_unmeasured(gpperf):
    t = gpperf["power_w"].to_numpy()                  # NaN where no power was logged
    p = t * 1.05 + 1.0
    seen = ~np.isnan(t)
    assert metrics.mape(t, p) == pytest.approx(mean_absolute_percentage_error(t[seen], p[seen]))
    assert metrics.r2(t, p) == pytest.approx(r2_score(t[seen], p[seen]))
    with pytest.raises(ValueError, match="1 prediction"):
        metrics.mape(t, np.where(np.arange(len(t)) == np.flatnonzero(seen)[0], np.nan, p))
    with pytest.raises(ValueError, match="has 3 values but y_pred has 2"):
        metrics.mape([1, 2, 3], [1, 2])
