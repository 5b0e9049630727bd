"""Loading a model for prediction imports what predicting needs and nothing of training (issue 18): a fresh
process is what ``perfcast predict`` and a serving worker pay for on every start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.persistence.adapted import save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor

#: libraries only training, tracking or other model kinds use (scikit-learn included: perfcast's estimators
#: derive from perfcast.features.estimator_base, and its import pulls in SciPy's stats)
NOT_FOR_PREDICTING = ("mlflow", "torch", "optuna", "lightgbm", "xgboost", "sklearn", "scipy.stats",
                      "perfcast.models.registry", "perfcast.models.estimators.trees",
                      # the record store: pyarrow's Parquet and filesystems, filelock
                      "perfcast.records.store", "pyarrow.parquet", "pyarrow.fs", "filelock")
#: what loading a model and answering a few configurations does without: numba and the kernels it compiles are
#: loaded by the first large batch (or after many small ones; perfcast.models.persistence.small_walk)
NOT_FOR_A_FEW_PREDICTIONS = (*NOT_FOR_PREDICTING, "numba", "perfcast.models.persistence.kernels")
#: and what a request given as a dict does without: it is answered from NumPy arrays (perfcast.lazy)
NOT_FOR_A_DICT_REQUEST = (*NOT_FOR_A_FEW_PREDICTIONS, "pandas", "pyarrow")
GEMM = {"m": 4096, "n": 4096, "k": 4096, "dtype": "bfloat16", "device_id": "h100_sxm"}


def imported_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_perfcast_imports_no_library():
    loaded = imported_after("import perfcast")
    assert not {"pandas", "numpy.linalg", "sklearn", "numba", *NOT_FOR_PREDICTING} & loaded


def test_reaching_the_predictor_imports_no_training_library():
    loaded = imported_after("import perfcast\nperfcast.Predictor")
    assert "perfcast.predictor" in loaded
    assert not {*NOT_FOR_PREDICTING, "pandas"} & loaded, sorted({*NOT_FOR_PREDICTING, "pandas"} & loaded)


@pytest.mark.parametrize("task", ["gemm", "attention"])
def test_loading_and_predicting_with_a_built_in_model_imports_no_training_library(task):
    config = ({"m": 4096, "n": 4096, "k": 4096, "dtype": "bfloat16", "device_id": "h100_sxm"} if task == "gemm" else
              {"phase": "decode", "batch": 8, "heads": 32, "kv_heads": 8, "seq_q": 1, "seq_kv": 2048,
               "head_dim": 128, "dtype": "bfloat16", "kv_dtype": "bfloat16", "device_id": "h100_sxm"})
    loaded = imported_after(
        "from perfcast import Predictor\nfrom perfcast.builtin import bundle_path\n"
        f"p = Predictor.load(bundle_path({task!r}))\nassert p.predict({config!r})['runtime_ms'] > 0")
    assert "perfcast.predictor" in loaded  # the check ran what it meant to
    assert "perfcast.models.persistence.compiled" in loaded
    assert not set(NOT_FOR_A_DICT_REQUEST) & loaded, sorted(set(NOT_FOR_A_DICT_REQUEST) & loaded)


@pytest.fixture(scope="module")
def bundles(data_root: Path, tmp_path_factory) -> dict[str, Path]:
    """A hybrid trained on real H100 and A100 GEMMs, and the built-in GEMM model adapted to 128 real L40S rows (enough
    for its correction to keep a per-kind level, which a request then reads)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix() and u.parts[-5] in ("h100_sxm", "a100_sxm",
                                                                                                 "l40s")]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"] == "bfloat16"].groupby("device_id").sample(n=300, random_state=0)
    train, l40s = df[df["device_id"] != "l40s"], df[df["device_id"] == "l40s"].head(128)
    out = tmp_path_factory.mktemp("bundles")
    model = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 30}), n_splits=3)
    hybrid = save_model(model.fit(train, train[["runtime_ms"]]), "gemm", train, out / "hybrid")
    adapted = save_adapted(Predictor.builtin("gemm").adapt(l40s).model, out / "adapted")
    return {"hybrid": hybrid, "adapted": adapted}


@pytest.mark.parametrize("kind", ["hybrid", "adapted"])
def test_loading_and_predicting_with_a_saved_bundle_imports_no_training_library(bundles, kind):
    loaded = imported_after(f"from perfcast import Predictor\np = Predictor.load({str(bundles[kind])!r})\n"
                            f"assert p.predict({GEMM!r})['runtime_ms'] > 0")
    assert "perfcast.predictor" in loaded
    assert not set(NOT_FOR_A_DICT_REQUEST) & loaded, sorted(set(NOT_FOR_A_DICT_REQUEST) & loaded)
