"""Roofline arithmetic shared by every task: dtype names, bytes per element, peak rates, roofline times.

Why one module: the GEMM and attention transformers, the analytical ``roofline`` model and the hybrid
model must agree on what "bf16 on this device" means (which peak column, how many bytes an operand
takes); a second copy of these tables would drift. Sources spell dtypes many ways ("bfloat16", "bf16",
"float32", "fp8_block", "int4_wo", ...); :func:`normalize_dtype` maps them to one canonical name and
refuses names it does not know instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.distinct import factorize
from perfcast.features.hardware import RowHardware


@dataclass(frozen=True)
class DtypeInfo:
    """How a GEMM of this dtype moves and computes data.

    ``a_bytes``/``b_bytes``/``c_bytes`` are bytes per element of the activations (A), weights (B) and the
    output (C); weight-only quantisation stores B small but computes in 16 bits, hence different sizes.
    ``peaks`` are the spec-sheet peak columns to use, best first: a device without the first (no FP8
    units, no TF32 on Pascal) runs the dtype on the next one.
    """

    a_bytes: float
    b_bytes: float
    c_bytes: float
    peaks: tuple[str, ...]


_F16_PEAKS = ("peak_tflops_bf16", "peak_tflops_fp16", "peak_tflops_fp32")
_FP8_PEAKS = ("peak_tflops_fp8",) + _F16_PEAKS
#: canonical dtype -> how it moves and computes. Block-scaled formats carry their scales in the bytes
#: (NVFP4: one FP8 scale per 16 values = 0.5 + 1/16 bytes per element).
DTYPES: dict[str, DtypeInfo] = {
    "fp64": DtypeInfo(8, 8, 8, ("peak_tflops_fp64",)),
    "fp32": DtypeInfo(4, 4, 4, ("peak_tflops_fp32",)),
    "tf32": DtypeInfo(4, 4, 4, ("peak_tflops_tf32", "peak_tflops_fp32")),
    "fp16": DtypeInfo(2, 2, 2, ("peak_tflops_fp16", "peak_tflops_bf16", "peak_tflops_fp32")),
    "bf16": DtypeInfo(2, 2, 2, _F16_PEAKS),
    "fp8": DtypeInfo(1, 1, 2, _FP8_PEAKS),
    "fp8_block": DtypeInfo(1, 1, 2, _FP8_PEAKS),
    "nvfp4": DtypeInfo(0.5625, 0.5625, 2, ("peak_tflops_fp4",) + _FP8_PEAKS),
    "int8": DtypeInfo(1, 1, 4, ("peak_tflops_int8",) + _F16_PEAKS),
    "sq": DtypeInfo(1, 1, 2, ("peak_tflops_int8",) + _F16_PEAKS),
    "int8_wo": DtypeInfo(2, 1, 2, _F16_PEAKS),
    "int4_wo": DtypeInfo(2, 0.5, 2, _F16_PEAKS),
}
#: a dtype a model never saw is predicted as its stand-in when the model saw that one: fp16 and bf16 are both two
#: bytes per element and run on the same tensor cores at the same peak on every GPU that has both (a GPU without
#: bf16 runs neither stand-in faster than its fp16 peak, which both dtypes' peaks fall back to)
STAND_INS: dict[str, str] = {"fp16": "bf16", "bf16": "fp16"}
#: every spelling seen in the data (and common framework names), matched after lower-casing and
#: stripping "torch." and separators
_ALIASES: dict[str, str] = {
    "float64": "fp64", "double": "fp64", "f64": "fp64",
    "float32": "fp32", "float": "fp32", "f32": "fp32", "single": "fp32",
    "tensorfloat32": "tf32",
    "float16": "fp16", "half": "fp16", "f16": "fp16",
    "bfloat16": "bf16",
    "float8": "fp8", "float8e4m3fn": "fp8", "float8e4m3": "fp8", "e4m3": "fp8", "fp8e4m3": "fp8",
    "float8e5m2": "fp8", "e5m2": "fp8", "fp8e5m2": "fp8",
    "fp8block": "fp8_block", "fp4": "nvfp4", "nvfp4": "nvfp4",
    "i8": "int8", "smoothquant": "sq", "w8a8": "sq",
    "int8wo": "int8_wo", "w8a16": "int8_wo", "int4wo": "int4_wo", "w4a16": "int4_wo",
}
_KEYS: dict[str, str] = {**{re.sub(r"[\W_]+", "", d): d for d in DTYPES}, **_ALIASES}


class UnknownDtypeError(ValueError):
    """A dtype name no table here knows (names the values, the column and the known names)."""


def _key(name: str) -> str:
    return re.sub(r"[\W_]+", "", str(name).casefold().removeprefix("torch."))


def _objects(values: pd.Series | np.ndarray) -> np.ndarray:
    """``values`` as an object array with None where missing (what :func:`pandas.factorize` groups fastest)."""
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=object, na_value=None)
    return np.asarray(values, dtype=object)


def canonical_dtypes(values: pd.Series | np.ndarray, column: str = "dtype") -> np.ndarray:
    """Canonical dtype names (keys of :data:`DTYPES`) of ``values`` as an object array; missing is None.

    Raises :class:`UnknownDtypeError` listing every unknown spelling, so a new dataset's dtype names are
    added to the alias table once instead of silently getting a wrong peak.
    """
    if len(values) == 1 and isinstance(values, np.ndarray) and isinstance(values[0], str):  # a request's one name
        known = _canonical_name(values[0])
        if known is not None:
            return known
    codes, uniques = factorize(_objects(values))
    mapping = {str(v): _KEYS.get(_key(str(v))) for v in uniques}
    unknown = sorted(v for v, c in mapping.items() if c is None)
    if unknown:
        raise UnknownDtypeError(
            f"unknown {column} value(s) {unknown}; known dtypes: {', '.join(DTYPES)} "
            f"(aliases such as 'bfloat16', 'float32', 'int4_wo' are accepted)"
        )
    return np.asarray([mapping[str(v)] for v in uniques] + [None], dtype=object)[codes]


@lru_cache(maxsize=256)
def _canonical_name(name: str) -> np.ndarray | None:
    """The canonical name of one dtype spelling as a read-only one-element object array (None if unknown),
    remembered: a request names one."""
    known = _KEYS.get(_key(name))
    if known is None:
        return None
    out = np.asarray([known], dtype=object)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def dtype_columns(dtype: str) -> dict[str, np.ndarray]:
    """A single row's per-dtype feature columns for canonical ``dtype``: its operands' bytes per element
    (``a_bytes``, ``b_bytes``, ``c_bytes``, as :func:`element_bytes`) and the ``dtype_*`` one-hots, as
    read-only one-element arrays, made once per dtype (a request's features otherwise group its one name
    a dozen times)."""
    info = DTYPES.get(dtype)
    out = {f"{o}_bytes": np.array([float(getattr(info, f"{o}_bytes")) if info else np.nan]) for o in "abc"}
    out |= {f"dtype_{d}": np.array([float(d == dtype)]) for d in DTYPES}
    for v in out.values():
        v.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def dtype_one_hot_row(dtype: str) -> dict[str, np.ndarray]:
    """The ``dtype_*`` columns of :func:`dtype_columns` for canonical ``dtype``, by themselves (a request's
    features spread them into its row)."""
    columns = dtype_columns(dtype)
    return {f"dtype_{d}": columns[f"dtype_{d}"] for d in DTYPES}


def normalize_dtype(values: pd.Series, column: str = "dtype") -> pd.Series:
    """:func:`canonical_dtypes` as a nullable string Series with ``values``' index."""
    s = pd.Series(values, copy=False)
    return pd.Series(canonical_dtypes(s.astype("string"), column), index=s.index, dtype="string")


def bytes_per_element(dtype: pd.Series | np.ndarray, operand: str) -> np.ndarray:
    """Bytes per element of ``operand`` ('a', 'b' or 'c') for canonical dtype names (NaN where missing)."""
    return element_bytes(dtype, (operand,))[operand]


def element_bytes(dtype: pd.Series | np.ndarray, operands: tuple[str, ...] = ("a", "b", "c")
                  ) -> dict[str, np.ndarray]:
    """:func:`bytes_per_element` of each of ``operands``, the dtypes grouped once (a batch's text is the cost)."""
    codes, uniques = factorize(_objects(dtype))
    info = [DTYPES.get(str(d)) for d in uniques]
    return {o: np.asarray([float(getattr(i, f"{o}_bytes")) if i else np.nan for i in info] + [np.nan],
                          dtype="float64")[codes] for o in operands}


def peak_tflops(hw: RowHardware, dtype: np.ndarray) -> np.ndarray:
    """Each row's peak TFLOP/s for its dtype: the first spec column of the dtype's chain that is known.

    ``hw`` is the rows' :class:`~perfcast.features.hardware.RowHardware`, aligned with ``dtype`` (canonical
    names); a row whose chain is all unknown gets NaN, and the caller says which device lacks what.
    """
    out = np.full(len(dtype), np.nan)
    for name in factorize(dtype)[1]:  # the distinct dtypes present
        rows = dtype == name
        for c in (c for c in DTYPES[name].peaks if c in hw):
            pending = rows & np.isnan(out)
            out[pending] = hw.number(c)[pending]
    return out


def compute_ms(flops: np.ndarray, peak_tflops: np.ndarray) -> np.ndarray:
    """Time (ms) the FLOPs take at the peak rate."""
    return np.asarray(flops, dtype="float64") / (np.asarray(peak_tflops, dtype="float64") * 1e9)


def memory_ms(nbytes: np.ndarray, bw_gbs: np.ndarray) -> np.ndarray:
    """Time (ms) moving the bytes takes at the peak DRAM bandwidth."""
    return np.asarray(nbytes, dtype="float64") / (np.asarray(bw_gbs, dtype="float64") * 1e6)


def l2_resident_memory_ms(nbytes: np.ndarray, bw_gbs: np.ndarray, l2_mb: np.ndarray, l2_gbs: np.ndarray
                          ) -> np.ndarray:
    """Time (ms) moving the bytes when a kernel whose operands fit in the L2 finds them there: a benchmark repeats
    the launch, so operands no larger than the L2 stay resident and move at the L2 rate ``l2_gbs`` (never below
    the DRAM rate); larger ones stream from DRAM (:func:`memory_ms`). Where the L2 size or rate is unknown, DRAM."""
    nbytes, bw = np.asarray(nbytes, dtype="float64"), np.asarray(bw_gbs, dtype="float64")
    l2_mb, l2_gbs = np.asarray(l2_mb, dtype="float64"), np.asarray(l2_gbs, dtype="float64")
    resident = (nbytes <= l2_mb * 1e6) & (l2_gbs > bw)  # NaN compares false: DRAM
    return memory_ms(nbytes, np.where(resident, l2_gbs, bw))
