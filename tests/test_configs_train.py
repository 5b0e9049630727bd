"""Every shipped config in configs/ trains, registers its model, and loads back by registry URI.

Each config runs as shipped (task, targets, filters, model and its parameters, protocol, intervals), with three
test-only changes that keep the suite to minutes: its dataset is a seeded slice (a few devices of
aiconfigurator, at most ``PER_UNIT`` rows of each file) imported once into a shared store, the model is
small (few trees, one epoch), and runs go to a temporary MLflow store. The registered model must reproduce the
run's logged test error through ``Predictor.load("models:/NAME/1")``: the model that was scored is the one
that was registered.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore
from perfcast.eval.metrics import mape
from perfcast.predictor import Predictor
from perfcast.training.config import parse_config
from perfcast.training.tracking import flatten
from perfcast.training.train import load_records, split_records, train

pytestmark = pytest.mark.slow

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
#: rows kept of each dataset file (gpperf-cutlass is kept whole: its paper split counts every row)
PER_UNIT = 700
WHOLE = {"gpperf-cutlass", "perfcastdb-sample"}
#: aiconfigurator devices kept: the held-out GB200, its Blackwell siblings, and two Hopper/Ampere parts
AICONFIGURATOR_DEVICES = {"gb200", "b300_sxm", "gb300", "h100_sxm", "a100_sxm"}
#: parameters that make each model small (only the ones the config's model takes)
SMALL_TREES = {"n_estimators": 15}
SMALL_NETWORK = {"max_epochs": 1, "batch_size": 512}


def _config_data(path: Path) -> dict[str, Any]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data.setdefault("name", path.stem)
    return data


def _small(model: dict[str, Any]) -> dict[str, Any]:
    """The config's model with the same structure and a fraction of the work."""
    params = dict(model.get("params", {}))
    network = model["name"] == "group_attention" or params.get("base") == "group_attention"
    params.update(SMALL_NETWORK if network else SMALL_TREES)
    return {**model, "params": params}


@pytest.fixture(scope="module")
def sliced_stores(data_root: Path, tmp_path_factory) -> dict[str, Path]:
    """Per dataset the shipped configs import, a store holding a seeded slice of it (one dataset per store,
    as a config's own temporary import store would hold)."""
    stores = {}
    datasets = {spec["dataset"] for p in CONFIGS for spec in _config_data(p).get("data", {}).get("imports", [])}
    for name in sorted(datasets):
        store = RecordStore(tmp_path_factory.mktemp("slices") / name)
        imp, root = get_importer(name), data_root / name
        for unit in imp.units(root):
            if name == "aiconfigurator" and unit.relative_to(root).parts[0] not in AICONFIGURATOR_DEVICES:
                continue
            for task, frame in imp.load(root, unit).items():
                if len(frame) > PER_UNIT and name not in WHOLE:
                    frame = frame.sample(n=PER_UNIT, random_state=0)
                if len(frame):
                    store.append(frame, task)
        stores[name] = store.root
    return stores


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_trains_registers_and_loads(path: Path, sliced_stores: dict[str, Path], tmp_path: Path,
                                                  monkeypatch, new_mlflow_db):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = _config_data(path)
    (dataset,) = {spec["dataset"] for spec in data["data"]["imports"]}
    data["data"] = {"store": str(sliced_stores[dataset]), "filters": data["data"].get("filters", {})}
    data["model"] = _small(data["model"])
    config = parse_config(data, base_dir=path.parent, source=str(path))
    uri = new_mlflow_db(tmp_path)
    before = mlflow.get_tracking_uri()
    try:
        result = train(config, tracking_uri=uri)
        assert result.registered_version == 1
        client = mlflow.MlflowClient(uri)
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED"
        asked = flatten({"model": data["model"], "eval": {"protocol": data["eval"]["protocol"]},
                         **{k: data[k] for k in ("intervals",) if k in data}})
        assert {k: run.data.params.get(k) for k in asked} == asked  # the run's params: the config as written
        plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
        primary = config.targets[0]
        assert {f"plots/pred_vs_measured_{primary}.png", f"plots/interval_coverage_{primary}.png"} <= plots, plots

        if "variants" in config.model.params:  # members on different column sets: importances per member, full rows
            csv = client.download_artifacts(result.run_id, "feature_importances.csv", str(tmp_path))
            imp = pd.read_csv(csv, index_col="feature")
            assert imp.shape[1] == len(config.model.params["variants"]) and imp.notna().all().all()
            assert (imp.sum() > 0).all()  # every member scored on the full feature rows (0 where it never looked)
        predictor = Predictor.load(f"models:/{config.registered_model_name}/1")
    finally:
        mlflow.set_tracking_uri(before)
    split = split_records(load_records(config.data, config.task).frame, config.eval, config.seed,
                          list(config.targets))
    answer = predictor.predict(split.test)
    assert len(answer) == len(split.test) and answer["ood_reason"].map(lambda r: r is None or isinstance(r, str)).all()
    measured = split.test[primary].to_numpy(dtype=float)
    seen = ~np.isnan(measured)
    assert 0 < result.metrics[f"test_{primary}_mape"] < np.inf and 0 <= result.metrics[f"test_{primary}_coverage"] <= 1
    assert answer[primary][seen].nunique() > 1  # a fitted model, not a constant
    assert mape(measured[seen], answer[primary].to_numpy(dtype=float)[seen]) == pytest.approx(
        result.metrics[f"test_{primary}_mape"], rel=1e-6)
    inside = (answer[f"{primary}_lo"] <= measured) & (measured <= answer[f"{primary}_hi"])
    assert np.mean(inside.to_numpy()[seen]) == pytest.approx(result.metrics[f"test_{primary}_coverage"], rel=1e-6)
