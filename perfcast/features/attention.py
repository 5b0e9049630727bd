"""Attention features: FLOPs with causal masking, sliding windows and GQA; bytes incl. the KV-cache read.

Why: prefill attention is compute-bound and its FLOPs depend on how many (query, key) pairs the mask
keeps (about half for causal prefill); decode attention is memory-bound and its time is the KV-cache read,
which grouped-query attention shrinks by heads / kv_heads. Both are computed exactly here so the models
learn only the kernel's efficiency, not the arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import RecordFeatures, log2_columns, text_map
from perfcast.features.distinct import flagged
from perfcast.features.hardware import RowHardware
from perfcast.features.kernels import hardware_features, wave_features, work_features
from perfcast.features.records import Records
from perfcast.features.roofline import (DTYPES, bytes_per_element, canonical_dtypes, dtype_columns,
                                       dtype_one_hot_row)

#: query rows per thread block of a prefill (flash-attention style) kernel
PREFILL_BLOCK_Q = 128
#: the phases an attention record may name (lower case)
PHASES: tuple[str, ...] = ("prefill", "decode")


def attended_pairs(seq_q: np.ndarray, seq_kv: np.ndarray, causal: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(query, key) pairs one head computes.

    Queries are the last ``seq_q`` of ``seq_kv`` positions. Causal query at position p sees keys
    max(0, p-w+1)..p, i.e. min(p+1, w) keys; a non-causal query sees min(seq_kv, w). ``window`` 0 = none.
    The causal sum over x = p+1 in [a, b] of min(x, w) is taken in closed form.
    """
    if len(seq_q) == 1:  # a request: the selected branch alone, the same IEEE operations in Python floats
        return np.asarray([_pairs_one(seq_q.item(), seq_kv.item(), bool(causal[0]), window.item())])
    w = np.where(window > 0, window, np.inf)
    a = seq_kv - seq_q + 1
    b = seq_kv
    count = b - a + 1
    with np.errstate(invalid="ignore"):  # the unselected branches may see inf - inf (no window)
        causal_sum = np.where(
            w >= b, (a + b) * count / 2,
            np.where(w <= a, w * count, (a + w) * (w - a + 1) / 2 + w * (b - w)),
        )
    plain = seq_q * np.minimum(seq_kv, w)
    return np.where(causal, causal_sum, plain)


def _pairs_one(seq_q: float, seq_kv: float, causal: bool, window: float) -> float:
    """:func:`attended_pairs` of one row (the branch its ``np.where`` selects, operands in the same order)."""
    w = window if window > 0 else math.inf
    a, b = seq_kv - seq_q + 1, seq_kv
    if not causal:
        return seq_q * min(seq_kv, w)
    if w >= b:
        return (a + b) * (b - a + 1) / 2
    return w * (b - a + 1) if w <= a else (a + w) * (w - a + 1) / 2 + w * (b - w)


def _work_one(batch: float, heads: float, kv_heads: float, head_dim: float, seq_q: float, seq_kv: float,
              window: float, pairs: float, q_bytes: float, kv_bytes: float, decode: bool
              ) -> tuple[float, float, float, float]:
    """(FLOPs, bytes, KV-cache bytes read, thread blocks) of one row, as :class:`AttentionFeatures` takes them
    for a batch: the same products and sums in the same order, ``np.minimum``'s NaN and ``np.ceil``'s inf and
    NaN kept, and only the branch ``np.where`` selects."""
    span = (window if window > 0 else math.inf) + seq_q - 1
    kv_len = math.nan if seq_kv != seq_kv or span != span else min(seq_kv, span)
    kv_read = 2.0 * batch * kv_heads * kv_len * head_dim * kv_bytes
    nbytes = 2.0 * batch * heads * seq_q * head_dim * q_bytes + kv_read
    blocks = seq_q / PREFILL_BLOCK_Q
    ctas = batch * kv_heads if decode else batch * heads * (float(math.ceil(blocks)) if math.isfinite(blocks)
                                                            else blocks)
    return 4.0 * batch * heads * head_dim * pairs, nbytes, kv_read, ctas


class AttentionFeatures(RecordFeatures):
    """attention records -> the ``attention`` columns of :mod:`perfcast.features.groups`."""

    task = "attention"
    required = ("phase", "batch", "heads", "seq_q", "seq_kv", "head_dim", "dtype")
    positive = ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "beam_width")

    def _columns(self, X: Records) -> dict[str, np.ndarray]:
        where = type(self).__name__
        phase = text_map(X.text("phase"), str.lower)
        if len(phase) == 1:  # a request's one value compared in Python (an object array's compare is a call each)
            bad_phase, decode = np.array([phase[0] not in PHASES]), np.array([phase[0] == "decode"])
        else:
            bad_phase, decode = (phase != "prefill") & (phase != "decode"), phase == "decode"
        if flagged(bad_phase):
            raise ValueError(f"{where}: phase must be 'prefill' or 'decode'; got "
                             f"{sorted({str(v) for v in phase[bad_phase]})}")
        dtype = canonical_dtypes(X.text("dtype"), "dtype")
        kv_dtype = dtype
        if "kv_dtype" in X:
            given = canonical_dtypes(X.text("kv_dtype"), "kv_dtype")
            kv_dtype = (given if given[0] is not None else dtype) if len(given) == 1 else \
                np.where(pd.isna(given), dtype, given)
        hw = RowHardware(X)
        hard = hardware_features(hw, X, dtype, where)

        beam = X.number("beam_width", 1.0)
        batch = X.number("batch") * beam
        heads, head_dim = X.number("heads"), X.number("head_dim")
        kv_heads = X.number("kv_heads", np.nan)
        seq_q, seq_kv = X.number("seq_q"), X.number("seq_kv")
        window = X.number("window", 0.0)
        causal = self._causal(X)  # LLM attention is causal unless a record says otherwise
        if len(X) == 1:  # a request's checks in Python floats (the same comparisons and remainder)
            if kv_heads[0] != kv_heads[0]:  # noqa: PLR0124 (NaN)
                kv_heads = heads
            inverted = np.array([bool(causal[0]) and seq_q[0] > seq_kv[0]])
            uneven = np.array([float(heads[0]) % float(kv_heads[0]) != 0])
        else:
            kv_heads = np.where(np.isnan(kv_heads), heads, kv_heads)
            inverted = causal & (seq_q > seq_kv)
            uneven = heads % kv_heads != 0
        if flagged(inverted):
            first = int(np.flatnonzero(inverted)[0])
            raise ValueError(
                f"{where}: causal attention needs seq_q <= seq_kv (queries are the last seq_q positions); "
                f"row {X.index[first]} has seq_q={seq_q[first]:g} > seq_kv={seq_kv[first]:g}"
            )
        if flagged(uneven):
            first = int(np.flatnonzero(uneven)[0])
            raise ValueError(f"{where}: heads must be a multiple of kv_heads (GQA); row {X.index[first]} has "
                             f"heads={heads[first]:g}, kv_heads={kv_heads[first]:g}")

        pairs = attended_pairs(seq_q, seq_kv, causal, window)
        one = len(dtype) == 1 and dtype[0] is not None and kv_dtype[0] is not None  # a request: per-dtype memo
        q_bytes = dtype_columns(dtype[0])["a_bytes"] if one else bytes_per_element(dtype, "a")
        kv_bytes = dtype_columns(kv_dtype[0])["a_bytes"] if one else bytes_per_element(kv_dtype, "a")
        if len(X) == 1:  # a request: the same IEEE operations in the same order, in Python floats
            flops, nbytes, kv_read, ctas = _work_one(  # (the work and waves take Python floats)
                *(float(v[0]) for v in (batch, heads, kv_heads, head_dim, seq_q, seq_kv, window, pairs, q_bytes,
                                        kv_bytes)), bool(decode[0]))
            kv_read = np.array([kv_read])
        else:
            flops = 4.0 * batch * heads * head_dim * pairs  # QK^T and PV, 2 FLOPs per multiply-add each
            kv_len = np.minimum(seq_kv, np.where(window > 0, window, np.inf) + seq_q - 1)
            kv_read = 2.0 * batch * kv_heads * kv_len * head_dim * kv_bytes
            nbytes = 2.0 * batch * heads * seq_q * head_dim * q_bytes + kv_read  # Q in, O out, K and V in
            ctas = np.where(decode, batch * kv_heads, batch * heads * np.ceil(seq_q / PREFILL_BLOCK_Q))
        return {  # in the order of groups.py, so the base class need not reorder
            **log2_columns({"log2_batch": batch, "log2_heads": heads, "log2_kv_heads": kv_heads,
                            "log2_gqa_ratio": heads / kv_heads, "log2_seq_q": seq_q, "log2_seq_kv": seq_kv,
                            "log2_head_dim": head_dim, "log2_window": window + 1.0, "log2_beam_width": beam}),
            "causal": causal.astype("float64"), "is_decode": decode.astype("float64"),
            "q_bytes": q_bytes, "kv_bytes": kv_bytes,
            **(dtype_one_hot_row(dtype[0]) if one else
               {f"dtype_{d}": (dtype == d).astype("float64") for d in DTYPES}),
            **work_features(flops, nbytes, hard["peak_tflops"], hard["mem_bw_gbs"]),
            "log10_kv_bytes": np.log10(kv_read),
            **wave_features(ctas, hw.number("sm_count")),
            **hard,
        }

    @staticmethod
    def _causal(X: Records) -> np.ndarray:
        """The ``causal`` flag per row (true where absent or missing)."""
        if "causal" not in X:
            return np.array([True]) if len(X) == 1 else np.ones(len(X), dtype=bool)
        raw = X.raw("causal")
        flags = pd.Series(raw, copy=False).astype("boolean").fillna(True) if not (
            isinstance(raw, np.ndarray) and raw.dtype == bool) else raw
        return np.asarray(flags, dtype=bool)
