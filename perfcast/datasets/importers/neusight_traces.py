"""NeuSight's whole-model traces: per-operator latencies of BERT, GPT and OPT runs, and their end-to-end time.

NeuSight's ``label/<GPU>/<model>-<inf|train>-<seq>-<batch>.csv.gz`` traces (torch.fx nodes with measured
forward, backward and gradient-accumulation latencies, ms) cover the model's prologue, **one** transformer
layer and its epilogue; the ``.json`` beside each gives ``num_layer`` and the measured ``e2e_latency``. A node
belongs to the layer when its module stack names layer 0 (``...h.0``, ``...layer.0``, ``...layers.0``).
GEMM nodes (``Linear`` modules, ``addmm``, ``matmul``/``bmm``) get their shape in record naming (output
m x n, reduction k). They are not records (a trace is a whole run, not one kernel), so nothing is stored:
the whole-model experiment (:mod:`perfcast.experiments.whole_model`) reads them with :func:`load_traces`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.records.hardware_specs import resolve_device_id

#: trace file-name prefixes of the models checked (Switch-Transformer MoE traces are left out)
MODEL_PREFIXES: tuple[str, ...] = ("bert", "gpt", "opt")
TRACE_COLUMNS: tuple[str, ...] = ("op", "target", "input_shapes", "output_shape", "meta", "latency", "fw_latency",
                                  "bw_latency", "acc_latency", "Name")
#: a module path of transformer layer 0 inside the node's nn_module_stack
LAYER0 = r"'[\w.]*\.(?:h|layer|layers)\.0(?:\.[\w.]*)?'"
#: the innermost module of a call_module node is an nn.Linear
LINEAR_MODULE = r"<class 'torch\.nn\.modules\.linear\.Linear'>\)\]\)\}\s*$"
ADDMM = r"\baddmm\b"
MATMUL = r"\b(?:matmul|bmm)\b"
TRACE_NAME = re.compile(r"^(?P<model>[a-z0-9_]+)-(?P<mode>inf|train)-(?P<seq>\d+)-(?P<batch>\d+)$")


class TraceError(ValueError):
    """A label file does not look like a NeuSight trace (the message names the file and what is wrong)."""


@dataclass(frozen=True)
class Trace:
    """One measured whole-model run: where, what, how many layers, its end-to-end time and its nodes."""

    name: str  # file stem, e.g. "bert_large-inf-512-8"
    device_id: str
    mode: str  # "inf" or "train"
    num_layer: int
    e2e_ms: float
    ops: pd.DataFrame  # one row per node: see parse_trace


def _ints(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"-?\d+", text)]


def _gemm_shape(kind: str, inputs: list[list[int]], output: list[int]) -> tuple[str, int, int, int, int]:
    """(op, batch, m, n, k) of one GEMM node (record naming: output m x n, reduction k)."""
    if kind == "linear_module":
        a = inputs[0]
        return "linear", 1, int(np.prod(a[:-1])), output[-1], a[-1]
    if kind == "addmm":  # addmm(bias, A (M x K), B (K x N))
        a, b = inputs[1], inputs[2]
        return "linear", 1, a[0], b[1], a[1]
    a, b = inputs[0], inputs[1]  # matmul / bmm: (..., M, K) @ (..., K, N)
    batch = int(np.prod(a[:-2])) if len(a) > 2 else 1
    return ("bmm" if len(a) > 2 else "linear"), batch, a[-2], b[-1], a[-1]


def parse_trace(path: Path) -> pd.DataFrame:
    """The nodes of one trace: ``node`` (fx name), ``latency_ms`` (fw + bw + acc), ``fw_ms``, ``bw_ms``,
    ``acc_ms``, ``in_layer`` (node of transformer layer 0) and, for GEMM nodes, ``op``/``batch``/``m``/``n``/``k``
    (NA for every other node)."""
    raw = pd.read_csv(path)
    missing = [c for c in TRACE_COLUMNS if c not in raw.columns]
    if missing:
        raise TraceError(f"{path} lacks column(s) {missing}; expected a NeuSight label trace (columns {TRACE_COLUMNS})")
    meta = raw["meta"].fillna("").astype(str)
    target = raw["target"].fillna("").astype(str)
    kind = pd.Series(pd.NA, index=raw.index, dtype="string")
    kind[(raw["op"] == "call_module") & meta.str.contains(LINEAR_MODULE)] = "linear_module"
    calls = raw["op"].isin(["call_function", "call_method"])
    kind[calls & target.str.contains(ADDMM)] = "addmm"
    kind[calls & kind.isna() & target.str.contains(MATMUL)] = "matmul"
    out = pd.DataFrame({
        "node": raw["Name"].astype("string"),
        "latency_ms": raw["latency"].astype("float64"),
        "fw_ms": raw["fw_latency"].astype("float64"),
        "bw_ms": raw["bw_latency"].astype("float64"),
        "acc_ms": raw["acc_latency"].astype("float64"),
        "in_layer": meta.str.contains(LAYER0).to_numpy(),
    })
    shapes = {}
    for i in kind.dropna().index:  # a dozen GEMM nodes per trace
        try:
            shapes[i] = _gemm_shape(kind[i], json.loads(raw.at[i, "input_shapes"]), _ints(str(raw.at[i, "output_shape"])))
        except (ValueError, IndexError, TypeError) as e:
            raise TraceError(f"{path}: GEMM node {raw.at[i, 'Name']!r} has unreadable shapes "
                             f"{raw.at[i, 'input_shapes']!r} -> {raw.at[i, 'output_shape']!r} ({e})") from None
    gemm = pd.DataFrame.from_dict(shapes, orient="index", columns=["op", "batch", "m", "n", "k"])
    out = out.join(gemm)
    out["op"] = out["op"].astype("string")
    for c in ("batch", "m", "n", "k"):
        out[c] = out[c].astype("Int64")
    return out


def read_trace(csv_path: Path, device_id: str) -> Trace:
    """One trace and its ``.json`` (``num_layer``, ``e2e_latency`` in ms)."""
    stem = csv_path.name.removesuffix(".gz").removesuffix(".csv")
    found = TRACE_NAME.match(stem)
    if not found:
        raise TraceError(f"{csv_path}: expected a name <model>-<inf|train>-<seq>-<batch>.csv[.gz]")
    meta_path = csv_path.with_name(stem + ".json")
    try:
        meta = json.loads(meta_path.read_text())
        num_layer, e2e = int(meta["num_layer"]), float(meta["e2e_latency"])
    except (OSError, ValueError, KeyError) as e:
        raise TraceError(f"{meta_path}: need a JSON file with num_layer and e2e_latency beside {csv_path.name} "
                         f"({type(e).__name__}: {e})") from None
    ops = parse_trace(csv_path)
    if num_layer > 1 and not ops["in_layer"].any():
        raise TraceError(f"{csv_path}: no node belongs to transformer layer 0, so the trace cannot be replicated "
                         f"to {num_layer} layers")
    return Trace(stem, device_id, found["mode"], num_layer, e2e, ops)


def load_traces(label_root: Path) -> tuple[list[Trace], list[str]]:
    """Every BERT/GPT/OPT trace under ``label_root/<GPU>/`` that has its ``.json`` and a GPU with a spec sheet,
    and what was skipped (one line each, for the report)."""
    label_root = Path(label_root)
    if not label_root.is_dir():
        raise FileNotFoundError(f"{label_root} is not a directory; expected NeuSight's label/ folder")
    traces, skipped = [], []
    for gpu_dir in sorted(p for p in label_root.iterdir() if p.is_dir()):
        device = resolve_device_id(gpu_dir.name)
        if device is None:
            skipped.append(f"{gpu_dir.name}: no hardware spec sheet")
            continue
        for path in sorted(gpu_dir.glob("*.csv*")):
            if not path.name.startswith(MODEL_PREFIXES):
                continue
            if not path.with_name(path.name.removesuffix(".gz").removesuffix(".csv") + ".json").exists():
                skipped.append(f"{gpu_dir.name}/{path.name}: no .json with the end-to-end latency")
                continue
            traces.append(read_trace(path, device))
    if not traces:
        raise TraceError(f"no BERT/GPT/OPT trace with its .json under {label_root}/<GPU>/")
    return traces, skipped
