"""Work measured relative to the device: the GEMM/attention columns that stay in range on a new device.

Why: a tree learns a step function of its inputs and repeats its last step beyond the training range. An
absolute size (log FLOPs, log m) or an absolute device number (SM count, bandwidth) of a large shape on a
newer GPU lies outside that range, so the learned efficiency is whatever the largest training point had.
Ratios of the work to the device (FLOPs per SM, waves of thread blocks over the SMs, intensity over the
ridge point, bytes over the L2 cache) fall in the same range for a big GEMM on a big GPU as for a small one
on a small GPU, and each has a known physical direction (more work per SM fills the pipelines better).

The columns are derived from a feature frame of :class:`perfcast.features.gemm.GemmFeatures` (or the
attention transformer), not from records, so any model reading such a frame can add them. Intensity over the
ridge point (peak / bandwidth) is not repeated here: the transformers' ``compute_memory_balance`` is exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from perfcast.lazy import pandas as pd

#: derived column -> what it measures (the model-facing names; all log-scale, NaN where the device lacks
#: the spec number)
RELATIVE: dict[str, str] = {
    "log10_flops_per_sm": "FLOPs each SM must execute",
    "log10_bytes_per_sm": "bytes each SM must move",
    "log10_bytes_over_l2": "operand and result bytes over the L2 cache size",
    "wave_loss": "log10 of launched wave time over busy wave time (0 when the last wave is full)",
    "log2_flops_per_sm_clock": "peak FLOPs per SM per clock cycle (the SM's issue width for the dtype)",
    "log10_ridge": "the device's ridge point: FLOPs per byte at which it turns compute-bound (peak / bandwidth)",
}
#: columns the derivation reads from the feature frame
SOURCES: tuple[str, ...] = ("log10_flops", "log10_bytes", "wave_efficiency", "sm_count", "l2_mb", "peak_tflops",
                            "max_clock_mhz", "mem_bw_gbs")
#: physical direction of the learned log(measured / roofline) in each column, where physics gives one:
#: more work per SM amortises fill and drain (-1); a partly empty last wave costs time (+1)
EFFICIENCY_DIRECTION: dict[str, int] = {"log10_flops_per_sm": -1, "wave_loss": 1}
#: the device terms physics says transfer between devices (ratios and the generation, no absolute device size): what
#: a member that must carry its efficiency to a new GPU sees of the hardware (the GEMM unseen-GPU preset's first
#: member; its choice: benchmarks/ANALYSIS_zeroshot.md, round 2)
TRANSFERABLE: tuple[str, ...] = ("log10_ridge", "log10_watts_per_tflop", "compute_capability", "log10_bytes_over_l2",
                                 "log10_flops_per_sm", "log10_bytes_per_sm", "wave_loss", "log2_flops_per_sm_clock")


def relative_features(X: pd.DataFrame, names: Sequence[str] | None = None) -> pd.DataFrame:
    """The :data:`RELATIVE` columns ``names`` (default: all) of a GEMM/attention feature frame ``X`` (same index,
    float64); a model asks for them by name (the hybrid's ``columns``) or all at once (its ``relative``).

    Raises a ValueError naming an unknown column, or the feature columns ``X`` lacks."""
    names = list(RELATIVE) if names is None else list(names)
    unknown = sorted(set(names) - set(RELATIVE))
    if unknown:
        raise ValueError(f"unknown device-relative feature(s) {unknown}; known: {', '.join(RELATIVE)}")
    absent = [c for c in SOURCES if c not in X.columns]
    if absent:
        raise ValueError(f"relative features need the gemm/attention feature columns {absent}; got a frame of "
                         f"{list(X.columns)[:8]}...")
    v = {c: X[c].to_numpy(dtype="float64") for c in SOURCES}
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sm = np.log10(v["sm_count"])
        out = {
            "log10_flops_per_sm": v["log10_flops"] - log_sm,
            "log10_bytes_per_sm": v["log10_bytes"] - log_sm,
            "log10_bytes_over_l2": v["log10_bytes"] - np.log10(v["l2_mb"] * 2.0 ** 20),
            "wave_loss": -np.log10(v["wave_efficiency"]),
            "log2_flops_per_sm_clock": np.log2(v["peak_tflops"] * 1e6 / (v["sm_count"] * v["max_clock_mhz"])),
            "log10_ridge": np.log10(v["peak_tflops"] * 1e3 / v["mem_bw_gbs"]),
        }
    frame = pd.DataFrame({n: out[n] for n in names}, index=X.index, dtype="float64")
    return frame.replace([np.inf, -np.inf], np.nan)


#: the device's own ratios (how it is built, whatever the work): a new device outside their training range
#: is new in kind, not only in size (power budget per peak FLOP/s, issue width per SM and clock)
DEVICE_RATIOS: tuple[str, ...] = ("log10_watts_per_tflop", "log2_flops_per_sm_clock")
#: slack in log units: spec sheets round their clocks and rates (a 256-FLOP SM may read as 255.99)
RANGE_SLACK = 0.01


#: what :func:`outside_training` checks: the work relative to the device and the device's own ratios; not the
#: ridge point, which only says the new device has more (or less) bandwidth per FLOP, a difference of size
OOD_COLUMNS: tuple[str, ...] = (*(c for c in RELATIVE if c != "log10_ridge"), *DEVICE_RATIOS)


def outside_training(train: pd.DataFrame, query: pd.DataFrame,
                     columns: tuple[str, ...] = OOD_COLUMNS) -> dict[str, np.ndarray]:
    """Per column of work or device relative to the device, which ``query`` rows leave the range it spans
    over ``train`` (both GEMM/attention feature frames). Only columns that leave it on some row are returned.

    Why: a device outside the training box in absolute numbers (more bandwidth, more SMs) is the normal case
    for a new GPU and says little about the error; one whose ratios leave the range is new in kind."""
    T = pd.concat([train, relative_features(train)], axis=1)
    Q = pd.concat([query, relative_features(query)], axis=1)
    out = {}
    for c in columns:
        lo, hi = np.nanmin(T[c].to_numpy(dtype="float64")), np.nanmax(T[c].to_numpy(dtype="float64"))
        v = Q[c].to_numpy(dtype="float64")
        mask = (v < lo - RANGE_SLACK) | (v > hi + RANGE_SLACK)
        if mask.any():
            out[c] = mask
    return out
