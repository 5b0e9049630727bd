"""`perfcast quickstart` end to end with a reduced budget: probe, train, evaluate, register, next steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from perfcast.cli import app
from perfcast.datasets.store import RecordStore

runner = CliRunner()


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PERFCAST_HW_SPECS", raising=False)
    work = tmp_path / "qs"
    res = runner.invoke(app, ["quickstart", "--dir", str(work), "--budget", "75s"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = res.output
    assert "unseen-shape test" in out and "mape" in out and "spearman" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{work.resolve()}/mlflow.db" in out
    assert "Predictor.load('models:/quickstart-gemm/1')" in out
    gemm = RecordStore(work / "store").read("gemm")
    assert len(gemm) >= 20 and (gemm["n_threads"] == 1).all()
    assert (work / "hw_specs.yaml").read_text().count("peak_tflops_fp32") == 1
    # the printed snippet works: load the registered model and predict a config on this machine
    import mlflow

    from perfcast import Predictor

    monkeypatch.setenv("PERFCAST_HW_SPECS", str(work / "hw_specs.yaml"))
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{work.resolve()}/mlflow.db")
    try:
        p = Predictor.load("models:/quickstart-gemm/1")
    finally:
        mlflow.set_tracking_uri(before)
    got = p.predict({"m": 512, "n": 512, "k": 512, "dtype": "float32",
                     "device_name": str(gemm["device_name"].iloc[0])})
    assert got["runtime_ms"] > 0 and got["runtime_ms_lo"] <= got["runtime_ms"] <= got["runtime_ms_hi"]
