"""`mlflow models serve` answers HTTP predictions of a registered perfcast model, equal to the Predictor's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.features import feature_transformer
from perfcast.models import make_model
from perfcast.models.intervals import ConformalRegressor
from perfcast.training import tracking
from perfcast.training.train import model_input

STARTUP_S = 120
ROWS = [
    {"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16", "device_id": "h100_sxm"},       # JSON integers
    {"m": 512.0, "n": 1024.0, "k": 256.0, "dtype": "bfloat16", "device_id": "a100_sxm"},
    {"m": 65536, "n": 8192, "k": 8192, "dtype": "bf16", "device_id": "l40s"},          # beyond training sizes
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture()
def registered(data_root: Path, tmp_path: Path, monkeypatch) -> str:
    """A LightGBM model on 200 bf16 GEMMs of each of three GPUs, logged and registered in a fresh SQLite store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if u.match("*/gemm/trtllm/*/gemm_perf.parquet")
             and u.parts[-5] in ("a100_sxm", "h100_sxm", "l40s")]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    train = df[df["dtype"] == "bfloat16"].groupby("device_id").sample(n=200, random_state=0).reset_index(drop=True)
    X = model_input(train, "gemm")
    model = ConformalRegressor(make_model("lightgbm", "gemm", ["runtime_ms"], {"n_estimators": 40}))
    model.fit(X, train[["runtime_ms"]])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    tracking.start(uri, "serve")
    with mlflow.start_run():
        info = tracking.log_model(model, X, "serve-test", feature_transformer("gemm").required)
    assert info.registered_model_version == 1
    yield uri
    mlflow.set_tracking_uri(before)


@pytest.mark.slow
def test_mlflow_serve_answers_like_the_predictor(registered, tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/serve-test/1", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"server not up in {STARTUP_S} s"
            time.sleep(0.5)

        answer = pd.DataFrame(_post(f"{base}/invocations", {"dataframe_records": ROWS})["predictions"])
        mlflow.set_tracking_uri(registered)
        expected = Predictor.load("models:/serve-test/1").predict(pd.DataFrame(ROWS))
        bounds = ["runtime_ms", "runtime_ms_lo", "runtime_ms_hi"]
        np.testing.assert_allclose(answer[bounds].to_numpy(float), expected[bounds].to_numpy(float), rtol=1e-12)
        assert answer["in_distribution"].tolist() == expected["in_distribution"].tolist() == [True, True, False]
        assert answer["ood_reason"].iloc[2] == expected["ood_reason"].iloc[2] and pd.isna(answer["ood_reason"].iloc[0])

        narrow = pd.DataFrame(_post(f"{base}/invocations", {"dataframe_records": ROWS[:1],
                                                            "params": {"level": 0.5}})["predictions"])
        assert answer["runtime_ms_lo"].iloc[0] < narrow["runtime_ms_lo"].iloc[0] < narrow["runtime_ms"].iloc[0]

        with pytest.raises(urllib.error.HTTPError) as bad:                 # a required column missing
            _post(f"{base}/invocations", {"dataframe_records": [{k: v for k, v in ROWS[0].items() if k != "k"}]})
        assert bad.value.code == 400 and "k" in bad.value.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
