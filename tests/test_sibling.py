"""The shrunk sibling copy on real aiconfigurator slices: nested selection sees only training GPUs, it saves
as plain arrays, and on a held-out sibling GPU it is not worse than copying the sibling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.eval.metrics import mape
from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.baselines import CONFIG_KEYS, copy_from_devices, sibling_devices
from perfcast.experiments.sibling import fitted_sibling
from perfcast.models.estimators.sibling import SELECTED_ON, SiblingShrink, are_siblings
from perfcast.models.estimators.transfer import SiblingTransfer, row_keys
from perfcast.records.store import RecordStore

GPUS = ("gb200", "gb300", "b300_sxm", "h100_sxm")
PARAMS = {"n_estimators": 40, "max_rows": 6_000, "nested_max_rows": 6_000}
#: how much worse than copy-sibling (relative mean APE) the model may be on a held-out sibling of the slice
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def gemm(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    """bf16, fp8 and nvfp4 GEMMs with n, k in {256, 1024, 4096, 8192} on three Blackwell GPUs and the H100."""
    imp = get_importer("aiconfigurator")
    tmp = tmp_path_factory.mktemp("sibling")
    parts = []
    for gpu in GPUS:
        store = RecordStore(tmp / gpu)
        for unit in imp.units(data_root / "aiconfigurator"):
            if f"{gpu}/gemm/" in unit.as_posix():
                df = imp.load(data_root / "aiconfigurator", unit)["gemm"]
                keep = (df["dtype"].isin(["bfloat16", "fp8", "nvfp4"]) & df["n"].isin([256, 1024, 4096, 8192])
                        & df["k"].isin([256, 1024, 4096, 8192]))
                if keep.any():
                    store.append(df[keep], "gemm")
        parts.append(store.read("gemm"))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def held_out_gb200(gemm):
    train, test = unseen_hardware_split(gemm, test_devices=["gb200"])
    pipe, est = fitted_sibling(train, "gemm", PARAMS)
    return train, test, pipe, est


def test_sibling_rule_follows_the_family():
    nvidia = np.asarray([0])
    assert are_siblings(nvidia, np.asarray([10.0]), 0, 10.3, 0.5)[0]        # GB200 and B300
    assert not are_siblings(nvidia, np.asarray([8.0]), 0, 8.9, 0.5)[0]      # A100 and L40S: Ampere vs Ada
    assert not are_siblings(nvidia, np.asarray([9.0]), 0, 10.0, 0.5)[0]     # H100 and B200
    assert not are_siblings(np.asarray([-1]), np.asarray([np.nan]), -1, np.nan, 0.5)[0]  # unknown vendor


def test_nested_selection_sees_training_gpus_only(gemm, held_out_gb200):
    train, _, _, est = held_out_gb200
    # the nested folds are the training GPUs with a sibling among the others: B300 and GB300 (not the H100)
    assert est.n_nested_folds_ == 2
    # pure copying's nested score is the mean over the two folds of copying the other one's measurement
    keys = list(CONFIG_KEYS["gemm"])
    by_hand = []
    for held, donor in (("b300_sxm", "gb300"), ("gb300", "b300_sxm")):
        rows = train[train["device_id"] == held]
        copy = copy_from_devices(train, rows, [donor], keys)
        ok = np.isfinite(copy)
        by_hand.append(mape(rows["runtime_ms"].to_numpy()[ok], copy[ok]))
    assert est.nested_["*"][repr(est.grid()[0])] == pytest.approx(np.mean(by_hand), rel=0.02)
    # the held-out GPU's labels cannot move the choice: scale them by random factors and refit on the split
    noisy = gemm.copy()
    on = (noisy["device_id"] == "gb200").to_numpy()
    noisy.loc[on, "runtime_ms"] *= np.random.default_rng(1).uniform(0.5, 2.0, on.sum())
    _, est_noisy = fitted_sibling(unseen_hardware_split(noisy, test_devices=["gb200"])[0], "gemm", PARAMS)
    assert est_noisy.settings_ == est.settings_ and est_noisy.nested_ == est.nested_
    # ...while a training sibling's labels do: slowing the B300 by 30% changes what copying scores in nested
    slowed = train.copy()
    slowed.loc[slowed["device_id"] == "b300_sxm", "runtime_ms"] *= 1.3
    _, est_slowed = fitted_sibling(slowed, "gemm", PARAMS)
    assert est_slowed.nested_["*"][repr(est.grid()[0])] > est.nested_["*"][repr(est.grid()[0])] + 0.05


def test_not_worse_than_copying_a_sibling(held_out_gb200):
    train, test, pipe, est = held_out_gb200
    copy = copy_from_devices(train, test, sibling_devices("gb200", sorted(train["device_id"].unique())),
                             list(CONFIG_KEYS["gemm"]))
    ok = np.isfinite(copy)
    y = test["runtime_ms"].to_numpy()[ok]
    ours = mape(y, pipe.predict(test)[ok])
    assert ours <= (1 + TOLERANCE) * mape(y, copy[ok])
    # the interval is calibrated on the nested residuals: finite on sibling rows and around the prediction
    pred, lo, hi = est.predict_interval(pipe[:-1].transform(test))
    assert np.isfinite(hi[ok]).all() and (lo[ok] < pred[ok]).all() and (pred[ok] < hi[ok]).all()
    assert 0.5 < np.mean((lo[ok] <= y) & (y <= hi[ok])) <= 1.0


def test_configuration_no_sibling_measured_gets_the_transfer(held_out_gb200):
    _, test, pipe, est = held_out_gb200
    novel = test.assign(m=test["m"] + 1_000_003)  # an m no GPU was measured at
    X = pipe[:-1].transform(novel)
    np.testing.assert_allclose(pipe.predict(novel), est.predict_transfer(X), rtol=1e-12)
    _, lo, hi = est.predict_interval(X)
    assert np.isinf(hi).all() and (lo == 0).all()


def test_state_round_trip_is_plain_arrays(held_out_gb200, tmp_path):
    _, test, pipe, est = held_out_gb200
    params, arrays = est.to_state()
    assert params["selected_on"] == SELECTED_ON
    np.savez(tmp_path / "sibling.npz", **arrays)
    with np.load(tmp_path / "sibling.npz", allow_pickle=False) as npz:  # no object arrays: nothing executes
        loaded = {k: npz[k] for k in npz.files}
    back = SiblingShrink.from_state(json.loads(json.dumps(params)), loaded)
    back.transfer_ = est.transfer_
    X = pipe[:-1].transform(test)
    np.testing.assert_allclose(back.predict(X), est.predict(X), rtol=1e-12)
    for a, b in zip(back.predict_interval(X), est.predict_interval(X), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)



def test_a_sibling_model_round_trips_through_a_bundle(held_out_gb200, tmp_path):
    """Saved and loaded as any model: the loaded head is the trained class with its transfer and base model
    rebuilt from their own states, and predicts the same numbers."""
    from perfcast.models import make_model
    from perfcast.models.persistence.bundle import PerfcastModel, save_model
    from perfcast.models.uncertainty.intervals import ConformalRegressor

    train, test, _, _ = held_out_gb200
    rows = train.groupby("device_id").sample(n=400, random_state=0).reset_index(drop=True)
    model = ConformalRegressor(make_model("sibling", "gemm", ["runtime_ms"], PARAMS), n_splits=2)
    model.fit(rows, rows[["runtime_ms"]])
    loaded = PerfcastModel.load(save_model(model, "gemm", rows, tmp_path / "sibling"))
    assert isinstance(loaded.heads[0], SiblingShrink) and isinstance(loaded.heads[0].transfer_, SiblingTransfer)
    F = loaded.features.transform(test)
    np.testing.assert_array_equal(loaded.predict_features(F)[:, 0], np.ravel(model.estimator_[-1].predict(F)))


def test_nested_share_keeps_the_choice_blind_to_the_held_out_gpu(gemm):
    """With the nested folds on a share of the configurations (the unseen-GPU presets' setting), every GPU
    keeps the same configurations, and rescaling the held-out GPU's labels moves neither the settings nor
    the nested scores."""
    params = {**PARAMS, "nested_share": 0.5}
    train, _ = unseen_hardware_split(gemm, test_devices=["gb200"])
    pipe, est = fitted_sibling(train, "gemm", params)
    X = pipe[:-1].transform(train)
    drawn = est._nested_rows(row_keys(X, est.transfer_.config_columns))
    per_gpu = train.assign(drawn=drawn).groupby("device_id")["drawn"].mean()
    assert 0.3 < per_gpu.min() and per_gpu.max() < 0.7  # about half of every GPU's rows, not of one GPU's
    kept = {gpu: set(map(tuple, train.loc[drawn & (train["device_id"] == gpu).to_numpy(), ["m", "n", "k", "dtype"]]
                         .itertuples(index=False))) for gpu in ("b300_sxm", "gb300")}
    assert kept["b300_sxm"] == kept["gb300"]  # a sibling pair stays aligned
    noisy = gemm.copy()
    on = (noisy["device_id"] == "gb200").to_numpy()
    noisy.loc[on, "runtime_ms"] *= np.random.default_rng(2).uniform(0.5, 2.0, on.sum())
    _, est_noisy = fitted_sibling(unseen_hardware_split(noisy, test_devices=["gb200"])[0], "gemm", params)
    assert est_noisy.settings_ == est.settings_ and est_noisy.nested_ == est.nested_
    with pytest.raises(ValueError, match="nested_share"):
        fitted_sibling(train, "gemm", {**PARAMS, "nested_share": 0.0})


def test_a_gpu_without_a_sibling_gets_the_previous_transfer(gemm):
    """The H100 has no sibling among the Blackwell GPUs: the unseen-GPU default's answer for it is exactly
    the previous default's (the transfer fitted alone with the same parameters)."""
    from perfcast.models import make_model

    train, test = unseen_hardware_split(gemm, test_devices=["h100_sxm"])
    params = {**PARAMS, "nested_share": 0.5}
    pipe, est = fitted_sibling(train, "gemm", params)
    assert est.n_nested_folds_ == 3  # every Blackwell GPU has its siblings in training
    transfer_params = {k: v for k, v in params.items() if k not in ("nested_max_rows", "nested_share")}
    previous = make_model("transfer", "gemm", ["runtime_ms"], transfer_params).fit(train, train[["runtime_ms"]])
    np.testing.assert_allclose(pipe.predict(test).ravel(), previous.predict(test).ravel(), rtol=1e-9)
    _, lo, hi = est.predict_interval(pipe[:-1].transform(test))
    assert np.isinf(hi).all()  # nothing calibrated a GPU without a sibling here: the benchmark's wrapper does


def test_the_unseen_gpu_presets_fit_the_sibling_model_on_every_row():
    """Both unseen-GPU presets name the shrunk sibling copy, and the benchmark hands it every training row
    (its sibling tables need them) with the row budget as its base model's ``max_rows``."""
    from perfcast.experiments.presets import budget_rows, choose

    rows = pd.DataFrame({"runtime_ms": np.ones(50_000)})
    for task in ("gemm", "attention"):
        choice = choose(f"aiconfigurator-unseen-gpu-{task}")
        assert choice.name == "sibling" and 0 < choice.params["nested_share"] < 1
        got, params, note = budget_rows(choice.name, choice.params, rows, 30_000, 0)
        assert len(got) == len(rows) and params["max_rows"] == 30_000 and "every row" in note


def test_the_builtin_models_keep_the_transfer():
    """The built-ins follow the unseen-GPU presets but keep the sibling transfer (no shrunk-copy table of every
    training row in the wheel), with the presets' transfer and base-model parameters."""
    from perfcast.experiments.builtin_models import BASE, MAX_ROWS, _params, _preset
    from perfcast.experiments.builtin_selection import CANDIDATES
    from perfcast.training.config import load_preset

    for task in ("gemm", "attention"):
        name, params = _params(task, 5)
        assert name == "transfer" and _preset(task).model.name == "transfer"
        preset = load_preset(f"aiconfigurator-unseen-gpu-{task}").model.params
        assert "nested_share" in preset and "nested_share" not in params
        assert params == {**{k: v for k, v in preset.items() if k != "nested_share"}, **CANDIDATES[BASE[task]],
                          "n_estimators": 5, "max_rows": MAX_ROWS}
