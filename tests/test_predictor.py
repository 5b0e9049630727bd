"""The Predictor and the model bundle on a real slice: exact round trips, dict/frame/rank, clear errors, safe files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.features import MissingColumnError, UnknownDeviceError
from perfcast.models import make_model
from perfcast.models.persistence.bundle import (
    IncompatibleModelError,
    ModelFormatError,
    library_versions,
    manifest_digest,
    save_model,
)
from perfcast.models.uncertainty.intervals import ConformalRegressor

TRAIN_GPUS = ["a100_sxm", "h100_sxm", "b300_sxm", "l40s", "rtx_pro_6000_server"]
FAST = {"lightgbm": {"n_estimators": 60}, "xgboost": {"n_estimators": 60}, "rf": {"n_estimators": 30},
        "hybrid": {"n_estimators": 60},
        # sibling transfer over a seed-bagged two-view hybrid ensemble: every head kind of the GPU defaults at once
        "transfer": {"n_estimators": 40, "seeds": [0, 1], "variants": [{}, {"columns": ["shape", "work"]}]},
        "group_attention": {"max_epochs": 2, "d_model": 16, "batch_size": 256, "n_threads": 1}}
ONE = {"m": 4096, "n": 4096, "k": 4096, "dtype": "bfloat16", "device": "h100_sxm"}


@pytest.fixture(scope="module")
def split(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """200 bf16 GEMM latencies on each of five aiconfigurator GPUs to train on, 100 on the GB200 (never trained on)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix()]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"] == "bfloat16"]
    train = df[df["device_id"].isin(TRAIN_GPUS)].groupby("device_id").sample(n=200, random_state=0)
    return train.reset_index(drop=True), df[df["device_id"] == "gb200"].sample(100, random_state=0)


def _fit(name: str, train: pd.DataFrame, targets: tuple[str, ...] = ("runtime_ms",)) -> ConformalRegressor:
    pipe = make_model(name, "gemm", list(targets), FAST[name])
    return ConformalRegressor(pipe, n_splits=3).fit(train, train[list(targets)])


@pytest.fixture(scope="module")
def saved(split, tmp_path_factory) -> tuple[ConformalRegressor, Path]:
    train, _ = split
    model = _fit("lightgbm", train)
    return model, save_model(model, "gemm", train, tmp_path_factory.mktemp("models") / "lgbm", {"model": "lightgbm"})


@pytest.fixture(scope="module")
def predictor(saved) -> Predictor:
    return Predictor.load(saved[1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(path, tmp_path / "copy"))


def _edit_manifest(path: Path, edit) -> None:
    """Edit the manifest as perfcast itself would write it (digest recomputed: the digest catches damage, and
    these tests are about what a well-formed manifest from another environment or of another kind leads to)."""
    doc = json.loads((path / "manifest.json").read_text())
    edit(doc)
    doc["digest"] = manifest_digest(doc)
    (path / "manifest.json").write_text(json.dumps(doc))


# ------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", ["lightgbm", "xgboost", "rf", "hybrid", "transfer", "group_attention"])
def test_a_saved_model_predicts_exactly_what_the_fitted_one_did(name, split, tmp_path):
    train, test = split
    model = _fit(name, train)
    loaded = Predictor.load(save_model(model, "gemm", train, tmp_path / name))
    out = loaded.predict(test)
    lo, hi = model.predict_interval(test)
    np.testing.assert_allclose(out["runtime_ms"], model.predict(test), rtol=1e-12)
    np.testing.assert_allclose(out["runtime_ms_lo"], lo, rtol=1e-12)
    np.testing.assert_allclose(out["runtime_ms_hi"], hi, rtol=1e-12)
    assert list(out.index) == list(test.index)
    manifest = json.loads((tmp_path / name / "manifest.json").read_text())
    assert manifest["versions"]["scikit-learn"] == library_versions()["scikit-learn"]
    assert ("torch" in manifest["requires"]) == (name == "group_attention")


def test_bundle_files_are_data_not_pickles(saved, split, tmp_path):
    _, path = saved
    files = [p for p in path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".json", ".txt", ".npy", ".npz"}  # LightGBM text, JSON, numpy arrays
    assert (path / "estimators" / "runtime_ms" / "lightgbm.txt").read_text().startswith("tree\n")
    for p in files:
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
    np.load(path / "calibration" / "runtime_ms.npy", allow_pickle=False)
    with np.load(path / "estimators" / "runtime_ms" / "forest.npz", allow_pickle=False) as forest:  # parsed trees
        assert forest["threshold"].dtype == np.float64
    # a scikit-learn forest is stored with skops, which refuses the types perfcast has not allowed
    train, _ = split
    forest = save_model(_fit("rf", train), "gemm", train, tmp_path / "rf")
    assert [p.name for p in forest.rglob("*.skops")] == ["model.skops"]


# ------------------------------------------------------------------------------------------ predictions
def test_dict_and_frame_agree_and_carry_intervals_and_flags(predictor, split):
    _, test = split
    frame = predictor.predict(test.head(5))
    assert list(frame.columns) == ["runtime_ms", "runtime_ms_lo", "runtime_ms_hi", "in_distribution", "ood_reason"]
    row = test.iloc[2]
    one = predictor.predict({"m": row["m"], "n": row["n"], "k": row["k"], "dtype": "bf16", "device_id": "gb200"})
    assert one["runtime_ms"] == pytest.approx(frame["runtime_ms"].iloc[2], rel=1e-12)
    assert one["runtime_ms_lo"] < one["runtime_ms"] < one["runtime_ms_hi"]
    assert isinstance(one["runtime_ms"], float) and isinstance(one["in_distribution"], bool)
    assert one["in_distribution"] is False and "gb200" in one["ood_reason"]   # GB200: more bandwidth than any trained
    seen = predictor.predict(ONE)
    assert seen["in_distribution"] is True and seen["ood_reason"] is None
    huge = predictor.predict({**ONE, "m": 10**7})
    assert huge["in_distribution"] is False and huge["ood_reason"].startswith("m=1e+07 above training max")
    narrow = predictor.predict(ONE, level=0.5)
    assert seen["runtime_ms_lo"] < narrow["runtime_ms_lo"] < narrow["runtime_ms_hi"] < seen["runtime_ms_hi"]


def test_rank_orders_devices_by_the_prediction(predictor):
    shape = {"m": 8192, "n": 8192, "k": 8192, "dtype": "bf16"}
    devices = ["a100_sxm", "NVIDIA H100 80GB HBM3", "l40s", "b300_sxm"]
    ranked = predictor.rank(shape, devices=devices)
    assert list(ranked.columns[:3]) == ["rank", "device_id", "runtime_ms"] and ranked["rank"].tolist() == [1, 2, 3, 4]
    assert ranked["runtime_ms"].is_monotonic_increasing
    assert set(ranked["device_id"]) == {"a100_sxm", "h100_sxm", "l40s", "b300_sxm"}    # the name resolved to its id
    alone = {d: predictor.predict({**shape, "device_id": d})["runtime_ms"] for d in ranked["device_id"]}
    assert ranked["runtime_ms"].tolist() == pytest.approx([alone[d] for d in ranked["device_id"]], rel=1e-12)
    assert ranked["device_id"].iloc[0] == "b300_sxm"                  # 7x the A100's bf16 peak
    with pytest.raises(ValueError, match="cannot rank by 'power_w': this model predicts runtime_ms"):
        predictor.rank(shape, devices=devices, by="power_w")
    with pytest.raises(ValueError, match=r"remove \['device'\] from the config"):
        predictor.rank({**shape, "device": "l40s"}, devices=devices)


def test_bad_input_is_reported_by_name(predictor):
    with pytest.raises(MissingColumnError, match=r"lacks column\(s\) \['k'\]; a gemm prediction needs m, n, k, dtype"):
        predictor.predict({k: v for k, v in ONE.items() if k != "k"})
    with pytest.raises(UnknownDeviceError, match=r"unknown device 'h100_sxn' \(row 0\); did you mean h100_sxm"):
        predictor.predict({**ONE, "device": "h100_sxn"})
    with pytest.raises(ValueError, match="column 'm' must be a number; row 0 has 'big'"):
        predictor.predict({**ONE, "m": "big"})
    with pytest.raises(MissingColumnError, match="names no device"):
        predictor.predict({k: v for k, v in ONE.items() if k != "device"})
    with pytest.raises(ValueError, match="either 'device' or 'device_id'"):
        predictor.predict({**ONE, "device_id": "l40s"})
    with pytest.raises(ValueError, match="column 'dtype' is empty in 1 row"):
        predictor.predict(pd.DataFrame([ONE, {**ONE, "dtype": None}]))
    with pytest.raises(ValueError, match=r"level must be a fraction in \(0, 1\)"):
        predictor.predict(ONE, level=90)
    assert predictor.predict({**ONE, "m": "4096"})["runtime_ms"] == predictor.predict(ONE)["runtime_ms"]


# ------------------------------------------------------------------------------------------ safe loading
def test_other_library_versions_are_refused_with_what_to_do(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    _edit_manifest(path, lambda d: d["versions"].update(lightgbm="3.0.0"))
    installed = library_versions()["lightgbm"]
    with pytest.raises(IncompatibleModelError, match=(
            rf"built with lightgbm 3\.0\.0, but this environment has lightgbm {installed}.*"
            r"pip install 'lightgbm==3\.0\.\*'.* or retrain")):
        Predictor.load(path)
    _edit_manifest(path, lambda d: d["versions"].update(lightgbm=installed, perfcast="9.1.0"))
    with pytest.raises(IncompatibleModelError, match="built with perfcast 9.1.0"):
        Predictor.load(path)
    _edit_manifest(path, lambda d: d.update(format_version=99))
    with pytest.raises(IncompatibleModelError, match="bundle format 99, newer than this perfcast reads"):
        Predictor.load(path)


def test_changed_features_are_refused(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    last = json.loads((path / "manifest.json").read_text())["feature_columns"][-1]
    _edit_manifest(path, lambda d: d.update(feature_columns=d["feature_columns"][:-1] + ["sm_clock_ghz"]))
    with pytest.raises(IncompatibleModelError, match=rf"removed \['sm_clock_ghz'\], added \['{last}'\]"):
        Predictor.load(path)


def test_damaged_foreign_and_missing_models_give_clear_errors(saved, split, tmp_path):
    path = _copy(saved[1], tmp_path)
    booster = path / "estimators" / "runtime_ms" / "lightgbm.txt"
    booster.write_text(booster.read_text()[:2000])
    with pytest.raises(ModelFormatError, match="is damaged or was modified: estimators/runtime_ms/lightgbm.txt"):
        Predictor.load(path)
    with pytest.raises(ModelFormatError, match=r"estimators holds no perfcast model \(no manifest.json in it"):
        Predictor.load(path / "estimators")
    with pytest.raises(FileNotFoundError, match="no model at .*runs:/RUN_ID/model"):
        Predictor.load(tmp_path / "nowhere")
    with pytest.raises(FileExistsError, match="is not empty"):
        save_model(saved[0], "gemm", split[0], path)


def test_skops_files_holding_other_types_are_refused(split, tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    train, _ = split
    path = save_model(_fit("rf", train), "gemm", train, tmp_path / "rf")
    planted = path / "estimators" / "runtime_ms" / "model.skops"
    sio.dump(FunctionTransformer(func=os.system), planted)
    _edit_manifest(path, lambda d: d["files"].update({"estimators/runtime_ms/model.skops": sha256(planted)}))
    with pytest.raises(ModelFormatError, match=r"holds types outside perfcast's allow-list \['posix.system'\]"):
        Predictor.load(path)
