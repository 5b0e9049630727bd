"""The adaptation's latency floor: a few small measured kernels of a device whose floor the base does not know
must not multiply its large kernels (issue 13: more measurements must never make the prediction worse)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from perfcast.models.estimators.adapt import fit_adaptation, fit_correction_of
from perfcast.models.estimators.adapt_correction import Correction, FloorRule, latency_floors, mean_ape
from perfcast.models.estimators.adapt_floor import supported_floors

FLOOR_MS = 0.06
REPO = Path(__file__).resolve().parents[1]


def _case():
    """benchmarks/adapt_floor_case.py (a script beside its siblings, not a package module)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import adapt_floor_case

    return adapt_floor_case


def _slope_always_fitted():
    return _case().slope_always_fitted()


def _device(n: int, low: float, high: float, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Decode rows whose base prediction is their work time (log-uniform in [low, high] ms, 5% noise) and whose
    measured latency is that work plus a floor the base does not know."""
    rng = np.random.default_rng(seed)
    work = 10.0 ** rng.uniform(np.log10(low), np.log10(high), n)
    F = pd.DataFrame({"is_decode": np.ones(n), "dtype_bf16": np.ones(n)})
    return F, work * np.exp(rng.normal(0, 0.05, n)), work + FLOOR_MS


def _ape(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(pred / y - 1)))


def test_small_kernels_at_a_floor_do_not_multiply_the_large_ones():
    """The B60's K = 32 generation case, constructed: every measured row is a small kernel at the device's floor,
    the rows to predict are large. As a level, the ratio measured on the floor (~4x) multiplies the large kernels
    and the folds of the measured rows cannot see it; as a floor it fades where the work outgrows it."""
    F, base, y = _device(32, 0.005, 0.04, seed=0)
    Ft, bt, yt = _device(500, 0.3, 5.0, seed=1)
    plain = fit_adaptation(F, base, y, task="attention", stack=False)
    floored = fit_adaptation(F, base, y, task="attention", stack=False, floor=0.5)
    assert plain.correction.mode != "none"  # the rows support a correction: the guard keeps one
    assert _ape(bt * np.exp(plain.correction.log_ratio(Ft, bt)), yt) > 1.0  # without the floor: far worse than
    assert _ape(bt, yt) < 0.15  # the base itself on the large kernels
    with_floor = bt * np.exp(floored.correction.log_ratio(Ft, bt))
    assert _ape(with_floor, yt) < 0.15
    (found,) = floored.correction.floors.values()  # one kernel kind, its floor near the true one
    assert abs(found / FLOOR_MS - 1) < 0.3


def test_a_device_without_a_floor_keeps_its_level():
    """A device that is only 1.5x slower than the base: no dominant floor, so the corrected predictions are the
    level's exactly."""
    F, base, _ = _device(64, 0.01, 5.0, seed=2)
    y = 1.5 * base * np.exp(np.random.default_rng(3).normal(0, 0.03, len(base)))
    Ft, bt, _ = _device(300, 0.01, 5.0, seed=4)
    plain = fit_adaptation(F, base, y, task="attention", stack=False)
    floored = fit_adaptation(F, base, y, task="attention", stack=False, floor=0.5)
    assert not floored.correction.floors  # a slight fitted floor is not kept: the large kernels keep the level
    np.testing.assert_array_equal(floored.correction.log_ratio(Ft, bt), plain.correction.log_ratio(Ft, bt))


def test_a_floored_correction_round_trips_and_answers_a_row_alone_as_in_a_batch():
    F, base, y = _device(32, 0.005, 0.04, seed=0)
    Ft, bt, _ = _device(50, 0.001, 5.0, seed=5)
    correction = fit_adaptation(F, base, y, task="attention", stack=False, floor=0.5).correction
    assert correction.floors
    again = Correction.from_json(correction.to_json(), correction.shape_text, more_shapes=correction.more_shapes)
    batch = again.log_ratio(Ft, bt)
    np.testing.assert_array_equal(batch, correction.log_ratio(Ft, bt))
    one = [again.log_ratio(Ft.iloc[[i]], bt[[i]])[0] for i in range(len(bt))]
    np.testing.assert_allclose(one, batch, rtol=1e-12)


def test_the_adaptation_names_its_floors():
    F, base, y = _device(32, 0.005, 0.04, seed=0)
    found = fit_adaptation(F, base, y, task="attention", stack=False, floor=0.5)
    assert "latency floor for" in found.describe()
    assert found.report()["latency_floors"] == found.correction.floors


def _spanning(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Decode rows spanning 0.02-0.4 ms of work: a 0.06 ms floor (the small ones 0.36x the base above it) below
    0.13 ms, 0.77x the base above, 10% noise: a dominant floor is fitted on every row, and its slope is a poor fit."""
    rng = np.random.default_rng(seed)
    work = 10.0 ** rng.uniform(np.log10(0.02), np.log10(0.4), n)
    F = pd.DataFrame({"is_decode": np.ones(n), "dtype_bf16": np.ones(n)})
    y = np.where(work < 0.13, np.maximum(FLOOR_MS, 0.36 * work), 0.77 * work) * np.exp(rng.normal(0, 0.1, n))
    return F, work, y


def test_the_guard_drops_a_floor_its_folds_do_not_support():
    """Round 11 applied a dominant floor to every candidate; the guard now keeps it only where the chosen
    correction's out-of-fold error on the kind's rows is lower with it (here it is not)."""
    F, base, y = _spanning(24, seed=1)
    forced = fit_correction_of(F, base, y, task="attention", floor=FloorRule(0.5))
    chosen = fit_correction_of(F, base, y, task="attention", floor=0.5)
    assert forced.correction.floors  # a dominant floor is fitted on the rows
    assert not chosen.correction.floors
    assert mean_ape(chosen.residuals) < mean_ape(forced.residuals)


def test_the_floor_is_kept_per_kind_by_its_own_rows():
    """supported_floors' choice: a kind keeps its floor where the floored guard's residuals on its rows are lower
    (ties: no floor); when kinds disagree the guard runs once more with the kept kinds' floors only."""
    kinds = np.array(["a"] * 8 + ["b"] * 8)
    y = np.where(kinds == "a", FLOOR_MS, 1.0) + np.linspace(0.001, 0.002, 16)  # floors of both kinds dominate
    base = np.linspace(0.001, 0.01, 16)
    calls = []

    def guard(rule):
        calls.append(rule)
        residuals = np.full(16, 0.2)
        if rule is not None:  # the floor halves kind a's error, leaves kind b's the same (a tie)
            residuals[kinds == "a"] = 0.1
        return SimpleNamespace(residuals=residuals, rule=rule)

    found = supported_floors(guard, kinds, base, y, 0.5)
    assert [c.kinds if c is not None else None for c in calls] == [None, frozenset("ab"), frozenset("a")]
    assert found.rule == FloorRule(0.5, frozenset("a"))
    calls.clear()
    assert supported_floors(guard, kinds, base, 0.5 * base, 0.5).rule is None  # no floor found: one run
    assert calls == [None]


def test_the_slope_is_fitted_only_where_rows_measure_the_work():
    """A floor fitted from rows all at the floor gets the base's slope (a = 1, the floor refitted); rows spanning the
    floor and the work keep their fitted slope (the least squares of round 11), as do rows whose start already
    exceeds their latencies (``a = 1`` fits no positive floor). The real case where the fitted slope
    of rows mostly at the floor hurts: :func:`test_a_floor_fitted_across_the_sizes_does_not_hurt_the_large_kernels`."""
    kinds = pd.Series(["decode"] * 32)
    _, base, y = _device(32, 0.005, 0.04, seed=0)  # y = work + 0.06 ms, every row at the floor
    ((log_a, f),) = latency_floors(kinds, base, y, 0.5).values()
    assert log_a == 0.0 and abs(f / FLOOR_MS - 1) < 0.1
    rng = np.random.default_rng(1)
    work = np.concatenate([np.full(24, 0.01), np.linspace(0.2, 0.5, 8)])
    y = 0.5 * work + FLOOR_MS
    base = work * np.exp(rng.normal(0, 0.01, 32))
    ((log_a, f),) = latency_floors(kinds, base, y, 0.5).values()
    assert abs(np.exp(log_a) / 0.5 - 1) < 0.05 and abs(f / FLOOR_MS - 1) < 0.05
    start = 0.2 + _device(32, 0.005, 0.04, seed=0)[1]  # above every latency (a donor's, with its own floor)
    y = 0.04 + 0.1 * start  # no positive floor adds to the start
    ((log_a, f),) = latency_floors(kinds, start, y, 0.5).values()
    assert abs(np.exp(log_a) / 0.1 - 1) < 1e-6 and abs(f / 0.04 - 1) < 1e-6  # so the fitted slope is kept


@pytest.fixture(scope="module")
def b60_case(data_root, tmp_path_factory):
    """The lead's case (benchmarks/adapt_floor_case.py): a base trained on A100 and B300 generation attention,
    the 1,500 sampled B60 rows, the base's predictions of them and the two ways of picking 32 rows."""
    loaded, target, guess = _case().build_case(data_root, tmp_path_factory.mktemp("floor") / "base")
    return loaded, target, guess, _case().picks(target, guess)


def test_a_floor_fitted_across_the_sizes_does_not_hurt_the_large_kernels(b60_case):
    """The plan's 32 B60 rows span 0.012-0.36 ms of base; a dominant floor is found, and its slope, fitted from two
    large rows, took the large kernels from 22% (no floor) to 44% in round 11e. With a slope only where the rows
    measure the work, the floor costs the large kernels and the rest at most a point."""
    loaded, target, guess, picked = b60_case
    case = _case()
    plain = case.errors(loaded, target, guess, picked["plan"], {})
    floored = case.errors(loaded, target, guess, picked["plan"], {"attention": 0.5})
    assert floored["floors"]
    assert floored["big"] <= plain["big"] + 0.01 and floored["rest"] <= plain["rest"] + 0.01, (floored, plain)
    with _slope_always_fitted():
        assert case.errors(loaded, target, guess, picked["plan"], {"attention": 0.5})["big"] > plain["big"] + 0.1


def test_adapt_loaded_floors_attention_by_default_on_real_b60_decode_rows(b60_case):
    """`adapt_loaded` on 32 small B60 decode kernels (base below 0.05 ms) at the B60's latency floor: by default
    (:data:`DEFAULT_FLOORS`) a floor is fitted, and the B60's largest kernels are predicted far better than with
    the level alone (which multiplies them by the floor's ratio)."""
    from perfcast.models.estimators.adapt_correction import DEFAULT_FLOORS

    loaded, target, guess, picked = b60_case
    case = _case()
    floored = case.errors(loaded, target, guess, picked["small"], dict(DEFAULT_FLOORS))
    plain = case.errors(loaded, target, guess, picked["small"], {})
    assert DEFAULT_FLOORS == {"attention": 0.5} and floored["floors"] and not plain["floors"]
    assert floored["big"] < 0.6 * plain["big"], (floored, plain)
