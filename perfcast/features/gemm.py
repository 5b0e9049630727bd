"""GEMM features: shape, dtype, roofline work, tile/wave quantisation and the device's spec sheet.

Why these: a GEMM's time is its roofline time (FLOPs at the dtype's peak vs bytes at the bandwidth)
divided by an efficiency that depends on how the output tiles fill the SMs (the last, partly empty wave)
and on alignment (dimensions that are not multiples of 8/64/128 fall off the fast kernels). Hardware
numbers come from the spec sheet by device id, so an unseen device is described like a trained one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfcast.features.base import RecordFeatures, flag, log2, num, one_hot
from perfcast.features.hardware import compute_capability, hardware_frame, numeric
from perfcast.features.kernels import hardware_features, wave_features, work_features
from perfcast.features.roofline import DTYPES, bytes_per_element, normalize_dtype

#: CTA tile (m, n) assumed when the record does not name its kernel's tile, by compute-capability major:
#: cuBLAS SGEMM on Pascal mostly runs 128x64 tiles; newer libraries mostly 128x128
DEFAULT_TILE: dict[int, tuple[int, int]] = {6: (128, 64)}
FALLBACK_TILE: tuple[int, int] = (128, 128)
ALIGNMENTS: tuple[int, ...] = (8, 64, 128)


def gemm_work(X: pd.DataFrame, dtype: pd.Series) -> tuple[pd.Series, pd.Series]:
    """FLOPs (2·batch·m·n·k) and bytes moved: A, B read once, C written once (and read when beta != 0)."""
    m, n, k, batch = num(X, "m"), num(X, "n"), num(X, "k"), num(X, "batch", 1.0)
    flops = 2.0 * batch * m * n * k
    c_reads = 1.0 + (num(X, "beta", 0.0) != 0).astype("float64")
    nbytes = batch * (
        m * k * bytes_per_element(dtype, "a")
        + k * n * bytes_per_element(dtype, "b")
        + c_reads * m * n * bytes_per_element(dtype, "c")
    )
    return flops, nbytes


def default_tiles(hw: pd.DataFrame) -> pd.DataFrame:
    """The assumed CTA tile (tile_m, tile_n) of each row's device (see :data:`DEFAULT_TILE`)."""
    major = np.floor(compute_capability(hw))
    tm = pd.Series(float(FALLBACK_TILE[0]), index=hw.index)
    tn = pd.Series(float(FALLBACK_TILE[1]), index=hw.index)
    for arch, (a, b) in DEFAULT_TILE.items():
        tm = tm.mask(major == arch, float(a))
        tn = tn.mask(major == arch, float(b))
    return pd.DataFrame({"tile_m": tm, "tile_n": tn})


class GemmFeatures(RecordFeatures):
    """gemm records -> the ``gemm`` columns of :mod:`perfcast.features.groups`."""

    task = "gemm"
    required = ("m", "n", "k", "dtype")
    positive = ("m", "n", "k", "batch")

    def _features(self, X: pd.DataFrame) -> pd.DataFrame:
        where = type(self).__name__
        dtype = normalize_dtype(X["dtype"], "dtype")
        hw = hardware_frame(X)
        hard = hardware_features(hw, X, dtype, where)
        m, n, k, batch = num(X, "m"), num(X, "n"), num(X, "k"), num(X, "batch", 1.0)
        flops, nbytes = gemm_work(X, dtype)
        layout = X["layout"].astype("string").str.lower() if "layout" in X.columns else pd.Series(
            pd.NA, index=X.index, dtype="string")
        tiles = default_tiles(hw)
        tile_m = num(X, "tile_m").fillna(tiles["tile_m"])
        tile_n = num(X, "tile_n").fillna(tiles["tile_n"])
        ctas = batch * np.ceil(m / tile_m) * np.ceil(n / tile_n)
        units = numeric(hw, "sm_count").fillna(numeric(hw, "cores"))
        parts = [
            pd.DataFrame({
                "log2_m": log2(m), "log2_n": log2(n), "log2_k": log2(k), "log2_batch": log2(batch),
                **{f"{d}_align{a}": (v % a == 0).astype("float64")
                   for d, v in (("m", m), ("n", n), ("k", k)) for a in ALIGNMENTS},
                "trans_a": flag(layout.str[0] == "t"),
                "trans_b": flag(layout.str[1] == "t"),
                "beta_nonzero": (num(X, "beta", 0.0) != 0).astype("float64"),
                "a_bytes": bytes_per_element(dtype, "a"),
                "b_bytes": bytes_per_element(dtype, "b"),
                "c_bytes": bytes_per_element(dtype, "c"),
                "tile_m": tile_m, "tile_n": tile_n,
            }, index=X.index),
            one_hot(dtype, tuple(DTYPES), "dtype_"),
            work_features(flops, nbytes, hard["peak_tflops"], hard["mem_bw_gbs"]),
            wave_features(ctas, units),
            hard,
        ]
        return pd.concat(parts, axis=1)
