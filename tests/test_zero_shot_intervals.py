"""K = 0 interval variants re-drawn from a base model's cross-fitted rows, on real aiconfigurator GEMM latencies of
three NVIDIA GPUs and the Intel B60 (each left out in turn): the width rules, the out-of-distribution rule for a
vendor no training GPU has, and a leave-one-GPU-out choice that never reads the left-out GPU's rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.eval import metrics
from perfcast.experiments.adapt_bench import adapt_device, select_settings
from perfcast.experiments.baselines import CONFIG_KEYS
from perfcast.models import make_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.models.uncertainty.zero_shot import (
    OBJECTIVES,
    PRESET,
    WIDTHS,
    CrossFittedScores,
    objective_of,
    select_variants,
    variants,
)

GPUS = ["a100_sxm", "h100_sxm", "l40s", "b60"]
CANDIDATES = variants((None, "kind own"), (1.0, 1.2), (False, True))


@pytest.fixture(scope="module")
def rows(data_root: Path) -> pd.DataFrame:
    """400 real trtllm/vllm GEMM rows of each GPU."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "gemm" in u.name and any(f"/{d}/" in u.as_posix() for d in GPUS)]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["runtime_ms"] > 0]
    return df.groupby("device_id").sample(n=400, random_state=0).reset_index(drop=True)


def left_out(rows: pd.DataFrame, dev: str) -> tuple[CrossFittedScores, pd.DataFrame, np.ndarray, pd.DataFrame, Any]:
    """(cross-fitted scores of a base fitted without ``dev``, ``dev``'s feature rows, base prediction, rows, base)."""
    train, test = rows[rows["device_id"] != dev], rows[rows["device_id"] == dev].reset_index(drop=True)
    base = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 30}),
                              n_splits=3).fit(train, train[["runtime_ms"]])
    scores = CrossFittedScores.of(base, train, train["runtime_ms"].to_numpy(), train["device_id"].to_numpy())
    return scores, base.estimator_[0].transform(test), np.asarray(base.predict(test)).ravel(), test, base


@pytest.fixture(scope="module")
def fitted(rows: pd.DataFrame) -> dict[str, tuple]:
    return {dev: left_out(rows, dev) for dev in GPUS}


def test_cross_fitted_rows_describe_the_folds(fitted) -> None:
    scores = fitted["a100_sxm"][0]
    assert len(scores.score) == len(scores.distance) == len(scores.device) == len(scores.features)
    assert np.isfinite(scores.score).all() and (scores.score >= 0).all()
    # a row scored among the seen share has its device in the fold's fitting rows: distance 0; held devices are far
    assert np.allclose(scores.distance[scores.seen], 0.0)
    assert (scores.distance[~scores.seen] > 0).all()
    assert scores.vendors == {"nvidia", "intel"}


def test_width_rules_grow_with_distance(fitted) -> None:
    scores, F, *_ = fitted["h100_sxm"]
    for width in WIDTHS:
        spread = scores.spread(width, 0.9)
        if width == "pooled":
            assert spread is None
            continue
        d = np.linspace(0.0, 3.0 * scores.distance.max(), 20)
        assert (np.diff(spread(d)) >= -1e-12).all(), width
        half, ood = scores.half_widths((width, None, 1.0, False), F)
        assert np.isfinite(half).all() and (half > 0).all() and not ood.any()
    # the line keeps growing past the farthest calibration device; the isotonic fit is flat there
    far = np.array([scores.distance.max(), 3.0 * scores.distance.max()])
    assert np.ptp(scores.spread("isotonic", 0.9)(far)) == 0
    assert np.diff(scores.spread("linear", 0.9)(far))[0] >= 0


def test_a_vendor_no_training_gpu_has_is_flagged_and_widened(fitted) -> None:
    scores, F, *_ = fitted["b60"]
    assert scores.vendors == {"nvidia"}
    floor = scores.ood_half_width(0.9)
    for v in CANDIDATES:
        half, ood = scores.half_widths(v, F)
        assert ood.all() and (half >= floor - 1e-12).all()
    # the floor is the largest held-out GPU's own quantile, so it is at least the pooled one
    assert floor >= scores.half_widths(("pooled", None, 1.0, False), F.iloc[:0])[0].max(initial=0.0)


def coverage(fitted: dict[str, tuple], y_of: dict[str, np.ndarray]) -> dict:
    out = {}
    for dev, (scores, F, pred, *_) in fitted.items():
        for v in CANDIDATES:
            half = scores.half_widths(v, F)[0]
            out[(dev, "", v)] = (metrics.coverage(y_of[dev], pred * np.exp(-half), pred * np.exp(half))
                                 if np.isfinite(y_of[dev]).any() else np.nan)  # no latency: no coverage
    return out


def test_the_choice_for_a_gpu_never_reads_its_rows(fitted) -> None:
    y = {dev: f[3]["runtime_ms"].to_numpy(dtype="float64") for dev, f in fitted.items()}
    parts = {dev: [""] for dev in fitted}
    chosen, nested = select_variants(coverage(fitted, y), parts, CANDIDATES, 0.9, (0.8, 0.97))
    assert set(chosen) == set(GPUS) and all(v in CANDIDATES for v in chosen.values())
    for dev in GPUS:
        hidden = dict(y, **{dev: np.full(len(y[dev]), np.nan)})  # its latencies unknown
        again, again_nested = select_variants(coverage(fitted, hidden), parts, CANDIDATES, 0.9, (0.8, 0.97))
        assert again[dev] == chosen[dev] and again_nested[dev] == nested[dev]
    # and the choice does depend on the other GPUs' rows: scoring on one GPU's coverage alone picks its best fit
    cov = coverage(fitted, y)
    solo = select_variants({k: x for k, x in cov.items() if k[0] in ("l40s", "a100_sxm")},
                           {"l40s": [""], "a100_sxm": [""]}, CANDIDATES, 0.9, (0.8, 0.97))[0]["a100_sxm"]
    best_on_l40s = min(CANDIDATES, key=lambda v: (not 0.8 <= cov[("l40s", "", v)] <= 0.97,
                                                    round(abs(cov[("l40s", "", v)] - 0.9), 12), CANDIDATES.index(v)))
    assert solo == best_on_l40s


def test_the_adaptation_benchmark_offers_and_chooses_them_at_k0(rows, fitted) -> None:
    """``adapt_device`` scores the preset's zero-shot variants at K = 0 and ``select_settings`` chooses among them
    on the other GPUs only: tripling one GPU's latencies (its coverage moves) leaves its choice unchanged."""
    options = {"budgets": [0], "test_rows": 400, "settings": {"plain": {}},
               "k0_intervals": {"groups": ["none", "kind own"], "scales": [1.0, 1.2],
                                "vendor_matched": [False, True]}}

    def run(factor: dict[str, float]) -> dict[str, Any]:
        per_device: dict = {}
        for dev, (scores, _, _, test, base) in fitted.items():
            test = test.assign(runtime_ms=test["runtime_ms"] * factor.get(dev, 1.0))
            found = adapt_device("t", "gemm", base, rows[rows["device_id"] != dev], test,
                                 pd.Series("", index=test.index), CONFIG_KEYS["gemm"], "hybrid", 0.0, 0, options,
                                 scores)
            assert len(found[("", 0)]) == len(CANDIDATES) + 1  # every zero-shot variant scored, and the preset's
            for key, res in found.items():
                per_device.setdefault(key, []).append(res)
        return {r.device: r for r in select_settings(per_device)[("", 0)]}

    first, moved = run({}), run({"l40s": 3.0})
    assert moved["l40s"].coverage != first["l40s"].coverage or moved["l40s"].ours != first["l40s"].ours
    chosen = [n for n in first["l40s"].notes if n.startswith("intervals chosen")]
    assert chosen and chosen == [n for n in moved["l40s"].notes if n.startswith("intervals chosen")]
    # the B60 is flagged (no Intel GPU trained), no NVIDIA GPU is
    assert {dev for dev, r in first.items() if any(n.startswith("out of distribution") for n in r.notes)} == {"b60"}


def test_the_preset_guard_keeps_the_model_s_intervals_unless_choosing_helps_on_the_others(fitted) -> None:
    """With the preset's own intervals as the guard, a device leaves them only when choosing among the variants
    (each other device's choice made without it) beat them on the other devices; its own rows are never read."""
    y = {dev: f[3]["runtime_ms"].to_numpy(dtype="float64") for dev, f in fitted.items()}
    offered = [PRESET, *CANDIDATES]

    def cov(y_of: dict[str, np.ndarray]) -> dict:
        out = {}
        for dev, (scores, F, pred, test, base) in fitted.items():
            noise = base.calibration_.noise(test, len(test))[:, 0]
            for v in offered:
                lo, hi, _ = scores.bounds(v, F, pred, noise)
                out[(dev, "", v)] = metrics.coverage(y_of[dev], lo, hi) if np.isfinite(y_of[dev]).any() else np.nan
        return out

    parts = {dev: [""] for dev in fitted}
    real = cov(y)
    chosen, nested = select_variants(real, parts, offered, 0.9, (0.8, 0.97), PRESET)
    for dev in GPUS:
        hidden = select_variants(cov(dict(y, **{dev: np.full(len(y[dev]), np.nan)})), parts, offered, 0.9,
                                 (0.8, 0.97), PRESET)
        assert hidden[0][dev] == chosen[dev] and hidden[1][dev] == nested[dev]
    # the preset's intervals at exactly 90% everywhere: nothing beats them, every device keeps them
    perfect = {k: (0.9 if k[2] == PRESET else x) for k, x in real.items()}
    assert set(select_variants(perfect, parts, offered, 0.9, (0.8, 0.97), PRESET)[0].values()) == {PRESET}
    # the preset's intervals covering nothing: every device takes a variant
    useless = {k: (0.0 if k[2] == PRESET else x) for k, x in real.items()}
    assert PRESET not in select_variants(useless, parts, offered, 0.9, (0.8, 0.97), PRESET)[0].values()


def test_the_distance_objective_weighs_how_far_the_other_gpus_miss(fitted) -> None:
    y = {dev: f[3]["runtime_ms"].to_numpy(dtype="float64") for dev, f in fitted.items()}
    parts, band = {dev: [""] for dev in fitted}, (0.8, 0.97)
    cov = coverage(fitted, y)
    picks = {o: select_variants(cov, parts, CANDIDATES, 0.9, band, objective=o)[0] for o in OBJECTIVES}

    def outside(dev: str, v) -> tuple[float, float]:  # over the other GPUs: (share outside, mean distance outside)
        x = np.array([cov[(d, "", v)] for d in fitted if d != dev])
        miss = np.maximum(0.0, np.maximum(band[0] - x, x - band[1]))
        return float(np.mean(miss > 0)), float(np.mean(miss))

    for dev in GPUS:
        count, distance = outside(dev, picks["count"][dev]), outside(dev, picks["distance"][dev])
        assert count[0] <= distance[0] + 1e-12 and distance[1] <= count[1] + 1e-12, (dev, count, distance)
        hidden = dict(y, **{dev: np.full(len(y[dev]), np.nan)})  # its own latencies never choose
        again = select_variants(coverage(fitted, hidden), parts, CANDIDATES, 0.9, band, objective="distance")[0]
        assert again[dev] == picks["distance"][dev]


def test_the_objective_is_the_preset_s_and_a_bad_one_is_refused() -> None:
    from perfcast.experiments.presets import choose

    assert objective_of(choose("aiconfigurator-adapt").options["k0_intervals"]) == "distance"
    assert objective_of(None) == "count"
    with pytest.raises(ValueError, match=r"objective 'nearest' .*count, distance.*k0_intervals\.objective"):
        objective_of({"objective": "nearest"})
