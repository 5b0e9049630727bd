"""Team tracking on PostgreSQL: MLflow runs and registry, and an Optuna study shared by parallel workers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner

from perfcast.cli.bench import eval_app
from perfcast.cli.predict import predict_app
from perfcast.predictor import Predictor
from perfcast.cli.train import train_app
from perfcast.training.config import load_config
from perfcast.training.train import load_records
from perfcast.training.tune import OPTUNA_SCHEMA, in_schema, is_postgres, shares, study_storage

#: a small real tuning job (dotted TOML keys): a 10-tree forest on the GPPerf tiled-SGEMM table
CONFIG = """
name = "ada-team"
task = "gemm"
targets = ["runtime_ms", "power_w"]
seed = 5
data.imports = [{{ dataset = "gpperf-ada-matmul", path = "{path}" }}]
model = {{ name = "rf", params = {{ n_estimators = 10 }} }}
eval = {{ protocol = "random", options = {{ test_size = 0.25 }} }}
tracking.registered_model_name = "ada-team"
tune.prune_at = []
tune.space.max_depth = {{ type = "int", low = 2, high = 14 }}
tune.space.max_features = {{ type = "float", low = 0.2, high = 1.0 }}
"""


def test_study_storage_defaults_beside_a_postgres_tracking_store():
    assert is_postgres("postgresql://u@h/db") and is_postgres("postgresql+psycopg://h/db")
    assert not is_postgres("sqlite:///mlflow.db") and not is_postgres("http://mlflow:5000")
    assert study_storage("sqlite:///x.db", "sqlite:///y.db", "postgresql://h/db") == "sqlite:///x.db"
    assert study_storage(None, "sqlite:///y.db", "postgresql://h/db") == "sqlite:///y.db"
    assert study_storage(None, None, "http://mlflow:5000") == "sqlite:///optuna.db"
    assert shares(7, 2) == [4, 3] and shares(1, 4) == [1] and sum(shares(10, 3)) == 10


def test_a_postgres_study_goes_to_its_own_schema_beside_mlflow(pg_database: str):
    beside = study_storage(None, None, pg_database)
    assert "search_path" in beside and study_storage(pg_database, None, "sqlite:///mlflow.db") == beside
    optuna.create_study(study_name="s", storage=beside).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    mlflow.MlflowClient(pg_database).create_experiment("beside-optuna")  # MLflow's tables in the same database
    assert len(optuna.load_study(study_name="s", storage=beside).trials) == 2
    own = beside.replace("optuna", "mine")
    assert study_storage(own, None, pg_database) == own  # a URL that sets its search_path is left alone


@pytest.mark.slow
def test_two_workers_share_one_postgres_study_and_the_model_loads_from_its_registry(
        data_root: Path, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a database tracking URI keeps artifacts in ./mlruns of the first run's directory
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tmp_path / "ada.toml"
    config.write_text(CONFIG.format(path=data_root / "gpperf-ada-matmul"), encoding="utf-8")
    before = mlflow.get_tracking_uri()
    try:
        res = CliRunner().invoke(train_app, [str(config), "--tune", "6", "--workers", "2",
                                             "--tracking-uri", pg_database])
        assert res.exit_code == 0, res.output
        assert "registered models:/ada-team/1" in res.output

        # the study lives in the tracking database, in its own schema
        study = optuna.load_study(study_name="ada-team", storage=in_schema(pg_database, OPTUNA_SCHEMA))
        trials = study.trials
        assert sorted(t.number for t in trials) == list(range(6))
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        # two workers, each seeded apart: no parameter set was drawn twice
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 6

        client = mlflow.MlflowClient(pg_database)
        runs = client.search_runs([client.get_experiment_by_name("perfcast").experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and len(children) == 6
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
        # every trial ran once, in one of two worker processes, three each
        assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == list(range(6))
        assert sorted(Counter(c.data.tags["perfcast.worker"] for c in children).values()) == [3, 3]
        for c in children:
            trial = trials[int(c.data.tags["optuna.trial_number"])]
            assert c.data.params["model.params.max_depth"] == str(trial.params["max_depth"])
            assert c.data.metrics["val_runtime_ms_mape"] == pytest.approx(trial.value)
        assert client.get_model_version("ada-team", "1").run_id == parents[0].info.run_id

        # the registered model reads back through the PostgreSQL registry
        mlflow.set_tracking_uri(pg_database)
        predictor = Predictor.load("models:/ada-team/1")
        rows = load_records(load_config(config).data, "gemm").frame.head(20)
        out = predictor.predict(rows)
        assert np.isfinite(out["runtime_ms"]).all() and (out["runtime_ms"] > 0).all()
        assert (out["runtime_ms_lo"] <= out["runtime_ms"]).all() and (out["runtime_ms"] <= out["runtime_ms_hi"]).all()

        # the other commands that take a tracking URI: predict and eval, against the same registry
        rows.to_csv(tmp_path / "rows.csv", index=False)
        res = CliRunner().invoke(predict_app, ["models:/ada-team/1", "--input", str(tmp_path / "rows.csv"),
                                               "--format", "csv", "--output", str(tmp_path / "pred.csv"),
                                               "--tracking-uri", pg_database])
        assert res.exit_code == 0, res.output
        np.testing.assert_allclose(pd.read_csv(tmp_path / "pred.csv")["runtime_ms"], out["runtime_ms"], rtol=1e-9)
        res = CliRunner().invoke(eval_app, ["models:/ada-team/1", "--protocol", "random", "--option", "test_size=0.25",
                                            "--seed", "5", "--no-refit", "--out", str(tmp_path / "rep"), "--data",
                                            f"gpperf-ada-matmul={data_root / 'gpperf-ada-matmul'}",
                                            "--tracking-uri", pg_database], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        (evaluated,) = client.search_runs([client.get_experiment_by_name("perfcast").experiment_id],
                                          "tags.`perfcast.kind` = 'eval'")
        assert evaluated.data.metrics["test_runtime_ms_mape"] == pytest.approx(
            parents[0].data.metrics["test_runtime_ms_mape"], rel=1e-9)  # the registered model, the same split
    finally:
        mlflow.set_tracking_uri(before)
