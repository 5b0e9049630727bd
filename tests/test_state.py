"""Every estimator kind a bundle may hold saves itself: ``to_state``/``from_state`` and a bundle give back the
trained class with the same predictions, on real aiconfigurator GEMM (and GB200 power) rows.

The kinds tried are checked against :data:`perfcast.models.persistence.state.KINDS`, so a kind added there
without a case here fails. The k-NN model (the recipe's example) is also checked for a sensible error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import perfcast.builtin
from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.estimators.adapt import AdaptedRegressor
from perfcast.models.estimators.ensemble import GeometricEnsemble
from perfcast.models.estimators.hybrid import HybridRegressor
from perfcast.models.estimators.knn import KNNRegressor
from perfcast.models.estimators.transfer import SiblingTransfer
from perfcast.models.estimators.vendor import VendorSplit
from perfcast.models.persistence import state
from perfcast.models.persistence.adapted import save_adapted
from perfcast.models.persistence.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    ModelFormatError,
    PerfcastModel,
    manifest_digest,
    save_model,
    write_bundle,
)
from perfcast.models.persistence.tree import serving_form
from perfcast.models.uncertainty.intervals import ConformalRegressor

TRAIN_GPUS = ("a100_sxm", "h100_sxm", "l40s")
#: kind -> (model name, task, targets, params) of a small model whose heads hold that kind
CASES: dict[str, tuple[str, str, list[str], dict[str, Any]]] = {
    "log": ("lightgbm", "gemm", ["runtime_ms"], {"n_estimators": 20, "log_target": True}),
    # relative: the device-relative columns computed at predict time, also by a loaded (compiled) forest; the
    # physical base (power limit, wave quantisation) restored from the state
    "hybrid": ("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 20, "relative": True, "power_limit": "generation",
                                                  "wave_quantised": True}),
    "geometric": ("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 10, "seeds": [0, 1],
                                                     "columns": ["shape", "dtype", "log10_ridge"]}),
    "transfer": ("transfer", "gemm", ["runtime_ms"], {"n_estimators": 10}),
    "normalized": ("normalized", "gemm", ["runtime_ms"], {"n_estimators": 10, "group_by": ["dtype_fp8"],
                                                         "scale_by": ["log10_flops"]}),
    "roofline": ("roofline", "gemm", ["runtime_ms"], {}),
    "power": ("power", "gemm", ["runtime_ms", "power_w", "energy_j"],
              {"runtime": {"n_estimators": 20}, "correction": {"n_estimators": 20}}),
    "group_attention": ("group_attention", "gemm", ["runtime_ms"],
                        {"max_epochs": 2, "d_model": 16, "batch_size": 128, "n_threads": 1}),
    "knn": ("knn", "gemm", ["runtime_ms"], {"n_neighbors": 5}),
    "vendor": ("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 10, "by_vendor": True,
                                                  "columns": ["shape", "dtype", "work", "log10_ridge"]}),
    "layout": ("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 10, "by_layout": True, "tiles": True}),
    # GEMM rows have no phase: one group (the two-phase split is tried on attention rows: test_attention_base.py)
    "phase": ("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 10, "by_phase": True}),
}


@pytest.fixture(scope="module")
def gemm(data_root: Path) -> pd.DataFrame:
    """bf16 and fp8 GEMM latencies of three GPUs (120 rows each) and of the GB200 (the adaptation device)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if u.match("*/gemm/trtllm/*/gemm_perf.parquet")
             and u.parts[-5] in (*TRAIN_GPUS, "gb200")]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"].isin(["bfloat16", "fp8"])]
    return df.groupby("device_id").sample(n=120, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def power_rows(data_root: Path) -> pd.DataFrame:
    root = data_root / "aiconfigurator-power"
    df = get_importer("aiconfigurator-power").load(root, root / "gb200/gemm/trtllm/1.3.0rc17/gemm_perf.parquet")["gemm"]
    return df.iloc[::60].reset_index(drop=True)


def _rows(kind: str, gemm: pd.DataFrame, power_rows: pd.DataFrame) -> pd.DataFrame:
    return power_rows if kind == "power" else gemm[gemm["device_id"].isin(TRAIN_GPUS)].reset_index(drop=True)


def _find(est: Any, kind: str) -> Any:
    """The first estimator of ``kind`` in the tree under ``est`` (library wrappers in their serving form)."""
    est = serving_form(est)
    if state.kind_of(est) == kind:
        return est
    for _, _, child in state.children(est):
        for c in child if isinstance(child, list) else [child]:
            found = None if c is None else _find(c, kind)
            if found is not None:
                return found
    return None


def via_state(est: Any) -> Any:
    """``est`` rebuilt from its state (params through JSON, as a manifest keeps them), children likewise."""
    est = serving_form(est)
    if state.kind_of(est) is None:
        return est  # a library leaf: the codecs' business (checked through the bundle)
    params, arrays = est.to_state()
    params = json.loads(json.dumps(params))
    kids = {attr: [via_state(c) for c in v] if isinstance(v, list) else None if v is None else via_state(v)
            for attr, _, v in state.children(est)}
    rebuilt = type(est).from_state(params, {k: np.array(v) for k, v in arrays.items()})
    assert type(rebuilt) is type(est)
    return state.with_children(rebuilt, kids)


def _heads_of(path: Path) -> list[dict[str, Any]]:
    return json.loads((path / MANIFEST).read_text())["estimators"]["heads"]


def _kinds_in(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*map(_kinds_in, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    return {node["kind"]} | _kinds_in(list(node.get("children", {}).values()))


@pytest.fixture(scope="module")
def fitted(gemm, power_rows) -> dict[str, tuple[ConformalRegressor, pd.DataFrame]]:
    out = {}
    for kind, (name, task, targets, params) in CASES.items():
        rows = _rows(kind, gemm, power_rows)
        out[kind] = ConformalRegressor(make_model(name, task, targets, params), n_splits=2).fit(rows, rows[targets]), rows
    return out


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_kind_round_trips_through_its_state_and_a_bundle(kind, fitted, tmp_path):
    model, rows = fitted[kind]
    F = model.estimator_[0].transform(rows)
    head = model.estimator_[-1].estimators_[0]
    node = _find(head, kind)
    assert node is not None, f"the {kind} case holds no {kind} estimator"
    np.testing.assert_array_equal(via_state(node).predict(F), serving_form(node).predict(F))
    path = save_model(model, "gemm", rows, tmp_path / kind)
    assert kind in _kinds_in(_heads_of(path))
    loaded = PerfcastModel.load(path)
    assert type(_find(loaded.heads[0], kind)) is type(serving_form(node))  # the trained class, not a twin
    expected = np.asarray(model.estimator_[-1].predict(F), dtype="float64").reshape(len(F), -1)
    assert np.isfinite(expected).all() and len(np.unique(expected)) > 1
    np.testing.assert_array_equal(loaded.predict_features(F), expected)


def test_an_adapted_model_round_trips_through_its_state_and_a_bundle(fitted, gemm, tmp_path):
    model, rows = fitted["hybrid"]
    base = Predictor.load(save_model(model, "gemm", rows, tmp_path / "base"))
    device = gemm[gemm["device_id"] == "gb200"]
    adapted = base.adapt(device.iloc[:80], donors=gemm[gemm["device_id"] == "h100_sxm"])
    head = adapted.model.heads[0]
    assert isinstance(head, AdaptedRegressor)
    F = adapted.model.features.transform(device)
    np.testing.assert_array_equal(via_state(head).predict(F), head.predict(F))
    path = save_adapted(adapted.model, tmp_path / "adapted")
    assert _heads_of(path)[0]["kind"] == "adapted"
    loaded = PerfcastModel.load(path)
    assert isinstance(loaded.heads[0], AdaptedRegressor)
    np.testing.assert_array_equal(loaded.predict_features(F), adapted.model.predict_features(F))


FORMAT2 = Path(__file__).parent / "data" / "format2"


def test_a_format_2_bundle_loads_into_the_trained_classes_and_predicts_what_it_did_when_saved(tmp_path):
    """A bundle written by the last perfcast that wrote format 2 (per-kind entries, tests/data/format2/README.md)
    loads into the same classes as format 3, predicts what the writing perfcast predicted, and written again
    through the state protocol (format 3) predicts the same numbers bit for bit. Against the numbers stored when it
    was written the match is to a few units in the last place: they came from that environment's libraries, whose
    floating-point math may round the last bit differently (a fresh install of 2026-12-06 differed on 11 of the 120
    rows, by one or two units)."""
    assert json.loads((FORMAT2 / "bundle" / MANIFEST).read_text())["format_version"] == 2
    old = PerfcastModel.load(FORMAT2 / "bundle")
    assert isinstance(old.heads[0], SiblingTransfer)
    rows = pd.read_parquet(FORMAT2 / "rows.parquet")
    F = old.features.transform(rows)
    expected = np.load(FORMAT2 / "expected.npy")
    assert np.isfinite(expected).all() and len(np.unique(expected)) > 1
    now = old.predict_features(F)
    np.testing.assert_allclose(now, expected, rtol=1e-14, atol=0)
    path = write_bundle(tmp_path / "v3", old.task, old.targets, old.features, old.heads, old.joint, old.calibration,
                        old.domain, old.metadata)
    assert json.loads((path / MANIFEST).read_text())["format_version"] == FORMAT_VERSION == 3
    np.testing.assert_array_equal(PerfcastModel.load(path).predict_features(F), now)


def test_the_built_in_models_load_into_the_trained_classes(gemm):
    """The shipped built-in bundles are the current format and hold the trained classes (a sibling transfer over
    an ensemble of per-vendor hybrids)."""
    root = Path(perfcast.builtin.__file__).parent / "builtin_models" / "gemm"
    assert json.loads((root / MANIFEST).read_text())["format_version"] == FORMAT_VERSION
    model = PerfcastModel.load(root)
    head = model.heads[0]
    assert isinstance(head, SiblingTransfer) and isinstance(head.estimator_, VendorSplit)
    assert all(isinstance(e, GeometricEnsemble) for e in head.estimator_.estimators_)
    pred = model.predict_features(model.features.transform(gemm))
    assert np.isfinite(pred).all() and len(np.unique(pred)) > 1


def test_every_registered_kind_is_tried():
    # adapted: its own test below; sibling: needs sibling GPUs, its bundle test is in tests/test_sibling.py;
    # power_adapted: a power model adapted to another library, its bundle test is in tests/test_power_adapt.py;
    # physics: CPU GEMMs, its bundle test is in tests/test_quickstart_physics.py
    assert set(CASES) | {"adapted", "sibling", "power_adapted", "physics"} == set(state.KINDS)


def _reseal(path: Path, edit) -> None:
    doc = json.loads((path / MANIFEST).read_text())
    edit(doc)
    doc["digest"] = manifest_digest(doc)
    (path / MANIFEST).write_text(json.dumps(doc, indent=1))


def test_an_unknown_kind_is_refused_by_name(fitted, tmp_path):
    model, rows = fitted["hybrid"]
    path = save_model(model, "gemm", rows, tmp_path / "m")
    _reseal(path, lambda d: d["estimators"]["heads"][0].update(kind="mystery"))
    with pytest.raises(ModelFormatError, match=r"names estimator kind 'mystery', which this perfcast does not know "
                                               r"\(known: .*hybrid.*\).*retrain"):
        PerfcastModel.load(path)
    old = tmp_path / "old"  # an entry in the layout of format 2 (no "children") is refused the same way
    shutil.copytree(path, old)
    _reseal(old, lambda d: d["estimators"]["heads"][0].pop("children"))
    with pytest.raises(ModelFormatError, match="estimator kind 'mystery'"):
        PerfcastModel.load(old)


def test_a_child_the_class_does_not_declare_is_refused(fitted, tmp_path):
    model, rows = fitted["hybrid"]
    path = save_model(model, "gemm", rows, tmp_path / "m")
    _reseal(path, lambda d: d["estimators"]["heads"][0]["children"].update(extra=None))
    with pytest.raises(ModelFormatError, match="HybridRegressor has no sub-estimator 'extra'"):
        PerfcastModel.load(path)


def test_knn_predicts_held_out_rows_sensibly_and_round_trips(gemm, tmp_path):
    rows = gemm[gemm["device_id"].isin(TRAIN_GPUS)]
    train = rows.sample(frac=0.75, random_state=0)
    test = rows.drop(train.index)
    model = ConformalRegressor(make_model("knn", "gemm", ["runtime_ms"], {"n_neighbors": 5}), n_splits=2)
    model.fit(train, train[["runtime_ms"]])
    knn = model.estimator_[-1].estimators_[0]
    assert isinstance(knn, KNNRegressor)
    pred = np.ravel(model.predict(test))
    roofline = np.ravel(make_model("roofline", "gemm", ["runtime_ms"]).fit(train, train["runtime_ms"]).predict(test))
    y = test["runtime_ms"].to_numpy()
    ape = lambda p: float(np.mean(np.abs(p - y) / y))  # noqa: E731
    assert ape(pred) < 0.6 * ape(roofline) and ape(pred) < 0.35, (ape(pred), ape(roofline))
    loaded = Predictor.load(save_model(model, "gemm", train, tmp_path / "knn"))
    np.testing.assert_array_equal(loaded.predict(test)["runtime_ms"].to_numpy(), pred)
    with pytest.raises(ValueError, match="knn learns log"):
        KNNRegressor().fit(model.estimator_[0].transform(train), -train["runtime_ms"])
