"""CPU models on real slices: per-group target normalisation, NCPP feature groups on SPEC rows, the default
CPU model against the family-mean baseline on a future split, and the group-attention net on PerfCastDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.tree import DecisionTreeRegressor

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore
from perfcast.eval.protocols import future_split, random_split
from perfcast.features import CpuFeatures, feature_groups
from perfcast.models import make_model
from perfcast.models.estimators.normalize import TargetNormalizer
from perfcast.training.config import load_preset
from perfcast.training.train import model_input

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def cpu_model(protocol: str, **overrides):
    """A new pipeline of ``protocol``'s preset model (configs/), ``overrides`` on its parameters."""
    model = load_preset(protocol).model
    return make_model(model.name, "cpu_bench", ["score"], {**model.params, **overrides})


def _import(data_root: Path, dataset: str, tmp: Path) -> pd.DataFrame:
    store = RecordStore(tmp / "store")
    get_importer(dataset).run(data_root / dataset, store)
    return store.read("cpu_bench")


@pytest.fixture(scope="module")
def spec(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Every 8th base result of SPEC CPU2017 (~5,000 rows, all four suites, 2017-2024), suspects dropped."""
    recs = _import(data_root, "spec-cpu2017", tmp_path_factory.mktemp("spec"))
    base = recs[(recs["variant"] == "base") & ~recs["x_suspect"]].sort_values("record_id")
    return base.iloc[::8].reset_index(drop=True)


@pytest.fixture(scope="module")
def pcdb(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return _import(data_root, "perfcastdb-sample", tmp_path_factory.mktemp("pcdb"))


def _features(records: pd.DataFrame) -> pd.DataFrame:
    X = model_input(records, "cpu_bench")
    return CpuFeatures().fit(X).transform(X)


def _ape(truth: pd.Series, pred: np.ndarray) -> np.ndarray:
    t = truth.to_numpy(dtype=float)
    return np.abs(np.asarray(pred, dtype=float).ravel() - t) / t


# ------------------------------------------------------------------------------------ normalisation
def test_normalisation_round_trip_on_perfcastdb_units(pcdb: pd.DataFrame) -> None:
    """Scores in SPECrate, MB/s, ns and GFLOP/s: the baseline is each (workload, sub-test)'s geometric mean,
    the inner model sees score / baseline, and multiplying back returns the scores exactly."""
    X = _features(pcdb).assign(row=np.arange(len(pcdb), dtype=float))  # lets a tree memorise each row
    y = pcdb["score"].astype("float64")
    tn = TargetNormalizer(DecisionTreeRegressor(random_state=0), group_by=["benchmark_code", "workload_code"])
    tn.fit(X, y)
    np.testing.assert_allclose(tn.predict(X), y, rtol=1e-9)
    geo = np.exp(np.log(y).groupby([pcdb["benchmark"], pcdb["subtest"], pcdb["variant"]]).transform("mean"))
    np.testing.assert_allclose(tn.baseline(X)[:, 0], geo, rtol=1e-9)
    ratio = y / geo
    assert ratio.between(0.8, 1.25).all(), "within one (workload, sub-test) the repeats differ by a few %"
    assert y.max() / y.min() > 1e5  # ... while the raw scores span five decades of mixed units


def test_unseen_subtest_falls_back_to_its_workload_and_unseen_workload_to_all(pcdb: pd.DataFrame) -> None:
    X = _features(pcdb)
    y = pcdb["score"].astype("float64")
    stream = (pcdb["benchmark"] == "Stream").to_numpy()
    triad = stream & (pcdb["subtest"] == "Triad Bandwidth (NTW) (MB/s)").to_numpy()
    keep = ~triad & ~(pcdb["benchmark"] == "HPCG").to_numpy()
    tn = TargetNormalizer(DecisionTreeRegressor(random_state=0), group_by=["benchmark_code", "workload_code"])
    tn.fit(X[keep], y[keep])
    stream_mean = np.exp(np.log(y[stream & keep]).mean())
    np.testing.assert_allclose(tn.baseline(X[triad])[:, 0], stream_mean, rtol=1e-9)
    assert tn.fallback_rows_ == 0
    tn.baseline(X[pcdb["benchmark"] == "HPCG"])
    assert tn.fallback_rows_ == 3


def test_power_law_learns_that_rate_scores_grow_with_cores_and_speed_scores_barely(spec: pd.DataFrame) -> None:
    X = _features(spec)
    tn = TargetNormalizer(DecisionTreeRegressor(max_depth=2), group_by=["benchmark_code"], scale_by=["log2_cores"])
    tn.fit(X, spec["score"])
    codes = tn.levels_[0]["keys"][:, 0].astype(int)  # benchmark codes are the sorted suite names
    slope = dict(zip(np.asarray(sorted(spec["benchmark"].unique()))[codes], tn.levels_[0]["slope"][:, 0, 0] / np.log(2)))
    # score ∝ cores^b: about linear for throughput (rate) runs, flat-ish for one-copy (speed) runs
    assert 0.75 < slope["CINT2017rate"] < 1.1 and 0.75 < slope["CFP2017rate"] < 1.1
    assert slope["CINT2017"] < 0.3 and slope["CINT2017"] < slope["CFP2017"] < slope["CFP2017rate"]


def test_threads_per_core_keeps_the_law_from_crediting_e_cores_with_p_core_throughput(spec: pd.DataFrame) -> None:
    """The SPEC default's power law, fitted before 2024, on the first SMT-less many-core Xeons (Xeon 6 E-cores,
    all published in 2024): with threads per core it learns that Intel rate results without SMT score less
    (speed runs barely care) and over-predicts those parts less than without it."""
    train, test = future_split(spec, cutoff="2024-01-01")
    features = CpuFeatures().fit(model_input(train, "cpu_bench"))
    X_train, X_test = (features.transform(model_input(d, "cpu_bench")) for d in (train, test))
    params = load_preset("spec-cpu2017-future").model.params
    assert params["scale_by"][-1] == "threads_per_core"
    ecore = (test["device_name"].str.fullmatch(r"Intel Xeon 6\d{3}E") & (test["threads"] == test["cores"])).to_numpy()
    assert ecore.sum() >= 20 and not train["device_name"].str.fullmatch(r"Intel Xeon 6\d{3}E").any()
    over = {}
    for scale_by in (params["scale_by"][:-1], params["scale_by"]):
        law = TargetNormalizer(DummyRegressor(), group_by=params["group_by"], scale_by=scale_by)
        law.fit(X_train, train["score"])
        over[len(scale_by)] = np.median(law.baseline(X_test)[ecore, 0] / test["score"].to_numpy()[ecore])
    level = law.levels_[0]  # (workload, intel, amd) keys; the last scale is threads per core
    suite = np.asarray(features.workloads_)[level["keys"][:, 0].astype(int)]
    smt = pd.Series(level["slope"][:, -1, 0], index=suite)[level["keys"][:, 1] == 1]
    rate = smt[smt.index.str.contains("rate")]
    assert (rate > 0).all() and rate.max() > 0.1, smt
    assert (smt[~smt.index.str.contains("rate")].abs() < 0.1).all(), smt
    n = len(params["scale_by"])
    assert 1 < over[n] < over[n - 1], over  # still over-predicted (no E-core in training), but less


def test_fitted_baseline_survives_json(pcdb: pd.DataFrame) -> None:
    """What a saved model stores: the baseline as plain numbers, NaN group keys included."""
    import json

    X = _features(pcdb).assign(workload_code=lambda d: d["workload_code"].where(d["benchmark_code"] != 0))
    for scale_by in ([], ["log2_cores"]):
        tn = TargetNormalizer(DecisionTreeRegressor(), group_by=["benchmark_code", "workload_code"],
                              scale_by=scale_by).fit(X, pcdb["score"])
        again = TargetNormalizer.from_json(json.loads(json.dumps(tn.to_json(), allow_nan=False)))
        np.testing.assert_array_equal(again.baseline(X), tn.baseline(X))


def test_normaliser_rejects_what_it_cannot_divide(pcdb: pd.DataFrame) -> None:
    X = _features(pcdb)
    with pytest.raises(ValueError, match="must be > 0"):
        TargetNormalizer(DecisionTreeRegressor()).fit(X, -pcdb["score"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['cores_typo'\]"):
        TargetNormalizer(DecisionTreeRegressor(), scale_by=["cores_typo"]).fit(X, pcdb["score"])
    with pytest.raises(ValueError, match="base must be one of"):
        make_model("normalized", "cpu_bench", ["score"], {"base": "roofline"})


# ------------------------------------------------------------------------------------------ features
def test_every_ncpp_group_has_values_on_spec_rows(spec: pd.DataFrame) -> None:
    X = _features(spec)
    for group, cols in feature_groups("cpu_bench").items():
        assert X[cols].notna().any().any(), f"group {group} is empty on SPEC rows"
    derived = ["log2_cores", "log2_core_ghz", "family_code", "cache_mb_per_core", "mem_bw_per_core_ghz",
               "mem_channel_bw_gbs", "l3_mb_per_core", "is_rate"]
    coverage = X[derived].notna().mean()
    assert coverage.min() > 0.99, coverage
    assert X["cpu_generation"].notna().mean() > 0.9  # unknown for SPARC, ARM, ... (never guessed)
    rate = spec["benchmark"].str.endswith("rate").to_numpy()
    assert (X.loc[rate, "is_rate"] == 1).all() and (X.loc[~rate, "is_rate"] == 0).all()
    np.testing.assert_allclose(2 ** X["log2_cores"], spec["cores"].astype(float))


def test_an_unseen_family_gets_no_borrowed_code(spec: pd.DataFrame) -> None:
    X = model_input(spec, "cpu_bench")
    t = CpuFeatures().fit(X[spec["family"] != "EPYC"])
    epyc = t.transform(X[spec["family"] == "EPYC"])
    assert epyc["family_code"].isna().all() and epyc["cpu_generation"].notna().all()


# ------------------------------------------------------------------------------------- default models
def test_default_model_beats_the_family_mean_on_a_future_split(spec: pd.DataFrame) -> None:
    train, test = future_split(spec, cutoff="2024-01-01")  # the latest year, as configured
    family = train.groupby(["family", "benchmark"])["score"].mean()
    bench = train.groupby("benchmark")["score"].mean()
    baseline = family.reindex(pd.MultiIndex.from_frame(test[["family", "benchmark"]])).to_numpy(dtype=float)
    baseline = np.where(np.isnan(baseline), bench.reindex(test["benchmark"]).to_numpy(dtype=float), baseline)
    pipe = cpu_model("spec-cpu2017-future").fit(model_input(train, "cpu_bench"), train[["score"]])
    ours = _ape(test["score"], pipe.predict(model_input(test, "cpu_bench"))).mean()
    theirs = _ape(test["score"], baseline).mean()
    assert ours < 0.5 * theirs, (ours, theirs)
    assert ours < 0.15, ours


def test_a_seed_bag_is_the_geometric_mean_of_its_seeds(spec: pd.DataFrame) -> None:
    train, test = future_split(spec, cutoff="2024-01-01")
    X_train, X_test = model_input(train, "cpu_bench"), model_input(test, "cpu_bench")
    params = {**load_preset("spec-cpu2017-future").model.params, "n_estimators": 30}
    assert len(params["seeds"]) >= 2
    bag = make_model("normalized", "cpu_bench", ["score"], params).fit(X_train, train[["score"]])
    single = {k: v for k, v in params.items() if k != "seeds"}
    logs = [np.log(np.ravel(make_model("normalized", "cpu_bench", ["score"], {**single, "random_state": s})
                            .fit(X_train, train[["score"]]).predict(X_test))) for s in params["seeds"]]
    assert np.ptp(logs, axis=0).max() > 0  # the seeds disagree somewhere, so the bag averages something
    np.testing.assert_allclose(np.ravel(bag.predict(X_test)), np.exp(np.mean(logs, axis=0)), rtol=1e-10)
    with pytest.raises(ValueError, match="seeds .* is for tree bases"):
        make_model("normalized", "cpu_bench", ["score"], {"base": "group_attention", "seeds": [0, 1]})


def test_the_cpu_models_benchmark_builds_every_model_it_lists() -> None:
    """benchmarks/cpu_models.py derives its variants from the defaults; each must still be a valid model."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cpu_models_bench", CONFIGS.parent / "benchmarks" / "cpu_models.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    built = [make_model(name, "cpu_bench", ["score"], params) for models in bench.MODELS.values()
             for _, name, params in models]
    assert len(built) == sum(len(m) for m in bench.MODELS.values()) >= 8


def test_group_attention_trains_through_the_registry_on_perfcastdb(pcdb: pd.DataFrame) -> None:
    """The net alone and inside the normaliser; normalised, it predicts held-out repeats within a few %."""
    train, test = random_split(pcdb, seed=0, test_size=0.2)
    seen = pd.MultiIndex.from_frame(test[["benchmark", "subtest"]]).isin(
        pd.MultiIndex.from_frame(train[["benchmark", "subtest"]]))
    fast = {"max_epochs": 15, "d_model": 16, "batch_size": 32, "n_threads": 1}
    X_train, X_test = model_input(train, "cpu_bench"), model_input(test, "cpu_bench")
    raw = make_model("group_attention", "cpu_bench", ["score"], fast).fit(X_train, train[["score"]])
    assert np.isfinite(raw.predict(X_test)).all()
    norm = cpu_model("ncpp-paper", **fast).fit(X_train, train[["score"]])
    ape = _ape(test["score"], norm.predict(X_test))
    assert norm.named_steps["model"].estimators_[0].estimator_.best_epoch_ >= 1
    assert np.median(ape[seen]) < 0.03 and ape[seen].mean() < 0.05, ape


def test_the_default_spec_model_saves_as_data_and_loads_to_the_same_predictions(
    spec: pd.DataFrame, tmp_path: Path
) -> None:
    from perfcast import Predictor
    from perfcast.models.persistence.bundle import save_model
    from perfcast.models.uncertainty.intervals import ConformalRegressor

    base = spec[spec["variant"] == "base"].iloc[::16].reset_index(drop=True)
    train, test = base.iloc[: len(base) // 2], base.iloc[len(base) // 2:]
    model = ConformalRegressor(cpu_model("spec-cpu2017-future", n_estimators=40), n_splits=3)
    model.fit(train, train[["score"]])
    path = save_model(model, "cpu_bench", train, tmp_path / "spec", {"model": "normalized"})
    assert not list(path.rglob("*.pkl"))
    got = Predictor.load(path).predict(test)["score"].to_numpy()
    np.testing.assert_allclose(got, np.asarray(model.predict(test), dtype=float).ravel(), rtol=1e-6)
