"""A bundle stores each covered LightGBM forest parsed (``forest.npz``) beside its text: loading reads the
arrays instead of parsing the text (issue 18, load time), to the same predictions, and refuses damaged arrays.

Models are trained on real aiconfigurator GEMM rows of three GPUs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.estimators.hybrid import HybridRegressor
from perfcast.models.persistence.bundle import CorruptModelError, PerfcastModel, save_model
from perfcast.models.persistence.codecs import LightGBMLeaf
from perfcast.models.persistence.manifest import MANIFEST, manifest_digest, sha256
from perfcast.models.uncertainty.intervals import ConformalRegressor


@pytest.fixture(scope="module")
def saved(data_root: Path, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix() and u.parts[-5] in ("h100_sxm", "a100_sxm",
                                                                                                 "l40s")]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    rows = df[df["dtype"] == "bfloat16"].groupby("device_id").sample(n=200, random_state=0).reset_index(drop=True)
    model = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 40}), n_splits=3)
    return save_model(model.fit(rows, rows[["runtime_ms"]]), "gemm", rows, tmp_path_factory.mktemp("b") / "m"), rows


def _leaf(model: PerfcastModel) -> LightGBMLeaf:
    head = model.heads[0]
    assert isinstance(head, HybridRegressor) and isinstance(head.estimator_, LightGBMLeaf)
    return head.estimator_


def _entry(doc: dict) -> dict:
    return doc["estimators"]["heads"][0]["children"]["estimator_"]


def _reseal(path: Path, edit) -> None:
    """Edit the manifest (and files) as a writer would have: checksums and digest recomputed."""
    doc = json.loads((path / MANIFEST).read_text())
    edit(doc)
    doc["files"] = {p.relative_to(path).as_posix(): sha256(p) for p in sorted(path.rglob("*"))
                    if p.is_file() and p.name != MANIFEST}
    doc["digest"] = manifest_digest(doc)
    (path / MANIFEST).write_text(json.dumps(doc, indent=1))


def test_the_parsed_forest_is_read_instead_of_the_text_to_the_same_predictions(saved, tmp_path):
    path, rows = saved
    entry = _entry(json.loads((path / MANIFEST).read_text()))
    assert entry["forest"].endswith("forest.npz") and (path / entry["forest"]).is_file()
    model = PerfcastModel.load(path)
    leaf = _leaf(model)
    assert leaf._text is None  # the text was neither parsed nor read
    F = model.features.transform(rows)
    from_text = LightGBMLeaf((path / entry["file"]).read_text(), 1, "text")
    for block in (F.iloc[:5], F):  # a request (the NumPy walk) and a batch (the kernels)
        np.testing.assert_array_equal(leaf.predict(block), from_text.predict(block))
    old = tmp_path / "old"  # a bundle written before forests were stored: read from its text, same numbers
    shutil.copytree(path, old)
    (old / entry["forest"]).unlink()
    _reseal(old, lambda d: _entry(d).pop("forest"))
    before = PerfcastModel.load(old)
    assert _leaf(before)._text is not None
    np.testing.assert_array_equal(before.predict_features(F), model.predict_features(F))


def test_a_loaded_model_saved_again_writes_the_same_model(saved, tmp_path):
    path, rows = saved
    model = PerfcastModel.load(path)
    from perfcast.models.persistence.bundle import write_bundle

    again = write_bundle(tmp_path / "again", model.task, model.targets, model.features, model.heads, model.joint,
                         model.calibration, model.domain, model.metadata)
    entry = _entry(json.loads((path / MANIFEST).read_text()))
    for rel in (entry["file"], entry["forest"]):
        assert (again / rel).read_bytes() == (path / rel).read_bytes(), rel
    F = model.features.transform(rows)
    np.testing.assert_array_equal(PerfcastModel.load(again).predict_features(F), model.predict_features(F))


def test_a_text_changed_after_loading_is_not_saved_again(saved, tmp_path):
    path, _ = saved
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    leaf = _leaf(PerfcastModel.load(copy))
    text = copy / _entry(json.loads((copy / MANIFEST).read_text()))["file"]
    text.write_text(text.read_text().replace("Tree=0", "Tree=0 "))
    with pytest.raises(CorruptModelError, match="changed since its model was loaded"):
        leaf.text


@pytest.mark.parametrize("damage", ["child-out-of-range", "float-features", "missing-array", "shape", "categorical"])
def test_a_damaged_forest_file_is_refused_by_name(saved, tmp_path, damage):
    path, _ = saved
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    rel = _entry(json.loads((copy / MANIFEST).read_text()))["forest"]
    with np.load(copy / rel, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if damage == "child-out-of-range":
        arrays["left"][3] = 120  # past the 30 split nodes of a 31-leaf tree
    elif damage == "float-features":
        arrays["feature"] = arrays["feature"] + 0.5
    elif damage == "missing-array":
        arrays.pop("sizes")
    elif damage == "shape":
        arrays["threshold"] = arrays["threshold"][:-1]
    else:
        arrays["decision"][0] |= 1
    np.savez(copy / rel, **arrays)
    _reseal(copy, lambda d: None)
    with pytest.raises(CorruptModelError, match=r"forest\.npz"):
        PerfcastModel.load(copy)
