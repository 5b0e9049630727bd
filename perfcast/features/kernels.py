"""Feature blocks that the accelerator-kernel tasks (gemm, attention) share: hardware, roofline work, waves.

Why shared: a GEMM and an attention kernel are both "so many FLOPs and bytes on this device, split into
so many thread blocks". Computing those terms once keeps the two transformers' columns identical in
meaning, which is what lets one model family, the roofline baseline and the hybrid read either.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from perfcast.features.base import text_map
from perfcast.features.distinct import factorize
from perfcast.features.groups import GPU_HARDWARE
from perfcast.features.hardware import RowHardware, require_known
from perfcast.features.records import Records
from perfcast.features.roofline import compute_ms, memory_ms, peak_tflops

#: one-hot vendor columns of :data:`GPU_HARDWARE` (NaN when the vendor is unknown)
VENDOR_COLUMNS: tuple[str, ...] = ("vendor_nvidia", "vendor_amd", "vendor_intel")


def hardware_features(hw: RowHardware, X: Records, dtype: np.ndarray, where: str) -> dict[str, np.ndarray]:
    """The :data:`GPU_HARDWARE` columns; errors name devices lacking the dtype's peak or the bandwidth. A single
    row read from the spec sheets is a function of its device and dtype only: remembered per pair (read-only)."""
    row = hw.sheet_row()
    if row is None:
        return _hardware_features(hw, X, dtype, where)
    key = (id(row[0]), row[1], dtype[0])
    hit = _MEMO.get(key)
    if hit is None or hit[0] is not row[0]:
        if len(_MEMO) >= 4096:
            _MEMO.clear()
        out = _hardware_features(hw, X, dtype, where)
        for v in out.values():
            v.setflags(write=False)
        hit = _MEMO[key] = (row[0], out)
    return hit[1]


#: (id of the sheet arrays, device row, dtype) -> (those arrays, the row's hardware columns); see hardware_features
_MEMO: dict[tuple[int, int, str], tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}


def per_device(hw: RowHardware, what: str, compute: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``compute()``, arrays that are a function of the rows' devices only; for a single row read from the spec
    sheets remembered per device and ``what`` (read-only), as :func:`hardware_features` is."""
    row = hw.sheet_row()
    if row is None:
        return compute()
    key = (id(row[0]), row[1], what)
    hit = _DEVICE_MEMO.get(key)
    if hit is None or hit[0] is not row[0]:
        if len(_DEVICE_MEMO) >= 4096:
            _DEVICE_MEMO.clear()
        out = compute()
        for v in out:
            v.setflags(write=False)
        hit = _DEVICE_MEMO[key] = (row[0], out)
    return hit[1]


#: (id of the sheet arrays, device row, what) -> (those arrays, the arrays computed); see per_device
_DEVICE_MEMO: dict[tuple[int, int, str], tuple[dict[str, np.ndarray], tuple[np.ndarray, ...]]] = {}


def _hardware_features(hw: RowHardware, X: Records, dtype: np.ndarray, where: str) -> dict[str, np.ndarray]:
    peak = peak_tflops(hw, dtype)
    bw = hw.number("mem_bw_gbs")
    for d in factorize(dtype)[1]:  # the distinct dtypes present
        require_known(hw, X, np.isnan(peak) & (dtype == d), f"a peak rate for dtype {d!r} (peak_tflops_* columns)",
                      where)
    require_known(hw, X, np.isnan(bw), "the memory bandwidth (mem_bw_gbs)", where)
    vendor = text_map(hw.text("vendor"), str.lower)
    known = np.fromiter((v is not None for v in vendor), dtype=bool, count=len(vendor))
    derived = {
        "peak_tflops": peak,
        "compute_capability": hw.number("compute_capability"),
        "log10_watts_per_tflop": np.log10(hw.number("tdp_w") / peak),
        **{c: np.where(known, (vendor == c.removeprefix("vendor_")).astype("float64"), np.nan) for c in VENDOR_COLUMNS},
    }
    out = {c: derived[c] if c in derived else hw.number(c) for c in GPU_HARDWARE}
    return out


#: the columns of :func:`work_features`, in its order
WORK_COLUMNS = ("log10_flops", "log10_bytes", "log10_intensity", "log10_compute_ms", "log10_memory_ms",
                "log10_roofline_ms", "compute_memory_balance")


def work_features(flops: np.ndarray | float, nbytes: np.ndarray | float, peak: np.ndarray, bw: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """Roofline terms: log FLOPs, bytes, intensity, compute/memory/roofline time and their balance. A request's
    ``flops`` and ``nbytes`` may be Python floats (its one row's, as the one-row paths compute them)."""
    one = type(flops) is float
    if not one:
        flops, nbytes = np.asarray(flops, dtype="float64"), np.asarray(nbytes, dtype="float64")
    if one or flops.shape == (1,):  # a request: the quotients in Python floats, the logarithms in one call
        f, b = (flops, float(nbytes)) if one else (flops.item(), nbytes.item())
        p, w = float(peak[0]), float(bw[0])
        try:
            t_c, t_m = f / (p * 1e9), b / (w * 1e6)  # compute_ms, memory_ms
            terms = [f, b, f / b, t_c, t_m, t_m if t_m != t_m else max(t_c, t_m), t_c / t_m]  # np.maximum: NaN wins
        except ZeroDivisionError:  # NumPy's inf or NaN: the array steps below
            flops, nbytes = np.array([f]), np.array([b])
        else:
            logs = np.log10(np.asarray(terms))
            return dict(zip(WORK_COLUMNS, logs.reshape(-1, 1), strict=True))  # rows of one array: (1,) views
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


def wave_features(ctas: np.ndarray | float, units: np.ndarray) -> dict[str, np.ndarray]:
    """Wave quantisation of ``ctas`` thread blocks over ``units`` SMs (NaN where the SM count is unknown).

    ``last_wave_fill`` is the share of SMs busy in the last wave; ``wave_efficiency`` = waves / ceil(waves),
    the fraction of the launched waves' SM time doing work (1 when the blocks fill every wave). A request's
    ``ctas`` may be a Python float.
    """
    one = type(ctas) is float
    if not one:
        ctas = np.asarray(ctas, dtype="float64")
    u = float(units[0]) if one or ctas.shape == (1,) else 0.0
    if u != 0.0:  # a request (and a known, non-zero unit count): in Python floats, the logarithms in one call
        c = ctas if one else ctas.item()
        w = c / u
        full = float(math.ceil(w)) if math.isfinite(w) else w  # np.ceil keeps inf and NaN
        if full != 0.0:
            logs = np.log2(np.asarray([c, w]))
            return {"log2_ctas": logs[0:1], "log2_waves": logs[1:2],
                    "last_wave_fill": np.asarray([1.0 - (full - w)]), "wave_efficiency": np.asarray([w / full])}
    if one:
        ctas = np.array([ctas])
    waves = ctas / np.asarray(units, dtype="float64")
    full = np.ceil(waves)
    return {
        "log2_ctas": np.log2(ctas),
        "log2_waves": np.log2(waves),
        "last_wave_fill": 1.0 - (full - waves),
        "wave_efficiency": waves / full,
    }
