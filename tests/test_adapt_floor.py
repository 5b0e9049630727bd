"""The adaptation's latency floor: a few small measured kernels of a device whose floor the base does not know
must not multiply its large kernels (issue 13: more measurements must never make the prediction worse)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfcast.models.estimators.adapt import fit_adaptation
from perfcast.models.estimators.adapt_correction import Correction

FLOOR_MS = 0.06


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
