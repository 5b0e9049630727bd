"""GEMM features: shape, dtype, roofline work, tile/wave quantisation and the device's spec sheet.

Why these: a GEMM's time is its roofline time (FLOPs at the dtype's peak vs bytes at the bandwidth)
divided by an efficiency that depends on how the output tiles fill the SMs (the last, partly empty wave)
and on alignment (dimensions that are not multiples of 8/64/128 fall off the fast kernels). Hardware
numbers come from the spec sheet by device id, so an unseen device is described like a trained one.
"""

from __future__ import annotations

import math

import numpy as np

from perfcast.features.base import RecordFeatures, log2_columns, text_map
from perfcast.features.distinct import factorize
from perfcast.features.hardware import RowHardware
from perfcast.features.kernels import hardware_features, per_device, wave_features, work_features
from perfcast.features.records import Records
from perfcast.features.roofline import DTYPES, canonical_dtypes, dtype_columns, dtype_one_hot_row, element_bytes

#: CTA tile (m, n) assumed when the record does not name its kernel's tile, by compute-capability major:
#: cuBLAS SGEMM on Pascal mostly runs 128x64 tiles; newer libraries mostly 128x128
DEFAULT_TILE: dict[int, tuple[int, int]] = {6: (128, 64)}
FALLBACK_TILE: tuple[int, int] = (128, 128)
ALIGNMENTS: tuple[int, ...] = (8, 64, 128)


def gemm_work(m: np.ndarray, n: np.ndarray, k: np.ndarray, batch: np.ndarray, beta: np.ndarray,
              sizes: dict[str, np.ndarray]) -> tuple[np.ndarray | float, np.ndarray | float]:
    """FLOPs (2·batch·m·n·k) and bytes moved: A, B read once, C written once (and read when beta != 0);
    ``sizes`` are the operands' bytes per element (:func:`~perfcast.features.roofline.element_bytes`). A single
    row's are Python floats (what :func:`~perfcast.features.kernels.work_features` reads of it)."""
    if len(m) == 1:  # a request: the same IEEE products and sums, in order, in Python floats
        b_, m_, n_, k_ = float(batch[0]), float(m[0]), float(n[0]), float(k[0])
        a, b, c = (float(sizes[o][0]) for o in "abc")
        c_one = 1.0 + float(beta[0] != 0)
        return 2.0 * b_ * m_ * n_ * k_, b_ * (m_ * k_ * a + k_ * n_ * b + c_one * m_ * n_ * c)
    flops = 2.0 * batch * m * n * k
    c_reads = 1.0 + (beta != 0).astype("float64")
    nbytes = batch * (m * k * sizes["a"] + k * n * sizes["b"] + c_reads * m * n * sizes["c"])
    return flops, nbytes


def aligned(v: np.ndarray) -> dict[int, np.ndarray]:
    """``v % a == 0`` for each of :data:`ALIGNMENTS` (powers of two), as float64, from one remainder by the
    largest: each divides it, and whether a remainder of at least ``a`` is a multiple of ``a`` is exact
    arithmetic (such a remainder is a normal double, and scaling it by ``1/a`` is exact). Why: float ``%`` is
    the slow part of a batch's features, and this takes one per dimension instead of one per alignment."""
    if v.shape[-1] == 1 and v.ndim == 2:  # a request's dimensions: the same exact steps in Python floats
        flags = np.array(_aligned_one(v[:, 0].tolist()), dtype="float64").reshape(len(ALIGNMENTS), len(v), 1)
        return dict(zip(ALIGNMENTS, flags, strict=True))
    rem = v % max(ALIGNMENTS)
    out = {}
    for a in ALIGNMENTS:
        scaled = rem * (1.0 / a)
        out[a] = ((rem == 0) | ((rem >= a) & (scaled == np.floor(scaled)))).astype("float64")
    return out


def _aligned_one(values: list[float]) -> list[list[float]]:
    """:func:`aligned`'s flags of a few sizes in Python floats (the same exact steps), per alignment and value."""
    rems = [x % max(ALIGNMENTS) for x in values]  # non-negative sizes: % is C's fmod, exact
    return [[float(r == 0 or (r >= a and r * (1.0 / a) == math.floor(r * (1.0 / a)))) for r in rems]
            for a in ALIGNMENTS]


def _alignment(x: float) -> tuple[float, ...]:
    """:func:`_aligned_one`'s flags of one size for each of :data:`ALIGNMENTS`, remembered in :data:`_ALIGNED`."""
    hit = _ALIGNED.get(x)
    if hit is None:
        if len(_ALIGNED) >= 4096:
            _ALIGNED.clear()
        hit = _ALIGNED[x] = tuple(flags[0] for flags in _aligned_one([x]))
    return hit


#: size -> :func:`_alignment` of it (bounded)
_ALIGNED: dict[float, tuple[float, ...]] = {}

#: the alignment columns of m, n and k, in :mod:`perfcast.features.groups` order
ALIGN_COLUMNS: tuple[str, ...] = tuple(f"{d}_align{a}" for d in "mnk" for a in ALIGNMENTS)


def align_columns(m: np.ndarray, n: np.ndarray, k: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`ALIGN_COLUMNS` of dimensions ``m``, ``n``, ``k`` (:func:`aligned`); a request's in one array."""
    if len(m) == 1:  # a request: each size's flags remembered (sizes recur: powers of two, multiples of 128)
        block = np.array([*_alignment(float(m[0])), *_alignment(float(n[0])), *_alignment(float(k[0]))])
        return dict(zip(ALIGN_COLUMNS, block.reshape(-1, 1), strict=True))
    flags = aligned(np.stack([m, n, k]))  # the three dimensions in one pass
    return {f"{d}_align{a}": flag[i] for i, d in enumerate("mnk") for a, flag in flags.items()}


def default_tiles(hw: RowHardware) -> tuple[np.ndarray, np.ndarray]:
    """The assumed CTA tile (tile_m, tile_n) of each row's device (see :data:`DEFAULT_TILE`)."""
    major = np.floor(hw.number("compute_capability"))
    tm = np.full(len(major), float(FALLBACK_TILE[0]))
    tn = np.full(len(major), float(FALLBACK_TILE[1]))
    for arch, (a, b) in DEFAULT_TILE.items():
        tm[major == arch], tn[major == arch] = float(a), float(b)
    return tm, tn


def compute_units(hw: RowHardware) -> np.ndarray:
    """What each row's thread blocks are spread over: its device's SMs, else its cores."""
    sm = hw.number("sm_count")
    return np.where(np.isnan(sm), hw.number("cores"), sm)


def dtype_one_hots(dtype: np.ndarray) -> dict[str, np.ndarray]:
    """The ``dtype_*`` columns of canonical dtype names (the dtypes grouped once: a batch's text is the cost)."""
    codes, present = factorize(dtype)
    none = np.zeros(len(codes), dtype=bool)
    return {f"dtype_{d}": ((codes == present.index(d)) if d in present else none).astype("float64") for d in DTYPES}


def _ctas_one(batch: np.ndarray, m: np.ndarray, n: np.ndarray, tile_m: np.ndarray, tile_n: np.ndarray) -> float:
    """A single row's thread blocks, batch * ceil(m / tile_m) * ceil(n / tile_n), in Python floats: the same
    quotients and products in order, ``np.ceil``'s inf and NaN kept."""
    quotients = (float(m[0] / tile_m[0]), float(n[0] / tile_n[0]))  # NumPy's (inf or NaN where a tile is 0)
    ceil = [float(math.ceil(q)) if math.isfinite(q) else q for q in quotients]
    return float(batch[0]) * ceil[0] * ceil[1]


def _first_is_t(layout: str) -> float:
    return float(layout[:1] == "t") if layout else np.nan


def _second_is_t(layout: str) -> float:
    return float(layout[1:2] == "t") if len(layout) > 1 else np.nan


class GemmFeatures(RecordFeatures):
    """gemm records -> the ``gemm`` columns of :mod:`perfcast.features.groups`."""

    task = "gemm"
    required = ("m", "n", "k", "dtype")
    positive = ("m", "n", "k", "batch")

    def _columns(self, X: Records) -> dict[str, np.ndarray]:
        where = type(self).__name__
        dtype = canonical_dtypes(X.text("dtype"), "dtype")
        hw = RowHardware(X)
        hard = hardware_features(hw, X, dtype, where)
        m, n, k, batch = X.number("m"), X.number("n"), X.number("k"), X.number("batch", 1.0)
        beta = X.number("beta", 0.0)
        one = dtype_columns(dtype[0]) if len(dtype) == 1 else None  # a request: made once per dtype
        sizes = element_bytes(dtype) if one is None else {o: one[f"{o}_bytes"] for o in "abc"}
        flops, nbytes = gemm_work(m, n, k, batch, beta, sizes)
        if "layout" in X:  # "tn": A transposed, B not; unknown stays NaN
            layout = text_map(X.text("layout"), str.lower)
            trans_a = text_map(layout, _first_is_t).astype("float64")
            trans_b = text_map(layout, _second_is_t).astype("float64")
        else:
            trans_a = trans_b = np.array([np.nan]) if len(X) == 1 else np.full(len(X), np.nan)
        tm, tn, units = per_device(hw, "gemm", lambda: (*default_tiles(hw), compute_units(hw)))
        tile_m = np.where(np.isnan(given := X.number("tile_m")), tm, given) if "tile_m" in X else tm
        tile_n = np.where(np.isnan(given := X.number("tile_n")), tn, given) if "tile_n" in X else tn
        ctas = _ctas_one(batch, m, n, tile_m, tile_n) if len(X) == 1 else \
            batch * np.ceil(m / tile_m) * np.ceil(n / tile_n)
        align = align_columns(m, n, k)
        return {  # in the order of groups.py, so the base class need not reorder
            **log2_columns({"log2_m": m, "log2_n": n, "log2_k": k, "log2_batch": batch}),
            **align, "trans_a": trans_a, "trans_b": trans_b, "beta_nonzero": (beta != 0).astype("float64"),
            "a_bytes": sizes["a"], "b_bytes": sizes["b"], "c_bytes": sizes["c"],
            **(dtype_one_hots(dtype) if one is None else dtype_one_hot_row(dtype[0])),
            **work_features(flops, nbytes, hard["peak_tflops"], hard["mem_bw_gbs"]),
            "tile_m": tile_m, "tile_n": tile_n,
            **wave_features(ctas, units),
            **hard,
        }
