"""Registered models on small real slices: fit/predict, missing targets, unseen devices, clear errors."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.neighbors import KNeighborsRegressor

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore
from perfcast.eval.metrics import mape
from perfcast.eval.protocols import neusight_ood_split
from perfcast.features import feature_groups
from perfcast.models import MODELS, PerTargetRegressor, make_model

TARGETS = ["runtime_ms", "power_w"]
#: small settings so every model fits a slice in seconds
FAST: dict[str, dict] = {
    "rf": {"n_estimators": 30}, "extra_trees": {"n_estimators": 30}, "xgboost": {"n_estimators": 40},
    "lightgbm": {"n_estimators": 40}, "hybrid": {"n_estimators": 40},
    "mlp": {"max_iter": 100, "hidden_layer_sizes": (32,)},
    "roofline": {}, "group_attention": {"max_epochs": 2, "d_model": 16, "batch_size": 256},
    "transfer": {"n_estimators": 40},
}


def _load(root: Path, dataset: str, tmp: Path, pick, task: str = "gemm", units: str = "") -> pd.DataFrame:
    """``pick(unit, df)`` rows of each unit of ``dataset`` whose path contains ``units``, stored and read back."""
    imp = get_importer(dataset)
    store = RecordStore(tmp)
    for unit in imp.units(root / dataset):
        if units not in unit.as_posix():
            continue
        rows = pick(unit, imp.load(root / dataset, unit)[task])
        if len(rows):
            store.append(rows, task)
    return store.read(task)


@pytest.fixture(scope="module")
def gpperf(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    """Every 8th row of the CUTLASS sweep: 2,016 runtimes, about 16% of them with power."""
    return _load(data_root, "gpperf-cutlass", tmp_path_factory.mktemp("gpperf"), lambda u, d: d.iloc[::8])


@pytest.fixture(scope="module")
def neusight(data_root: Path, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NeuSight bmm: 1,500 training rows per GPU and the unseen A100 80GB's test rows."""
    def pick(unit: Path, df: pd.DataFrame) -> pd.DataFrame:
        return df.sample(min(len(df), 1500), random_state=0)

    records = _load(data_root, "neusight", tmp_path_factory.mktemp("neusight"), pick, units="bmm")
    return neusight_ood_split(records)


def _prefill(unit: Path, df: pd.DataFrame) -> pd.DataFrame:
    return df[df["phase"] == "prefill"].sample(400, random_state=0) if "context" in unit.name else df.iloc[:0]


@pytest.fixture(scope="module")
def h100_prefill(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    """400 H100 prefill-attention latencies from aiconfigurator."""
    return _load(data_root, "aiconfigurator", tmp_path_factory.mktemp("attn"), _prefill,
                 task="attention", units="h100_sxm/attention/")


@pytest.fixture(scope="module")
def perfcastdb(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    return _load(data_root, "perfcastdb-sample", tmp_path_factory.mktemp("pcdb"), lambda u, d: d, task="cpu_bench")


def _split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded 75/25 row split."""
    train = df.sample(frac=0.75, random_state=0)
    return train, df.drop(train.index)


def test_registry_names():
    assert set(MODELS) == {"rf", "extra_trees", "xgboost", "lightgbm", "mlp", "roofline", "hybrid", "transfer",
                           "group_attention", "normalized", "power", "knn", "sibling"}


@pytest.mark.parametrize("name", sorted(FAST))
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_each_model_fits_and_predicts_a_real_slice(name, gpperf):
    train, test = _split(gpperf.sample(400, random_state=1))
    pipe = make_model(name, "gemm", TARGETS, FAST[name]).fit(train, train[TARGETS])
    pred = pipe.predict(test)
    assert pred.shape == (len(test), 2)
    assert np.isfinite(pred).all() and (pred > 0).all()
    one = make_model(name, "gemm", ["runtime_ms"], FAST[name]).fit(train, train["runtime_ms"])
    assert one.predict(test).shape == (len(test),)


def test_attention_and_cpu_tasks_fit_and_predict(h100_prefill, perfcastdb):
    train, test = _split(h100_prefill)
    for name in ("hybrid", "roofline"):
        pred = make_model(name, "attention", ["runtime_ms"], FAST[name]).fit(train, train["runtime_ms"]).predict(test)
        assert pred.shape == (len(test),) and np.isfinite(pred).all()
    train, test = _split(perfcastdb)
    pred = make_model("lightgbm", "cpu_bench", ["score"], FAST["lightgbm"]).fit(train, train["score"]).predict(test)
    assert pred.shape == (len(test),) and (pred > 0).all()


def test_learned_models_beat_the_roofline_on_runtime(gpperf):
    train, test = _split(gpperf)
    errors = {name: mape(test["runtime_ms"], make_model(name, "gemm", ["runtime_ms"], FAST[name])
                         .fit(train, train["runtime_ms"]).predict(test))
              for name in ("roofline", "hybrid", "rf")}
    assert errors["hybrid"] < errors["roofline"] / 3 and errors["rf"] < errors["roofline"] / 3


def test_roofline_model_is_the_analytical_time_and_tdp(gpperf):
    pipe = make_model("roofline", "gemm", TARGETS).fit(gpperf, gpperf[TARGETS])
    pred = pipe.predict(gpperf)
    X = pipe.named_steps["features"].transform(gpperf)
    np.testing.assert_allclose(pred[:, 0], 10 ** X["log10_roofline_ms"])
    assert (pred[:, 1] == 200.0).all()  # RTX 4070 board power limit


def test_nan_power_rows_still_train_runtime(gpperf):
    assert 0 < gpperf["power_w"].notna().sum() < len(gpperf) / 2
    wrapper = PerTargetRegressor(KNeighborsRegressor(n_neighbors=1), TARGETS)
    X = gpperf[["m", "n", "k", "beta"]].astype("float64")
    wrapper.fit(X, gpperf[TARGETS])
    fitted = [e.regressor_ if isinstance(e, TransformedTargetRegressor) else e for e in wrapper.estimators_]
    assert fitted[0].n_samples_fit_ == len(gpperf)
    assert fitted[1].n_samples_fit_ == gpperf["power_w"].notna().sum()
    # the two-target model's runtime predictions are those of a runtime-only model on the same rows
    both = make_model("rf", "gemm", TARGETS, FAST["rf"]).fit(gpperf, gpperf[TARGETS]).predict(gpperf)
    alone = make_model("rf", "gemm", ["runtime_ms"], FAST["rf"]).fit(gpperf, gpperf["runtime_ms"]).predict(gpperf)
    np.testing.assert_allclose(both[:, 0], alone)


def test_log_space_for_targets_spanning_decades(gpperf):
    pipe = make_model("rf", "gemm", TARGETS, FAST["rf"]).fit(gpperf, gpperf[TARGETS])
    runtime, power = pipe.named_steps["model"].estimators_
    assert isinstance(runtime, TransformedTargetRegressor)       # 0.04 ms .. 110 ms
    assert not isinstance(power, TransformedTargetRegressor)     # 28 W .. 200 W: under a decade


def test_unseen_gpu_is_predicted_from_its_spec_sheet_alone(neusight):
    train, test = neusight
    assert set(test["device_id"]) == {"a100_pcie"} and "a100_pcie" not in set(train["device_id"])
    pipe = make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 200}).fit(train, train["runtime_ms"])
    hardware = [c for c in ("sm_count", "cores_per_sm", "max_clock_mhz", "mem_bw_gbs", "mem_gb", "l2_mb",
                            "peak_tflops_fp32", "peak_tflops_fp64", "tdp_w", "compute_capability", "hw_id")
                if c in test.columns]
    config_only = test.drop(columns=hardware)
    pred = pipe.predict(config_only)
    np.testing.assert_allclose(pred, pipe.predict(test))
    roofline = make_model("roofline", "gemm", ["runtime_ms"]).fit(train, train["runtime_ms"]).predict(test)
    err = mape(test["runtime_ms"], pred)
    assert err < 0.5 * mape(test["runtime_ms"], roofline)
    assert err < 0.3


def test_saved_pipeline_carries_its_features(gpperf, tmp_path):
    pipe = make_model("extra_trees", "gemm", TARGETS, FAST["extra_trees"]).fit(gpperf, gpperf[TARGETS])
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(pipe))
    loaded = pickle.loads(path.read_bytes())
    np.testing.assert_allclose(loaded.predict(gpperf.iloc[:50]), pipe.predict(gpperf.iloc[:50]), rtol=1e-12)


def test_boundary_errors(gpperf):
    with pytest.raises(ValueError, match="unknown model 'forest'; known: rf"):
        make_model("forest", "gemm", ["runtime_ms"])
    with pytest.raises(ValueError, match=r"unknown target\(s\) \['latency'\]"):
        make_model("rf", "gemm", ["latency"])
    with pytest.raises(ValueError, match="task 'cpu_bench' has none"):
        make_model("hybrid", "cpu_bench", ["score"])
    with pytest.raises(ValueError, match=r"no analytical baseline for \['score'\]"):
        make_model("roofline", "gemm", ["score"])
    pipe = make_model("rf", "gemm", TARGETS, FAST["rf"])
    with pytest.raises(ValueError, match=r"y lacks target column\(s\) \['power_w'\]"):
        pipe.fit(gpperf, gpperf[["runtime_ms"]])
    with pytest.raises(ValueError, match=r"target\(s\) \['power_w'\] have no measured"):
        pipe.fit(gpperf, gpperf[TARGETS].assign(power_w=np.nan))
    with pytest.raises(KeyError, match="unknown device 'rtx_9090'"):
        make_model("roofline", "gemm", ["runtime_ms"]).fit(gpperf.assign(device_id="rtx_9090"), gpperf["runtime_ms"])


# ------------------------------------------------------------------------------ GPU physics and transfer
BLACKWELL = ("gb200", "gb300", "b300_sxm")


@pytest.fixture(scope="module")
def blackwell_gemm(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    """bf16 and nvfp4 GEMMs with n, k in {128, 1024, 4096} on the three Blackwell GPUs and the H100 (~4,600 rows)."""
    def pick(unit: Path, df: pd.DataFrame) -> pd.DataFrame:
        keep = df["dtype"].isin(["bfloat16", "nvfp4"]) & df["n"].isin([128, 1024, 4096]) & df["k"].isin([128, 1024, 4096])
        return df[keep]

    tmp = tmp_path_factory.mktemp("blackwell")
    parts = [_load(data_root, "aiconfigurator", tmp / gpu, pick, units=f"{gpu}/gemm/")
             for gpu in (*BLACKWELL, "h100_sxm")]
    return pd.concat(parts, ignore_index=True)


def test_latency_floor_is_the_median_of_latency_bound_rows(blackwell_gemm):
    from perfcast.models.estimators.hybrid import LATENCY_BOUND, HybridRegressor, learn_floors

    rows = blackwell_gemm[blackwell_gemm["device_id"] == "h100_sxm"]
    X = make_model("roofline", "gemm", ["runtime_ms"]).named_steps["features"].fit(rows).transform(rows)
    y = rows["runtime_ms"].to_numpy()
    floors, pooled = learn_floors(X, y)
    bound = 10 ** X["log10_roofline_ms"].to_numpy() <= LATENCY_BOUND * y
    assert floors == {"dtype_bf16": pytest.approx(np.median(y[bound]))}   # the H100 has no nvfp4 rows
    assert 1e-3 < floors["dtype_bf16"] < 1e-2                              # a few microseconds, as measured
    hybrid = HybridRegressor(estimator=make_model("lightgbm", "gemm", ["runtime_ms"]).named_steps["model"]
                             .estimator.set_params(n_estimators=20)).fit(X, y)
    A, names = X.to_numpy(dtype="float64"), tuple(X.columns)
    np.testing.assert_allclose(hybrid._baseline(A, names) - 10 ** X["log10_roofline_ms"], floors["dtype_bf16"])
    off = HybridRegressor(latency_floor=False).fit(X, y)
    np.testing.assert_allclose(off._baseline(A, names), 10 ** X["log10_roofline_ms"])


def test_hybrid_columns_and_monotone_constraints(neusight):
    train, test = neusight
    params = {"n_estimators": 60, "monotone": {"log10_watts_per_tflop": -1}, "columns": ["shape", "work",
                                                                                      "log10_watts_per_tflop"]}
    pipe = make_model("hybrid", "gemm", ["runtime_ms"], params).fit(train, train["runtime_ms"])
    hybrid = pipe.named_steps["model"].estimators_[0]
    assert hybrid.estimator_.n_features_in_ == len(feature_groups("gemm")["shape"]) + 7 + 1  # groups expanded
    X = pipe.named_steps["features"].transform(test.iloc[:200])
    # sweep the power budget per TFLOP/s over the training range: predictions may only fall
    grid = np.linspace(0.9, 1.45, 12)
    preds = np.column_stack([hybrid.predict(X.assign(log10_watts_per_tflop=v)) for v in grid])
    assert (np.diff(preds, axis=1) <= 1e-12 * preds[:, 1:]).all()
    with pytest.raises(ValueError, match=r"columns \['nonsense'\] are not features"):
        make_model("hybrid", "gemm", ["runtime_ms"], {"columns": ["nonsense"]}).fit(train, train["runtime_ms"])
    with pytest.raises(ValueError, match=r"monotone constraint on \['sm_count'\]"):
        make_model("hybrid", "gemm", ["runtime_ms"], {"columns": ["shape"], "monotone": {"sm_count": 1}}).fit(
            train, train["runtime_ms"])


def test_seed_bag_is_the_geometric_mean_of_its_members(gpperf):
    train, test = _split(gpperf)
    bag = make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 30, "seeds": [3, 4]})
    pred = bag.fit(train, train["runtime_ms"]).predict(test)
    members = [make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 30, "random_state": s})
               .fit(train, train["runtime_ms"]).predict(test) for s in (3, 4)]
    assert not np.allclose(members[0], members[1])  # the seeds really differ
    np.testing.assert_allclose(pred, np.sqrt(members[0] * members[1]), rtol=1e-10)


def test_transfer_applies_the_weighted_residuals_of_sibling_gpus(blackwell_gemm):
    from perfcast.models.estimators.transfer import DISTANCE_WEIGHTS

    train = blackwell_gemm[blackwell_gemm["device_id"] != "gb200"]
    test = blackwell_gemm[blackwell_gemm["device_id"] == "gb200"]
    pipe = make_model("transfer", "gemm", ["runtime_ms"], {"n_estimators": 60}).fit(train, train["runtime_ms"])
    model = pipe.named_steps["model"].estimators_[0]
    features = pipe.named_steps["features"]
    X = features.transform(test)
    base = model.estimator_.predict(X)

    def residuals(gpu: str) -> np.ndarray:
        """log(measured / base prediction) of ``gpu`` on the GB200's configurations (same m, n, k, dtype)."""
        rows = train[train["device_id"] == gpu].set_index(["dtype", "m", "n", "k"])["runtime_ms"]
        own = np.log(rows) - np.log(model.estimator_.predict(features.transform(train[train["device_id"] == gpu])))
        return own.reindex(pd.MultiIndex.from_frame(test[["dtype", "m", "n", "k"]])).to_numpy()

    # spec-sheet distances by hand: GB200 = 8 TB/s, 2.5 PF bf16 / 10 PF fp4, 1200 W, sm_100
    spec = {"gb300": (8000, 2500, 15000, 1400, 10.3), "b300_sxm": (7750, 2250, 14000, 1100, 10.3),
            "h100_sxm": (3350, 989, None, 700, 9.0)}
    w_bw, w_pk, w_tdp, w_cc = DISTANCE_WEIGHTS.values()
    bf16 = (test["dtype"] == "bfloat16").to_numpy()
    num, den = np.zeros(len(test)), np.zeros(len(test))
    for gpu, (bw, pk16, pk4, tdp, cc) in spec.items():
        peak_gap = np.where(bf16, abs(math.log(2500 / pk16)), abs(math.log(10000 / pk4)) if pk4 else np.inf)
        d = w_bw * abs(math.log(8000 / bw)) + w_pk * peak_gap + w_tdp * abs(math.log(1200 / tdp)) + w_cc * abs(10.0 - cc)
        w = np.exp(-d / model.scale)
        r = residuals(gpu)
        seen = np.isfinite(r)
        num += np.where(seen, w * np.nan_to_num(r), 0)
        den += np.where(seen, w, 0)
    want = np.where(den > 0, num / np.maximum(den, 1e-300), 0) * np.minimum(den, 1)
    np.testing.assert_allclose(model.correction(X), want, atol=1e-9)
    np.testing.assert_allclose(pipe.predict(test), base * np.exp(want), rtol=1e-9)
    # the siblings' errors carry over: the corrected prediction beats the base model on the unseen GB200
    assert mape(test["runtime_ms"], pipe.predict(test)) < mape(test["runtime_ms"], base)
    # a configuration no sibling measured keeps the base prediction
    novel = test.assign(m=test["m"] + 1_000_003)  # an m no GPU was measured at
    Xn = features.transform(novel)
    np.testing.assert_allclose(pipe.predict(novel), model.estimator_.predict(Xn))
