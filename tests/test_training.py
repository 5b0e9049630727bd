"""Training and tuning on real data: what is logged to MLflow, and that the registered model is the one scored."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from perfcast.datasets.importers import get_importer
from perfcast.records.schema import columns
from perfcast.eval.metrics import mape, scores
from perfcast.features import feature_transformer
from perfcast.predictor import Predictor
from perfcast.training import tracking
from perfcast.cli.train import train_app
from perfcast.training.config import parse_config
from perfcast.training.train import (
    TrainingDataError,
    build_model,
    load_records,
    model_input,
    split_records,
    train,
)
from perfcast.training.tune import tune

TARGETS = ["runtime_ms", "power_w"]


def ada_config(data_root: Path, **overrides) -> dict:
    """A small real config: the GPPerf tiled-SGEMM table (RTX 4070, runtime and power), a small forest."""
    cfg = {
        "name": "ada-test",
        "task": "gemm",
        "targets": TARGETS,
        "data": {"imports": [{"dataset": "gpperf-ada-matmul", "path": str(data_root / "gpperf-ada-matmul")}]},
        "model": {"name": "rf", "params": {"n_estimators": 40}},
        "eval": {"protocol": "random", "options": {"test_size": 0.25}},
        "seed": 3,
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="module")
def ada_records(data_root):
    return load_records(parse_config(ada_config(data_root)).data, "gemm")


@pytest.fixture()
def mlflow_in(tmp_path, monkeypatch, new_mlflow_db):
    """Tracking in a fresh SQLite file under tmp_path; MLflow's global URI restored afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # a logged perfcast model holds no pickle
    before = mlflow.get_tracking_uri()
    uri = new_mlflow_db(tmp_path)
    yield uri
    mlflow.set_tracking_uri(before)


# ----------------------------------------------------------------------------------------------- pieces
def test_records_come_from_a_temporary_store_and_keep_provenance(ada_records, data_root):
    frame = ada_records.frame
    assert ada_records.source == str((data_root / "gpperf-ada-matmul").resolve())
    assert len(frame) > 300 and frame["record_id"].is_unique
    assert set(frame["source"].unique()) == {"gpperf-ada-matmul"}
    assert frame["runtime_ms"].notna().any() and frame["power_w"].notna().any()


def test_filters_are_checked_and_applied(data_root, store):
    get_importer("gpperf-ada-matmul").run(data_root / "gpperf-ada-matmul", store)
    cfg = parse_config(ada_config(data_root, data={"store": str(store.root), "filters": {"m": 512}}))
    frame = load_records(cfg.data, "gemm").frame
    assert len(frame) and (frame["m"] == 512).all()
    bad = parse_config(ada_config(data_root, data={"store": str(store.root), "filters": {"mm": 512}}))
    with pytest.raises(TrainingDataError, match=r"data.filters: column\(s\) \['mm'\]"):
        load_records(bad.data, "gemm")
    none = parse_config(ada_config(data_root, data={"store": str(store.root), "filters": {"m": 3}}))
    with pytest.raises(TrainingDataError, match="no gemm records .* after filters"):
        load_records(none.data, "gemm")


def test_split_is_seeded_disjoint_and_drops_rows_without_targets(ada_records, data_root):
    cfg = parse_config(ada_config(data_root))
    a = split_records(ada_records.frame, cfg.eval, 3, ["power_w"])
    b = split_records(ada_records.frame, cfg.eval, 3, ["power_w"])
    c = split_records(ada_records.frame, cfg.eval, 4, ["power_w"])
    assert a.train["record_id"].tolist() == b.train["record_id"].tolist()
    assert a.train["record_id"].tolist() != c.train["record_id"].tolist()
    assert not set(a.train["record_id"]) & set(a.test["record_id"])
    assert a.train["power_w"].notna().all() and a.test["power_w"].notna().all()
    n_power = int(ada_records.frame["power_w"].notna().sum())
    assert len(a.train) + len(a.test) == n_power
    assert a.dropped_unmeasured == len(ada_records.frame) - n_power


def test_protocol_errors_become_training_data_errors(ada_records, data_root):
    cfg = parse_config(ada_config(data_root, eval={"protocol": "unseen-hardware"}))
    with pytest.raises(TrainingDataError, match="protocol 'unseen-hardware': .*cannot hold out 1 of 1 device"):
        split_records(ada_records.frame, cfg.eval, 0, TARGETS)


def test_unseen_hardware_holds_out_whole_devices(data_root):
    cfg = parse_config(ada_config(data_root, task="cpu_bench", targets=["score"], data={"imports": [
        {"dataset": "perfcastdb-sample", "path": str(data_root / "perfcastdb-sample")}]}))
    frame = load_records(cfg.data, "cpu_bench").frame
    assert frame["device_id"].isna().all()  # CPUs have no spec-sheet id: hold out by processor name
    held = "Intel(R) Xeon(R) Platinum 8474C"
    protocol = parse_config(ada_config(data_root, eval={"protocol": "unseen-hardware", "options": {
        "by": "device_name", "test_devices": [held]}})).eval
    split = split_records(frame, protocol, 0, ["score"])
    assert set(split.test["device_name"]) == {held} and held not in set(split.train["device_name"])
    assert len(split.train) + len(split.test) == len(frame)
    drawn = parse_config(ada_config(data_root, eval={"protocol": "unseen-hardware", "options": {
        "by": "device_name", "n_test_devices": 2}})).eval
    a, b = (split_records(frame, drawn, seed, ["score"]) for seed in (0, 0))
    assert a.test["device_name"].nunique() == 2 and a.test["record_id"].tolist() == b.test["record_id"].tolist()
    assert not set(a.test["device_name"]) & set(a.train["device_name"])
    by_id = parse_config(ada_config(data_root, eval={"protocol": "unseen-hardware"})).eval
    with pytest.raises(TrainingDataError, match="145 row.s. have no device_id"):
        split_records(frame, by_id, 0, ["score"])


def test_future_trains_on_the_past(data_root):
    cfg = parse_config(ada_config(data_root, task="cpu_bench", targets=["score"], data={"imports": [
        {"dataset": "spec-cpu2017", "path": str(data_root / "spec-cpu2017")}]},
        eval={"protocol": "future", "options": {"cutoff": "2023-01-01"}}))
    frame = load_records(cfg.data, "cpu_bench").frame
    split = split_records(frame, cfg.eval, 0, ["score"])
    cutoff = pd.Timestamp("2023-01-01", tz="UTC")
    assert (split.train["published_at"] < cutoff).all() and (split.test["published_at"] >= cutoff).all()
    assert len(split.train) + len(split.test) == len(frame) and len(split.test) > 1000
    late = parse_config({**cfg.model_dump(mode="json"), "eval": {"protocol": "future",
                                                                 "options": {"cutoff": "2030-01-01"}}}).eval
    with pytest.raises(TrainingDataError, match="puts every row on one side"):
        split_records(frame, late, 0, ["score"])


def test_model_input_is_what_is_known_before_measuring(ada_records):
    X = model_input(ada_records.frame, "gemm")
    assert {"m", "n", "k", "dtype", "device_name", "tile_m"} <= set(X.columns)
    leaks = {"runtime_ms", "power_w", "energy_j", "record_id", "source", "runtime_cv", "n_repeats"}
    assert not leaks & set(X.columns)
    assert not [c for c in X.columns if c.startswith("x_")]
    assert all(str(t) in ("float64", "str") for t in X.dtypes), X.dtypes.value_counts()


def test_seed_reaches_every_random_state_unless_given(data_root):
    cfg = parse_config(ada_config(data_root))
    states = {k: v for k, v in build_model(cfg, {}).get_params(deep=True).items() if k.endswith("random_state")}
    assert states and set(states.values()) == {3}
    own = build_model(cfg, {"random_state": 11}).get_params(deep=True)
    assert {v for k, v in own.items() if k.endswith("random_state")} == {11}


def test_scores_each_target_on_its_measured_rows():
    measured = pd.DataFrame({"runtime_ms": [1.0, 2.0, 4.0, 8.0], "power_w": [10.0, np.nan, 30.0, 40.0]})
    pred = np.array([[1.1, 11.0], [1.8, 99.0], [4.0, 27.0], [8.8, 40.0]])
    m = scores(measured, pred, "test_")
    assert m["test_n"] == 4 and m["test_power_w_n"] == 3
    assert m["test_runtime_ms_mape"] == pytest.approx(mape(measured["runtime_ms"], pred[:, 0]))
    assert m["test_power_w_mape"] == pytest.approx((0.1 + 0.1 + 0.0) / 3)
    # one decade: R² on plain values, under the one key scheme (r2_log only where the truth spans decades)
    assert "test_power_w_r2" in m and "test_power_w_r2_log" not in m
    assert m["test_runtime_ms_spearman"] == pytest.approx(1.0)
    wide = scores(pd.DataFrame({"runtime_ms": [0.01, 1.0, 100.0]}), np.array([0.011, 0.9, 110.0]), "test_",
                  lo=np.array([0.009, 0.8, 90.0]), hi=np.array([0.012, 1.1, np.inf]))
    assert "test_runtime_ms_r2_log" in m | wide and "test_runtime_ms_r2" not in wide
    assert wide["test_runtime_ms_coverage"] == pytest.approx(1.0)
    assert "test_runtime_ms_mean_width" not in wide  # an unbounded interval has no width to report


def test_content_hash_ignores_order_and_sees_content(ada_records):
    frame = ada_records.frame
    h = tracking.content_hash(frame)
    assert tracking.content_hash(frame.sample(frac=1.0, random_state=0)) == h
    assert tracking.content_hash(frame.iloc[1:]) != h
    no_ids = frame.drop(columns="record_id")
    assert tracking.content_hash(no_ids.iloc[::-1]) == tracking.content_hash(no_ids)
    changed = no_ids.copy()
    row = changed.index[changed["runtime_ms"].notna()][0]
    changed.loc[row, "runtime_ms"] *= 2
    assert tracking.content_hash(changed) != tracking.content_hash(no_ids)


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == "sqlite:///mlflow.db"
    assert tracking.tracking_uri(configured="http://cfg") == "http://cfg"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env")
    assert tracking.tracking_uri(configured="http://cfg") == "http://env"
    assert tracking.tracking_uri("http://cli", "http://cfg") == "http://cli"


def test_importances_and_signature_of_a_fitted_pipeline(ada_records, data_root):
    cfg = parse_config(ada_config(data_root))
    frame = ada_records.frame
    X, Y = model_input(frame, "gemm"), frame[TARGETS]
    pipe = build_model(cfg, {}).fit(X, Y)
    imp = tracking.feature_importances(pipe, TARGETS)
    assert list(imp.columns) == TARGETS
    assert set(imp.index) == set(pipe[:-1].get_feature_names_out())
    assert np.allclose(imp.sum(), 1.0)  # a forest's importances are normalised per target
    answer = pd.DataFrame({t: pipe.predict(X.head())[:, j] for j, t in enumerate(TARGETS)})
    sig = tracking.serving_signature(X, "gemm", answer, feature_transformer("gemm").required)
    required = {c.name for c in sig.inputs.inputs if c.required}
    assert required == set(feature_transformer("gemm").required)
    # what a user sends: the configuration and the device (the spec sheet supplies the hardware columns)
    assert {"m", "n", "k", "dtype", "device", "device_id"} <= set(sig.inputs.input_names()) <= {*X.columns, "device"}
    assert not {"sm_count", "mem_bw_gbs"} & set(sig.inputs.input_names())
    assert sig.outputs.input_names() == [*TARGETS, "in_distribution", "ood_reason"]


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_train_logs_everything_and_registers_the_scored_model(data_root, mlflow_in, tmp_path):
    cfg = parse_config(ada_config(data_root))
    result = train(cfg, tracking_uri=mlflow_in)
    client = mlflow.MlflowClient(mlflow_in)
    run = client.get_run(result.run_id)
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())  # beside the database, not in CWD

    assert run.data.params["model.name"] == "rf"
    assert run.data.params["model.params.n_estimators"] == "40"
    assert run.data.params["eval.protocol"] == "random" and run.data.params["seed"] == "3"
    assert int(run.data.params["data.rows_test"]) == result.n_test
    # runtimes span decades: their R² is logged on log values (one key scheme with perfcast eval)
    assert "test_runtime_ms_r2_log" in result.metrics and "test_runtime_ms_r2" not in result.metrics
    for key in ("test_runtime_ms_mape", "test_power_w_median_ape", "test_runtime_ms_r2_log", "train_power_w_mape",
                "test_runtime_ms_coverage", "test_power_w_mean_width"):
        assert run.data.metrics[key] == pytest.approx(result.metrics[key])

    contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"training", "testing"}
    sizes = {}
    for ds_input in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in ds_input.tags}
        assert ds_input.dataset.source and "gpperf-ada-matmul" in ds_input.dataset.source
        assert len(tags["content_sha256"]) == 64 and ds_input.dataset.digest == tags["content_sha256"][:36]
        sizes[tags["mlflow.data.context"]] = int(tags["rows"])
    assert sizes == {"training": result.n_train, "testing": result.n_test}

    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert "feature_importances.csv" in artifacts
    assert {"plots/pred_vs_measured_runtime_ms.png", "plots/pred_vs_measured_power_w.png"} <= plots

    # the registered model is the one that was scored: its test predictions reproduce the logged metrics
    assert result.registered_version == 1
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model_name}/1")
    records = load_records(cfg.data, "gemm")
    split = split_records(records.frame, cfg.eval, cfg.seed, TARGETS)
    X_test = model_input(split.test, "gemm")
    answer = model.predict(X_test)
    served = answer[TARGETS].to_numpy()
    again = scores(split.test[TARGETS].astype(float), served, "test_")
    for key, value in again.items():
        assert value == pytest.approx(result.metrics[key], rel=1e-9), key
    # and it is the bundle the Predictor reads: loaded from the run URI, it answers the same, intervals included
    direct = Predictor.load(result.model_uri).predict(X_test)
    bounds = [f"{t}{s}" for t in TARGETS for s in ("", "_lo", "_hi")]
    np.testing.assert_allclose(direct[bounds].to_numpy(float), answer[bounds].to_numpy(float), rtol=1e-12)
    # a served request names the device by spec-sheet id: the hardware columns are optional inputs
    config_cols = [c for c, col in columns("gemm").items() if col.group == "config" and c in X_test]
    by_id = X_test[[*config_cols, "device_id"]].head(5)
    np.testing.assert_allclose(model.predict(by_id)[TARGETS].to_numpy(float), served[:5], rtol=1e-9)


@pytest.mark.slow
def test_tune_cli_runs_nested_trials_in_a_shared_study_and_registers_the_best(data_root, mlflow_in, tmp_path):
    config = tmp_path / "ada.toml"
    config.write_text(f"""
task = "gemm"
targets = ["runtime_ms", "power_w"]
seed = 1
[[data.imports]]
dataset = "gpperf-ada-matmul"
path = "{data_root / 'gpperf-ada-matmul'}"
[model]
name = "rf"
params = {{ n_estimators = 20 }}
[tracking]
registered_model_name = "ada-tuned"
[tune]
prune_at = [0.5]
[tune.space]
max_depth = {{ type = "int", low = 2, high = 12 }}
max_features = {{ type = "float", low = 0.3, high = 1.0 }}
""", encoding="utf-8")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    res = CliRunner().invoke(train_app, [str(config), "--tune", "3", "--storage", storage,
                                         "--tracking-uri", mlflow_in])
    assert res.exit_code == 0, res.output
    assert "registered models:/ada-tuned/1" in res.output and "runtime_ms" in res.output

    study = optuna.load_study(study_name="ada", storage=storage)
    assert len(study.trials) == 3
    client = mlflow.MlflowClient(mlflow_in)
    runs = client.search_runs([client.get_experiment_by_name("perfcast").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:
        assert child.data.params["model.params.max_depth"] in {str(t.params["max_depth"]) for t in study.trials}
    complete = [c for c in children if c.data.tags["optuna.state"] == "COMPLETE"]
    assert complete and all("val_runtime_ms_mape" in c.data.metrics for c in complete)
    # the parent carries the best trial's parameters, refitted and tested
    assert parent.data.params["model.params.max_depth"] == str(study.best_params["max_depth"])
    assert parent.data.metrics["tune_best_val_runtime_ms_mape"] == pytest.approx(study.best_value)
    assert "test_runtime_ms_mape" in parent.data.metrics
    assert client.get_model_version("ada-tuned", "1").run_id == parent.info.run_id

    # a second worker joins the same study instead of starting over
    cfg = parse_config({**ada_config(data_root), "name": "ada", "tune": {
        "space": {"max_depth": {"type": "int", "low": 2, "high": 12},
                  "max_features": {"type": "float", "low": 0.3, "high": 1.0}}}},
        base_dir=tmp_path)
    again = tune(cfg, 1, storage, tracking_uri=mlflow_in)
    assert again.n_trials == 4 and optuna.load_study(study_name="ada", storage=storage).trials[-1].number == 3


def test_cli_reports_config_errors_and_rejects_zero_trials(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('task = "gemm"\ntargets = ["runtime_ms"]\n[model]\nname = "nope"\n', encoding="utf-8")
    res = CliRunner().invoke(train_app, [str(bad)])
    assert res.exit_code == 2 and "model.name: unknown model 'nope'" in res.output
    res = CliRunner().invoke(train_app, [str(bad), "--tune", "0"])
    assert res.exit_code == 2 and "--tune" in res.output
