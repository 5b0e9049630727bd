"""The fast path of small predictions gives exactly what the general path gives, on real aiconfigurator rows.

Records that carry only a configuration and a device id (a user's request) take each device's spec-sheet
row from cached arrays; records that carry hardware columns of their own go through the merged
``hardware_frame``. An all-missing hardware column changes no value (the sheet wins, and a blank record
value fills nothing), so adding one forces the general path on the same rows: the two must agree bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from perfcast import Predictor
from perfcast.builtin import bundle_path
from perfcast.datasets.importers import get_importer
from perfcast.features import AttentionFeatures, GemmFeatures, UnknownDeviceError
from perfcast.features.distinct import SMALL, factorize
from perfcast.features.hardware import _sheet_arrays, hardware_frame, numeric
from perfcast.models import make_model
from perfcast.models.persistence.bundle import save_model
from perfcast.models.estimators.hybrid import HybridRegressor, kernel_kinds
from perfcast.models.estimators.transfer import row_keys
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.records.hardware_specs import ENV_VAR, catalog

GEMM_CONFIG = ["m", "n", "k", "batch", "dtype", "device_id"]
ATTENTION_CONFIG = ["phase", "batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "window", "beam_width",
                    "dtype", "kv_dtype", "causal", "device_id"]


def _rows(root: Path, pattern: str, task: str, per_unit: int) -> pd.DataFrame:
    """``per_unit`` rows of every aiconfigurator unit matching ``pattern`` (several GPUs and dtypes)."""
    imp, data = get_importer("aiconfigurator"), root / "aiconfigurator"
    units = [u for u in imp.units(data) if u.match(pattern)]
    frames = [imp.load(data, u)[task] for u in units[::max(1, len(units) // 8)]]
    return pd.concat([f.sample(min(per_unit, len(f)), random_state=0) for f in frames], ignore_index=True)


@pytest.fixture(scope="module")
def gemm(data_root: Path) -> pd.DataFrame:
    return _rows(data_root, "*/gemm/*/*/gemm_perf.parquet", "gemm", 150)


@pytest.fixture(scope="module")
def attention(data_root: Path) -> pd.DataFrame:
    return pd.concat([_rows(data_root, "*/attention/*/*/context_attention_perf.parquet", "attention", 100),
                      _rows(data_root, "*/attention/*/*/generation_attention_perf.parquet", "attention", 100)],
                     ignore_index=True)


@pytest.mark.parametrize(("task", "cls", "config"), [("gemm", GemmFeatures, GEMM_CONFIG),
                                                     ("attention", AttentionFeatures, ATTENTION_CONFIG)])
def test_spec_sheet_rows_give_the_features_of_the_merged_hardware_frame(task, cls, config, request):
    records = request.getfixturevalue(task)
    plain = records[[c for c in config if c in records.columns]]
    assert plain["device_id"].nunique() >= 4 and plain["dtype"].nunique() >= 2
    t = cls().fit(records)
    fast = t.transform(plain)
    general = t.transform(plain.assign(l2_mb=np.nan))  # a record hardware column: the merged frame is read
    pd.testing.assert_frame_equal(fast, general, check_exact=True)
    # one row at a time (the path of a single request) gives the same rows
    for i in (0, len(plain) // 2, len(plain) - 1):
        pd.testing.assert_frame_equal(t.transform(plain.iloc[[i]]), fast.iloc[[i]], check_exact=True)


def test_sheet_arrays_hold_what_the_merged_hardware_frame_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The per-device arrays a request reads (built without pandas) against ``hardware_frame`` of records naming only
    their device: the packaged sheets plus a user's sheet with a CPU, a text compute capability and an int given for
    a float field, every field of every device, and the all-unknown row."""
    user = tmp_path / "mine.yaml"
    user.write_text(yaml.safe_dump({"devices": {
        "h100_sxm": {"tdp_w": 650},
        "acme_cpu": {"device_name": "ACME CPU 9000", "vendor": "ACME", "device_kind": "cpu", "clock_mhz": 3000,
                     "mem_bw_gbs": 80.5, "peak_tflops_fp64": 1.25, "compute_capability": "not a number"},
        "acme_x1": {"device_name": "ACME X1", "vendor": "ACME", "device_kind": "gpu", "sm_count": 10,
                    "compute_capability": "12.1", "release_year": 2026}}}))
    monkeypatch.setenv(ENV_VAR, str(user))  # (also replacing a sheet an earlier test's quickstart named there)
    cat = catalog()
    numbers, texts, position = _sheet_arrays(cat)
    ids = sorted(cat.specs)
    assert position == {d: i for i, d in enumerate(ids)} and {"acme_cpu", "acme_x1"} <= set(ids)
    full = hardware_frame(pd.DataFrame({"device_id": pd.array([*ids, None], dtype="string")})).drop(columns="device_id")
    assert list(numbers) == list(texts) == list(full.columns)
    for c in full.columns:
        np.testing.assert_array_equal(numbers[c], numeric(full, c).to_numpy(), err_msg=c)
        assert texts[c].tolist() == full[c].astype("string").to_numpy(dtype=object, na_value=None).tolist(), c
    assert numbers["compute_capability"][position["acme_x1"]] == 12.1
    assert np.isnan(numbers["compute_capability"][position["acme_cpu"]])
    assert texts["tdp_w"][position["h100_sxm"]] == "650.0"


def test_both_paths_refuse_an_unknown_or_missing_device_alike(gemm):
    t = GemmFeatures().fit(gemm)
    plain = gemm[GEMM_CONFIG].head(3).copy()
    plain.loc[1, "device_id"] = "h100_sxmm"
    for frame in (plain, plain.assign(l2_mb=np.nan)):
        with pytest.raises(KeyError, match="h100_sxmm"):
            t.transform(frame)
    nameless = gemm[GEMM_CONFIG].head(3).drop(columns="device_id")
    messages = []
    for frame in (nameless, nameless.assign(l2_mb=np.nan)):
        with pytest.raises(UnknownDeviceError) as err:
            t.transform(frame)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert "<no device_id or device_name>" in messages[0]


def test_latency_floor_looked_up_per_kind_pattern_matches_kernel_kinds(gemm, attention):
    for records, cls in ((gemm, GemmFeatures), (attention, AttentionFeatures)):
        F = cls().fit(records).transform(records)
        kinds = kernel_kinds(F)
        labels = sorted(kinds.unique())
        assert len(labels) >= 2
        floors = {k: 0.001 * (i + 1) for i, k in enumerate(labels[:-1])}  # the last kind falls back to pooled
        head = HybridRegressor.from_state({"target": "runtime_ms", "floors": floors, "pooled_floor": 0.5}, {})
        want = kinds.map(floors).fillna(0.5).to_numpy(dtype="float64")
        A, names = F.to_numpy(dtype="float64"), tuple(F.columns)
        np.testing.assert_array_equal(head._floor(A, names), want)
        order = np.arange(len(F))[::-1]  # cached patterns, rows in another order
        np.testing.assert_array_equal(head._floor(A[order], names), want[order])
        one = HybridRegressor.from_state({"target": "runtime_ms", "floors": floors, "pooled_floor": 0.5}, {})
        np.testing.assert_array_equal([one._floor(A[i:i + 1], names)[0] for i in range(len(A))], want)  # one by one


def test_one_config_predicts_what_the_frame_path_predicts(gemm, tmp_path):
    train = gemm[gemm["dtype"].isin(["bfloat16", "fp8"])].reset_index(drop=True)
    model = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 40}), n_splits=3)
    model.fit(train, train[["runtime_ms"]])
    p = Predictor.load(save_model(model, "gemm", train, tmp_path / "hybrid"))
    configs = [{"m": int(r.m), "n": int(r.n), "k": int(r.k), "dtype": r.dtype, "device": r.device_id}
               for r in gemm.sample(40, random_state=1).itertuples()]
    frame = p.predict(pd.DataFrame(configs))
    for i, config in enumerate(configs):
        one = p.predict(config)
        assert list(one) == list(frame.columns)
        for key, value in one.items():
            expected = frame[key].iloc[i]
            assert value == expected or (pd.isna(value) and pd.isna(expected)), (key, value, expected)


def test_small_factorize_groups_like_pandas(gemm):
    """The dict grouping of a request's few values gives pandas' codes and uniques (missing values are -1)."""
    devices = gemm["device_id"].astype(object).drop_duplicates().to_numpy()
    text = np.resize(devices[::-1], SMALL)
    text[[1, 4]] = [None, np.nan]
    text[7] = pd.NA
    codes, uniques = factorize(text)
    expected_codes, expected_uniques = pd.factorize(text)
    np.testing.assert_array_equal(codes, expected_codes)
    assert uniques == list(expected_uniques) and len(set(uniques)) >= 2


def test_a_config_needing_conversion_predicts_what_a_clean_one_does(gemm, tmp_path):
    """A dict with a device alias goes through the checks a clean dict skips, numbers as plain text (a command line's
    ``--set m=4096``) do not; same result."""
    train = gemm[gemm["dtype"] == "bfloat16"].reset_index(drop=True)
    model = ConformalRegressor(make_model("lightgbm", "gemm", ["runtime_ms"], {"n_estimators": 30}), n_splits=3)
    p = Predictor.load(save_model(model.fit(train, train[["runtime_ms"]]), "gemm", train, tmp_path / "lgbm"))
    clean = {"m": 4096, "n": 2048, "k": 1024, "dtype": "bf16", "device_id": "h100_sxm"}
    assert p._one_row(clean)[1] and p._one_row({**clean, "device": "h100_sxm", "device_id": None})[1] is False
    converted = [{**clean, "m": "4096"}, {**{k: v for k, v in clean.items() if k != "device_id"}, "device": "H100 SXM"},
                 {**clean, "batch": np.int64(1)}]
    assert p._one_row(converted[0])[1] and not p._one_row(converted[1])[1]
    expected = p.predict(clean)
    for config in converted:
        assert p.predict(config) == expected


def test_config_keys_are_pandas_row_hashes(gemm):
    """The sibling transfer's configuration and device keys (hashed from the float matrix) are what pandas'
    ``hash_pandas_object`` gives the same columns, NaN columns included: the keys saved residual tables hold."""
    F = GemmFeatures().fit(gemm).transform(gemm)
    some_nan = [c for c in F.columns if F[c].isna().any()]
    assert some_nan
    for columns in (list(F.columns[:31]), some_nan, ["sm_count", "mem_bw_gbs", "compute_capability"]):
        expected = pd.util.hash_pandas_object(F[columns].astype("float64"), index=False).to_numpy()
        np.testing.assert_array_equal(row_keys(F, columns), expected)


@pytest.mark.parametrize(("task", "config"), [("gemm", GEMM_CONFIG), ("attention", ATTENTION_CONFIG)])
def test_built_in_models_predict_one_config_as_the_batch_does(task, config, request):
    """The built-in sibling-transfer models: each request alone (one row: descriptors and residuals looked up
    for it alone) gives the row of the whole batch (kinds grouped, one search for all rows) bit for bit."""
    records = request.getfixturevalue(task).sample(40, random_state=2)
    rows = [{k: v for k, v in r.items() if not pd.isna(v)} for r in records[[c for c in config if c in records]]
            .to_dict("records")]
    p = Predictor.load(bundle_path(task))
    frame = p.predict(pd.DataFrame(rows))
    assert frame["in_distribution"].any() and frame["runtime_ms"].nunique() > 30
    for i, row in enumerate(rows):
        one = p.predict(row)
        for key, value in one.items():
            expected = frame[key].iloc[i]
            assert value == expected or (pd.isna(value) and pd.isna(expected)), (i, key, value, expected)
