"""NeuSight's GPUs (ASPLOS'25): per-op latency on GPUs the training files never saw (``neusight-ood``), and
those per-op predictions summed over NeuSight's whole-model traces (``neusight-whole-model``)."""

from __future__ import annotations

import time

import pandas as pd

from perfcast.eval import metrics
from perfcast.eval.protocols import neusight_ood_split
from perfcast.experiments import whole_model
from perfcast.experiments.baselines import ROOFLINE, roofline
from perfcast.experiments.presets import Choice, choose, sample_rows
from perfcast.experiments.results import Anchor, Goal, Result, RunConfig, Workspace
from perfcast.experiments.scoring import miss_note, score
from perfcast.features.extrapolation import outside_training
from perfcast.features.gemm import GemmFeatures
from perfcast.models.uncertainty.intervals import ConformalRegressor

NEUSIGHT = "NeuSight (ASPLOS'25)"
NEUSIGHT_ANCHORS = {"bmm": 0.138, "linear": 0.139}
NEUSIGHT_GOAL = Goal(0.10)


def neusight_model(ws: Workspace, cfg: RunConfig) -> tuple[ConformalRegressor, Choice, float, str | None]:
    """The model trained on NeuSight's ``train/collect`` bmm/linear rows (fitted once per run, shared with
    the whole-model check): (model, its preset choice, fit seconds, sampling note)."""
    if "neusight" not in ws.fitted:
        choice = choose("neusight-ood", cfg.model)
        train, _ = neusight_ood_split(ws.records("neusight", "gemm"))
        train, note = sample_rows(train, choice.train_rows, cfg.seed)
        start = time.perf_counter()
        model = choice.fit(train, cfg.seed)
        ws.fitted["neusight"] = (model, choice, time.perf_counter() - start, note)
    return ws.fitted["neusight"]


def relative_novelty(train: pd.DataFrame, rows: pd.DataFrame) -> str:
    """A note saying which ``rows`` leave the training range in work or build relative to the device (an OOD flag
    that a new GPU does not raise merely by being bigger: see :func:`outside_training`)."""
    features = GemmFeatures().fit(train)
    out = outside_training(features.transform(train), features.transform(rows))
    if not out:
        return "relative to the device (work per SM, bytes over L2, waves, watts per peak TFLOP/s, FLOPs per SM " \
               "and clock) every row is inside the training range"
    return "outside the training range relative to the device: " + ", ".join(
        f"{c} on {int(m.sum()):,} of {len(m):,} rows" for c, m in out.items())


def neusight_ood(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Per-op mean APE on every GPU the NeuSight training files never saw, pooled and per GPU, vs roofline."""
    protocol = "neusight-ood"
    model, choice, fit_s, note = neusight_model(ws, cfg)
    train, test = neusight_ood_split(ws.records("neusight", "gemm"))
    start = time.perf_counter()
    pred, lo, hi = choice.predict_interval(model, test)
    base = roofline(test, "gemm")
    wall = fit_s + time.perf_counter() - start
    common = [note] if note else []
    rows = []
    for op in sorted(test["op"].unique()):
        on = (test["op"] == op).to_numpy()
        anchor = Anchor(NEUSIGHT, NEUSIGHT_ANCHORS[op]) if op in NEUSIGHT_ANCHORS else None
        devices = sorted(test.loc[on, "device_id"].unique())
        label = devices[0] if len(devices) == 1 else "all unseen"
        pooled = score(protocol, f"runtime_ms ({op})", label, test.loc[on, "runtime_ms"], pred[on], choice.name,
                       wall, baselines={ROOFLINE: base[on]}, interval=(lo[on], hi[on]), anchor=anchor,
                       notes=[*common, f"pooled over the rows of {', '.join(devices)} (as the paper reports)",
                              *([relative_novelty(train, test[on])] if len(devices) == 1 else []),
                              "NeuSight's own roofline: 44% bmm / 28% linear"])
        pooled.goal = NEUSIGHT_GOAL
        miss_note(pooled, "training shapes are small (up to ~1k) while test shapes are large, and the training "
                          "files were measured slower than the test files on the same GPU (dataset README)")
        rows.append(pooled)
        for dev in devices if len(devices) > 1 else []:
            sel = on & (test["device_id"] == dev).to_numpy()
            rows.append(score(protocol, f"runtime_ms ({op})", dev, test.loc[sel, "runtime_ms"], pred[sel],
                              choice.name, wall, baselines={ROOFLINE: base[sel]}, interval=(lo[sel], hi[sel]),
                              notes=[relative_novelty(train, test[sel])]))
            rows[-1].goal = NEUSIGHT_GOAL
    return rows


def neusight_whole_model(ws: Workspace, cfg: RunConfig) -> list[Result]:
    """Sum per-op predictions over NeuSight's whole-model traces, per GPU, vs the measured end-to-end latency."""
    protocol = "neusight-whole-model"
    model, choice, fit_s, note = neusight_model(ws, cfg)
    trained = set(neusight_ood_split(ws.records("neusight", "gemm"))[0]["device_id"].dropna())
    start = time.perf_counter()
    traces, skipped = whole_model.load_traces(ws.data_root / "neusight" / "label")
    gemms = whole_model.gemm_records(traces)
    ours = choice.predict(model, gemms)[:, 0]
    per_trace = whole_model.end_to_end(traces, gemms, {"ours": ours, ROOFLINE: roofline(gemms, "gemm")})
    wall = fit_s + time.perf_counter() - start
    common = [n for n in (note, f"skipped: {'; '.join(skipped)}" if skipped else None,
                          "wall time includes the NeuSight model's fit, shared with neusight-ood") if n]
    rows = []
    for dev, t in per_trace.groupby("device_id", sort=True):
        label = dev + (" (trained on)" if dev in trained else "")
        share = (t["measured_gemm_ms"] / t["measured_ms"]).mean()
        oracle = metrics.mape(t["e2e_ms"], t["measured_ms"])
        notes = [f"{len(t)} traces ({', '.join(sorted(t['trace']))})",
                 (f"GEMM share of the measured time: {share:.0%}; other ops (elementwise, softmax, layernorm, "
                  f"embedding, dropout) are taken as measured"),
                 f"oracle (measured per-op sum, layer replicated) vs e2e: {oracle:.1%}",
                 *(common if not rows else [])]
        rows.append(score(protocol, "e2e ms: predicted GEMM + measured rest", label, t["e2e_ms"],
                          t["ours_plus_rest_ms"], choice.name, wall,
                          baselines={ROOFLINE: t[f"{ROOFLINE}_plus_rest_ms"]}, notes=notes))
        rows.append(score(protocol, "GEMM-only ms: predicted vs measured", label, t["measured_gemm_ms"],
                          t["ours_gemm_ms"], choice.name, wall, baselines={ROOFLINE: t[f"{ROOFLINE}_gemm_ms"]}))
    return rows
