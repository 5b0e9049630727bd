"""quickstart's candidate space and the physics adaptation, on GEMMs this test measures on this machine.

The space gives kernels long enough that the timer and Python's call overhead do not set their runtime; the
physics term recovers a smooth shape trend from a few dozen rows where the ordinary correction cannot, is kept
only when cross-validation prefers it, and round-trips through a bundle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.models.estimators.physics import PhysicsCorrected, physics_matrix
from perfcast.models.persistence.adapted import save_adapted
from perfcast.models.persistence.bundle import PerfcastModel
from perfcast.models.persistence.physics_adapted import adapt_with_physics
from perfcast.perf_probe.gemm import GemmProbe
from perfcast.records.hardware_specs import ENV_VAR
from perfcast.records.store import RecordStore
from perfcast.workflows.quickstart import FLOP_RANGE, SPACE_SIZE, candidates, fastest, measure_sheet, peak_configs

#: below this a GEMM's measured time is mostly the call's overhead and the timer, not the kernel
OVERHEAD_MS = 0.05


def test_the_candidate_space_is_one_backend_dtype_and_thread_count_within_its_flop_range() -> None:
    space = candidates()
    assert len(space) == SPACE_SIZE and len({GemmProbe.key(c) for c in space}) == SPACE_SIZE
    assert {(c["backend"], c["dtype"], c["n_threads"], c["layout"], c["batch"]) for c in space} == {
        ("torch", "float32", 1, "nn", 1)}
    work = np.array([2.0 * c["m"] * c["n"] * c["k"] for c in space])
    assert work.min() >= FLOP_RANGE[0] and work.max() <= FLOP_RANGE[1]
    assert candidates() == space  # seeded: a resumed run measures the same keys
    (peak,) = peak_configs(space)
    assert 2.0 * peak["m"] * peak["n"] * peak["k"] == pytest.approx(FLOP_RANGE[1], rel=0.01)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """This machine's sheet, and the space's smallest shapes plus a spread of the rest measured on it:
    (records as stored, the same records as the base model reads them)."""
    import io

    from rich.console import Console

    from perfcast.perf_probe.sweep import run_sweep
    from perfcast.predictor import Predictor

    before = os.environ.get(ENV_VAR)
    store = RecordStore(tmp_path_factory.mktemp("qs") / "store")
    space = candidates()
    try:
        probed = measure_sheet(store, peak_configs(space), Console(file=io.StringIO()))
        by_work = sorted(space, key=lambda c: c["m"] * c["n"] * c["k"])
        chosen = by_work[:3] + space[::4]
        run_sweep(GemmProbe(max_time_s=0.05), store, configs=chosen)
        rows = store.read("gemm", filters={"source": "probe", "hw_id": probed.hw_id})
        rows = rows.drop_duplicates("params_json").set_index("params_json", drop=False)
        rows = rows.loc[[GemmProbe.key(c) for c in chosen if GemmProbe.key(c) in rows.index]].reset_index(drop=True)
        yield rows, Predictor.builtin("gemm")._records(fastest(rows))
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


def test_the_smallest_shapes_of_the_space_take_longer_than_call_overhead(measured) -> None:
    rows, _ = measured
    smallest = rows.iloc[:3]
    assert (smallest["runtime_min_ms"] > OVERHEAD_MS).all(), smallest[["m", "n", "k", "runtime_min_ms"]]


def test_physics_recovers_a_shape_trend_the_rows_follow_and_round_trips(measured, tmp_path: Path) -> None:
    from perfcast.predictor import Predictor

    _, records = measured
    base = Predictor.builtin("gemm").model
    F = base.features.transform(records)
    base_ms = np.asarray(base.heads[0].predict(F), dtype="float64")
    # a CPU whose runtime is the base's times a blocking overhead in 1/k and a level: what the term can express
    X = physics_matrix(F)
    truth = base_ms * np.exp(-1.2 + 20.0 * X[:, 4])
    train, test = records.iloc[::2].assign(runtime_ms=truth[::2]), records.iloc[1::2]
    adapted = adapt_with_physics(base, train)
    report = adapted.metadata["adaptation"]
    assert report["physics_kept"] and report["mode"].startswith("physics")
    assert min(v for k, v in report["cv_mean_ape"].items() if k.startswith("physics")) < min(
        v for k, v in report["cv_mean_ape"].items() if not k.startswith("physics"))
    F_test = base.features.transform(test)
    got = adapted.predict_features(F_test)[:, 0]
    assert np.mean(np.abs(got / truth[1::2] - 1)) < 0.02
    head = adapted.heads[0].inner
    assert isinstance(head, PhysicsCorrected)
    path = save_adapted(adapted, tmp_path / "adapted")
    np.testing.assert_array_equal(PerfcastModel.load(path).predict_features(F_test), adapted.predict_features(F_test))


def test_physics_is_dropped_when_cross_validation_prefers_the_ordinary_correction(measured) -> None:
    from perfcast.predictor import Predictor

    _, records = measured
    base = Predictor.builtin("gemm").model
    F = base.features.transform(records)
    # runtimes that are the base's times one level: the ordinary level correction is exact, the physics adds noise
    truth = np.asarray(base.heads[0].predict(F), dtype="float64") * 0.3
    adapted = adapt_with_physics(base, records.assign(runtime_ms=truth))
    report = adapted.metadata["adaptation"]
    assert not report["physics_kept"] and not isinstance(adapted.heads[0].inner, PhysicsCorrected)
