"""Feature blocks that the accelerator-kernel tasks (gemm, attention) share: hardware, roofline work, waves.

Why shared: a GEMM and an attention kernel are both "so many FLOPs and bytes on this device, split into
so many thread blocks". Computing those terms once keeps the two transformers' columns identical in
meaning, which is what lets one model family, the roofline baseline and the hybrid read either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from perfcast.features.base import text_map
from perfcast.features.distinct import factorize
from perfcast.features.groups import GPU_HARDWARE
from perfcast.features.hardware import RowHardware, require_known
from perfcast.features.records import Records
from perfcast.features.roofline import compute_ms, memory_ms, peak_tflops

#: one-hot vendor columns of :data:`GPU_HARDWARE` (NaN when the vendor is unknown)
VENDOR_COLUMNS: tuple[str, ...] = ("vendor_nvidia", "vendor_amd", "vendor_intel")


def hardware_features(hw: RowHardware, X: Records, dtype: np.ndarray, where: str) -> dict[str, np.ndarray]:
    """The :data:`GPU_HARDWARE` columns; errors name devices lacking the dtype's peak or the bandwidth."""
    peak = peak_tflops(hw, dtype)
    bw = hw.number("mem_bw_gbs")
    for d in factorize(dtype)[1]:  # the distinct dtypes present
        require_known(hw, X, np.isnan(peak) & (dtype == d), f"a peak rate for dtype {d!r} (peak_tflops_* columns)",
                      where)
    require_known(hw, X, np.isnan(bw), "the memory bandwidth (mem_bw_gbs)", where)
    vendor = text_map(hw.text("vendor"), str.lower)
    known = pd.notna(vendor)
    derived = {
        "peak_tflops": peak,
        "compute_capability": hw.number("compute_capability"),
        "log10_watts_per_tflop": np.log10(hw.number("tdp_w") / peak),
        **{c: np.where(known, (vendor == c.removeprefix("vendor_")).astype("float64"), np.nan) for c in VENDOR_COLUMNS},
    }
    out = {c: derived[c] if c in derived else hw.number(c) for c in GPU_HARDWARE}
    return out


def work_features(flops: np.ndarray, nbytes: np.ndarray, peak: np.ndarray, bw: np.ndarray) -> dict[str, np.ndarray]:
    """Roofline terms: log FLOPs, bytes, intensity, compute/memory/roofline time and their balance."""
    flops, nbytes = np.asarray(flops, dtype="float64"), np.asarray(nbytes, dtype="float64")
    t_c, t_m = compute_ms(flops, peak), memory_ms(nbytes, bw)
    return {
        "log10_flops": np.log10(flops),
        "log10_bytes": np.log10(nbytes),
        "log10_intensity": np.log10(flops / nbytes),
        "log10_compute_ms": np.log10(t_c),
        "log10_memory_ms": np.log10(t_m),
        "log10_roofline_ms": np.log10(np.maximum(t_c, t_m)),
        "compute_memory_balance": np.log10(t_c / t_m),
    }


def wave_features(ctas: np.ndarray, units: np.ndarray) -> dict[str, np.ndarray]:
    """Wave quantisation of ``ctas`` thread blocks over ``units`` SMs (NaN where the SM count is unknown).

    ``last_wave_fill`` is the share of SMs busy in the last wave; ``wave_efficiency`` = waves / ceil(waves),
    the fraction of the launched waves' SM time doing work (1 when the blocks fill every wave).
    """
    ctas = np.asarray(ctas, dtype="float64")
    waves = ctas / np.asarray(units, dtype="float64")
    full = np.ceil(waves)
    return {
        "log2_ctas": np.log2(ctas),
        "log2_waves": np.log2(waves),
        "last_wave_fill": 1.0 - (full - waves),
        "wave_efficiency": waves / full,
    }


def _log10_ridge(X: pd.DataFrame) -> np.ndarray:
    """FLOPs per byte at which the device turns compute-bound (peak / bandwidth)."""
    return np.log10(X["peak_tflops"].to_numpy(dtype="float64") * 1e3 / X["mem_bw_gbs"].to_numpy(dtype="float64"))


def _log10_bytes_over_l2(X: pd.DataFrame) -> np.ndarray:
    """The kernel's bytes over the device's L2 (NaN where the sheet gives no L2): below 0 the operands can stay
    on chip between repeated launches, so the achieved bandwidth exceeds the DRAM peak the roofline uses."""
    return X["log10_bytes"].to_numpy(dtype="float64") - np.log10(X["l2_mb"].to_numpy(dtype="float64") * 2.0**20)


#: device-relative terms derived from a GPU-kernel feature frame (its :data:`GPU_HARDWARE` and work columns).
#: Why derived, not emitted by the transformers: they add nothing a saved model's columns depend on, and a model
#: asks for them by name (the hybrid's ``columns``); a term relative to the device means the same on a GPU
#: no model trained on, where the absolute spec numbers that name a training device do not.
RELATIVE: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "log10_ridge": _log10_ridge,
    "log10_bytes_over_l2": _log10_bytes_over_l2,
}


def relative_features(X: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``X`` with the :data:`RELATIVE` columns ``names`` appended (computed from ``X``'s own columns)."""
    unknown = sorted(set(names) - set(RELATIVE))
    if unknown:
        raise ValueError(f"unknown device-relative feature(s) {unknown}; known: {', '.join(RELATIVE)}")
    return X.assign(**{n: RELATIVE[n](X) for n in names})
