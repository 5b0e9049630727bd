"""Hostile models, manifests, parameters and predict inputs are refused by name, never a crash or a silent change.

One small hybrid (roofline x LightGBM walked by perfcast's compiled walker) is trained on a real aiconfigurator
slice; crafted copies of its bundle (checksums recomputed, as a forger would, so the structural checks are what
refuses them) exercise the LightGBM reader and the manifest checks. The helpers are those of
``benchmarks/faults_models.py``, which prints the same cases as a table.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from perfcast import Predictor
from perfcast.features import MissingColumnError, UnknownDeviceError
from perfcast.models import make_model
from perfcast.models.persistence.bundle import (
    MANIFEST,
    CorruptModelError,
    IncompatibleModelError,
)
from perfcast.models.persistence.compiled import compile_lightgbm
from perfcast.models.uncertainty.domain import DomainGuard
from perfcast.models.registry import check_params
from perfcast.cli.predict import predict_app
from perfcast.training.config import ConfigError, parse_config

_spec = importlib.util.spec_from_file_location("faults_models", Path(__file__).parents[1] / "benchmarks" / "faults_models.py")
fm = importlib.util.module_from_spec(_spec)
sys.modules["faults_models"] = fm
_spec.loader.exec_module(fm)

ONE = fm.ONE


@pytest.fixture(scope="module")
def bundle() -> Path:
    return fm.shared_bundle()


@pytest.fixture(scope="module")
def predictor(bundle: Path) -> Predictor:
    return Predictor.load(bundle)


@pytest.fixture(scope="module")
def booster_text(bundle: Path) -> str:
    return (bundle / fm.BOOSTER).read_text()


# -------------------------------------------------------------------------------- crafted LightGBM files
@pytest.mark.parametrize("craft", list(fm.LGB_CRAFTS))
def test_a_crafted_tree_is_refused_naming_file_and_tree(craft, booster_text, tmp_path):
    key, edit = fm.LGB_CRAFTS[craft]
    with pytest.raises(CorruptModelError, match=r"^model\.txt, tree 1: .*(feature|child)"):
        compile_lightgbm(fm.edit_tree(booster_text, 1, key, edit), "model.txt")
    crafted = fm.crafted_bundle(tmp_path, craft)
    with pytest.raises(CorruptModelError, match=rf"lightgbm\.txt, tree 1: .*save or download the model again"):
        Predictor.load(crafted)


@pytest.mark.parametrize("key, values, message", [
    ("leaf_value", lambda v: ["nan", *v[1:]], "leaf_value 0 is nan, not a finite number"),
    ("threshold", lambda v: ["nan", *v[1:]], "threshold 0 is nan, not a number"),
    ("threshold", lambda v: ["1.5x", *v[1:]], "threshold holds a value that is not a number"),
    ("num_leaves", lambda v: ["100000"], "leaf_value has .* values, but num_leaves=100000"),
    ("right_child", lambda v: [v[1], *v[1:]], "(split node|leaf) [0-9]+ is reached 2 times"),   # one node shared by two parents
])
def test_other_damage_to_a_tree_is_refused(booster_text, key, values, message):
    with pytest.raises(CorruptModelError, match=rf"m\.txt, tree 1: {message}"):
        compile_lightgbm(fm.edit_tree(booster_text, 1, key, values), "m.txt")


def test_a_real_model_passes_the_checks_and_predicts_as_before(bundle, booster_text, predictor):
    forest = compile_lightgbm(booster_text, "m.txt")
    assert forest is not None and len(forest.roots) == booster_text.count("\nTree=")
    assert predictor.predict(ONE)["runtime_ms"] > 0


@pytest.mark.slow
def test_perfcast_predict_on_a_crafted_bundle_exits_2_with_one_message(tmp_path):
    for craft in ("split feature out of range", "child points back to its parent"):
        res = fm.run_cli(*fm.predict_args(fm.crafted_bundle(tmp_path, craft)))
        assert res["rc"] == 2 and not res["crash"], res
        assert "tree 1" in res["err"] and "Traceback" not in res["err"]


# ----------------------------------------------------------------------------------------- manifest
@pytest.mark.parametrize("name, message", [
    ("manifest without 'files'", "has no 'files'"),
    ("manifest 'requires' emptied", "'requires' must be a non-empty list"),
    ("manifest format_version = 0", "format_version 0, which no perfcast wrote"),
    ("manifest format_version = true", "format_version True"),
    ("manifest lists no calibration file (unlisted file read)", "does not list 'calibration/runtime_ms.npy'"),
    ("manifest without its digest", "has no digest"),
])
def test_a_damaged_manifest_is_refused_by_name(bundle, tmp_path, name, message):
    copy = fm.fresh_bundle(tmp_path)
    fm.edit_manifest(copy, fm.MANIFEST_EDITS[name], seal="digest" not in name)
    with pytest.raises(CorruptModelError, match=rf"damaged or was modified: .*{message}.*save or download"):
        Predictor.load(copy)


def test_requires_must_cover_the_estimators_and_edits_break_the_digest(tmp_path):
    copy = fm.fresh_bundle(tmp_path)
    fm.edit_manifest(copy, lambda d: d.update(requires=["perfcast", "scikit-learn"]))
    with pytest.raises(CorruptModelError, match=r"'requires' lacks \['lightgbm'\]"):
        Predictor.load(copy)
    fm.edit_manifest(copy, lambda d: d.update(requires=[*d["requires"], "evil-package"]))
    with pytest.raises(CorruptModelError, match=r"'requires' names \['evil-package'\], which perfcast never requires"):
        Predictor.load(copy)
    copy = fm.fresh_bundle(tmp_path, "unsealed")
    fm.edit_manifest(copy, lambda d: d["domain"]["sizes"].update(m=[1.0, 10.0]), seal=False)
    with pytest.raises(CorruptModelError, match="manifest.json does not match its digest"):
        Predictor.load(copy)
    fm.edit_manifest(copy, lambda d: d.update(format_version=99), seal=False)
    with pytest.raises(IncompatibleModelError, match="bundle format 99, newer than this perfcast reads"):
        Predictor.load(copy)


def test_a_digit_edited_in_any_file_is_refused(bundle):
    counts = fm.digit_edits(bundle, per_file=2)
    assert counts["loaded"] == 0 and counts["refused"] >= 2 * 3


def test_single_bit_flips_are_refused_or_change_nothing(bundle):
    counts = fm.flip_bytes(bundle, 25, seed=1)
    assert counts["changed"] == counts["other"] == 0 and counts["refused"] >= 20, counts


def test_a_format_1_bundle_without_digest_still_loads(bundle, predictor, tmp_path):
    copy = fm.fresh_bundle(tmp_path)
    fm.edit_manifest(copy, lambda d: (d.pop("digest"), d.update(format_version=1)), seal=False)
    assert Predictor.load(copy).predict(ONE) == predictor.predict(ONE)
    fm.edit_manifest(copy, lambda d: d.update(digest="0" * 64), seal=False)   # a digest, when there, is checked
    with pytest.raises(CorruptModelError, match="does not match its digest"):
        Predictor.load(copy)


def test_loading_changes_no_file(bundle):
    before = fm.digests(bundle)
    Predictor.load(bundle).predict(ONE)
    assert fm.digests(bundle) == before and "digest" in (bundle / MANIFEST).read_text()


# --------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name, params, message", [
    ("lightgbm", {"n_estimatorz": 20}, r"lightgbm: unknown parameter 'n_estimatorz' \(did you mean n_estimators\?\)"),
    ("hybrid", {"n_estimatorz": 20}, r"unknown parameter 'n_estimatorz'.*it takes: .*latency_floor"),
    ("hybrid", {"variants": [{}, {"colums": ["shape"]}]}, r"unknown parameter 'variants\[1\]\.colums'"),
    ("transfer", {"scale": "big"}, r"parameter 'scale' must be a number"),
    ("lightgbm", {"n_estimators": "many"}, r"parameter 'n_estimators' must be an integer \(default 800\), got 'many'"),
    ("xgboost", {"max_depth": True}, r"xgboost: parameter 'max_depth' must be an integer \(default 8\), got True"),
    ("xgboost", {"gamma": 0.5}, None),              # XGBoost's default is None: untyped, left to XGBoost
    ("rf", {"n_estimators": "many"}, r"The 'n_estimators' parameter of RandomForestRegressor must be an int"),
    ("mlp", {"alpah": 0.1}, r"unknown parameter 'alpah' \(did you mean alpha\?\)"),
    ("roofline", {"x": 1}, r"it takes: no parameters"),
])
def test_unknown_or_mistyped_parameters_are_refused_by_name(name, params, message):
    if message is None:
        check_params(name, params)
        return
    with pytest.raises(ValueError, match=message):
        make_model(name, "gemm", ["runtime_ms"], params)


def test_the_parameters_perfcast_ships_are_accepted():
    from perfcast.training.config import load_config, preset_files

    for path in preset_files().values():  # every preset's model builds from its own parameters
        config = load_config(path)
        make_model(config.model.name, config.task, list(config.targets), config.model.params)
    make_model("lightgbm", "gemm", ["runtime_ms"], {"alpha": 0.1, "objective": "huber", "min_data_in_leaf": 3})
    make_model("rf", "gemm", ["runtime_ms"], {"max_features": "sqrt", "log_target": True})


def test_the_config_names_the_field_and_a_tuned_parameter_must_exist():
    base = {"name": "t", "task": "gemm", "targets": ["runtime_ms"]}
    with pytest.raises(ConfigError, match=r"^c\.toml: model\.params: lightgbm: unknown parameter 'n_estimatorz'"):
        parse_config({**base, "model": {"name": "lightgbm", "params": {"n_estimatorz": 20}}}, source="c.toml")
    with pytest.raises(ConfigError, match=r"tune\.space: \['num_leavez'\] are not parameters of model 'lightgbm'"):
        parse_config({**base, "model": {"name": "lightgbm"},
                      "tune": {"space": {"num_leavez": {"type": "int", "low": 4, "high": 8}}}}, source="c.toml")


@pytest.mark.slow
@pytest.mark.parametrize("params, named", [("{ n_estimatorz = 20 }", "n_estimatorz"),
                                           ('{ n_estimators = "many" }', "n_estimators")])
def test_perfcast_train_refuses_a_bad_parameter_with_exit_2(tmp_path, params, named):
    config = tmp_path / "tiny.toml"
    config.write_text(f'task = "gemm"\ntargets = ["runtime_ms"]\n[model]\nname = "lightgbm"\nparams = {params}\n')
    res = fm.run_cli("train", config, cwd=tmp_path)
    said = " ".join((res["out"] + res["err"]).split())
    assert res["rc"] == 2 and not res["crash"] and "tiny.toml: model.params: lightgbm:" in said and named in said


# --------------------------------------------------------------------------------------- predict inputs
@pytest.mark.parametrize("value, message", [
    (math.inf, r"column 'm' must be a finite number of at most 2\*\*53; row 0 has inf"),
    ("-inf", r"column 'm' must be a finite number .* has -inf"),
    (math.nan, r"column 'm' is empty in 1 row"),
    (True, r"column 'm' must be a number; row 0 has True \(true/false is not a number\)"),
    (np.bool_(False), r"column 'm' must be a number; row 0 has False"),
    (1e20, r"column 'm' must be a finite number of at most 2\*\*53; row 0 has 1e\+20"),
])
def test_bad_sizes_are_errors_naming_the_column(predictor, value, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict({**ONE, "m": value})
    with pytest.raises(ValueError, match=message.replace("row 0", "row 1")):
        predictor.predict(pd.DataFrame([ONE, {**ONE, "m": value}]))


def test_a_large_size_below_the_limit_is_predicted_and_flagged(predictor):
    out = predictor.predict({**ONE, "m": 2**40})
    assert np.isfinite(out["runtime_ms"]) and out["in_distribution"] is False
    assert out["ood_reason"].startswith("m=1.09951e+12 above training max")


def test_a_huge_size_in_a_csv_exits_2_naming_the_column(bundle, tmp_path):
    (tmp_path / "shapes.csv").write_text("m,n,k,dtype,device\n100000000000000000000,4096,4096,bf16,h100_sxm\n")
    res = CliRunner().invoke(predict_app, [str(bundle), "--input", str(tmp_path / "shapes.csv")])
    assert res.exit_code == 2 and "column 'm' must be a finite number of at most 2**53" in " ".join(res.output.split())


def test_a_training_device_is_never_outside_the_hardware_box(predictor):
    fp32 = predictor.predict({**ONE, "dtype": "fp32"})   # its fp32 peak lies below every trained bf16 peak
    assert fp32["in_distribution"] is False and fp32["ood_reason"].startswith("dtype 'fp32' never seen")
    assert "hull" not in fp32["ood_reason"]
    unseen = predictor.predict({**ONE, "device": "gb200"})   # a device never trained on is still checked
    assert "device 'gb200' spec outside the training hull" in unseen["ood_reason"]


def test_float32_spec_numbers_of_the_training_rows_stay_in_the_box():
    rows = fm.training_rows(60)
    features = make_model("lightgbm", "gemm", ["runtime_ms"])[0].fit(rows).transform(rows)
    guard = DomainGuard("gemm").fit(rows, features)
    anonymous = rows.drop(columns=["device_id"])   # judged by their numbers, not as training devices
    ok, reasons = guard.check(anonymous, features.astype("float32"))
    assert ok.all(), [r for r in reasons if r][:3]
    wider = features.copy()
    wider["mem_bw_gbs"] *= 1.001                   # the slack is float32 rounding, not a tolerance of 0.1%
    assert not guard.check(anonymous, wider)[0].all()


# ------------------------------------------------------------------------------------------- fuzzing
_NAMED = (ValueError, MissingColumnError, UnknownDeviceError)   # the last two are KeyErrors with a message
_value = st.one_of(st.sampled_from(fm.NUMBERS), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12),
                   st.booleans(), st.none())
_configs = st.fixed_dictionaries({}, optional={
    "m": _value, "n": _value, "k": _value,
    "dtype": st.one_of(st.sampled_from(fm.DTYPES), st.text(max_size=8)),
    "device": st.one_of(st.sampled_from(fm.DEVICES), st.text(max_size=8)),
    "trans_a": _value, "batch": _value, "device_id": st.sampled_from(fm.DEVICES)})


def _assert_sane(outcome: str) -> None:
    assert outcome in ("ok", "refused"), outcome


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=_configs)
def test_fuzzed_requests_predict_or_say_what_is_wrong(predictor, config):
    _assert_sane(fm.check_prediction(predictor, config))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_configs, min_size=1, max_size=4))
def test_fuzzed_frames_predict_or_say_what_is_wrong(predictor, rows):
    frame = pd.DataFrame(rows)
    try:
        out = predictor.predict(frame)
    except _NAMED as err:
        assert str(err).strip()
        return
    runtime = out["runtime_ms"].to_numpy(dtype="float64")
    assert len(out) == len(frame) and np.isfinite(runtime).all() and (runtime > 0).all()


def test_seeded_fuzz_of_the_benchmark_gives_no_failure(bundle):
    counts = fm.predict_fuzz(bundle, 60, seed=3)
    assert counts["failed"] == 0 and counts["ok"] > 0 and counts["refused"] > 0, counts

