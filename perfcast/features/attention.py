"""Attention features: FLOPs with causal masking, sliding windows and GQA; bytes incl. the KV-cache read.

Why: prefill attention is compute-bound and its FLOPs depend on how many (query, key) pairs the mask
keeps (about half for causal prefill); decode attention is memory-bound and its time is the KV-cache read,
which grouped-query attention shrinks by heads / kv_heads. Both are computed exactly here so the models
learn only the kernel's efficiency, not the arithmetic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfcast.features.base import RecordFeatures, frame, log2, log10, num, one_hot
from perfcast.features.hardware import RowHardware
from perfcast.features.kernels import hardware_features, wave_features, work_features
from perfcast.features.records import Records
from perfcast.features.roofline import DTYPES, bytes_per_element, normalize_dtype

#: query rows per thread block of a prefill (flash-attention style) kernel
PREFILL_BLOCK_Q = 128


def attended_pairs(seq_q: pd.Series, seq_kv: pd.Series, causal: pd.Series, window: pd.Series) -> pd.Series:
    """(query, key) pairs one head computes.

    Queries are the last ``seq_q`` of ``seq_kv`` positions. Causal query at position p sees keys
    max(0, p-w+1)..p, i.e. min(p+1, w) keys; a non-causal query sees min(seq_kv, w). ``window`` 0 = none.
    The causal sum over x = p+1 in [a, b] of min(x, w) is taken in closed form.
    """
    w = window.where(window > 0, np.inf)
    a = seq_kv - seq_q + 1
    b = seq_kv
    count = b - a + 1
    with np.errstate(invalid="ignore"):  # the unselected branches may see inf - inf (no window)
        causal_sum = np.where(
            w >= b, (a + b) * count / 2,
            np.where(w <= a, w * count, (a + w) * (w - a + 1) / 2 + w * (b - w)),
        )
    plain = seq_q * np.minimum(seq_kv, w)
    return pd.Series(np.where(causal, causal_sum, plain), index=seq_q.index, dtype="float64")


class AttentionFeatures(RecordFeatures):
    """attention records -> the ``attention`` columns of :mod:`perfcast.features.groups`."""

    task = "attention"
    required = ("phase", "batch", "heads", "seq_q", "seq_kv", "head_dim", "dtype")
    positive = ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "beam_width")

    def _features(self, records: Records) -> pd.DataFrame:
        where = type(self).__name__
        X = records.frame()  # computed with pandas: one DataFrame per call
        phase = X["phase"].astype("string").str.lower()
        bad_phase = ~phase.isin(["prefill", "decode"]).fillna(False)
        if bad_phase.any():
            raise ValueError(f"{where}: phase must be 'prefill' or 'decode'; got {sorted(phase[bad_phase].unique())}")
        dtype = normalize_dtype(X["dtype"], "dtype")
        kv_dtype = normalize_dtype(X["kv_dtype"], "kv_dtype").fillna(dtype) if "kv_dtype" in X.columns else dtype
        hw = RowHardware(records)
        hard = hardware_features(hw, records, dtype.to_numpy(dtype=object, na_value=None), where)

        batch = num(X, "batch") * num(X, "beam_width", 1.0)
        heads, head_dim = num(X, "heads"), num(X, "head_dim")
        kv_heads = num(X, "kv_heads").fillna(heads)
        seq_q, seq_kv = num(X, "seq_q"), num(X, "seq_kv")
        window = num(X, "window", 0.0)
        # LLM attention is causal unless a record says otherwise
        causal = X["causal"].astype("boolean").fillna(True) if "causal" in X.columns else pd.Series(
            True, index=X.index, dtype="boolean")
        causal = causal.to_numpy(dtype=bool)
        inverted = causal & (seq_q > seq_kv).to_numpy()
        if inverted.any():
            first = X.index[inverted][0]
            raise ValueError(
                f"{where}: causal attention needs seq_q <= seq_kv (queries are the last seq_q positions); "
                f"row {first} has seq_q={seq_q[first]:g} > seq_kv={seq_kv[first]:g}"
            )
        if (heads % kv_heads != 0).any():
            first = X.index[(heads % kv_heads != 0).to_numpy()][0]
            raise ValueError(f"{where}: heads must be a multiple of kv_heads (GQA); row {first} has "
                             f"heads={heads[first]:g}, kv_heads={kv_heads[first]:g}")

        pairs = attended_pairs(seq_q, seq_kv, pd.Series(causal, index=X.index), window)
        flops = 4.0 * batch * heads * head_dim * pairs  # QK^T and PV, 2 FLOPs per multiply-add each
        q_bytes = bytes_per_element(dtype, "a")
        kv_bytes = bytes_per_element(kv_dtype, "a")
        kv_len = np.minimum(seq_kv, (window.where(window > 0, np.inf) + seq_q - 1))
        kv_read = 2.0 * batch * kv_heads * kv_len * head_dim * kv_bytes
        nbytes = 2.0 * batch * heads * seq_q * head_dim * q_bytes + kv_read  # Q in, O out, K and V in
        decode = (phase == "decode").to_numpy(dtype=bool)
        ctas = pd.Series(np.where(decode, batch * kv_heads, batch * heads * np.ceil(seq_q / PREFILL_BLOCK_Q)),
                         index=X.index)
        return frame({
            "log2_batch": log2(batch), "log2_heads": log2(heads), "log2_kv_heads": log2(kv_heads),
            "log2_gqa_ratio": log2(heads / kv_heads), "log2_seq_q": log2(seq_q), "log2_seq_kv": log2(seq_kv),
            "log2_head_dim": log2(head_dim), "log2_window": log2(window + 1.0),
            "log2_beam_width": log2(num(X, "beam_width", 1.0)),
            "causal": causal.astype("float64"), "is_decode": decode.astype("float64"),
            "q_bytes": q_bytes, "kv_bytes": kv_bytes,
            "log10_kv_bytes": log10(kv_read),
            **one_hot(dtype, tuple(DTYPES), "dtype_"),
            **work_features(flops, nbytes, hard["peak_tflops"], hard["mem_bw_gbs"]),
            **wave_features(ctas, hw.number("sm_count")),
            **hard,
        }, X.index)
