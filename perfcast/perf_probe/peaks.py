"""Spec sheets from measurements: a probed machine's peak rates and bandwidth as a hardware-spec entry.

CPUs have no vendor sheet in perfcast's tables, yet every GEMM feature needs a peak rate per dtype and a
memory bandwidth for its roofline. The probes measure both (best GEMM throughput per dtype, best STREAM
triad at a DRAM-sized array), so a machine that was probed describes itself; the entry is written in the
user spec-file format (``$PERFCAST_HW_SPECS``) and used exactly like a vendor sheet.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from perfcast.records.store import RecordStore
from perfcast.perf_probe.cpu_kernels import CpuProbe
from perfcast.perf_probe.gemm import gemm_flops

#: STREAM arrays at least this large measure memory, not cache
DRAM_BYTES = 16 * 2**20
_DTYPE_FIELD = {"float32": "peak_tflops_fp32", "float64": "peak_tflops_fp64", "bfloat16": "peak_tflops_bf16",
                "float16": "peak_tflops_fp16"}


def bandwidth_configs(probe: CpuProbe) -> list[dict[str, Any]]:
    """The quick CPU space's single-thread STREAM configurations with DRAM-sized arrays: what a probed sheet's
    memory bandwidth is read from (a CPU's GEMM roofline needs it; no vendor sheet gives it)."""
    return [c for c in probe.space(quick=True) if c["benchmark"] == "stream" and c["variant"] == "single"
            and c["array_bytes"] >= DRAM_BYTES]


def device_key(name: str) -> str:
    """A spec-sheet id for a probed device name ("Intel(R) Xeon(R) ..." -> "probed_intel_r_xeon_r_...")."""
    return "probed_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def probed_spec(store: RecordStore, hw_id: str, timing: str = "runtime_ms",
                keys: Collection[str] | None = None) -> dict[str, Any]:
    """One spec entry for the probed hardware ``hw_id``: peaks per dtype from its GEMM records' ``timing``
    column (``runtime_min_ms``: the fastest repeat, the peak a busy machine's neighbours did not slow) and
    bandwidth from its DRAM-sized STREAM triad (absent fields: nothing was measured for them). ``keys``: only the
    GEMM records of these configurations (``params_json``), so a sheet drawn from chosen peak GEMMs stays the same
    when the store holds more of this machine's GEMMs (a re-run, or other probes' rows)."""
    gemm = store.read("gemm", filters={"hw_id": hw_id, "source": "probe"})
    if keys is not None:
        gemm = gemm[gemm["params_json"].isin(list(keys))]
    if gemm.empty:
        which = "" if keys is None else f" of the {len(keys)} configurations asked for"
        raise ValueError(f"no probe GEMM records{which} for hw_id {hw_id} in {store.root}: run `perfcast probe gemm`")
    first = gemm.iloc[0]
    entry: dict[str, Any] = {"device_name": str(first["device_name"]), "device_kind": str(first["device_kind"]),
                             "vendor": str(first["vendor"]) if first["vendor"] is not None else "unknown",
                             "aliases": [str(first["device_name"])]}
    tflops = gemm_flops(gemm["m"].to_numpy(float), gemm["n"].to_numpy(float), gemm["k"].to_numpy(float),
                        gemm["batch"].to_numpy(float)) / gemm[timing].to_numpy(float) / 1e9
    for dtype, field in _DTYPE_FIELD.items():
        rows = (gemm["dtype"] == dtype).to_numpy(dtype=bool)
        if rows.any():
            entry[field] = round(float(np.nanmax(tflops[rows])), 6)
    cpu = store.read("cpu_bench", filters={"hw_id": hw_id, "source": "probe"})
    if not cpu.empty:
        triad = cpu[(cpu["benchmark"] == "stream") & (cpu["subtest"] == "triad")
                    & (cpu["working_set_bytes"] >= DRAM_BYTES)]
        if not triad.empty:
            entry["mem_bw_gbs"] = round(float(triad["score"].max()), 3)
    for col in ("clock_mhz", "max_clock_mhz", "mem_gb"):
        if gemm[col].notna().any():
            entry[col] = float(gemm[col].dropna().iloc[0])
    return entry


def write_spec_file(path: Path, entries: dict[str, dict[str, Any]]) -> Path:
    """Write ``entries`` (device id -> fields) as a user spec file; set ``$PERFCAST_HW_SPECS`` to it."""
    doc = {"version": 1, "devices": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# spec sheet measured by perfcast probes (perfcast.perf_probe.peaks)\n"
                    + yaml.safe_dump(doc, sort_keys=True), encoding="utf-8")
    return path
