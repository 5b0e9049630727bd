"""A model logged to MLflow is data: loading it through MLflow (or the Predictor) runs nothing from the model folder.

The model's pyfunc loader is the installed ``perfcast.mlflow_model``; the test plants code in every place a
model folder could carry it (appended to any .py file, new .py files beside MLmodel, in the bundle, in a
``code/`` folder shadowing perfcast, the old ``artifacts/`` location) and loads the model in a fresh
interpreter both ways: the marker file those lines would write must never appear. It also checks that the
Predictor's own trust (the bundle's checksums) is what MLflow loading enforces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.features import feature_transformer
from perfcast.models import make_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.predictor import BUNDLE_IN_MLFLOW_MODEL
from perfcast.training import tracking
from perfcast.training.train import model_input

REPO = Path(__file__).resolve().parents[1]
ROWS = [{"m": 1024.0, "n": 2048.0, "k": 512.0, "dtype": "fp32", "device": "rtx_4070"}]  # pyfunc takes doubles
LOAD_BOTH_WAYS = """
import json, sys
import mlflow, pandas as pd
from perfcast import Predictor
rows = pd.DataFrame(json.loads(sys.argv[1]))
served = mlflow.pyfunc.load_model("models:/safe/1").predict(rows)
direct = Predictor.load(sys.argv[2]).predict(rows)
print(json.dumps([served["runtime_ms"].tolist(), direct["runtime_ms"].tolist()]))
"""


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logged(data_root: Path, tmp_path_factory, new_mlflow_db) -> tuple[str, str, Path]:
    """A small forest on the RTX 4070 GEMM table, logged and registered as ``safe`` in a fresh SQLite store;
    returns (tracking URI, run URI of the model, the model's folder in the artifact store). The tests below
    tamper with it in order: planted code first (the model must still load), a damaged bundle last."""
    tmp_path = tmp_path_factory.mktemp("safety")
    imp = get_importer("gpperf-ada-matmul")
    root = data_root / "gpperf-ada-matmul"
    df = pd.concat([imp.load(root, u)["gemm"] for u in imp.units(root)], ignore_index=True)
    df = df[df["runtime_ms"].notna()].reset_index(drop=True)
    X = model_input(df, "gemm")
    model = ConformalRegressor(make_model("rf", "gemm", ["runtime_ms"], {"n_estimators": 10})).fit(X, df[["runtime_ms"]])
    uri = new_mlflow_db(tmp_path)
    before = mlflow.get_tracking_uri()
    tracking.start(uri, "safety")
    with mlflow.start_run() as run:
        info = tracking.log_model(model, X, "safe", feature_transformer("gemm").required)
    folder = Path(  # the stored copy in the artifact store, not a download
        mlflow.get_logged_model(info.model_id).artifact_location.removeprefix("file://"))
    yield uri, f"runs:/{run.info.run_id}/model", folder
    mlflow.set_tracking_uri(before)


def _load_in_fresh_interpreter(uri: str, run_uri: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", LOAD_BOTH_WAYS, json.dumps(ROWS), run_uri],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_logged_model_holds_no_code_and_planted_code_never_runs(logged, tmp_path):
    uri, run_uri, folder = logged
    assert (folder / "MLmodel").is_file() and (folder / BUNDLE_IN_MLFLOW_MODEL / "manifest.json").is_file()
    flavor = mlflow.models.Model.load(str(folder / "MLmodel")).flavors["python_function"]
    assert flavor["loader_module"] == "perfcast.mlflow_model" and not flavor.get("code")
    assert not [p for p in folder.rglob("*") if p.suffix in (".py", ".pkl", ".pickle", ".cloudpickle")]

    before = _load_in_fresh_interpreter(uri, run_uri, tmp_path)
    assert before.returncode == 0, before.stderr[-3000:]

    marker = tmp_path / "code-ran"
    payload = f"\nimport pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n"
    planted = [folder / "mlflow_model.py", folder / "python_model.py", folder / "artifacts" / "mlflow_model.py",
               folder / BUNDLE_IN_MLFLOW_MODEL / "model.py", folder / "code" / "perfcast" / "__init__.py",
               folder / "code" / "perfcast" / "mlflow_model.py", folder / "sitecustomize.py"]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# planted" + payload)
    for path in folder.rglob("*.py"):  # every .py file in the model folder, planted or not
        with path.open("a") as f:
            f.write(payload)
    assert len(list(folder.rglob("*.py"))) == len(planted)

    after = _load_in_fresh_interpreter(uri, run_uri, folder)  # the model folder as CWD too
    assert after.returncode == 0, after.stderr[-3000:]
    assert not marker.exists()
    assert json.loads(after.stdout) == json.loads(before.stdout)  # same answers, both ways


def test_mlflow_loading_refuses_a_bundle_the_predictor_refuses(logged, tmp_path):
    uri, run_uri, folder = logged
    weights = [p for p in (folder / BUNDLE_IN_MLFLOW_MODEL).rglob("*") if p.is_file() and p.name != "manifest.json"]
    target = max(weights, key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    res = _load_in_fresh_interpreter(uri, run_uri, tmp_path)
    assert res.returncode != 0
    assert target.name in res.stderr and ("checksum" in res.stderr.lower() or "sha256" in res.stderr.lower())
