"""Evaluation on real data: metrics by hand, breakdowns, plots, the Markdown report, MLflow logging, the CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import r2_score
from typer.testing import CliRunner

from perfcast.eval import metrics, plots
from perfcast.cli.bench import eval_app
from perfcast.eval.protocols import SHAPE_KEYS
from perfcast.experiments.report import EvalError, SavedModel, evaluate_model, load_model, log_report
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.training import tracking
from perfcast.training.config import EvalConfig, parse_config
from perfcast.training.train import build_model, load_records, model_input, split_records, train

TARGETS = ["runtime_ms", "power_w"]
runner = CliRunner()


def ada_config(data_root: Path, **overrides) -> dict:
    """The GPPerf tiled-SGEMM table (RTX 4070: 39 shapes x tile sizes, runtime and power), a small forest."""
    cfg = {
        "name": "ada-eval",
        "task": "gemm",
        "targets": TARGETS,
        "data": {"imports": [{"dataset": "gpperf-ada-matmul", "path": str(data_root / "gpperf-ada-matmul")}]},
        "model": {"name": "rf", "params": {"n_estimators": 15, "n_jobs": 1}},
        "eval": {"protocol": "random", "options": {"test_size": 0.25}},
        "seed": 3,
    }
    return cfg | overrides


@pytest.fixture(scope="module")
def ada(data_root) -> pd.DataFrame:
    return load_records(parse_config(ada_config(data_root)).data, "gemm").frame


@pytest.fixture(scope="module")
def forest(data_root):
    """The unfitted pipeline a config builds (seeded)."""
    cfg = parse_config(ada_config(data_root))
    return build_model(cfg, dict(cfg.model.params))


@pytest.fixture(scope="module")
def shape_report(forest, ada):
    return evaluate_model(forest, ada, "unseen-shape", seed=1)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory, new_mlflow_db):
    """One SQLite tracking store for the module (creating one takes seconds); MLflow's URI restored after."""
    before = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield new_mlflow_db(tmp_path_factory.mktemp("mlflow"))
    mlflow.set_tracking_uri(before)


@pytest.fixture(scope="module")
def run_model_uri(mlflow_uri, forest, ada) -> str:
    """A pipeline fitted on every ada record, logged in MLflow's scikit-learn flavour: ``runs:/ID/model``."""
    fitted = clone(forest).fit(model_input(ada, "gemm"), ada[TARGETS])
    tracking.start(mlflow_uri, "models")
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(fitted, name="model", serialization_format="cloudpickle")
    return f"runs:/{run.info.run_id}/model"


# ------------------------------------------------------------------------------------------------ metrics
def test_coverage_and_width_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    lo = np.array([0.5, 2.5, 2.0, 4.0, 0.0])
    hi = np.array([1.5, 3.0, 3.0, 5.0, 1.0])
    assert metrics.coverage(y, lo, hi) == pytest.approx(3 / 4)       # 2 is outside; bounds are inclusive
    assert metrics.mean_width(lo, hi, relative=False) == pytest.approx(4.5 / 5)
    assert metrics.mean_width(lo, hi) == pytest.approx((1 / 1 + 0.5 / 2.75 + 1 / 2.5 + 1 / 4.5 + 1 / 0.5) / 5)
    with pytest.raises(ValueError, match=r"1 interval\(s\) have lo > hi"):
        metrics.coverage(y, lo, np.where(np.arange(5) == 1, 2.0, hi))
    with pytest.raises(ValueError, match="y_true has 5 values but the intervals 4"):
        metrics.coverage(y, lo[:4], hi[:4])
    with pytest.raises(ValueError, match="1 interval bound"):
        metrics.mean_width(lo, np.where(np.arange(5) == 2, np.nan, hi))
    # too few calibration rows for the level: the interval around 2 is [0, inf), which holds it
    lo2, hi2 = np.where(np.arange(5) == 1, 0.0, lo), np.where(np.arange(5) == 1, np.inf, hi)
    assert metrics.coverage(y, lo2, hi2) == 1.0 and metrics.mean_width(lo2, hi2) == np.inf
    with pytest.raises(ValueError, match="midpoint"):
        metrics.mean_width([-2.0], [1.0])


def test_summary_takes_r2_on_log_values_only_across_decades():
    t, p = np.array([1.0, 2.0, 4.0, 10.0, np.nan]), np.array([1.1, 1.0, 4.0, 12.0, 5.0])   # APE .1 .5 0 .2
    s = metrics.summary(t, p, lo=p * 0.9, hi=p * 1.1)
    assert s["n"] == 4 and s["mape"] == pytest.approx(0.2) and s["median_ape"] == pytest.approx(0.15)
    assert s["p90_ape"] == pytest.approx(np.percentile([0.1, 0.5, 0.0, 0.2], 90))
    assert s["r2_log_scale"] is False and s["r2"] == pytest.approx(r2_score(t[:4], p[:4]))   # one decade: linear
    # intervals p ± 10 %: [0.99, 1.21] holds 1, [0.9, 1.1] misses 2, [3.6, 4.4] holds 4, [10.8, 13.2] misses 10
    assert s["coverage"] == pytest.approx(2 / 4) and s["mean_width"] == pytest.approx(0.2)
    wide = np.array([0.01, 0.5, 3.0, 40.0])                            # 3.6 decades
    s = metrics.summary(wide, wide * [1.2, 0.9, 1.0, 1.1])
    assert s["r2_log_scale"] is True
    assert s["r2"] == pytest.approx(r2_score(np.log(wide), np.log(wide * [1.2, 0.9, 1.0, 1.1])))
    s = metrics.summary(wide, wide - 0.02)                             # a negative prediction: no logs
    assert s["r2_log_scale"] is False and s["r2"] == pytest.approx(r2_score(wide, wide - 0.02))
    assert set(metrics.summary([2.0], [1.0])) >= {"r2", "spearman"} and np.isnan(metrics.summary([2.0], [1.0])["r2"])


def test_size_buckets_are_quantiles_labelled_by_their_range():
    b = metrics.size_buckets([1e3, 2e3, 1e9, 5e9, np.nan], 2, "FLOP")
    assert list(b.cat.categories) == ["1k–2k FLOP", "1G–5G FLOP"] and b.cat.ordered
    assert b.tolist()[:4] == ["1k–2k FLOP", "1k–2k FLOP", "1G–5G FLOP", "1G–5G FLOP"] and pd.isna(b.iloc[4])


def test_breakdown_by_hand_keeps_missing_groups_and_bucket_order():
    t, p = np.array([1.0, 2.0, 4.0, 10.0, np.nan]), np.array([1.1, 1.0, 4.0, 12.0, 3.0])
    df = pd.DataFrame({"dev": ["b", "b", "a", None, "a"],
                       "size": metrics.size_buckets([5e9, 1e9, 2e3, 1e3, 1.0], 2, "B")})
    out = metrics.breakdown(df, t, p, ["dev", "size"], lo=p * 0.9, hi=p * 1.1)
    dev = out[out["by"] == "dev"].set_index("group")
    assert list(dev.index) == ["a", "b", metrics.MISSING_GROUP]
    assert dev.loc["b", "n"] == 2 and dev.loc["b", "mape"] == pytest.approx(0.3)       # APE .1 and .5
    assert dev.loc["a", "n"] == 1 and dev.loc[metrics.MISSING_GROUP, "mape"] == pytest.approx(0.2)
    assert dev.loc["b", "coverage"] == pytest.approx(0.5) and dev.loc["a", "coverage"] == 1.0   # 1 in, 2 out; 4 in
    size = out[out["by"] == "size"]
    assert size["group"].tolist() == list(df["size"].cat.categories)                 # smallest first
    with pytest.raises(ValueError, match=r"column\(s\) \['op'\] are not in the frame"):
        metrics.breakdown(df, t, p, ["op"])


def test_breakdown_ns_add_up_and_each_group_is_its_subset(shape_report):
    df = shape_report.predictions
    y, p = df["runtime_ms"].to_numpy(), df["runtime_ms_pred"].to_numpy()
    table = shape_report.breakdowns["runtime_ms"]
    assert set(table["by"]) == {"device_id", "op", "size_bucket"}
    for col, part in table.groupby("by"):
        assert part["n"].sum() == np.isfinite(y).sum() == shape_report.metrics["runtime_ms"]["n"]
        for row in part.itertuples():
            rows = (df[col].astype(str) == row.group).to_numpy() & np.isfinite(y)
            assert row.n == rows.sum()
            assert row.mape == pytest.approx(np.mean(np.abs(p[rows] - y[rows]) / y[rows]))
    assert (table.loc[table["by"] == "size_bucket", "n"] > 0).sum() == 4


# --------------------------------------------------------------------------------------------------- plots
def test_plots_are_pngs_that_open_and_count_the_bands(shape_report, tmp_path):
    df = shape_report.predictions
    seen = df["runtime_ms"].notna().to_numpy()
    y, p = df.loc[seen, "runtime_ms"].to_numpy(), df.loc[seen, "runtime_ms_pred"].to_numpy()
    ape = np.abs(p - y) / y
    figs = {
        "pvm.png": plots.pred_vs_measured(y, p, target="runtime_ms", title="ada"),
        "cdf.png": plots.error_cdf({"all": ape, "half": ape[::2]}),
        "size.png": plots.error_vs_size(df.loc[seen, "size"], ape, unit="FLOP"),
    }
    for name, fig in figs.items():
        path = plots.save_png(fig, tmp_path / "sub" / name)
        image = matplotlib.image.imread(path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 300 and image.shape[1] > 300
    legend = [t.get_text() for t in figs["pvm.png"].axes[0].get_legend().get_texts()]
    assert f"±10% ({np.mean(ape <= 0.1):.0%} of points)" in legend
    assert f"±25% ({np.mean(ape <= 0.25):.0%} of points)" in legend
    curves = figs["cdf.png"].axes[0].get_lines()
    assert any(len(line.get_xdata()) == len(ape) for line in curves)


# -------------------------------------------------------------------------------------------------- report
def test_evaluate_model_scores_unseen_shapes(shape_report, ada):
    split = split_records(ada, EvalConfig(protocol="unseen-shape"), 1, TARGETS)
    df = shape_report.predictions
    assert df["record_id"].tolist() == split.test["record_id"].tolist()
    keys = list(SHAPE_KEYS["gemm"])
    trained = set(split.train[keys].astype(float).itertuples(index=False, name=None))
    assert not trained & set(df.merge(ada[["record_id", *keys]])[keys].astype(float).itertuples(index=False, name=None))
    assert shape_report.folds == [(len(split.train), len(split.test))] and shape_report.seed == 1
    assert shape_report.notes == [split.test.attrs["perfcast.split_note"]]
    for target in TARGETS:
        y, p = df[target].to_numpy(), df[f"{target}_pred"].to_numpy()
        ok = ~np.isnan(y)
        s = shape_report.metrics[target]
        assert s["n"] == ok.sum() and s["mape"] == pytest.approx(np.mean(np.abs(p[ok] - y[ok]) / y[ok]))
    runtime = df["runtime_ms"].dropna()
    assert shape_report.metrics["runtime_ms"]["r2_log_scale"] == (np.log10(runtime.max() / runtime.min()) > 2)
    flat = shape_report.flat_metrics()
    r2_key = "test_runtime_ms_r2_log" if shape_report.metrics["runtime_ms"]["r2_log_scale"] else "test_runtime_ms_r2"
    assert flat[r2_key] == shape_report.metrics["runtime_ms"]["r2"] and flat["test_n"] == len(df)


def test_refit_trains_on_the_protocol_rows_only(forest, ada, shape_report):
    fitted_on_all = clone(forest).fit(model_input(ada, "gemm"), ada[TARGETS])
    again = evaluate_model(fitted_on_all, ada, "unseen-shape", seed=1)      # refit: the fit on all rows is dropped
    np.testing.assert_allclose(again.predictions["runtime_ms_pred"], shape_report.predictions["runtime_ms_pred"])
    power = evaluate_model(fitted_on_all, ada, "unseen-shape", seed=1, targets=["power_w"])  # one output scored
    assert list(power.metrics) == ["power_w"] and power.metrics["power_w"] == shape_report.metrics["power_w"]
    as_fitted = evaluate_model(fitted_on_all, ada, "unseen-shape", seed=1, refit=False)
    # scored as fitted, the model has seen the test shapes: far better numbers, which is why refit is the default
    assert as_fitted.metrics["runtime_ms"]["mape"] < 0.5 * again.metrics["runtime_ms"]["mape"]
    assert not as_fitted.refit


def test_intervals_give_coverage_and_width(forest, ada, tmp_path):
    report = evaluate_model(ConformalRegressor(forest, level=0.8, n_splits=2), ada, "random", seed=2)
    assert report.has_intervals and report.targets == TARGETS and report.task == "gemm"
    df = report.predictions
    for target in TARGETS:
        ok = df[target].notna()
        y, lo, hi = (df.loc[ok, c].to_numpy() for c in (target, f"{target}_lo", f"{target}_hi"))
        s = report.metrics[target]
        assert s["coverage"] == pytest.approx(np.mean((lo <= y) & (y <= hi)))
        assert s["mean_width"] == pytest.approx(np.mean((hi - lo) / ((hi + lo) / 2)))
        table = report.breakdowns[target]
        op = table[table["by"] == "op"].iloc[0]                     # one op: its group is every row
        assert op["coverage"] == pytest.approx(s["coverage"]) and op["mean_width"] == pytest.approx(s["mean_width"])
    text = report.to_markdown(tmp_path).read_text()
    assert "coverage %" in text and "width %" in text
    assert f"{100 * report.metrics['runtime_ms']['coverage']:.2f}" in text


def test_a_saved_perfcast_model_is_scored_as_saved_or_rebuilt_from_its_metadata(forest, ada, tmp_path):
    X = model_input(ada, "gemm")
    calibrated = ConformalRegressor(forest, level=0.8, n_splits=2)
    fitted = clone(calibrated).fit(X, ada[TARGETS])
    path = save_model(fitted, "gemm", X, tmp_path / "bundle",   # the metadata perfcast.training writes
                      {"name": "ada-eval", "model": {"name": "rf", "params": {"n_estimators": 15, "n_jobs": 1}},
                       "seed": 3})
    loaded = load_model(str(path))
    assert isinstance(loaded, SavedModel) and (loaded.task, loaded.targets_) == ("gemm", TARGETS)
    as_saved = evaluate_model(str(path), ada, "unseen-shape", seed=1, refit=False)
    test = model_input(ada.set_index("record_id").loc[as_saved.predictions["record_id"]].reset_index(), "gemm")
    np.testing.assert_allclose(as_saved.predictions[["runtime_ms_pred", "power_w_pred"]], fitted.predict(test),
                               rtol=1e-9)
    assert as_saved.has_intervals and 0 <= as_saved.metrics["power_w"]["coverage"] <= 1
    rebuilt = evaluate_model(str(path), ada, "unseen-shape", seed=1)   # refit: the recipe, on the training shapes
    fresh = evaluate_model(calibrated, ada, "unseen-shape", seed=1)
    np.testing.assert_allclose(rebuilt.predictions["runtime_ms_pred"], fresh.predictions["runtime_ms_pred"])
    np.testing.assert_allclose(rebuilt.predictions["power_w_hi"], fresh.predictions["power_w_hi"])
    with pytest.raises(EvalError, match="cannot load model .*nowhere"):
        load_model(str(tmp_path / "nowhere"))


def test_markdown_report_states_protocol_n_every_metric_and_its_plots(shape_report, tmp_path):
    path = shape_report.to_markdown(tmp_path / "rep")
    text = path.read_text()
    assert path.name == "report.md"
    assert "`unseen-shape`, seed 1" in text and f"n = {shape_report.n_test} test" in text
    assert shape_report.notes[0] in text
    for header in ("MAPE %", "MdAPE %", "P90 APE %", "R²", "Spearman ρ"):
        assert f" {header} |" in text
    for target in TARGETS:
        s = shape_report.metrics[target]
        assert f"| {target} | {int(s['n'])} | {100 * s['mape']:.2f} | {100 * s['median_ape']:.2f} |" in text
        for kind in ("pred_vs_measured", "error_cdf", "error_vs_size"):
            name = f"{kind}_{target}.png"
            assert f"]({name})" in text and matplotlib.image.imread(tmp_path / "rep" / name).ndim == 3
        saved = pd.read_csv(tmp_path / "rep" / f"breakdown_{target}.csv")
        assert saved["n"].sum() == 3 * s["n"]          # device, op and size each count every measured row
        assert f"### {target} by size_bucket" in text
    assert len(pd.read_csv(tmp_path / "rep" / "predictions.csv")) == shape_report.n_test


def test_cross_validated_protocols_pool_every_fold(data_root):
    cfg = parse_config({"name": "pc", "task": "cpu_bench", "targets": ["score"],
                        "data": {"imports": [{"dataset": "perfcastdb-sample",
                                              "path": str(data_root / "perfcastdb-sample")}]},
                        "model": {"name": "lightgbm", "params": {"n_estimators": 20}}})
    records = load_records(cfg.data, "cpu_bench").frame
    model = build_model(cfg, dict(cfg.model.params))
    report = evaluate_model(model, records, "ncpp-paper")
    assert len(report.folds) == records["hw_id"].nunique() == 6
    assert sorted(report.predictions["record_id"]) == sorted(records["record_id"])   # each row tested once
    assert all(a + b == len(records) for a, b in report.folds)
    assert all("cross-validated by hardware configuration" in n for n in report.notes)
    one = evaluate_model(model, records, "ncpp-paper", options={"fold": 2})
    assert len(one.folds) == 1 and set(one.predictions["fold"]) == {0}


def test_evaluate_explains_what_cannot_be_evaluated(forest, ada):
    with pytest.raises(EvalError, match="unknown protocol 'nope'; known: .*unseen-shape"):
        evaluate_model(forest, ada, "nope")
    with pytest.raises(EvalError, match=r"options \['tset_size'\] are not options of protocol 'random'"):
        evaluate_model(forest, ada, "random", options={"tset_size": 0.3})
    with pytest.raises(EvalError, match="cannot tell which task and targets"):
        evaluate_model(forest[-1].estimator, ada, "random")
    with pytest.raises(EvalError, match="predicts runtime_ms, power_w; it cannot be scored on score"):
        evaluate_model(forest, ada, "random", targets=["score"])
    with pytest.raises(ValueError, match="cannot hold out 1 of 1 device"):
        evaluate_model(forest, ada, "unseen-hardware")


# -------------------------------------------------------------------------------------------------- mlflow
def test_a_logged_model_is_evaluated_and_the_report_logged(run_model_uri, mlflow_uri, ada, tmp_path):
    report = evaluate_model(run_model_uri, ada, "random", seed=3, options={"test_size": 0.25})
    assert report.model == run_model_uri and report.task == "gemm" and report.targets == TARGETS
    run_id = log_report(report, tmp_path / "rep", tracking_uri=mlflow_uri, experiment="eval-test")
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    assert run.data.params["eval.protocol"] == "random" and run.data.params["eval.seed"] == "3"
    assert run.data.params["model"] == run_model_uri and int(run.data.params["data.rows_test"]) == report.n_test
    assert run.data.tags["perfcast.kind"] == "eval"
    assert run.data.metrics == pytest.approx(report.flat_metrics())
    logged = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/predictions.csv", "report/pred_vs_measured_runtime_ms.png",
            "report/error_cdf_power_w.png", "report/error_vs_size_runtime_ms.png"} <= logged
    text = Path(client.download_artifacts(run_id, "report/report.md", str(tmp_path))).read_text()
    assert "protocol `random`" in text
    with pytest.raises(EvalError, match="cannot load model 'runs:/0123456789abcdef/model'"):
        load_model("runs:/0123456789abcdef/model")


def test_cli_eval_writes_the_report_and_says_where(run_model_uri, mlflow_uri, data_root, tmp_path):
    out = tmp_path / "cli"
    ada_data = f"gpperf-ada-matmul={data_root / 'gpperf-ada-matmul'}"
    args = [run_model_uri, "--protocol", "unseen-shape", "--data", ada_data, "--option", "test_size=0.3",
            "--seed", "2", "--out", str(out), "--tracking-uri", mlflow_uri]
    res = runner.invoke(eval_app, args, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "runtime_ms" in res.output and "power_w" in res.output and str(out / "report.md") in res.output
    text = (out / "report.md").read_text()
    assert "held out 12 of 39 shapes" in text              # 0.3 of 39 shapes: the option arrived as a number
    res = runner.invoke(eval_app, [run_model_uri, "--protocol", "nope", "--tracking-uri", mlflow_uri, "--data", ada_data])
    assert res.exit_code == 2 and "unknown protocol 'nope'" in res.output
    res = runner.invoke(eval_app, [run_model_uri, "--protocol", "random", "--data", "gpperf-ada-matmul"])
    assert res.exit_code == 2 and "DATASET=PATH" in res.output


@pytest.mark.slow
def test_eval_of_a_registered_model_reproduces_its_training_metrics(data_root, mlflow_uri, tmp_path):
    """Same split, same fitted model: ``perfcast eval --no-refit`` gives the numbers ``perfcast train`` logged."""
    cfg = parse_config(ada_config(data_root, tracking={"experiment": "train-then-eval"}))
    result = train(cfg, tracking_uri=mlflow_uri)
    out = tmp_path / "rep"
    res = runner.invoke(eval_app, [f"models:/{cfg.registered_model_name}/1", "--protocol", "random", "--option",
                                   "test_size=0.25", "--seed", "3", "--no-refit", "--out", str(out),
                                   "--data", f"gpperf-ada-matmul={data_root / 'gpperf-ada-matmul'}",
                                   "--tracking-uri", mlflow_uri], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    client = mlflow.MlflowClient(mlflow_uri)
    evals = client.search_runs([client.get_experiment_by_name("perfcast").experiment_id],
                               "tags.`perfcast.kind` = 'eval'")
    got = evals[0].data.metrics
    for target in TARGETS:
        for name in ("n", "mape", "median_ape", "p90_ape", "spearman"):
            key = f"test_{target}_{name}"
            assert got[key] == pytest.approx(result.metrics[key], rel=1e-9), key
    assert got["test_runtime_ms_r2_log"] == pytest.approx(result.metrics["test_runtime_ms_r2_log"], rel=1e-9)
