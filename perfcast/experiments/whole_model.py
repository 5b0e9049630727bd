"""Whole-model check: NeuSight's per-operator traces of BERT, GPT and OPT, with perfcast's GEMM predictions
summed in, against the measured end-to-end latency.

Why: the anchor protocols judge one operator at a time; a user asks how long a model takes. The traces are
read by :mod:`perfcast.datasets.importers.neusight_traces` (prologue, **one** transformer layer, epilogue,
``num_layer`` and the measured end-to-end time); the model's time is prologue + num_layer x layer + epilogue.

perfcast models GEMMs only: ``Linear`` modules and ``addmm`` nodes become ``linear`` records, ``matmul``/
``bmm`` nodes ``bmm`` (``linear`` when both operands are 2-D), all FP32 as NeuSight measured them, with the
layout the neusight-ood protocol assumes for the op. In a training trace each GEMM also runs two backward
GEMMs of the same FLOPs (grad of input: m x k from m x n @ n x k; grad of weight: k x n from k x m @ m x n).
Everything else (elementwise, softmax, layernorm, embedding, dropout, the gradient accumulation of any node)
is not modelled and enters the sums as measured. :func:`end_to_end` gives both views: predicted GEMMs plus
the measured rest against the end-to-end latency, and GEMM-only predicted against GEMM-only measured.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perfcast.datasets.importers.neusight_traces import Trace, load_traces
from perfcast.eval.protocols import NEUSIGHT_LAYOUT
from perfcast.records.hardware_specs import get_spec

#: ``load_traces`` is imported for the benchmark runner, which reads the traces through this module
__all__ = ["end_to_end", "gemm_records", "load_traces"]


def gemm_records(traces: list[Trace]) -> pd.DataFrame:
    """One gemm record per GEMM the traces run (3 per GEMM node of a training trace), in the neusight-ood
    protocol's shape, with ``trace`` (index into ``traces``), ``node``, ``pass`` (fw, bw_input, bw_weight) and
    ``weight`` (how often the node runs: ``num_layer`` times inside the layer)."""
    parts = []
    for i, tr in enumerate(traces):
        g = tr.ops[tr.ops["op"].notna()]
        passes = [g.assign(pass_="fw")]
        if tr.mode == "train":  # grad of input (m x k, reduce n) and of weight (k x n, reduce m)
            passes.append(g.assign(pass_="bw_input", n=g["k"], k=g["n"]))
            passes.append(g.assign(pass_="bw_weight", m=g["k"], k=g["m"]))
        recs = pd.concat(passes, ignore_index=True)
        recs["trace"] = i
        recs["weight"] = np.where(recs["in_layer"], tr.num_layer, 1)
        recs["device_id"] = tr.device_id
        parts.append(recs)
    recs = pd.concat(parts, ignore_index=True)
    names = {d: get_spec(d)["device_name"] for d in recs["device_id"].unique()}
    return pd.DataFrame({
        "trace": recs["trace"], "node": recs["node"], "weight": recs["weight"].astype("int64"), "pass": recs["pass_"],
        "op": recs["op"], "batch": recs["batch"], "m": recs["m"], "n": recs["n"], "k": recs["k"],
        "dtype": "float32", "layout": recs["op"].map(NEUSIGHT_LAYOUT).astype("string"),
        "device_id": recs["device_id"].astype("string"), "device_name": recs["device_id"].map(names).astype("string"),
        "device_kind": "gpu",
        # measured per forward node only; a backward GEMM's own time is not in the trace
        "runtime_ms": recs["fw_ms"].where(recs["pass_"] == "fw"),
    })


def _replicated(values: pd.Series, weight: pd.Series, trace: pd.Series) -> pd.Series:
    return (values * weight).groupby(trace).sum()


def end_to_end(traces: list[Trace], gemms: pd.DataFrame, predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per trace (layer replicated ``num_layer`` times): ``e2e_ms`` (measured end to end), ``measured_ms``
    (sum of every node), ``measured_gemm_ms`` (forward, plus backward in training, of the GEMM nodes), and for
    each prediction ``name``: ``<name>_gemm_ms`` and ``<name>_plus_rest_ms`` (predicted GEMMs + measured rest)."""
    nodes = pd.concat([tr.ops.assign(trace=i, weight=np.where(tr.ops["in_layer"], tr.num_layer, 1))
                       for i, tr in enumerate(traces)], ignore_index=True)
    is_gemm = nodes["op"].notna().to_numpy()
    gemm_time = (nodes["fw_ms"] + nodes["bw_ms"]).where(is_gemm, 0.0)
    out = pd.DataFrame({
        "trace": [tr.name for tr in traces],
        "device_id": [tr.device_id for tr in traces],
        "e2e_ms": [tr.e2e_ms for tr in traces],
    })
    out["measured_ms"] = _replicated(nodes["latency_ms"], nodes["weight"], nodes["trace"]).reindex(out.index)
    out["measured_gemm_ms"] = _replicated(gemm_time, nodes["weight"], nodes["trace"]).reindex(out.index)
    rest = out["measured_ms"] - out["measured_gemm_ms"]
    for name, pred in predictions.items():
        pred = np.asarray(pred, dtype="float64")
        if pred.shape != (len(gemms),):
            raise ValueError(f"prediction {name!r} has shape {pred.shape}; expected one value per GEMM ({len(gemms)})")
        total = _replicated(pd.Series(pred), gemms["weight"], gemms["trace"]).reindex(out.index, fill_value=0.0)
        out[f"{name}_gemm_ms"] = total
        out[f"{name}_plus_rest_ms"] = total + rest
    return out
