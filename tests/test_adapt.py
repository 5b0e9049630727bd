"""Adapting a trained model to a GPU it never saw, from a planned handful of that GPU's real measurements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from perfcast import Predictor
from perfcast.cli import app
from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore
from perfcast.models import make_model
from perfcast.models.estimators.adapt import AdaptedModel, fit_adaptation
from perfcast.models.persistence.adapted import save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.perf_probe.plan import adaptation_plan, plan_configs

TRAIN_GPUS = ["a100_sxm", "h100_sxm", "b300_sxm", "rtx_pro_6000_server"]
TARGET_GPU = "l40s"  # no family sibling among the training GPUs: predicted from its spec sheet alone
DTYPES = ["bfloat16", "fp8"]
K = 128


@pytest.fixture(scope="module")
def tables(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real aiconfigurator GEMM latencies (bf16 and fp8): 400 rows of each training GPU, 3,000 of the L40S."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/trtllm/" in u.as_posix()]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"].isin(DTYPES)]
    train = df[df["device_id"].isin(TRAIN_GPUS)].groupby("device_id").sample(n=400, random_state=0)
    target = df[df["device_id"] == TARGET_GPU].sample(3000, random_state=0)
    return train.reset_index(drop=True), target.reset_index(drop=True)


@pytest.fixture(scope="module")
def base(tables) -> ConformalRegressor:
    train, _ = tables
    pipe = make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 80})
    return ConformalRegressor(pipe, n_splits=3).fit(train, train[["runtime_ms"]])


@pytest.fixture(scope="module")
def bundle(base, tables, tmp_path_factory) -> Path:
    return save_model(base, "gemm", tables[0], tmp_path_factory.mktemp("models") / "base", {"model": "hybrid"})


@pytest.fixture(scope="module")
def split(tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The K planned rows of the L40S (revealed) and the rest (the test)."""
    target = tables[1]
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "gemm", K))
    return target[picked], target[~picked]


def mape(y: pd.Series, pred) -> float:
    return float(np.mean(np.abs(np.asarray(pred, dtype="float64") / y.to_numpy(dtype="float64") - 1)))


# ------------------------------------------------------------------------------------------------ plan
def test_the_plan_never_reads_measured_latencies(tables):
    target = tables[1]
    blind = target.assign(runtime_ms=np.nan, power_w=np.nan, energy_j=np.nan)
    plan = adaptation_plan(target, "gemm", K)
    assert plan.equals(adaptation_plan(blind, "gemm", K))
    assert len(plan) == K and plan.is_unique
    # every kernel kind is measured, and the plan spreads over the sizes rather than clustering
    chosen = target.loc[plan]
    assert set(chosen["dtype"]) == set(DTYPES)
    assert np.log2(chosen["m"]).std() > 0.5 * np.log2(target["m"]).std()


def test_the_plan_prefers_wide_intervals_and_plans_probe_configs(tables):
    target = tables[1]
    width = np.where(target["m"] >= 4096, 1.0, 0.1)  # the model is unsure about large m only
    plain = target.loc[adaptation_plan(target, "gemm", 64)]
    steered = target.loc[adaptation_plan(target, "gemm", 64, width=width)]
    assert (steered["m"] >= 4096).sum() > (plain["m"] >= 4096).sum()
    configs = [{"op": "matmul", "dtype": "float32", "m": m, "n": n, "k": 64, "batch": 1}
               for m in (64, 128, 256, 512) for n in (64, 128, 256, 512)]
    picked = plan_configs(configs, "gemm", 5)
    assert len(picked) == 5 and all(c in configs for c in picked)
    # a host with a GPU: the budget is each device's, and each device's plan is the one it would get alone
    both = [{**c, "device": d} for d in ("cpu", "cuda") for c in configs]
    per_device = plan_configs(both, "gemm", 5)
    for d in ("cpu", "cuda"):
        assert [c for c in per_device if c["device"] == d] == plan_configs([c for c in both if c["device"] == d],
                                                                           "gemm", 5)
    assert len(per_device) == 10


# ---------------------------------------------------------------------------------------- adaptation
def test_zero_measurements_is_the_base_model_exactly(base, bundle, split):
    _, test = split
    adapted = AdaptedModel(base).fit(test.iloc[:0])
    for got, want in zip(adapted.predict_with_interval(test), base.predict_with_interval(test), strict=True):
        np.testing.assert_array_equal(got, np.asarray(want).reshape(len(test), -1)[:, 0])
    before = Predictor.load(bundle)
    after = before.adapt(test.iloc[:0])
    pd.testing.assert_frame_equal(after.predict(test), before.predict(test))


def test_rows_the_base_already_predicts_leave_it_unchanged(base, split):
    """The guard: when the rows do not support a correction, none is applied."""
    revealed, _ = split
    F = base.estimator_[0].transform(revealed)
    pred = np.asarray(base.estimator_[-1].predict(F), dtype="float64")
    found = fit_adaptation(F, pred, pred.copy(), task="gemm")
    assert found.correction.mode == "none"


def test_adapting_on_planned_rows_beats_the_base_on_the_rest_of_the_gpu(base, bundle, split):
    revealed, test = split
    before = Predictor.load(bundle)
    after = before.adapt(revealed)
    assert after.metadata["adaptation"]["mode"] in ("level", "shape", "fine")
    y = test["runtime_ms"]
    got_before, got_after = before.predict(test), after.predict(test)
    assert mape(y, got_after["runtime_ms"]) < 0.8 * mape(y, got_before["runtime_ms"])
    covered = ((y >= got_after["runtime_ms_lo"]) & (y <= got_after["runtime_ms_hi"])).mean()
    assert 0.75 <= covered <= 0.99
    # the in-memory adaptation of the fitted model agrees with the loaded bundle's
    np.testing.assert_allclose(AdaptedModel(base).fit(revealed).predict(test), got_after["runtime_ms"], rtol=1e-9)


def test_an_adapted_bundle_round_trips_exactly(bundle, split, tmp_path):
    revealed, test = split
    adapted = Predictor.load(bundle).adapt(revealed)
    path = save_adapted(adapted.model, tmp_path / "adapted", metadata={"lineage": "test"})
    loaded = Predictor.load(path)
    pd.testing.assert_frame_equal(loaded.predict(test), adapted.predict(test))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["estimators"]["heads"][0]["kind"] == "adapted"
    assert manifest["metadata"]["adaptation"]["base_model"] == str(bundle)
    # adapting the adapted model again starts from the base, not from the first correction
    again = loaded.adapt(revealed)
    pd.testing.assert_frame_equal(again.predict(test), adapted.predict(test))


# ------------------------------------------------------------------------------------------------ CLI
def _store_of(frame: pd.DataFrame, path: Path) -> Path:
    store = RecordStore(path)
    store.append(frame, frame.attrs.get("task", "gemm"))
    return path


def test_the_cli_adapts_a_model_to_a_store(bundle, split, tables, tmp_path):
    revealed, test = split
    store = _store_of(revealed, tmp_path / "store")
    out = tmp_path / "adapted"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    donors = _store_of(tables[0], tmp_path / "donors")
    res = CliRunner().invoke(app, ["adapt", str(bundle), "--store", str(store), "--out", str(out),
                                   "--tracking-uri", uri, "--registered-name", "l40s-adapted",
                                   "--donors", str(donors), "--donor-device", "h100_sxm", "--setting", "accurate"])
    assert res.exit_code == 0, res.output
    assert res.output.count("(chosen)") == 1 and "registered version 1" in res.output
    import mlflow

    client = mlflow.MlflowClient(uri)
    run = client.get_run(client.get_model_version("l40s-adapted", "1").run_id)
    assert run.data.tags["perfcast.base_model"] == str(bundle)  # lineage: the base model and the records
    assert run.data.params["rows"] == str(len(revealed))
    assert any(i.dataset.name == f"adapt-{TARGET_GPU}" for i in run.inputs.dataset_inputs)
    loaded = Predictor.load(out)
    assert loaded.metadata["adaptation"]["device"] == TARGET_GPU
    assert loaded.metadata["adaptation"]["rows"] == len(revealed)
    assert loaded.metadata["adaptation"]["setting"] == "accurate" and loaded.model.heads[0].krige is not None
    h100 = tables[0][tables[0]["device_id"] == "h100_sxm"]
    pd.testing.assert_frame_equal(loaded.predict(test), Predictor.load(bundle).adapt(
        revealed, donors=h100, setting="accurate").predict(test))
    mlflow.set_tracking_uri(uri)  # the registered model is the adapted bundle, whatever --out was named
    pd.testing.assert_frame_equal(Predictor.load("models:/l40s-adapted/1").predict(test), loaded.predict(test))


def test_every_donor_device_is_offered_nearest_first(tables, tmp_path):
    from perfcast.experiments.baselines import nearest_devices
    from perfcast.workflows.adapt import AdaptationError, donor_records

    store = RecordStore(_store_of(tables[0], tmp_path / "donors"))
    got = donor_records(store, "gemm", "runtime_ms", None, TARGET_GPU)
    devices = list(pd.unique(got["device_id"]))
    others = sorted(set(tables[0]["device_id"].dropna()) - {TARGET_GPU})
    assert devices == nearest_devices(TARGET_GPU, others) and len(devices) >= 2
    assert list(pd.unique(donor_records(store, "gemm", "runtime_ms", "h100_sxm", TARGET_GPU)["device_id"])) == [
        "h100_sxm"]
    with pytest.raises(AdaptationError, match="holds no attention records"):
        donor_records(store, "attention", "runtime_ms", None, TARGET_GPU)


def test_the_cli_refuses_a_bad_adaptation_store(bundle, split, tables, data_root, tmp_path):
    revealed, _ = split
    runner = CliRunner()

    def adapt(store: Path, *extra: str):
        return runner.invoke(app, ["adapt", str(bundle), "--store", str(store), "--out", str(tmp_path / "out"),
                                   *extra])

    empty = tmp_path / "empty"
    empty.mkdir()
    res = adapt(empty)
    assert res.exit_code == 2 and "holds no gemm records" in " ".join(res.output.split())
    wrong_device = adapt(_store_of(revealed, tmp_path / "l40s"), "--device", "h100_sxm")
    assert wrong_device.exit_code == 2 and "l40s" in wrong_device.output and "--device" in wrong_device.output
    two = _store_of(pd.concat([revealed, tables[0].head(50)], ignore_index=True), tmp_path / "two")
    res = adapt(two)
    assert res.exit_code == 2 and "choose it with --device" in " ".join(res.output.split())
    imp = get_importer("aiconfigurator")
    unit = next(u for u in imp.units(data_root / "aiconfigurator") if "l40s" in u.as_posix()
                and "attention" in u.as_posix())
    attention = imp.load(data_root / "aiconfigurator", unit)["attention"].head(50)
    res = adapt(_store_of(revealed, tmp_path / "setting"), "--setting", "best")
    assert res.exit_code == 2 and "--setting 'best' is not one of fast, accurate" in " ".join(res.output.split())
    wrong_task = RecordStore(tmp_path / "attention")
    wrong_task.append(attention, "attention")
    res = adapt(tmp_path / "attention")
    assert res.exit_code == 2 and "no gemm records" in " ".join(res.output.split()) and "attention" in res.output
    assert not (tmp_path / "out").exists()  # nothing written on a refusal


def test_probe_plan_option_is_validated():
    res = CliRunner().invoke(app, ["probe", "gemm", "--plan", "nonsense", "--budget", "4"])
    assert res.exit_code == 2 and "unknown plan" in res.output


def test_a_donor_device_is_offered_and_saved_with_the_model(bundle, split, tables, tmp_path):
    """A sibling's measured latencies are a second starting point; when kept, they travel in the bundle."""
    from perfcast.models.estimators.adapt import DonorTable

    revealed, test = split
    donor = tables[0][tables[0]["device_id"] == "rtx_pro_6000_server"]
    adapted = Predictor.load(bundle).adapt(revealed, donors=donor)
    report = adapted.metadata["adaptation"]
    assert any(k.startswith("donor ") for k in report["cv_mean_ape"])  # both starting points were cross-validated
    head = adapted.model.heads[0]
    F = adapted.model.features.transform(donor)
    head.donors = DonorTable.build("rtx_pro_6000_server", F, donor["runtime_ms"].to_numpy(dtype="float64"), "gemm")
    assert np.isfinite(head.donors.lookup(F)).all()
    loaded = Predictor.load(save_adapted(adapted.model, tmp_path / "adapted"))
    pd.testing.assert_frame_equal(loaded.predict(test), adapted.predict(test))
    pd.testing.assert_frame_equal(loaded.predict(donor), adapted.predict(donor))


def test_a_kriged_adaptation_round_trips_through_a_bundle(bundle, split, tmp_path):
    """The benchmark's choice at K = 128 and 512 (configs/aiconfigurator_adapt.toml's ``krige`` setting) on real
    rows: the kriged bundle predicts after loading exactly as the adaptation did in memory, one config as in a
    batch, and the kriging moves the predictions away from the product default's (neither smooth nor kriged)."""
    from perfcast.models.persistence.adapted import adapt_loaded

    revealed, test = split
    base = Predictor.load(bundle)
    kriged, _ = adapt_loaded(base.model, base._records(revealed), smooth=True, krige=-1.0)
    in_memory = Predictor(kriged)
    pd.testing.assert_frame_equal(base.adapt(revealed, setting="accurate").predict(test), in_memory.predict(test))
    loaded = Predictor.load(save_adapted(kriged, tmp_path / "adapted"))
    assert loaded.model.heads[0].krige is not None and loaded.metadata["adaptation"]["kriging"]
    pd.testing.assert_frame_equal(loaded.predict(test), in_memory.predict(test))
    configs = test[["m", "n", "k", "dtype", "device_id"]].head(20).to_dict("records")
    one, batch = pd.DataFrame([loaded.predict(c) for c in configs]), loaded.predict(test.head(20))
    for col in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):  # the kriging's one row is the batch's, to the bit
        np.testing.assert_array_equal(one[col].to_numpy(), batch[col].to_numpy(), err_msg=col)
    plain = base.adapt(revealed)
    assert plain.model.heads[0].krige is None
    assert not np.allclose(plain.predict(test)["runtime_ms"], loaded.predict(test)["runtime_ms"])


def test_the_accurate_setting_grows_the_tree_budget_on_few_rows_only(bundle, tables):
    """``setting="accurate"`` on 32 planned L40S rows is the benchmark's ``krige_grow`` (every kept shape term has
    the small budget's trees) and on 128 its ``krige``: the product path hands ``grow_trees`` to the adaptation."""
    from perfcast.models.estimators.adapt_correction import SMALL_TREES
    from perfcast.models.persistence.adapted import adapt_loaded

    base, target = Predictor.load(bundle), tables[1]
    for k, grow in ((32, True), (128, False)):
        revealed = target[target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "gemm", k))]
        model, found = adapt_loaded(base.model, base._records(revealed), smooth=True, krige=-1.0, grow_trees=grow)
        test = target.drop(index=revealed.index).head(300)
        pd.testing.assert_frame_equal(base.adapt(revealed, setting="accurate").predict(test),
                                      Predictor(model).predict(test))
        trees = {t.count("\nTree=") for t in (found.correction.shape_text, *found.correction.more_shapes.values())
                 if t}
        assert trees and (trees == {SMALL_TREES["n_estimators"]}) == grow, (k, trees)


def test_a_smooth_kriged_bundle_answers_a_row_alone_as_in_a_batch(bundle, tables, tmp_path):
    """The preset's setting where it adds most to a prediction (K = 512: the guard picks the ``smooth`` term, a
    linear-leaf forest, and the kriging): after a save and load the batch is the in-memory adaptation's, and a
    configuration asked alone gets its batch value to the bit, the batch large enough to be walked in parallel
    blocks in the order of a column (perfcast.models.persistence.linear_kernels)."""
    from perfcast.models.persistence.adapted import adapt_loaded
    from perfcast.models.persistence.kernels import BLOCK

    target = tables[1]
    picked = target.index.isin(adaptation_plan(target.drop(columns=["runtime_ms"]), "gemm", 512))
    revealed, test = target[picked], target[~picked]
    base = Predictor.load(bundle)
    adapted, _ = adapt_loaded(base.model, base._records(revealed), smooth=True, krige=-1.0)
    head = adapted.heads[0]
    assert head.correction.mode == "smooth" and head.krige is not None  # what this test is about is in use
    loaded = Predictor.load(save_adapted(adapted, tmp_path / "adapted"))
    batch = loaded.predict(test)
    assert len(test) > 4 * BLOCK
    pd.testing.assert_frame_equal(batch, Predictor(adapted).predict(test))
    at = np.linspace(0, len(test) - 1, 40).astype(int)
    one = pd.DataFrame([loaded.predict(c) for c in test[["m", "n", "k", "dtype", "device_id"]].iloc[at]
                       .to_dict("records")])
    for col in ("runtime_ms", "runtime_ms_lo", "runtime_ms_hi"):
        np.testing.assert_array_equal(one[col].to_numpy(), batch[col].to_numpy()[at], err_msg=col)


def test_the_adapted_device_is_known_to_the_adapted_models_domain(bundle, split, tmp_path):
    """The L40S lies outside the training GPUs' spec box, so the base flags every row of it; the model adapted on
    its planned rows was fitted on that device, so those flags go (kept through a bundle), a GPU outside the box
    that was not measured is still flagged, and re-adapting to another device starts from the training-only
    domain (the L40S flagged again)."""
    revealed, rest = split
    hull = f"'{TARGET_GPU}' spec outside the training hull"
    base = Predictor.load(bundle)
    before = base.predict(rest)["ood_reason"].fillna("")
    assert before.str.contains(hull).all()
    adapted = Predictor.load(save_adapted(base.adapt(revealed).model, tmp_path / "adapted"))
    after = adapted.predict(rest)
    assert not after["ood_reason"].fillna("").str.contains(hull).any()
    assert after["in_distribution"].mean() > 0.9  # the rest: only sizes beyond every measured range stay flagged
    other = adapted.predict(rest.head(50).assign(device_id="b60"))["ood_reason"].fillna("")
    assert other.str.contains("'b60' spec outside the training hull").all()
    moved = adapted.adapt(revealed.assign(device_id="b60"))
    assert moved.predict(rest.head(50))["ood_reason"].fillna("").str.contains(hull).all()
    assert not moved.predict(rest.head(50).assign(device_id="b60"))["ood_reason"].fillna("").str.contains(
        "spec outside").any()


def test_the_accurate_setting_is_the_benchmarks_choice():
    """``setting="accurate"`` is what configs/aiconfigurator_adapt.toml's leave-one-GPU-out chose: for GEMM its
    ``krige_grow`` setting at 32 rows and ``krige`` at 128 and 512 (a plain kriging share); for attention
    ``krige_phase_stack_kvw`` at 128 rows and ``krige_phase_kvw`` at 512 (their kriging rule, with the KV cache's
    dtype), with the preset's floor. The package's constants and the preset must not drift apart."""
    import tomllib

    from perfcast.models.estimators.adapt_correction import DEFAULT_FLOORS
    from perfcast.models.estimators.adapt_krige import krige_rule
    from perfcast.models.persistence.adapted import setting_options

    bench = tomllib.loads((Path(__file__).resolve().parents[1] / "configs" / "aiconfigurator_adapt.toml")
                          .read_text(encoding="utf-8"))["benchmark"]["options"]
    grid = bench["settings"]
    keys = ("smooth", "per_phase", "per_phase_stack", "grow_trees")

    def preset(name: str, task: str) -> dict:
        chosen = grid[name]
        return {**{k: chosen[k] for k in keys if k in chosen},
                "krige": krige_rule(chosen["krige"], chosen.get("krige_inputs"), chosen.get("krige_scales"), task)}

    assert setting_options("accurate", "gemm", 512) == setting_options("accurate", "gemm", 128) == \
        preset("krige", "gemm") == {"smooth": True, "krige": -1.0}
    assert setting_options("accurate", "gemm", 32) == preset("krige_grow", "gemm")
    assert DEFAULT_FLOORS == {"attention": bench["attention_floor"]}  # every setting's floor is the preset's
    assert setting_options("accurate", "attention", 128) == preset("krige_phase_stack_kvw", "attention")
    assert setting_options("accurate", "attention", 512) == {**preset("krige_phase_kvw", "attention"),
                                                             "per_phase_stack": False}
    assert setting_options("fast", "attention", 512) == setting_options("fast", "gemm", 512) == {}
    with pytest.raises(ValueError, match="unknown adaptation setting 'best'"):
        setting_options("best", "gemm", 10)
