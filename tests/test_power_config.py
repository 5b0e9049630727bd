"""configs/aiconfigurator_power_unseen_shape.toml trains with `perfcast train` on a slice of the shared copy and
logs a model whose Predictor returns runtime, power and energy with intervals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.experiments import power_bench
from perfcast.training.config import load_config
from perfcast.training.train import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "aiconfigurator_power_unseen_shape.toml"
TABLE = "gb200/gemm/trtllm/1.3.0rc17/gemm_perf.parquet"


@pytest.mark.slow
def test_power_config_trains_on_a_slice(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        new_mlflow_db: Callable[[Path], str]) -> None:
    raw = pd.read_parquet(data_root / "aiconfigurator-power" / TABLE).iloc[::60]
    out = tmp_path / "data" / "aiconfigurator-power" / TABLE
    out.parent.mkdir(parents=True)
    raw.to_parquet(out, index=False)
    monkeypatch.setenv("PERFCAST_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    before, uri = mlflow.get_tracking_uri(), new_mlflow_db(tmp_path)
    cfg = load_config(CONFIG)
    assert cfg.model.name == "power" and list(cfg.targets) == ["runtime_ms", "power_w", "energy_j"]
    assert cfg.benchmark.protocols == [power_bench.PROTOCOL]  # the config is the benchmark's preset
    small = cfg.model.model_copy(update={"params": {"runtime": {"n_estimators": 60},
                                                    "correction": {"n_estimators": 60}}})
    try:
        result = train(cfg.model_copy(update={"model": small}), tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(before)
    for t in ("runtime_ms", "power_w", "energy_j"):
        assert 0 < result.metrics[f"test_{t}_mape"] < 0.5
        assert 0.6 < result.metrics[f"test_{t}_coverage"] <= 1.0
    mlflow.set_tracking_uri(uri)
    try:
        p = Predictor.load(result.model_uri)
    finally:
        mlflow.set_tracking_uri(before)
    got = p.predict({"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16", "device": "gb200"})
    assert got["energy_j"] == pytest.approx(got["power_w"] * got["runtime_ms"] / 1e3, rel=1e-9)
    assert got["power_w_lo"] < got["power_w"] < got["power_w_hi"] and np.isfinite(got["energy_j_hi"])
