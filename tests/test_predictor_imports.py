"""Loading a model for prediction imports what predicting needs and nothing of training (issue 18): a fresh
process is what ``perfcast predict`` and a serving worker pay for on every start."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: libraries only training, tracking or other model kinds use
NOT_FOR_PREDICTING = ("mlflow", "torch", "optuna", "lightgbm", "xgboost", "sklearn.ensemble", "sklearn.isotonic",
                      "sklearn.neighbors", "perfcast.models.registry", "perfcast.models.estimators.trees")


def imported_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_perfcast_imports_no_library():
    loaded = imported_after("import perfcast")
    assert not {"pandas", "numpy.linalg", "sklearn", "numba", *NOT_FOR_PREDICTING} & loaded


@pytest.mark.parametrize("task", ["gemm", "attention"])
def test_loading_and_predicting_with_a_built_in_model_imports_no_training_library(task):
    config = ({"m": 4096, "n": 4096, "k": 4096, "dtype": "bfloat16", "device_id": "h100_sxm"} if task == "gemm" else
              {"phase": "decode", "batch": 8, "heads": 32, "kv_heads": 8, "seq_q": 1, "seq_kv": 2048,
               "head_dim": 128, "dtype": "bfloat16", "kv_dtype": "bfloat16", "device_id": "h100_sxm"})
    loaded = imported_after(
        "from perfcast import Predictor\nfrom perfcast.builtin import bundle_path\n"
        f"p = Predictor.load(bundle_path({task!r}))\nassert p.predict({config!r})['runtime_ms'] > 0")
    assert "perfcast.predictor" in loaded  # the check ran what it meant to
    assert not set(NOT_FOR_PREDICTING) & loaded, sorted(set(NOT_FOR_PREDICTING) & loaded)
