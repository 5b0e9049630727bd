"""GroupAttentionRegressor on real SPEC CPU2017 and PerfCastDB records (through perfcast's importers and CPU
feature transformer): accuracy, reproducibility, wiring of both attention paths, scaling, masking, I/O."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.model_selection import GroupShuffleSplit

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore
from perfcast.features.cpu import CpuFeatures
from perfcast.features.groups import feature_groups
from perfcast.models.estimators.group_attention import WEIGHTS_FILE, GroupAttentionRegressor

GROUPS = feature_groups("cpu_bench")
FAST = dict(d_model=16, n_heads=2, batch_size=128, random_state=0, n_threads=1)


@pytest.fixture(scope="module")
def records(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """cpu_bench records from perfcast's importers: 1,500 published SPEC CPU2017 results + PerfCastDB."""
    root = tmp_path_factory.mktemp("group_attention")
    source = data_root / "spec-cpu2017" / "cpu2017-results.csv.gz"
    with gzip.open(source, "rt", encoding="utf-8-sig") as f:
        lines = f.read().splitlines()  # one result per line (no quoted newlines in the export)
    picked = np.sort(np.random.default_rng(0).choice(np.arange(1, len(lines)), size=1500, replace=False))
    (root / "spec").mkdir()
    with gzip.open(root / "spec" / "cpu2017-results.csv.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join([lines[0], *(lines[i] for i in picked)]) + "\n")
    store = RecordStore(root / "store")
    get_importer("spec-cpu2017").run(root / "spec", store)
    get_importer("perfcastdb-sample").run(data_root / "perfcastdb-sample", store)
    return store.read("cpu_bench")


@pytest.fixture(scope="module")
def spec(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, pd.Series]:
    """SPEC base-run records, their features, [base, peak] scores (NaN = no peak run), processor names."""
    spec = records[records["source"] == "spec_cpu2017"]
    base = spec[spec["variant"] == "base"].reset_index(drop=True)
    peak = spec[spec["variant"] == "peak"].set_index("x_result_id")["score"]
    scores = np.column_stack([base["score"], base["x_result_id"].map(peak)]).astype(float)
    X = CpuFeatures().fit(base).transform(base)
    return base, X, scores, base["device_name"].astype(str)


@pytest.fixture(scope="module")
def perfcastdb_raw(data_root: Path) -> pd.DataFrame:
    return pd.read_csv(data_root / "perfcastdb-sample" / "train_data.csv")


def _log_rmse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.log(pred) - np.log(true)) ** 2)))


def _median_ape(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.median(np.abs(pred - true) / true))


def test_beats_training_mean_on_unseen_processors(spec):
    records, _, scores, processor = spec
    base = scores[:, 0]
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=0.25, random_state=0).split(records, groups=processor))
    features = CpuFeatures().fit(records.iloc[train])
    model = GroupAttentionRegressor(GROUPS, max_epochs=10, patience=4, lr=3e-3, **FAST)
    model.fit(features.transform(records.iloc[train]), base[train], val_groups=processor.iloc[train])
    pred = model.predict(features.transform(records.iloc[test]))
    mean = np.full(len(test), base[train].mean())
    geo_mean = np.full(len(test), np.exp(np.log(base[train]).mean()))
    assert pred.shape == (len(test),)
    # median APE and log-RMSE: robust to the export's few bogus scores (e.g. a 1.0 from a 2016 pre-release run)
    assert _median_ape(pred, base[test]) < 0.35 * _median_ape(mean, base[test])
    assert _log_rmse(pred, base[test]) < 0.35 * _log_rmse(geo_mean, base[test])
    assert 1 <= model.best_epoch_ <= len(model.history_["train_loss"]) <= 10
    assert model.history_["val_loss"][model.best_epoch_ - 1] == min(model.history_["val_loss"])


def test_learns_perfcastdb_workload_levels(records):
    runs = records[records["source"] == "perfcastdb"].reset_index(drop=True)
    score = runs["score"].to_numpy(dtype=float)  # spans 1 ns latencies to 750 GB/s bandwidths
    order = np.random.default_rng(0).permutation(len(runs))
    train, test = order[:110], order[110:]
    features = CpuFeatures().fit(runs.iloc[train])
    model = GroupAttentionRegressor(GROUPS, max_epochs=40, patience=10, lr=3e-3, **{**FAST, "batch_size": 32})
    model.fit(features.transform(runs.iloc[train]), score[train])
    geo_mean = np.full(len(test), np.exp(np.log(score[train]).mean()))
    assert _log_rmse(model.predict(features.transform(runs.iloc[test])), score[test]) < 0.5 * _log_rmse(
        geo_mean, score[test]
    )


def test_same_seed_same_predictions_and_caller_state_untouched(spec):
    _, X, scores, _ = spec
    X, base = X.iloc[:400], scores[:400, 0]
    rng_before = torch.get_rng_state()
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    first = GroupAttentionRegressor(GROUPS, max_epochs=3, **FAST).fit(X, base).predict(X)
    second = GroupAttentionRegressor(GROUPS, max_epochs=3, **FAST).fit(X, base).predict(X)
    other = GroupAttentionRegressor(GROUPS, max_epochs=3, **{**FAST, "random_state": 1}).fit(X, base).predict(X)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first, other)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    assert torch.are_deterministic_algorithms_enabled() == deterministic_before


def test_within_and_cross_group_attention_both_receive_gradient(spec):
    _, X, scores, _ = spec
    X, base = X.iloc[:256], scores[:256, 0]
    model = GroupAttentionRegressor(GROUPS, max_epochs=1, **FAST).fit(X, base)
    net = model.net_.train()
    scaled, missing = model._scale_x(X.to_numpy())
    target = (np.log(base) - model.y_mean_) / model.y_scale_
    pred = net(torch.as_tensor(scaled, dtype=torch.float32), torch.as_tensor(missing))
    torch.nn.functional.mse_loss(pred[:, 0], torch.as_tensor(target, dtype=torch.float32)).backward()
    for path in (net.within, net.across):
        for name, param in path.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_scalers_see_only_the_training_split(spec):
    _, X, scores, processor = spec
    X, base, processor = X.iloc[:600], scores[:600, 0], processor.iloc[:600]
    params = dict(groups=GROUPS, max_epochs=2, validation_fraction=0.3, **FAST)
    model = GroupAttentionRegressor(**params).fit(X, base, val_groups=processor)
    val = model.validation_indices_
    train = np.setdiff1d(np.arange(len(X)), val)
    assert 0 < len(val) < len(X)
    assert set(processor.iloc[val]).isdisjoint(processor.iloc[train])  # whole processors held out
    observed = ~X.iloc[train].isna().all().to_numpy()
    np.testing.assert_allclose(model.x_mean_[observed], X.iloc[train].mean().to_numpy()[observed])
    np.testing.assert_allclose(model.y_mean_, [np.log(base[train]).mean()])
    assert not np.allclose(model.x_mean_[observed], X.mean().to_numpy()[observed])

    # wildly different validation rows (and predicting on other data) leave every fitted statistic unchanged
    X_val_changed, base_val_changed = X.copy(), base.copy()
    X_val_changed.iloc[val] *= 1000.0
    base_val_changed[val] *= 1000.0
    changed = GroupAttentionRegressor(**params).fit(X_val_changed, base_val_changed, val_groups=processor)
    changed.predict(X)
    np.testing.assert_array_equal(changed.validation_indices_, val)
    for stat in ("x_mean_", "x_scale_", "y_mean_", "y_scale_"):
        np.testing.assert_array_equal(getattr(changed, stat), getattr(model, stat))


def test_nan_targets_are_masked_out_of_the_loss(spec):
    _, X, scores, _ = spec
    X, targets = X.iloc[:300].reset_index(drop=True), scores[:300]
    assert np.isnan(targets[:, 1]).any() and not np.isnan(targets[:, 1]).all()  # real missing peak runs
    # full batch, no dropout, no validation split: the fit depends on the data only through the loss
    params = dict(groups=GROUPS, d_model=16, n_heads=2, dropout=0.0, batch_size=1024, max_epochs=5,
                  validation_fraction=0.0, n_threads=1)
    model = GroupAttentionRegressor(**params).fit(X, targets)
    pred = model.predict(X)
    assert pred.shape == (300, 2) and np.isfinite(pred).all()
    np.testing.assert_allclose(model.y_mean_, np.nanmean(np.log(targets), axis=0))

    # a copy of every row with all targets NaN keeps the input scaler (same mean and std) and adds no loss
    doubled = GroupAttentionRegressor(**params).fit(
        pd.concat([X, X], ignore_index=True), np.vstack([targets, np.full_like(targets, np.nan)])
    )
    np.testing.assert_allclose(doubled.predict(X), pred, rtol=1e-4)


def test_save_load_round_trip_is_exact_and_weights_only(spec, tmp_path, monkeypatch):
    _, X, scores, _ = spec
    X, targets = X.iloc[:300], scores[:300]
    model = GroupAttentionRegressor(GROUPS, max_epochs=2, **FAST).fit(X, targets)
    model.save(tmp_path / "model")

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    loaded = GroupAttentionRegressor.load(tmp_path / "model")
    assert calls and all(kw.get("weights_only") is True for kw in calls)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.get_params() == model.get_params()
    assert list(loaded.feature_names_in_) == list(X.columns) and loaded.n_features_in_ == X.shape[1]

    # a weights file that smuggles in a Python object is refused, not executed
    torch.save({"payload": _Smuggled()}, tmp_path / "model" / WEIGHTS_FILE)
    with pytest.raises(pickle.UnpicklingError):
        GroupAttentionRegressor.load(tmp_path / "model")


class _Smuggled:
    """Stands for arbitrary pickled code in a tampered weights file."""


def test_clear_errors_for_bad_groups_and_inputs(spec, perfcastdb_raw):
    _, X, scores, _ = spec
    X, base = X.iloc[:100], scores[:100, 0]
    with pytest.raises(ValueError, match=r"group 'memory' names columns not in X: \['mem_channels'\]"):
        GroupAttentionRegressor({**GROUPS, "memory": [*GROUPS["memory"], "mem_channels"]}).fit(X, base)
    with pytest.raises(ValueError, match=r"in no group: \['log10_working_set_bytes'\]"):
        GroupAttentionRegressor({**GROUPS, "workload": GROUPS["workload"][:-1]}).fit(X, base)
    with pytest.raises(ValueError, match=r"'cores' is in both group 'processor' and group 'extra'"):
        GroupAttentionRegressor({**GROUPS, "extra": ["cores"]}).fit(X, base)
    with pytest.raises(ValueError, match="log_target=True needs y > 0"):
        GroupAttentionRegressor(GROUPS).fit(X, base - base.mean())
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        GroupAttentionRegressor(GROUPS).fit(X.to_numpy(), base)

    raw = perfcastdb_raw[["SVR.CPU.Base Frequency", "SVR.CPU.Microarchitecture", "SVR.System.OS"]]
    with pytest.raises(TypeError, match=r"non-numeric columns .*'SVR.CPU.Microarchitecture'.*'SVR.System.OS'"):
        GroupAttentionRegressor().fit(raw, perfcastdb_raw["RESULT.Value"])

    model = GroupAttentionRegressor(GROUPS, max_epochs=1, **FAST).fit(X, base)
    with pytest.raises(ValueError, match=r"lacks columns seen in fit: \['l3_mb'\]"):
        model.predict(X.drop(columns="l3_mb"))
