"""The unseen-GPU default in the adaptation benchmark for a GPU with a family sibling in training, on real
aiconfigurator GEMM latencies of the B300, GB300, GB200 (one family) and H100 (none in training), each left out in
turn: at K = 0 its prediction, at K > 0 (``sibling_start``) its prediction as the start the guard may choose; the
leave-one-sibling-GPU-out choices; a bad ``k0_model`` or ``sibling_start`` refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.eval import metrics
from perfcast.experiments.adapt_bench import adapt_device
from perfcast.experiments.adapt_k0 import (K0_KEY, START, SiblingK0, k0_choice, pick_k0, pick_start, sibling_start,
                                           take_k0, take_start, with_starts)
from perfcast.experiments.baselines import CONFIG_KEYS
from perfcast.experiments.results import Result
from perfcast.models import make_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.training.config import ModelConfig

GPUS = ["b300_sxm", "gb300", "gb200", "h100_sxm"]
PROTOCOL = "aiconfigurator-adapt"
OPTIONS = {"budgets": [0], "test_rows": 10_000, "settings": {"plain": {}},
           "k0_model": {"gemm": "aiconfigurator-unseen-gpu-gemm"}}


@pytest.fixture(scope="module")
def rows(data_root: Path) -> pd.DataFrame:
    """The same 150 real trtllm GEMM configurations measured on each GPU (a sibling's copy needs them aligned)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "gemm" in u.name and "trtllm" in u.as_posix()
             and any(f"/{d}/" in u.as_posix() for d in GPUS)]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["runtime_ms"] > 0]
    keys = list(CONFIG_KEYS["gemm"])
    shared = df.groupby(keys).filter(lambda g: set(g["device_id"]) >= set(GPUS))[keys].drop_duplicates()
    picked = shared.sample(n=150, random_state=0)
    return df.merge(picked, on=keys).drop_duplicates([*keys, "device_id"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def named():
    """The preset's unseen-GPU default for GEMM, shrunk (fewer trees, small nested share) to fit in seconds."""
    protocol, choice = k0_choice(OPTIONS, "gemm", PROTOCOL)
    params = {**choice.params, "n_estimators": 20, "nested_share": 1.0}
    config = choice.config.model_copy(update={"model": ModelConfig(name=choice.name, params=params)})
    return protocol, dataclasses.replace(choice, config=config, train_rows=400)


def left_out(rows: pd.DataFrame, dev: str, named, with_k0: bool = True, options: dict | None = None):
    """``adapt_device``'s rows (default: at K = 0) for ``dev`` (base: a small hybrid fitted on the other GPUs)."""
    train, test = rows[rows["device_id"] != dev], rows[rows["device_id"] == dev].reset_index(drop=True)
    base = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 20}),
                              n_splits=3).fit(train, train[["runtime_ms"]])
    k0 = SiblingK0.of(named, dev, train, 0) if with_k0 else None
    found = adapt_device(PROTOCOL, "gemm", base, train, test, pd.Series("", index=test.index), CONFIG_KEYS["gemm"],
                         "hybrid", 0.0, 0, options or OPTIONS, k0_model=k0)
    return found, k0, test


def test_a_sibling_gpu_is_scored_with_the_unseen_gpu_default_and_one_without_is_unchanged(rows, named) -> None:
    found, k0, test = left_out(rows, "b300_sxm", named)
    assert k0 is not None and k0.protocol == "aiconfigurator-unseen-gpu-gemm"
    res = found[("", 0)][K0_KEY]
    assert res.model == "sibling" and res.n == len(test)
    # the default fitted as its own protocol fits it, on the same rows: the same predictions
    pred, lo, hi, _ = k0(test)
    assert res.ours == pytest.approx(metrics.mape(test["runtime_ms"], pred))
    assert res.coverage == pytest.approx(metrics.coverage(test["runtime_ms"], lo, hi))
    # ... which copy the family's measurements, so the sibling GPU's K = 0 differs from the base's
    assert res.ours != found[("", 0)][("plain", (None, False, 1.0))].ours
    taken: dict = {}
    take_k0(found, taken)
    assert set(taken) == {"b300_sxm"} and K0_KEY not in found[("", 0)]
    # the H100 has no family sibling in training: no default, and its rows are the base's to the digit
    alone, none, _ = left_out(rows, "h100_sxm", named)
    plain, _, _ = left_out(rows, "h100_sxm", named, with_k0=False)
    assert none is None and alone.keys() == plain.keys()
    for key, variants in alone.items():
        assert variants.keys() == plain[key].keys()
        for v, r in variants.items():
            assert (r.ours, r.coverage, r.width, r.model) == (plain[key][v].ours, plain[key][v].coverage,
                                                             plain[key][v].width, plain[key][v].model)


def _rows(ours: dict[str, float], model: str) -> list[Result]:
    return [Result(PROTOCOL, "runtime_ms, K=0", d, "mape", x, model, 10, 1.0, coverage=0.9, width=0.2)
            for d, x in ours.items()]


def test_a_gpu_gets_the_default_only_where_it_beat_the_base_on_every_other_sibling_gpu() -> None:
    base = {"a": 0.10, "b": 0.10, "c": 0.10, "h": 0.30}
    default = {"a": 0.05, "b": 0.06, "c": 0.20}

    def picked(default: dict[str, float]) -> dict[str, str]:
        selected = {("", 0): _rows(base, "hybrid"), ("", 32): _rows(base, "hybrid")}
        alt = {d: {"": r} for d, r in zip(default, _rows(default, "sibling"))}
        return {r.device: r.model for r in pick_k0(selected, alt)[("", 0)]}

    # c is judged on a and b (both beat the base): the default, though it loses on c itself; a and b are judged
    # with c among their others (it lost there): the base; h has no sibling: the base
    assert picked(default) == {"a": "hybrid", "b": "hybrid", "c": "sibling", "h": "hybrid"}
    # c's own score never decides c
    assert picked({**default, "c": 0.01}) == {"a": "sibling", "b": "sibling", "c": "sibling", "h": "hybrid"}
    assert picked({**default, "c": 0.50})["c"] == "sibling"
    # one sibling GPU alone: nothing to judge it on, the base
    assert picked({"a": 0.01}) == {"a": "hybrid", "b": "hybrid", "c": "hybrid", "h": "hybrid"}


def test_a_bad_k0_model_is_refused_with_what_to_name() -> None:
    with pytest.raises(ValueError, match=r"'no-such-protocol' for gemm.*aiconfigurator-unseen-gpu-gemm"):
        k0_choice({"k0_model": {"gemm": "no-such-protocol"}}, "gemm", PROTOCOL)
    with pytest.raises(ValueError, match="fits 'attention' kernels; name a gemm protocol"):
        k0_choice({"k0_model": {"gemm": "aiconfigurator-unseen-gpu-attention"}}, "gemm", PROTOCOL)
    with pytest.raises(ValueError, match="must be a table of protocol names by kernel family"):
        k0_choice({"k0_model": "aiconfigurator-unseen-gpu-gemm"}, "gemm", PROTOCOL)
    assert k0_choice({"k0_model": {"attention": "aiconfigurator-unseen-gpu-attention"}}, "gemm", PROTOCOL) is None


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, variants in a.items():
        assert variants.keys() == b[key].keys()
        for v, r in variants.items():
            assert (r.ours, r.coverage, r.width, r.model) == (b[key][v].ours, b[key][v].coverage, b[key][v].width,
                                                             b[key][v].model)


def test_sibling_start_adapts_a_sibling_gpu_again_from_the_default_and_leaves_one_without_unchanged(rows, named
                                                                                                    ) -> None:
    # half the GB200's configurations dropped: the nearest donor (GB200) misses them, where the default copies the
    # GB300, so the two starts differ there
    gb200 = rows.index[rows["device_id"] == "gb200"]
    rows = rows.drop(gb200[::2])
    on = {**OPTIONS, "budgets": [0, 32], "sibling_start": True}
    found, k0, test = left_out(rows, "b300_sxm", named, options=on)
    plain, _, _ = left_out(rows, "b300_sxm", named, options={**on, "sibling_start": False})
    # the start is the default's point fit, which predicts as its protocol's fit with intervals does
    assert k0.point(test)[0] == pytest.approx(k0(test)[0], rel=1e-12)
    variant = ("plain", (None, False, 1.0))
    assert (START, variant) not in found[("", 0)]
    new, old = found[("", 32)][(START, variant)], found[("", 32)][variant]
    assert any("started from the unseen-GPU default's latencies" in n for n in new.notes)
    assert any("started from gb200's latencies" in n for n in old.notes)
    assert new.ours != pytest.approx(old.ours, rel=1e-3)
    starts: dict = {}
    take_start(found, starts)
    assert set(starts) == {"b300_sxm"} and starts["b300_sxm"][("", 32)][variant] is new
    _same(found, plain)  # the nearest donor's variant is the run without the option, to the digit
    # the H100 has no family sibling in training: no second variant, its rows as without the option
    alone, none, _ = left_out(rows, "h100_sxm", named, options=on)
    without, _, _ = left_out(rows, "h100_sxm", named, options={**on, "sibling_start": False})
    assert none is None
    _same(alone, without)


def _per_k(ours: dict[str, float], model: str) -> dict[tuple[str, int], list[Result]]:
    rows = {}
    for k in (0, 32):
        rows[("", k)] = _rows(ours, model)
        for r in rows[("", k)]:
            r.probe_budget = k
    return rows


def test_a_gpu_is_adapted_from_the_default_only_where_that_beat_the_donor_start_on_every_other_sibling_gpu() -> None:
    old = {"a": 0.10, "b": 0.10, "c": 0.10, "h": 0.30}

    def picked(new: dict[str, float]) -> dict[str, str]:
        alt = _per_k({**old, **new}, "from default")
        out = pick_start(_per_k(old, "from donor"), alt, sorted(new))
        assert {r.model for r in out[("", 0)]} == {"from donor"}  # K = 0 is not adapted: never touched
        return {r.device: r.model for r in out[("", 32)]}

    assert picked({"a": 0.05, "b": 0.06, "c": 0.20}) == {"a": "from donor", "b": "from donor", "c": "from default",
                                                         "h": "from donor"}
    assert picked({"a": 0.05, "b": 0.06, "c": 0.01})["a"] == "from default"
    assert picked({"a": 0.05, "b": 0.06, "c": 0.50})["c"] == "from default"  # c's own score never decides c
    assert picked({"a": 0.01}) == {"a": "from donor", "b": "from donor", "c": "from donor", "h": "from donor"}
    out = pick_start(_per_k(old, "from donor"), _per_k({**old, "a": 0.05, "b": 0.06}, "from default"), ["a", "b"])
    assert any("the nearest donor" in n and "b 6.00% vs 10.00%" in n for n in out[("", 32)][0].notes)


def test_with_starts_swaps_the_sibling_gpus_variants_into_a_copy() -> None:
    per_device = {("", 32): [{"v": r} for r in _rows({"a": 0.1, "h": 0.3}, "from donor")]}
    starts = {"a": {("", 32): {"v": _rows({"a": 0.05}, "from default")[0]}}}
    swapped = with_starts(per_device, starts)
    assert [d["v"].model for d in swapped[("", 32)]] == ["from default", "from donor"]
    swapped[("", 32)][1]["v"].notes.append("chosen")
    assert per_device[("", 32)][1]["v"].notes == []  # a copy: choosing among it notes nothing on the original


def test_a_bad_sibling_start_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValueError, match="sibling_start must be true or false"):
        sibling_start({"sibling_start": "yes", **OPTIONS}, "gemm", PROTOCOL)
    with pytest.raises(ValueError, match=r"needs k0_model to name the unseen-GPU default for attention"):
        sibling_start({**OPTIONS, "sibling_start": True}, "attention", PROTOCOL)
    assert sibling_start({**OPTIONS, "sibling_start": True}, "gemm", PROTOCOL) is True
    assert sibling_start(OPTIONS, "gemm", PROTOCOL) is False
