"""The shipped built-in models: they load and predict measured kernels, guard themselves like any bundle, answer
`perfcast predict` without a model, and are rebuilt reproducibly by `python -m perfcast.experiments.builtin_models`."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from perfcast import Predictor
from perfcast.builtin import (
    ACCURACY_FILE,
    BUILTIN_DIR,
    TASKS,
    accuracy_rows,
    bundle_path,
    infer_task,
    load_builtin,
    trained_devices,
)
from perfcast.cli import app
from perfcast.datasets.importers import get_importer
from perfcast.experiments.builtin_models import BASE, INTERVALS, N_ESTIMATORS
from perfcast.experiments.builtin_selection import CANDIDATES
from perfcast.models.persistence.bundle import IncompatibleModelError, ModelFormatError, manifest_digest

runner = CliRunner()
ONE = ["--set", "m=4096", "--set", "n=4096", "--set", "k=4096", "--set", "dtype=bf16", "--set", "device=h100_sxm"]


def _h100_rows(data_root: Path, task: str, n: int) -> pd.DataFrame:
    """``n`` measured rows of ``task`` on the H100 (seeded draw), read with the importer."""
    imp = get_importer("aiconfigurator")
    root = data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if f"/h100_sxm/{task}/" in u.as_posix()]
    rows = pd.concat([imp.load(root, u)[task] for u in units], ignore_index=True)
    return rows[rows["runtime_ms"] > 0].sample(n, random_state=0).reset_index(drop=True)


def test_every_task_ships_a_bundle_with_checksums_and_its_training_devices() -> None:
    for task in TASKS:
        manifest = json.loads((bundle_path(task) / "manifest.json").read_text())
        assert manifest["task"] == task and manifest["files"], task
        devices = trained_devices(task)
        assert {"h100_sxm", "a100_sxm", "gb200"} <= set(devices)
    assert "v100_pcie_32gb" in trained_devices("gemm")  # NeuSight's GPUs are in the GEMM model
    size = sum(p.stat().st_size for p in BUILTIN_DIR.rglob("*") if p.is_file())
    assert size < 60e6, f"built-in models take {size / 1e6:.0f} MB unpacked"


@pytest.mark.parametrize("task", TASKS)
def test_shipped_bundles_carry_the_settings_build_uses(task: str) -> None:
    """A rebuild reproduces what ships: the base-model setting and plain or spec-distance-scaled intervals."""
    manifest = json.loads((bundle_path(task) / "manifest.json").read_text())
    assert manifest["metadata"]["base"] == BASE[task]
    scaled = manifest["calibration"]["grouping"].get("scaled_by") == "hardware novelty"
    assert scaled == (INTERVALS[task] == "scaled"), task
    # the L2-resident base: its hybrids saved a fitted L2 rate; without it, none did
    rates = re.findall(r'"l2_rate": ([0-9.]+)', json.dumps(manifest["estimators"]))
    assert bool(rates) == CANDIDATES[BASE[task]]["l2_resident"], task


@pytest.mark.parametrize("task", TASKS)
def test_builtin_predicts_measured_kernels_inside_its_interval(data_root: Path, task: str) -> None:
    rows = _h100_rows(data_root, task, 300)
    out = Predictor.builtin(task).predict(rows.drop(columns=["runtime_ms"]))
    truth = rows["runtime_ms"].to_numpy()
    ape = np.abs(out["runtime_ms"].to_numpy() - truth) / truth
    inside = (out["runtime_ms_lo"].to_numpy() <= truth) & (truth <= out["runtime_ms_hi"].to_numpy())
    assert out["in_distribution"].all()
    assert np.median(ape) < 0.1, np.median(ape)  # a trained GPU: the sibling table holds its own residuals
    assert inside.mean() > 0.85, inside.mean()


@pytest.mark.parametrize("task", TASKS)
def test_an_fp16_request_is_answered_as_bf16_and_flagged(data_root: Path, task: str) -> None:
    """Neither built-in model saw fp16: it is predicted as bf16 (the same width and tensor-core rate; measured on
    Vidur's fp16 GEMMs in tests/test_import_vidur.py), flagged out of distribution with the stand-in named."""
    p = Predictor.builtin(task)
    rows = _h100_rows(data_root, task, 40).drop(columns=["runtime_ms"])
    bf16 = ["bf16", "bfloat16"]
    rows = rows[rows["dtype"].isin(bf16) & (rows["kv_dtype"].isin(bf16) if "kv_dtype" in rows else True)].head(5)
    assert len(rows)
    bf16 = p.predict(rows)
    fp16 = p.predict(rows.assign(dtype="float16", **({"kv_dtype": "float16"} if "kv_dtype" in rows else {})))
    for c in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):
        assert fp16[c].tolist() == bf16[c].tolist()
    assert not fp16["in_distribution"].any()
    assert fp16["ood_reason"].str.contains("dtype 'float16' never seen in training .*; predicted as bf16").all()
    one = p.predict({**rows.iloc[0].to_dict(), "dtype": "fp16"})  # a request takes the one-row path
    assert one["runtime_ms"] == bf16["runtime_ms"].iloc[0] and "predicted as bf16" in one["ood_reason"]


def test_sheet_only_and_user_gpus_are_predictable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = Predictor.builtin("gemm")
    b200 = p.predict({"m": 8192, "n": 8192, "k": 8192, "dtype": "bf16", "device": "b200_sxm"})
    h100 = p.predict({"m": 8192, "n": 8192, "k": 8192, "dtype": "bf16", "device": "h100_sxm"})
    assert b200["runtime_ms_lo"] < b200["runtime_ms"] < b200["runtime_ms_hi"]
    assert b200["runtime_ms"] < h100["runtime_ms"]  # 2.3x the bf16 peak, 2.3x the bandwidth
    sheet = tmp_path / "mine.yaml"
    sheet.write_text("version: 1\ndevices:\n  my_h100_twin:\n    device_name: My H100 twin\n    device_kind: gpu\n"
                     "    vendor: NVIDIA\n    mem_bw_gbs: 3350\n    peak_tflops_bf16: 989\n    peak_tflops_fp32: 66.9\n"
                     "    compute_capability: '9.0'\n    tdp_w: 700\n    sm_count: 132\n    l2_mb: 50\n")
    monkeypatch.setenv("PERFCAST_HW_SPECS", str(sheet))
    twin = p.predict({"m": 8192, "n": 8192, "k": 8192, "dtype": "bf16", "device": "my_h100_twin"})
    assert twin["runtime_ms"] == pytest.approx(h100["runtime_ms"], rel=0.25)
    res = runner.invoke(app, ["hw", "--gpus"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "my_h100_twin" in res.output and "b200_sxm" in res.output and "measured" in res.output


def test_predict_without_a_model_uses_the_builtin_one() -> None:
    res = runner.invoke(app, ["predict", *ONE, "--format", "json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)[0]
    assert 0 < row["runtime_ms_lo"] < row["runtime_ms"] < row["runtime_ms_hi"] and row["in_distribution"]
    att = runner.invoke(app, ["predict", "--set", "phase=decode", "--set", "batch=64", "--set", "heads=32",
                              "--set", "kv_heads=8", "--set", "seq_q=1", "--set", "seq_kv=4096",
                              "--set", "head_dim=128", "--set", "dtype=bf16", "--set", "device=l40s",
                              "--format", "json"])
    assert att.exit_code == 0, att.output
    assert json.loads(att.output)[0]["runtime_ms"] > 0
    assert infer_task(["m", "n", "k"]) == "gemm" and infer_task(["phase", "seq_q"]) == "attention"
    bad = runner.invoke(app, ["predict", "--set", "x=1", "--set", "device=h100_sxm"])
    assert bad.exit_code == 2 and "cannot tell the task" in bad.output
    clash = runner.invoke(app, ["predict", "./model", "--task", "gemm", *ONE])
    assert clash.exit_code == 2 and "--task" in clash.output


def test_a_damaged_or_foreign_built_in_bundle_is_refused(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(bundle_path("gemm"), tmp_path / "gemm"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["versions"]["perfcast"] = "0.0.1"  # a well-formed bundle of another perfcast: digest recomputed
    manifest["digest"] = manifest_digest(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleModelError, match="python -m perfcast.experiments.builtin_models build"):
        load_builtin(copy)
    damaged = Path(shutil.copytree(bundle_path("gemm"), tmp_path / "damaged"))
    lgb = next(damaged.rglob("lightgbm.txt"))
    lgb.write_text(lgb.read_text().replace("Tree=1", "Tree=9", 1))
    with pytest.raises(ModelFormatError):
        load_builtin(damaged)


def test_shipped_accuracy_rows_are_leave_one_gpu_out_measurements() -> None:
    rows = [r for r in accuracy_rows() if r["n_estimators"] == N_ESTIMATORS and r["task"] == "gemm"]
    assert ACCURACY_FILE.is_file() and len(rows) >= 2
    for r in rows:
        assert 0 < r["mape"] < 5 and 0 <= r["coverage"] <= 1 and r["n"] > 1000


@pytest.mark.slow
def test_build_and_measure_regenerate_bundles_from_a_data_root(data_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m perfcast.experiments.builtin_models build|measure|report` on a data root laid out like shared/datasets
    (three GPUs). `build` runs as a command; `measure` and `report` run the same ``main`` in process, and `measure`
    reads the records `build` imported into the shared ``--workdir`` (one import of the three GPUs, not two)."""
    import subprocess

    from perfcast.experiments.builtin_models import main

    root = tmp_path / "data"
    (root / "aiconfigurator").mkdir(parents=True)
    for name in ("systems", "SOURCE.txt", "h100_sxm", "a100_sxm", "l40s"):
        (root / "aiconfigurator" / name).symlink_to(data_root / "aiconfigurator" / name)
    out, work = tmp_path / "models", tmp_path / "work"
    run = subprocess.run([sys.executable, "-m", "perfcast.experiments.builtin_models", "build", "--data-root", str(root), "--tasks",
                          "attention", "--out", str(out), "--trees", "5", "--workdir", str(work)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "importing aiconfigurator" in run.stdout
    model = load_builtin(out / "attention")
    assert model.metadata["data"]["devices"] == ["a100_sxm", "h100_sxm", "l40s"]
    assert model.metadata["model"]["params"]["n_estimators"] == 5
    acc = tmp_path / "accuracy.json"
    main(["measure", "--data-root", str(root), "--tasks", "attention", "--devices", "l40s", "--trees", "5", "--output",
          str(acc), "--rows-per-gpu", "4000", "--base", "current", "--workdir", str(work)])
    assert "importing" not in capsys.readouterr().out  # the records build imported are read again
    (row,) = json.loads(acc.read_text())["rows"]
    assert row["device"] == "l40s" and row["n_estimators"] == 5 and row["mape"] > 0
    assert 0 < row["level_oracle_mape"] < row["mape"]  # the L40S's per-kind level is off: knowing it helps
    assert row["n"] == row["rows_per_gpu"] == 4000 and row["base"] == "current"  # every GPU subsampled, L40S too
    main(["report"])
    report = capsys.readouterr().out
    assert report.startswith("| task | GPU left out |") and "| gemm |" in report
    main(["report", "--input", str(acc)])
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("| attention | l40s |")]
    assert f"| {row['mape']:.2%} | {row['level_oracle_mape']:.2%} |" in line
    first = (out / "attention" / "manifest.json").read_bytes()
    main(["build", "--data-root", str(root), "--tasks", "attention", "--out", str(out), "--trees", "6", "--workdir",
          str(work)])  # the same kept workdir again: the bundle is replaced, not refused as already staged
    assert load_builtin(out / "attention").metadata["model"]["params"]["n_estimators"] == 6
    assert (out / "attention" / "manifest.json").read_bytes() != first


def test_a_builtin_prediction_imports_no_mlflow_torch_or_optuna() -> None:
    """`import perfcast` loads no data library, and a built-in prediction none of the training/tracking ones."""
    import subprocess

    code = ("import sys; import perfcast; print(sorted(m for m in ('pandas', 'sklearn') if m in sys.modules)); "
            "from perfcast import Predictor; Predictor.builtin('gemm').predict({'m': 64, 'n': 64, 'k': 64, "
            "'dtype': 'bf16', 'device': 'h100_sxm'}); "
            "print(sorted(m for m in ('mlflow', 'torch', 'optuna') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["[]", "[]"], run.stdout
