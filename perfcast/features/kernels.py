"""Feature blocks that the accelerator-kernel tasks (gemm, attention) share: hardware, roofline work, waves.

Why shared: a GEMM and an attention kernel are both "so many FLOPs and bytes on this device, split into
so many thread blocks". Computing those terms once keeps the two transformers' columns identical in
meaning, which is what lets one model family, the roofline baseline and the hybrid read either.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfcast.features.base import log2, log10
from perfcast.features.groups import GPU_HARDWARE
from perfcast.features.hardware import compute_capability, numeric, require_known
from perfcast.features.roofline import compute_ms, memory_ms, peak_tflops


def hardware_features(hw: pd.DataFrame, X: pd.DataFrame, dtype: pd.Series, where: str) -> pd.DataFrame:
    """The :data:`GPU_HARDWARE` columns; errors name devices lacking the dtype's peak or the bandwidth."""
    peak = peak_tflops(hw, dtype)
    bw = numeric(hw, "mem_bw_gbs")
    for d in dtype.dropna().unique():
        rows = (dtype == d).fillna(False)
        require_known(hw, X, peak.isna() & rows, f"a peak rate for dtype {d!r} (peak_tflops_* columns)", where)
    require_known(hw, X, bw.isna(), "the memory bandwidth (mem_bw_gbs)", where)
    out = pd.DataFrame({c: numeric(hw, c) for c in GPU_HARDWARE if c not in ("peak_tflops", "compute_capability")},
                       index=X.index)
    out["peak_tflops"] = peak
    out["compute_capability"] = compute_capability(hw)
    return out


def work_features(flops: pd.Series, nbytes: pd.Series, peak: pd.Series, bw: pd.Series) -> pd.DataFrame:
    """Roofline terms: log FLOPs, bytes, intensity, compute/memory/roofline time and their balance."""
    t_c = pd.Series(compute_ms(flops, peak), index=flops.index)
    t_m = pd.Series(memory_ms(nbytes, bw), index=flops.index)
    return pd.DataFrame({
        "log10_flops": log10(flops),
        "log10_bytes": log10(nbytes),
        "log10_intensity": log10(flops / nbytes),
        "log10_compute_ms": log10(t_c),
        "log10_memory_ms": log10(t_m),
        "log10_roofline_ms": log10(np.maximum(t_c, t_m)),
        "compute_memory_balance": log10(t_c / t_m),
    }, index=flops.index)


def wave_features(ctas: pd.Series, units: pd.Series) -> pd.DataFrame:
    """Wave quantisation of ``ctas`` thread blocks over ``units`` SMs (NaN where the SM count is unknown).

    ``last_wave_fill`` is the share of SMs busy in the last wave; ``wave_efficiency`` = waves / ceil(waves),
    the fraction of the launched waves' SM time doing work (1 when the blocks fill every wave).
    """
    waves = ctas / units
    full = np.ceil(waves)
    return pd.DataFrame({
        "log2_ctas": log2(ctas),
        "log2_waves": log2(waves),
        "last_wave_fill": 1.0 - (full - waves),
        "wave_efficiency": waves / full,
    }, index=ctas.index)
