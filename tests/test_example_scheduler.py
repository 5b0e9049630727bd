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
from perfcast.models.bundle import save_model
from perfcast.models.intervals import ConformalRegressor

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
