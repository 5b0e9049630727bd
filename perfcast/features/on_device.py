"""GPU-kernel feature rows re-featurized for another device: the same configurations, another spec sheet.

Why: a model downstream of the feature transformer sees feature rows, not records, yet some questions need
a configuration's features *on a device that did not run it*: the sibling copy's level-free correction
(:mod:`perfcast.models.estimators.sibling`) measures its correction's level on a fixed set of the sibling's
measured configurations featurized for the target GPU, so that the level is a property of (target, sibling,
kernel kind), the same for a one-row request as for a batch. A configuration's device-free columns (shape,
dtype, FLOPs, bytes) identify it; what depends on the device is recomputed here with the transformers' own
arithmetic (:mod:`perfcast.features.kernels`): the :data:`~perfcast.features.groups.GPU_HARDWARE` columns,
the roofline times, the default CTA tile (by compute-capability major, GEMM) and the wave quantisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from perfcast.features.gemm import DEFAULT_TILE, FALLBACK_TILE
from perfcast.features.groups import GPU_HARDWARE
from perfcast.features.kernels import WORK_COLUMNS, wave_features, work_features

#: the roofline columns that depend on the device (FLOPs, bytes and intensity do not)
DEVICE_WORK: tuple[str, ...] = ("log10_compute_ms", "log10_memory_ms", "log10_roofline_ms", "compute_memory_balance")


def _tile(cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The default CTA tile (tile_m, tile_n) for compute capabilities ``cc`` (as the GEMM transformer assumes)."""
    major = np.floor(cc)
    tm, tn = np.full(len(cc), float(FALLBACK_TILE[0])), np.full(len(cc), float(FALLBACK_TILE[1]))
    for arch, (a, b) in DEFAULT_TILE.items():
        tm[major == arch], tn[major == arch] = float(a), float(b)
    return tm, tn


def _count(log2_value: np.ndarray) -> np.ndarray:
    """An integer count back from its ``log2`` feature (exact below 2**53: counts are integers)."""
    return np.rint(np.exp2(log2_value))


def featurize_on_device(X: pd.DataFrame, hardware: Mapping[str, float]) -> pd.DataFrame:
    """The gemm or attention feature rows ``X`` as the transformer featurizes their configurations on the device
    whose :data:`~perfcast.features.groups.GPU_HARDWARE` values are ``hardware`` (one device, one dtype: its
    ``peak_tflops`` is the rows' dtype's peak, so pass rows of one kernel kind). Rows whose own hardware already
    equals ``hardware`` come back unchanged, bit for bit. A GEMM row's tile follows the device's default tile
    only where it was the default of its own device (a record's own tile stays). Waves are counted over the
    device's SMs; a device without an SM count gets NaN waves (the GEMM transformer's fallback, its cores, is
    not among the features)."""
    absent = [c for c in GPU_HARDWARE if c not in hardware]
    if absent or any(c not in X.columns for c in (*GPU_HARDWARE, *WORK_COLUMNS, "log2_ctas")):
        raise ValueError(f"featurize_on_device: needs gemm or attention feature rows and the device's "
                         f"{list(GPU_HARDWARE)} values; the device lacks {absent}")
    new = np.asarray([float(hardware[c]) for c in GPU_HARDWARE])
    A = X.to_numpy(dtype="float64")
    at = {c: i for i, c in enumerate(X.columns)}
    hw = [at[c] for c in GPU_HARDWARE]
    old = A[:, hw]
    changed = ~((old == new) | (np.isnan(old) & np.isnan(new))).all(axis=1)
    if not changed.any():
        return X
    A = A.copy()
    sub = A[changed]
    n = len(sub)
    spec = dict(zip(GPU_HARDWARE, new, strict=True))
    col = {c: sub[:, i].copy() for c, i in at.items()}  # the rows as they were (sub changes below)
    sub[:, hw] = new
    work = work_features(10.0 ** col["log10_flops"], 10.0 ** col["log10_bytes"], np.full(n, spec["peak_tflops"]),
                         np.full(n, spec["mem_bw_gbs"]))
    for c in DEVICE_WORK:
        sub[:, at[c]] = work[c]
    ctas = _count(col["log2_ctas"])
    if "tile_m" in at:  # GEMM: a default tile follows the device's compute-capability major
        own_tm, own_tn = _tile(col["compute_capability"])
        tm, tn = _tile(np.full(n, spec["compute_capability"]))
        follow = (col["tile_m"] == own_tm) & (col["tile_n"] == own_tn) & ((tm != own_tm) | (tn != own_tn))
        if follow.any():
            m, n_, batch = _count(col["log2_m"]), _count(col["log2_n"]), _count(col["log2_batch"])
            ctas = np.where(follow, batch * np.ceil(m / tm) * np.ceil(n_ / tn), ctas)
            sub[:, at["tile_m"]] = np.where(follow, tm, col["tile_m"])
            sub[:, at["tile_n"]] = np.where(follow, tn, col["tile_n"])
    for c, v in wave_features(ctas, np.full(n, spec["sm_count"])).items():
        sub[:, at[c]] = v
    A[changed] = sub
    return pd.DataFrame(A, index=X.index, columns=X.columns)
