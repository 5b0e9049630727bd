"""examples/scheduler.py on a model trained on real aiconfigurator GEMMs of three GPUs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor

GPUS = ["h100_sxm", "l40s", "a100_sxm"]


def _example():  # noqa: ANN202
    path = Path(__file__).resolve().parents[1] / "examples" / "scheduler.py"
    spec = importlib.util.spec_from_file_location("scheduler_example", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is created
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def model_dir(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix() and u.parts[-5] in GPUS]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    train = df[df["dtype"] == "bfloat16"].groupby("device_id").sample(n=400, random_state=0).reset_index(drop=True)
    model = ConformalRegressor(make_model("lightgbm", "gemm", ["runtime_ms"], {"n_estimators": 80}), n_splits=3)
    model.fit(train, train[["runtime_ms"]])
    return save_model(model, "gemm", train, tmp_path_factory.mktemp("m") / "gemm", {"model": "lightgbm"})


def test_jobs_go_to_the_device_that_finishes_first(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ex = _example()
    p = Predictor.load(model_dir)
    plan = ex.schedule(p, ex.DEFAULT_JOBS, GPUS)
    assert sorted(a.job for a in plan) == sorted(ex.DEFAULT_JOBS["job"])
    # every job went where it finished earliest given the queue at the time it was placed
    free = dict.fromkeys(GPUS, 0.0)
    for a in plan:
        row = ex.DEFAULT_JOBS[ex.DEFAULT_JOBS["job"] == a.job].drop(columns="job").iloc[0].to_dict()
        runtimes = {d: p.predict({**row, "device": d})["runtime_ms"] for d in GPUS}
        assert a.start_ms == pytest.approx(free[a.device])
        assert a.finish_ms == pytest.approx(min(free[d] + runtimes[d] for d in GPUS), rel=1e-9)
        free[a.device] = a.finish_ms
        assert a.runtime_lo_ms <= a.runtime_ms <= a.runtime_hi_ms
    # the H100 is the fastest of the three on big bf16 GEMMs: it must get work
    assert "h100_sxm" in {a.device for a in plan}
    upper = ex.schedule(p, ex.DEFAULT_JOBS, GPUS, risk="upper")
    assert max(a.finish_ms for a in upper) >= max(a.finish_ms for a in plan) * 0.999
    ex.main([str(model_dir), "--devices", ",".join(GPUS)])
    assert "makespan" in capsys.readouterr().out
    with pytest.raises(ValueError, match="risk must be"):
        ex.schedule(p, ex.DEFAULT_JOBS, GPUS, risk="maybe")


@pytest.fixture(scope="module")
def power_model_dir(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runtime and board power of GB200's TensorRT-LLM bf16 GEMMs (the other GPUs come from their spec sheets)."""
    imp, root = get_importer("aiconfigurator-power"), data_root / "aiconfigurator-power"
    unit = next(u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix())
    df = imp.load(root, unit)["gemm"]
    train = df[df["dtype"] == "bfloat16"].sample(n=1500, random_state=0).reset_index(drop=True)
    targets = ["runtime_ms", "power_w"]
    params = {"runtime": {"n_estimators": 80}, "correction": {"n_estimators": 80}}
    model = ConformalRegressor(make_model("power", "gemm", targets, params), n_splits=3).fit(train, train[targets])
    return save_model(model, "gemm", train, tmp_path_factory.mktemp("m") / "power", {"model": "power"})


@pytest.mark.parametrize("objective", ["energy", "edp"])
def test_energy_objectives_place_each_job_where_its_cost_is_least(
        power_model_dir: Path, objective: str, capsys: pytest.CaptureFixture[str]) -> None:
    ex = _example()
    p = Predictor.load(power_model_dir)
    devices = ["gb200", "h100_sxm", "l40s"]
    plan = ex.schedule(p, ex.DEFAULT_JOBS, devices, objective=objective)
    assert sorted(a.job for a in plan) == sorted(ex.DEFAULT_JOBS["job"])
    free = dict.fromkeys(devices, 0.0)
    for a in plan:
        row = ex.DEFAULT_JOBS[ex.DEFAULT_JOBS["job"] == a.job].drop(columns="job").iloc[0].to_dict()
        got = {d: p.predict({**row, "device": d}) for d in devices}
        cost = {d: ex.OBJECTIVES[objective](free[d] + got[d]["runtime_ms"], got[d]["energy_j"]) for d in devices}
        assert cost[a.device] == pytest.approx(min(cost.values()), rel=1e-9)
        assert a.energy_j == pytest.approx(got[a.device]["energy_j"], rel=1e-9)
        assert a.energy_lo_j <= a.energy_j <= a.energy_hi_j
        free[a.device] = a.finish_ms
    total = sum(a.energy_j for a in plan)
    by_time = ex.schedule(p, ex.DEFAULT_JOBS, devices, objective="time")
    if objective == "energy":  # minimising each job's energy can only lower the total
        assert total <= sum(a.energy_j for a in by_time) * (1 + 1e-9)
    ex.main([str(power_model_dir), "--devices", ",".join(devices), "--objective", objective])
    assert "J;" in capsys.readouterr().out


def test_energy_objective_needs_a_power_model(model_dir: Path) -> None:
    ex = _example()
    with pytest.raises(ValueError, match="needs energy"):
        ex.schedule(Predictor.load(model_dir), ex.DEFAULT_JOBS, GPUS, objective="energy")
    with pytest.raises(ValueError, match="objective must be"):
        ex.schedule(Predictor.load(model_dir), ex.DEFAULT_JOBS, GPUS, objective="cost")
