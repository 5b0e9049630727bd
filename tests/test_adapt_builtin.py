"""`perfcast adapt builtin:TASK`: a fresh install adapts its shipped model, with nothing trained first; bad names and
a probed machine whose sheet lacks a field the features need are refused with what to do (exit 2)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from typer.testing import CliRunner

from perfcast import Predictor
from perfcast.cli import app
from perfcast.datasets.importers import get_importer
from perfcast.perf_probe.gemm import GemmProbe
from perfcast.perf_probe.sweep import run_sweep
from perfcast.predictor import resolve_model_dir
from perfcast.records.store import RecordStore
from perfcast.builtin import bundle_path

TARGET_GPU = "l40s"


@pytest.fixture(autouse=True)
def _own_spec_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`perfcast adapt` names the sheet it measures in the process environment: each test starts without one, and the
    teardown restores the variable as it was (a delenv of an absent variable records nothing, hence the setenv)."""
    monkeypatch.setenv("PERFCAST_HW_SPECS", "")
    monkeypatch.delenv("PERFCAST_HW_SPECS")


@pytest.fixture(scope="module")
def l40s(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real aiconfigurator bf16 GEMMs of the L40S: 48 revealed, 300 to predict."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    unit = next(u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix() and TARGET_GPU in u.as_posix())
    rows = imp.load(root, unit)["gemm"]
    rows = rows[(rows["device_id"] == TARGET_GPU) & (rows["dtype"] == "bfloat16")].sample(348, random_state=0)
    return rows.iloc[:48].reset_index(drop=True), rows.iloc[48:].reset_index(drop=True)


def test_a_builtin_name_is_the_shipped_bundle() -> None:
    assert resolve_model_dir("builtin:gemm") == bundle_path("gemm")
    assert resolve_model_dir("builtin:attention") == bundle_path("attention")


def test_the_cli_adapts_the_builtin_model_by_name(l40s, tmp_path: Path) -> None:
    revealed, test = l40s
    store = tmp_path / "store"
    RecordStore(store).append(revealed, "gemm")
    out = tmp_path / "adapted"
    res = CliRunner().invoke(app, ["adapt", "builtin:gemm", "--store", str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    adapted = Predictor.load(out)
    assert adapted.metadata["adaptation"]["base_model"] == "builtin:gemm"
    assert adapted.metadata["adaptation"]["rows"] == len(revealed)
    pd.testing.assert_frame_equal(adapted.predict(test), Predictor.builtin("gemm").adapt(revealed).predict(test))


@pytest.mark.parametrize("name", ["builtin:nope", "builtin:"])
def test_an_unknown_builtin_name_is_refused_with_the_names_there_are(name: str, l40s, tmp_path: Path) -> None:
    RecordStore(tmp_path / "store").append(l40s[0], "gemm")
    res = CliRunner().invoke(app, ["adapt", name, "--store", str(tmp_path / "store"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "no built-in model for task" in res.output and "gemm, attention" in res.output
    assert not (tmp_path / "o").exists()


def test_a_probed_machine_without_its_bandwidth_is_told_how_to_measure_it(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "store")
    configs = [{"op": "matmul", "m": m, "n": 64, "k": 64, "batch": 1, "dtype": "float32", "layout": "nn",
                "backend": "torch", "device": "cpu", "n_threads": 1} for m in (32, 64, 96)]
    assert run_sweep(GemmProbe(max_time_s=0.05, warmup_s=0.01), store, configs=configs, progress=False).measured == 3
    res = CliRunner().invoke(app, ["adapt", "builtin:gemm", "--store", str(store.root), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.split())
    assert "lack the memory bandwidth (mem_bw_gbs)" in flat and f"perfcast probe cpu --store {store.root}" in flat
    assert res.exception is None or isinstance(res.exception, SystemExit)  # a message, not a traceback


def test_the_cli_marks_a_kept_stack_as_chosen_beside_its_correction(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A `stack W` row is the chosen correction mixed with a model of the rows alone: when the adaptation keeps one
    (its report's ``k_rows_model_weight``), the table marks it, so its lower error is not read as passed over."""
    import perfcast.workflows.adapt as workflow

    report = {"seconds": 0.1, "chosen": "fine", "k_rows_model_weight": 0.75, "starts_from": "base model",
              "cv_mean_ape": {"none": 1.15, "fine": 0.61, "stack 0.5": 0.54, "stack 0.75": 0.53, "stack 1": 0.55}}
    done = SimpleNamespace(device="AMD EPYC", rows=128, report=report, path=tmp_path / "o", specs_path=None,
                           run_id=None, registered_version=None)
    monkeypatch.setattr(workflow, "adapt_from_store", lambda *args, **kwargs: done)
    (tmp_path / "store").mkdir()
    res = CliRunner().invoke(app, ["adapt", "builtin:gemm", "--store", str(tmp_path / "store"), "--out",
                                   str(tmp_path / "o")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    marked = [line for line in res.output.splitlines() if "(chosen" in line]
    assert len(marked) == 2
    assert "fine (chosen)" in marked[0] and "stack 0.75 (chosen, on top of fine)" in marked[1]
    report["k_rows_model_weight"] = 0.0  # no stack kept: the correction alone is marked
    res = CliRunner().invoke(app, ["adapt", "builtin:gemm", "--store", str(tmp_path / "store"), "--out",
                                   str(tmp_path / "o")], env={"COLUMNS": "200"})
    (alone,) = [line for line in res.output.splitlines() if "(chosen" in line]
    assert "fine (chosen)" in alone


def test_a_probed_machine_without_gemm_records_is_told_how_to_measure_its_peaks(tmp_path: Path) -> None:
    """An attention-only store of this CPU (no vendor sheet, no GEMM to take its peak rates from): exit 2 naming the
    command, not a traceback."""
    from perfcast.perf_probe.attention import AttentionProbe

    store = RecordStore(tmp_path / "store")
    configs = [{"device": "cpu", "phase": "decode", "batch": 2, "heads": 4, "kv_heads": 4, "seq_q": 1, "seq_kv": s,
                "head_dim": 64, "causal": False, "dtype": "float32", "backend": "auto", "n_threads": 1}
               for s in (64, 128, 256)]
    assert run_sweep(AttentionProbe(max_time_s=0.05, warmup_s=0.01), store, configs=configs,
                     progress=False).measured == 3
    res = CliRunner().invoke(app, ["adapt", "builtin:attention", "--store", str(store.root), "--out",
                                   str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    flat = " ".join(res.output.split())
    assert "holds none of its GEMM measurements" in flat and f"perfcast probe gemm --quick --store {store.root}" in flat
    assert res.exception is None or isinstance(res.exception, SystemExit)  # a message, not a traceback
    assert not (tmp_path / "o").exists()
