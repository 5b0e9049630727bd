"""Vidur (MLSys'24) per-operator profiles of LLM layers: the four GEMMs of each layer, as GEMM records.

What is imported (task ``gemm``), from a copy of Vidur's ``data/profiling/`` folder laid out as
``profiling/compute/<gpu>/<org>/<model>/mlp.csv.gz``: one record per row and projection, for the layer's four
linear layers (``attn_pre_proj`` = QKV, ``attn_post_proj`` = O, ``mlp_up_proj``, ``mlp_down_proj``). The norms,
rotary embedding, activation and adds are not GEMMs and are not imported; ``attention.csv`` (absent from the
shared copy) and ``network/`` (collectives) neither.

Shapes follow Vidur's ``profiling/mlp/mlp_impl.py``: tensor parallelism splits the column-parallel layers'
outputs and the row-parallel layers' inputs over ``num_tensor_parallel_workers`` (TP), head_dim = n_embd /
n_head, and every projection is a ``[num_tokens x in] @ [in x out]`` product::

    attn_pre_proj:  m=num_tokens, k=n_embd,               n=(n_head + 2 n_kv_head) * head_dim / TP
    attn_post_proj: m=num_tokens, k=n_embd / TP,          n=n_embd
    mlp_up_proj:    m=num_tokens, k=n_embd,               n=(2 if use_gated_mlp else 1) * n_expanded_embd / TP
    mlp_down_proj:  m=num_tokens, k=n_expanded_embd / TP, n=n_embd

Units and precision: ``time_stats.<op>.*`` are milliseconds of the operator's CUDA kernels (Vidur's default
profiling method reads them from the PyTorch profiler's trace), the model cast to ``torch.float16``
(``mlp_wrapper.py``), hence ``dtype="float16"``. ``runtime_ms`` is the median over the profiled repeats,
``runtime_min_ms`` their minimum and ``runtime_cv`` std / mean. The GPU is the directory name (``a100`` is the
80 GB SXM part of a DGX, ``h100`` the SXM part, ``a40``), resolved through the spec sheets' aliases.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from perfcast.datasets.importers.base import DatasetLayoutError, Importer, register, require
from perfcast.datasets.importers.common import gpu_hardware, read_checked_csv

UNIT_GLOB = "profiling/compute/*/*/*/mlp.csv.gz"
#: the layer's GEMMs, in the order they run
PROJECTIONS: tuple[str, ...] = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
STATS: tuple[str, ...] = ("median", "min", "mean", "std")
SHAPE_COLUMNS: tuple[str, ...] = (
    "n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp", "num_tokens", "num_tensor_parallel_workers",
)
RAW_COLUMNS: tuple[str, ...] = (*SHAPE_COLUMNS, *(f"time_stats.{p}.{s}" for p in PROJECTIONS for s in STATS))


def _gated(values: pd.Series) -> pd.Series:
    """``use_gated_mlp`` as bool: the files write True/False, which pandas may read as text."""
    return values.astype("string").str.strip().str.lower().map({"true": True, "false": False, "1": True, "0": False})


def projection_shapes(raw: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """(m, n, k) of each projection of every row, per :data:`PROJECTIONS` (the module docstring's table)."""
    tp = raw["num_tensor_parallel_workers"]
    head_dim = raw["n_embd"] // raw["n_head"]
    up = raw["n_expanded_embd"] * _gated(raw["use_gated_mlp"]).map({True: 2, False: 1})
    tokens, embd = raw["num_tokens"], raw["n_embd"]
    return {
        "attn_pre_proj": pd.DataFrame({"m": tokens, "n": (raw["n_head"] + 2 * raw["n_kv_head"]) * head_dim // tp,
                                       "k": embd}),
        "attn_post_proj": pd.DataFrame({"m": tokens, "n": embd, "k": embd // tp}),
        "mlp_up_proj": pd.DataFrame({"m": tokens, "n": up // tp, "k": embd}),
        "mlp_down_proj": pd.DataFrame({"m": tokens, "n": embd, "k": raw["n_expanded_embd"] // tp}),
    }


@register("vidur")
class VidurImporter(Importer):
    """The four GEMMs of LLM layers profiled by Vidur on A100, H100 and A40 (fp16, tensor parallel 1-8)."""

    description = "Vidur (MLSys'24) LLM-layer GEMMs (QKV, O, MLP up/down), fp16, A100/H100/A40"

    def units(self, root: Path) -> list[Path]:
        return require(root.glob(UNIT_GLOB), root, f"per-model layer profiles ({UNIT_GLOB})", self.name)

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        rel = PurePosixPath(unit.relative_to(root).as_posix())
        gpu, org, model = rel.parts[2], rel.parts[3], rel.parts[4]
        raw = read_checked_csv(unit, RAW_COLUMNS, self.name)
        bad = raw.index[_gated(raw["use_gated_mlp"]).isna()]
        if len(bad):
            raise DatasetLayoutError(f"{self.name}: {unit} data row {bad[0]} has use_gated_mlp="
                                     f"{raw.at[bad[0], 'use_gated_mlp']!r}; expected True or False")
        uneven = raw.index[(raw["n_embd"] % raw["n_head"] != 0) | (raw["n_embd"] % raw["num_tensor_parallel_workers"] != 0)]
        if len(uneven):
            raise DatasetLayoutError(f"{self.name}: {unit} data row {uneven[0]}: n_embd={raw.at[uneven[0], 'n_embd']} "
                                     f"does not split over n_head={raw.at[uneven[0], 'n_head']} heads and "
                                     f"{raw.at[uneven[0], 'num_tensor_parallel_workers']} tensor-parallel workers")
        hardware = gpu_hardware(pd.Series(gpu, index=raw.index))
        frames = []
        for proj, shape in projection_shapes(raw).items():
            t = {s: raw[f"time_stats.{proj}.{s}"] for s in STATS}
            frames.append(pd.DataFrame({
                "source": self.name, "source_file": str(rel), "op": "linear", "batch": 1, **shape,
                "dtype": "float16", "backend": "torch", "runtime_ms": t["median"], "runtime_min_ms": t["min"],
                "runtime_cv": t["std"] / t["mean"], "power_source": "none",
                "x_model": f"{org}/{model}", "x_projection": proj, "x_tp": raw["num_tensor_parallel_workers"],
            }, index=raw.index).join(hardware))
        return {"gemm": pd.concat(frames, ignore_index=True)}
