"""NVIDIA aiconfigurator's measured kernel latencies -> ``gemm`` and ``attention`` records.

Layout (as in the repository's ``systems/data`` tree)::

    <root>/<gpu>/gemm/<framework>/<version>/gemm_perf.parquet
    <root>/<gpu>/attention/<framework>/<version>/context_attention_perf.parquet
    <root>/<gpu>/attention/<framework>/<version>/generation_attention_perf.parquet

Files are found by globbing, so a copy with more GPUs or framework versions imports the same way.
``latency`` is milliseconds and becomes ``runtime_ms`` unchanged. ``<gpu>`` (aiconfigurator's system
name) and the raw ``device`` string name the spec sheet (:mod:`perfcast.records.hardware_specs`).

Sequence lengths. aiconfigurator's own loader keys context rows by ``isl`` and generation rows by
``s = isl + step``. In the data ``step`` is always 0 in context tables, and ``isl`` is always 1 in
generation tables, where ``step`` runs over 2^k - 1 (1, 3, ..., 131071), so ``s`` is a power of two:

* context (prefill, causal): the whole prompt is the query, ``seq_q = isl``, ``seq_kv = isl + step``
  (= ``isl``; a non-zero ``step`` would be tokens already cached before the prompt).
* generation (decode): one new token per sequence, ``seq_q = 1``; it attends to the ``step`` cached
  tokens plus itself, ``seq_kv = isl + step`` (aiconfigurator's speed-of-light model reads ``s - 1``
  cached K/V entries per step, consistent with this). ``causal`` is False: one query row sees every
  cached key, so no mask applies.

Raw ``isl`` and ``step`` are kept as ``x_isl`` / ``x_step``; ``framework`` and ``version`` go to
``software`` (JSON) and ``backend`` (lower-cased framework); the attention ``op_name``
(context_attention / generation_attention) is the ``phase``; any other raw column is kept as ``x_<name>``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from perfcast.datasets.importers.base import (
    DatasetLayoutError,
    Importer,
    register,
    require,
)
from perfcast.datasets.importers.common import gpu_hardware

SOURCE = "aiconfigurator"
GEMM_FILE = "gemm_perf.parquet"
CONTEXT_FILE = "context_attention_perf.parquet"
GENERATION_FILE = "generation_attention_perf.parquet"
PATTERNS = (f"*/gemm/*/*/{GEMM_FILE}", f"*/attention/*/*/{CONTEXT_FILE}", f"*/attention/*/*/{GENERATION_FILE}")

COMMON_RAW = ("framework", "version", "device", "op_name", "kernel_source", "latency")
GEMM_RAW = (*COMMON_RAW, "gemm_dtype", "m", "n", "k")
ATTENTION_RAW = (
    *COMMON_RAW, "batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "window_size",
    "beam_width", "attn_dtype", "kv_cache_dtype", "step",
)
GEMM_RENAME = {"op_name": "op", "kernel_source": "kernel", "gemm_dtype": "dtype", "latency": "runtime_ms"}
#: raw attention column -> schema column (renamed as is)
ATTENTION_RENAME = {
    "batch_size": "batch",
    "num_heads": "heads",
    "num_key_value_heads": "kv_heads",
    "head_dim": "head_dim",
    "window_size": "window",
    "beam_width": "beam_width",
    "attn_dtype": "dtype",
    "kv_cache_dtype": "kv_dtype",
    "kernel_source": "kernel",
    "latency": "runtime_ms",
    "isl": "x_isl",
    "step": "x_step",
}
def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """The raw columns of one table; a missing column is a layout error naming the file."""
    have = set(pq.read_schema(path).names)
    missing = [c for c in columns if c not in have]
    if missing:
        raise DatasetLayoutError(
            f"{SOURCE}: {path} lacks column(s) {missing}; expected {list(columns)} (see SOURCE.txt)"
        )
    extra = sorted(have - set(columns))
    return pq.read_table(path, columns=[*columns, *extra]).to_pandas()


def _hardware(raw_devices: pd.Series, gpu_dir: str, path: Path) -> pd.DataFrame:
    """One row per raw device string: device_id (the name, else the system directory), kind, hw_id."""
    dev = gpu_hardware(pd.Series(pd.unique(raw_devices.astype("string"))), fallback=gpu_dir)
    unknown = dev.loc[dev["device_id"].isna(), "device_name"].tolist()
    if unknown:
        warnings.warn(
            f"{SOURCE}: no spec sheet for {unknown} (system {gpu_dir!r}) in {path}; features will lack its "
            f"specs. Add the device to a YAML file named by $PERFCAST_HW_SPECS.",
            stacklevel=3,
        )
    return dev


def _provenance(df: pd.DataFrame, root: Path, path: Path) -> pd.DataFrame:
    """Columns every table shares: source, file, backend, software JSON and the hardware block."""
    gpu_dir = path.relative_to(root).parts[0]
    hw = _hardware(df["device"], gpu_dir, path)
    out = df.merge(hw, left_on="device", right_on="device_name", how="left").drop(columns="device")
    pairs = out[["framework", "version"]].drop_duplicates()
    pairs["software"] = [
        json.dumps({"framework": f, "version": v}, sort_keys=True) for f, v in pairs.itertuples(index=False)
    ]
    out = out.merge(pairs, on=["framework", "version"], how="left")
    out["backend"] = out["framework"].str.lower()
    out["source"] = SOURCE
    out["source_file"] = path.relative_to(root).as_posix()
    return out.drop(columns=["framework", "version"])


def _extras(df: pd.DataFrame, known: tuple[str, ...]) -> pd.DataFrame:
    """Raw columns this importer does not map are kept as ``x_<name>``."""
    return df.rename(columns={c: f"x_{c}" for c in df.columns if c not in known})


def load_gemm(root: Path, path: Path) -> pd.DataFrame:
    """gemm_perf rows: one GEMM of shape (m, n, k), batch 1, in ``gemm_dtype``."""
    raw = _extras(_read(path, GEMM_RAW), GEMM_RAW)
    df = raw.rename(columns=GEMM_RENAME)
    df["batch"] = 1
    return _provenance(df, root, path)


def load_attention(root: Path, path: Path, phase: str) -> pd.DataFrame:
    """context/generation attention rows; see the module docstring for seq_q / seq_kv."""
    raw = _extras(_read(path, ATTENTION_RAW), ATTENTION_RAW)
    df = raw.rename(columns=ATTENTION_RENAME).drop(columns="op_name")
    df["phase"] = phase
    df["seq_kv"] = df["x_isl"] + df["x_step"]
    df["seq_q"] = df["x_isl"] if phase == "prefill" else 1
    df["causal"] = phase == "prefill"
    return _provenance(df, root, path)


@register("aiconfigurator")
class AIConfiguratorImporter(Importer):
    """NVIDIA aiconfigurator (Apache-2.0): GEMM and attention kernel latencies on 8+ GPUs."""

    description = "NVIDIA aiconfigurator kernel latencies (gemm, context/generation attention)"

    def units(self, root: Path) -> list[Path]:
        found = [p for pattern in PATTERNS for p in root.glob(pattern)]
        return require(found, root, "<gpu>/{gemm,attention}/<framework>/<version>/*_perf.parquet tables", SOURCE)

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        if unit.name == GEMM_FILE:
            return {"gemm": load_gemm(root, unit)}
        if unit.name == CONTEXT_FILE:
            return {"attention": load_attention(root, unit, "prefill")}
        if unit.name == GENERATION_FILE:
            return {"attention": load_attention(root, unit, "decode")}
        raise DatasetLayoutError(f"{SOURCE}: {unit} is not one of {GEMM_FILE}, {CONTEXT_FILE}, {GENERATION_FILE}")
