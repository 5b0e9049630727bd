"""`mlflow models serve` answers HTTP predictions of a registered perfcast model, equal to the Predictor's:
JSON and CSV requests, the README's ``device`` key, valid JSON for a mixed in/out-of-distribution batch, and
bad requests answered with perfcast's one-line message (no stack trace)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.utils.logging_utils import eprint

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.features import feature_transformer
from perfcast.mlflow_quiet import quiet_mlflow
from perfcast.models import make_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.training import tracking
from perfcast.training.train import model_input

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("screenshot_run", REPO / "benchmarks" / "screenshot_run.py")
server = importlib.util.module_from_spec(_spec)  # its server helpers: start, wait for health, stop the group
_spec.loader.exec_module(server)
ROWS = [
    {"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16", "device": "h100_sxm"},         # JSON integers, README's key
    {"m": 512.0, "n": 1024.0, "k": 256.0, "dtype": "bfloat16", "device": "a100_sxm"},
    {"m": 65536, "n": 8192, "k": 8192, "dtype": "bf16", "device": "l40s"},            # beyond training sizes
]


def _strict_json(text: str):  # noqa: ANN201
    """Parse as standards-compliant JSON: NaN or Infinity (which Python's json accepts) is an error."""
    def refuse(token: str):  # noqa: ANN202
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def _post(url: str, payload: dict | str, content_type: str = "application/json") -> dict:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    req = urllib.request.Request(url, body.encode(), {"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return _strict_json(resp.read().decode())


def _error(url: str, payload: dict | str, content_type: str = "application/json") -> tuple[int, dict]:
    with pytest.raises(urllib.error.HTTPError) as bad:
        _post(url, payload, content_type)
    return bad.value.code, _strict_json(bad.value.read().decode())


@pytest.fixture(scope="module")
def registered(data_root: Path, tmp_path_factory: pytest.TempPathFactory, new_mlflow_db) -> Iterator[str]:
    """A LightGBM model on 200 bf16 GEMMs of each of three GPUs, logged and registered in a fresh SQLite store
    (once for the module: its tests only read it)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if u.match("*/gemm/trtllm/*/gemm_perf.parquet")
             and u.parts[-5] in ("a100_sxm", "h100_sxm", "l40s")]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    train = df[df["dtype"] == "bfloat16"].groupby("device_id").sample(n=200, random_state=0).reset_index(drop=True)
    X = model_input(train, "gemm")
    model = ConformalRegressor(make_model("lightgbm", "gemm", ["runtime_ms"], {"n_estimators": 40}))
    model.fit(X, train[["runtime_ms"]])
    uri = new_mlflow_db(tmp_path_factory.mktemp("serve"))
    before = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        tracking.start(uri, "serve")
        with mlflow.start_run():
            info = tracking.log_model(model, X, "serve-test", feature_transformer("gemm").required)
        assert info.registered_model_version == 1
        yield uri
    mlflow.set_tracking_uri(before)


def test_logged_model_declares_what_a_user_sends_and_gets_and_needs_perfcast(registered, tmp_path):
    mlflow.set_tracking_uri(registered)
    info = mlflow.models.get_model_info("models:/serve-test/1")
    inputs = {c.name: c for c in info.signature.inputs.inputs}
    assert {"m", "n", "k", "dtype", "device", "device_id"} <= set(inputs) and len(inputs) < 20
    assert {n for n, c in inputs.items() if c.required} == set(feature_transformer("gemm").required)
    assert not {"sm_count", "mem_bw_gbs", "peak_tflops_bf16"} & set(inputs)  # the spec sheet supplies these
    assert info.signature.outputs.input_names() == ["runtime_ms", "runtime_ms_lo", "runtime_ms_hi",
                                                    "in_distribution", "ood_reason"]
    reqs = Path(mlflow.pyfunc.get_model_dependencies("models:/serve-test/1")).read_text().split()
    assert f"perfcast=={importlib.metadata.version('perfcast')}" in reqs
    assert f"mlflow=={mlflow.__version__}" in reqs


def _perfcast(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter with only ``env``'s MLflow settings (none of the caller's)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, "-m", "perfcast.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**base, "PYTHONPATH": str(REPO), **env}, timeout=300)


def test_predict_json_from_the_registry_has_numbers_and_nulls(registered, tmp_path):
    sets = [x for k, v in ROWS[2].items() for x in ("--set", f"{k}={v}")]
    res = _perfcast("predict", "models:/serve-test/1", *sets, "--format", "json", cwd=tmp_path,
                    env={"MLFLOW_TRACKING_URI": registered})
    assert res.returncode == 0, res.stderr
    row = _strict_json(res.stdout)[0]
    assert row["m"] == 65536 and row["k"] == 8192 and row["dtype"] == "bf16" and row["in_distribution"] is False
    assert res.stderr.strip() == "", res.stderr  # no MLflow warnings or download progress bars


def test_predict_from_a_folder_without_a_tracking_store_says_so(tmp_path):
    res = _perfcast("predict", "models:/serve-test/1", "--set", "m=1", cwd=tmp_path, env={})
    assert res.returncode == 2, res.stderr
    assert "sqlite:///mlflow.db" in res.stderr and "MLFLOW_TRACKING_URI" in res.stderr
    assert "Traceback" not in res.stderr and list(tmp_path.iterdir()) == []  # no empty mlflow.db left behind


@pytest.mark.slow
def test_mlflow_serve_answers_like_the_predictor(registered, tmp_path):
    port = server.free_port()
    base = f"http://127.0.0.1:{port}"
    proc = server.start_server(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/serve-test/1", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)], f"{base}/ping", tmp_path / "serve.log",
        env={**os.environ, "MLFLOW_TRACKING_URI": registered})
    try:
        served = _post(f"{base}/invocations", {"dataframe_records": ROWS})["predictions"]
        answer = pd.DataFrame(served)
        mlflow.set_tracking_uri(registered)
        expected = Predictor.load("models:/serve-test/1").predict(pd.DataFrame(ROWS))
        bounds = ["runtime_ms", "runtime_ms_lo", "runtime_ms_hi"]
        np.testing.assert_allclose(answer[bounds].to_numpy(float), expected[bounds].to_numpy(float), rtol=1e-12)
        assert answer["in_distribution"].tolist() == expected["in_distribution"].tolist() == [True, True, False]
        reasons = [row["ood_reason"] for row in served]                     # JSON null, not NaN
        assert reasons == expected["ood_reason"].tolist() and reasons[:2] == [None, None] and "m=65536" in reasons[2]

        csv = pd.DataFrame(ROWS).to_csv(index=False)                       # the same rows as text/csv
        served_csv = _post(f"{base}/invocations", csv, "text/csv")["predictions"]
        np.testing.assert_allclose(pd.DataFrame(served_csv)[bounds].to_numpy(float), expected[bounds].to_numpy(float),
                                   rtol=1e-12)
        assert [row["ood_reason"] for row in served_csv] == reasons

        narrow = pd.DataFrame(_post(f"{base}/invocations", {"dataframe_records": ROWS[:1],
                                                            "params": {"level": 0.5}})["predictions"])
        assert answer["runtime_ms_lo"].iloc[0] < narrow["runtime_ms_lo"].iloc[0] < narrow["runtime_ms"].iloc[0]

        bad_requests = [
            ({"dataframe_records": [{k: v for k, v in ROWS[0].items() if k != "k"}]}, "k"),   # a required column
            ({"dataframe_records": [{**ROWS[0], "device": "h100_sxmm"}]}, "h100_sxmm"),       # an unknown device
            ({"dataframe_records": [{k: v for k, v in ROWS[0].items() if k != "device"}]}, "device"),
        ]
        for payload, named in bad_requests:
            code, error = _error(f"{base}/invocations", payload)
            assert code == 400 and named in error["message"], error
            assert "stack_trace" not in error and "Traceback" not in error["message"], error
    finally:
        server.stop(proc)


def test_mlflow_chatter_goes_to_the_log_and_perfcast_warnings_stay(capfd, caplog, monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    caplog.set_level(logging.DEBUG, logger="perfcast.mlflow")
    with pytest.warns(UserWarning, match="perfcast's own"), quiet_mlflow():
        logging.getLogger("mlflow.models.model").warning("Add type hints to the `predict` method")
        eprint("Successfully registered model 'x'.")
        warnings.warn("perfcast's own warning", UserWarning, stacklevel=1)
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert capfd.readouterr().err == ""
    logged = caplog.text
    assert "Add type hints" in logged and "Successfully registered model 'x'." in logged
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # the user's setting is restored (unset)
