"""``perfcast predict`` on a model trained on a real slice: --set, --input CSV/Parquet, table/CSV/JSON, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.cli.predict import predict_app

SHAPE = ["--set", "m=4096", "--set", "n=4096", "--set", "k=4096", "--set", "dtype=bf16"]


@pytest.fixture(scope="module")
def model_dir(data_root: Path, tmp_path_factory) -> Path:
    """A LightGBM runtime model on 200 bf16 GEMMs of each of three aiconfigurator GPUs."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if u.match("*/gemm/trtllm/*/gemm_perf.parquet")
             and u.parts[-5] in ("a100_sxm", "h100_sxm", "l40s")]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    train = df[df["dtype"] == "bfloat16"].groupby("device_id").sample(n=200, random_state=0).reset_index(drop=True)
    model = ConformalRegressor(make_model("lightgbm", "gemm", ["runtime_ms"], {"n_estimators": 40}))
    model.fit(train, train[["runtime_ms"]])
    return save_model(model, "gemm", train, tmp_path_factory.mktemp("cli") / "model")


def run(*args: str):
    return CliRunner().invoke(predict_app, [str(a) for a in args])


def test_set_values_predict_one_row_as_json(model_dir):
    res = run(model_dir, *SHAPE, "--set", "device=h100_sxm", "--format", "json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    expected = Predictor.load(model_dir).predict({"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16",
                                                  "device_id": "h100_sxm"})
    assert len(rows) == 1 and rows[0]["device"] == "h100_sxm" and rows[0]["m"] == 4096
    for key in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):
        assert rows[0][key] == pytest.approx(expected[key], rel=1e-12)
    assert rows[0]["in_distribution"] is expected["in_distribution"] is True and rows[0]["ood_reason"] is None


def test_input_files_with_set_overrides_as_csv_and_table(model_dir, tmp_path):
    configs = pd.DataFrame({"m": [1024, 8192, 10**6], "n": [1024, 8192, 4096], "k": [512, 8192, 4096],
                            "dtype": ["bf16", "bfloat16", "bf16"]})
    configs.to_csv(tmp_path / "configs.csv", index=False)
    res = run(model_dir, "--input", tmp_path / "configs.csv", "--set", "device_id=l40s", "--format", "csv")
    assert res.exit_code == 0, res.output
    out = pd.read_csv(io.StringIO(res.output))
    assert list(out.columns) == ["m", "n", "k", "dtype", "device_id", "runtime_ms", "runtime_ms_lo",
                                 "runtime_ms_hi", "in_distribution", "ood_reason"]
    direct = Predictor.load(model_dir).predict(configs.assign(device_id="l40s"))
    pd.testing.assert_series_equal(out["runtime_ms"], direct["runtime_ms"], rtol=1e-9)
    assert out["in_distribution"].tolist() == [True, True, False]
    assert out["ood_reason"].iloc[2].startswith("m=1e+06 above training max")

    configs.assign(device_id="a100_sxm").to_parquet(tmp_path / "configs.parquet")
    res = run(model_dir, "-i", tmp_path / "configs.parquet", "--level", "0.5", "-o", tmp_path / "out.txt")
    assert res.exit_code == 0, res.output
    table = (tmp_path / "out.txt").read_text()
    assert "runtime_ms_lo" in table and "a100_sxm" in table and table.count("\n") >= 5


@pytest.mark.parametrize("args, message", [
    (["--set", "m=4096", "--set", "n=4096", "--set", "dtype=bf16", "--set", "device=l40s"], "lacks column(s) ['k']"),
    ([*SHAPE, "--set", "device=l40z"], "unknown device 'l40z' (row 0); did you mean l40s"),
    ([*SHAPE, "--set", "m"], "--set 'm': expected COLUMN=VALUE"),
    ([], "nothing to predict: give --input FILE and/or --set"),
    (["--input", "configs.xlsx"], "unknown file type '.xlsx'"),
])
def test_errors_are_one_clear_line(model_dir, args, message):
    res = run(model_dir, *args)
    assert res.exit_code == 2
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output


def test_a_path_that_is_not_a_model_is_refused(tmp_path):
    res = run(tmp_path, *SHAPE, "--set", "device=l40s")
    assert res.exit_code == 2 and "holds no perfcast model" in " ".join(res.output.split())
