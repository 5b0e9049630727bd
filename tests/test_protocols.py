"""Evaluation protocols on the real datasets (anchors reproduce the papers), and the metrics they are scored with."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import mean_absolute_percentage_error, r2_score
from sklearn.model_selection import train_test_split

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore
from perfcast.eval import metrics
from perfcast.eval.protocols import (
    N_FOLDS,
    NEUSIGHT_OBSERVED,
    NOTE,
    SHAPE_KEYS,
    future_split,
    gpperf_paper_split,
    ncpp_paper_split,
    neusight_ood_split,
    unseen_shape_split,
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


# ------------------------------------------------------------------------------------ one calling convention
def test_every_protocol_is_called_alike_and_its_options_are_config_options():
    from perfcast.eval.protocols import PROTOCOLS
    from perfcast.training.config import EvalConfig

    for name, fn in PROTOCOLS.items():
        params = list(inspect.signature(fn).parameters.values())
        assert params[1].name == "seed" and params[1].default == 0, name
        options = params[2:]
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in options), name
        required = [p.name for p in options if p.default is p.empty]
        assert not required, f"{name} has options without a default: {required}"
        EvalConfig(protocol=name, options={p.name: p.default for p in options})  # the config accepts every option


# ------------------------------------------------------------------------------------------- unseen-shape
@pytest.fixture(scope="module")
def ada(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    """The GPPerf tiled-SGEMM table: 39 shapes (m, n, k) x tile sizes, runtime and power, on one RTX 4070."""
    store = RecordStore(tmp_path_factory.mktemp("ada"))
    get_importer("gpperf-ada-matmul").run(data_root / "gpperf-ada-matmul", store)
    return store.read("gemm")


def _shapes(frame: pd.DataFrame, keys=SHAPE_KEYS["gemm"]) -> set[tuple]:
    return set(frame[list(keys)].astype("float64").itertuples(index=False, name=None))


def test_unseen_shape_holds_out_whole_shapes(ada):
    train, test = unseen_shape_split(ada, seed=1)
    assert len(train) + len(test) == len(ada)
    assert set(train["record_id"]).isdisjoint(test["record_id"])
    assert not _shapes(train) & _shapes(test)                       # no shape tuple on both sides
    n_shapes = len(_shapes(ada))
    assert len(_shapes(test)) == int(np.ceil(0.2 * n_shapes))        # test_size counts shapes, not rows
    assert test.attrs[NOTE] == f"held out {len(_shapes(test))} of {n_shapes} shapes (m, n, k, batch) with seed 1"
    again = unseen_shape_split(ada, seed=1)[1]
    other = unseen_shape_split(ada, seed=2)[1]
    assert again["record_id"].tolist() == test["record_id"].tolist()
    assert _shapes(other) != _shapes(test)


def test_unseen_shape_takes_other_keys_and_explains_bad_input(ada):
    train, test = unseen_shape_split(ada, seed=0, test_size=0.5, keys=["tile_m"])
    assert set(train["tile_m"]).isdisjoint(test["tile_m"]) and len(train) + len(test) == len(ada)
    with pytest.raises(ValueError, match=r"shape column\(s\) \['nope'\] are not in the records"):
        unseen_shape_split(ada, keys=["nope"])
    with pytest.raises(ValueError, match="1 distinct shape"):
        unseen_shape_split(ada[(ada["m"] == 512) & (ada["n"] == 512) & (ada["k"] == 512)])
    with pytest.raises(ValueError, match="cannot tell the shape columns"):
        unseen_shape_split(ada.drop(columns="task"))
    with pytest.raises(ValueError, match="test_size must be a fraction"):
        unseen_shape_split(ada, test_size=1.0)


# --------------------------------------------------------------------------------------------- ncpp-paper
@pytest.fixture(scope="module")
def perfcastdb(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    store = RecordStore(tmp_path_factory.mktemp("perfcastdb"))
    get_importer("perfcastdb-sample").run(data_root / "perfcastdb-sample", store)
    return store.read("cpu_bench")


def test_ncpp_paper_cross_validates_by_configuration_without_a_test_file(perfcastdb):
    configs = sorted(perfcastdb["hw_id"].unique())
    assert (perfcastdb["x_split"] == "train").all() and len(configs) == 6   # the public sample: train file only
    tested = []
    for fold in range(len(configs)):
        train, test = ncpp_paper_split(perfcastdb, fold=fold)
        assert test["hw_id"].nunique() == 1 and test["hw_id"].iloc[0] not in set(train["hw_id"])
        assert len(train) + len(test) == len(perfcastdb)
        assert test.attrs[N_FOLDS] == 6 and "cross-validated by hardware configuration (hw_id)" in test.attrs[NOTE]
        assert f"fold {fold + 1} of 6" in test.attrs[NOTE]
        tested.append(test["hw_id"].iloc[0])
    assert sorted(tested) == configs                                     # every configuration tested once
    a = ncpp_paper_split(perfcastdb, seed=4, n_splits=3, fold=1)[1]
    b = ncpp_paper_split(perfcastdb, seed=4, n_splits=3, fold=1)[1]
    assert a["record_id"].tolist() == b["record_id"].tolist() and a.attrs[N_FOLDS] == 3
    with pytest.raises(ValueError, match=r"fold must be in 0..5 \(6 folds\), got 6"):
        ncpp_paper_split(perfcastdb, fold=6)
    with pytest.raises(ValueError, match="n_splits must be between 2 and the 6"):
        ncpp_paper_split(perfcastdb, n_splits=7)


def test_ncpp_paper_uses_the_papers_test_rows_where_present(perfcastdb, ada):
    # the test file is not public: mark one configuration's rows as the test file's to see it used
    held = perfcastdb["hw_id"].iloc[0]
    labelled = perfcastdb.assign(x_split=np.where(perfcastdb["hw_id"] == held, "test", "train"))
    train, test = ncpp_paper_split(labelled)
    assert set(test["hw_id"]) == {held} and len(train) + len(test) == len(perfcastdb)
    assert test.attrs[N_FOLDS] == 1 and test.attrs[NOTE].startswith("NCPP's own split")
    with pytest.raises(ValueError, match="apply only to the cross-validation fallback"):
        ncpp_paper_split(labelled, fold=1)
    with pytest.raises(ValueError, match="needs perfcastdb records"):
        ncpp_paper_split(ada.assign(x_split="train"))


# ------------------------------------------------------------------------------------------------- future
def test_future_without_a_cutoff_tests_the_latest_fifth(data_root):
    imp, root = get_importer("spec-cpu2017"), data_root / "spec-cpu2017"
    records = imp.load(root, imp.units(root)[0])["cpu_bench"].sample(4000, random_state=0)
    train, test = future_split(records)
    dates = pd.to_datetime(records["published_at"], utc=True)
    cutoff = dates.quantile(0.8)
    assert pd.to_datetime(train["published_at"], utc=True).max() < cutoff
    assert (pd.to_datetime(test["published_at"], utc=True) >= cutoff).all()
    assert len(test) == int((dates >= cutoff).sum()) and 0.1 < len(test) / len(records) <= 0.3
    assert f"trained before {cutoff:%Y-%m-%d}" in test.attrs[NOTE]
    with pytest.raises(ValueError, match="give cutoff or test_size, not both"):
        future_split(records, cutoff="2022-01-01", test_size=0.3)
