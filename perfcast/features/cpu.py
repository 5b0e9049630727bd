"""CPU benchmark features in NCPP's groups: processor, caches, memory, system, workload.

Why these: a CPU benchmark score is throughput (cores x clock x work per cycle, bounded by caches and
memory bandwidth) for a workload, under a compiler and OS. The parsed record columns give the raw
numbers; the derived terms (cores x GHz, cache and memory per core, DIMMs x speed, the roofline ceilings of
:func:`~perfcast.features.hardware.cpu_peaks`) give a model the ratios that actually bound throughput.
Workloads and processor families are identified by codes learned at fit (an unseen one gets NaN, never
another's code); the generation and SKU number come from the processor name
(:func:`~perfcast.records.parsing.parse_processor`), so a new SKU of a known family lands near its siblings.
Log terms (cores, cores x GHz) are there for models that learn a power law of them (see
:mod:`perfcast.models.estimators.normalize`): a rate score scales about linearly with cores, so that is what lets a
model reach core counts no training row had.
"""

from __future__ import annotations

import re

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.records.parsing import parse_processor
from perfcast.features.base import RecordFeatures, log2, log10, num
from perfcast.features.hardware import cpu_peaks, hardware_frame, numeric
from perfcast.features.records import Records

#: compiler family -> pattern over the record's ``compiler`` text
COMPILERS: dict[str, str] = {
    "gcc": r"\bgcc|gnu\b|g\+\+|gfortran",
    "intel": r"\bicc\b|\bicx\b|\bifort\b|\bifx\b|oneapi|intel",
    "aocc": r"\baocc\b",
    "llvm": r"\bclang\b|\bllvm\b|\bflang\b",
}
#: ISA flag column -> feature name (a flag matches as a whole word of ``isa_flags``)
ISA_FEATURES: dict[str, str] = {"avx2": "isa_avx2", "avx512f": "isa_avx512", "amx": "isa_amx"}

#: features whose rise can only raise a score, everything else equal (clock, cores x clock, L3, memory speed
#: and bandwidth): as monotone constraints they keep a tree's score / baseline ratio from falling with them,
#: so a new part with a higher clock or faster memory than any training row cannot land in a leaf learned
#: from slower ones (perfcast.experiments.cpu_selection chooses among these sets)
SCORE_RISES_WITH: dict[str, int] = {
    "max_clock_mhz": 1, "clock_mhz": 1, "core_ghz": 1, "l3_mb": 1, "mem_mts": 1, "mem_channel_bw_gbs": 1,
    "log10_mem_bw_gbs": 1,
}
#: the same, extended to the per-core ratios (cache and bandwidth per core, L2 per core)
SCORE_RISES_WITH_PER_CORE: dict[str, int] = {
    **SCORE_RISES_WITH, "log2_core_ghz": 1, "l2_kb": 1, "cache_mb_per_core": 1, "l3_mb_per_core": 1,
    "mem_bw_gbs_per_core": 1, "mem_bw_per_core_ghz": 1,
}
#: and to the core count itself (more cores never lower a rate score; a speed run uses what it needs)
SCORE_RISES_WITH_CORES: dict[str, int] = {**SCORE_RISES_WITH_PER_CORE, "cores": 1, "threads": 1, "log2_cores": 1}
#: the per-core set and the processor generation parsed from its name: at equal specs a newer generation of a
#: family is not slower (its cores do at least as much per cycle), so a new generation starts from at least
#: the latest trained generation's ratio instead of whatever leaf its other features fall in
SCORE_RISES_WITH_GENERATION: dict[str, int] = {**SCORE_RISES_WITH_PER_CORE, "cpu_generation": 1}


def _text(X: pd.DataFrame, column: str) -> pd.Series:
    if column not in X.columns:
        return pd.Series(pd.NA, index=X.index, dtype="string")
    return X[column].astype("string").str.lower()


def _contains(s: pd.Series, pattern: str) -> pd.Series:
    """1.0 where ``pattern`` matches, 0.0 where not, NaN where the text is missing."""
    hit = s.str.contains(pattern, regex=True, flags=re.IGNORECASE)
    return hit.astype("Float64").astype("float64")


def _processors(X: pd.DataFrame) -> pd.DataFrame:
    """``family``, generation and SKU number of each row: the record's family first, else parsed from its name."""
    parsed = parse_processor(X["device_name"]) if "device_name" in X.columns else pd.DataFrame(
        {c: pd.Series(pd.NA, index=X.index, dtype="string") for c in ("family", "x_cpu_model")}
        | {"x_cpu_generation": pd.Series(pd.NA, index=X.index, dtype="Int64")})
    family = _text(X, "family").str.strip()
    sku = pd.to_numeric(parsed["x_cpu_model"].astype("string").str.extract(r"(\d+)")[0], errors="coerce")
    return pd.DataFrame({
        "family": family.where(family.notna(), parsed["family"].astype("string").str.lower()),
        "generation": pd.to_numeric(parsed["x_cpu_generation"], errors="coerce").astype("float64"),
        "sku_number": sku.astype("float64"),
    }, index=X.index)


def _workload_keys(X: pd.DataFrame) -> pd.Series:
    parts = [X[c].astype("string").fillna("") for c in ("benchmark", "subtest")]
    variant = _text(X, "variant").fillna("")
    return parts[0] + "|" + parts[1] + "|" + variant


class CpuFeatures(RecordFeatures):
    """cpu_bench records -> the ``cpu_bench`` columns of :mod:`perfcast.features.groups`."""

    task = "cpu_bench"
    required = ("benchmark", "subtest")

    def _fit(self, records: Records) -> None:
        X = records.frame()  # CPU features are computed with pandas (text parsing, hardware merge)
        self.workloads_ = sorted(_workload_keys(X).unique())
        self.benchmarks_ = sorted(X["benchmark"].astype("string").unique())
        self.families_ = sorted(_processors(X)["family"].dropna().unique())

    def _features(self, records: Records) -> pd.DataFrame:
        X = records.frame()
        hw = hardware_frame(X)
        sockets, cores, threads = numeric(hw, "sockets"), numeric(hw, "cores"), numeric(hw, "threads")
        clock, max_clock = numeric(hw, "clock_mhz"), numeric(hw, "max_clock_mhz")
        l2_kb, l3_mb, mem_gb = numeric(hw, "l2_kb"), numeric(hw, "l3_mb"), numeric(hw, "mem_gb")
        dimms, mts = numeric(hw, "mem_dimms"), numeric(hw, "mem_mts")
        peaks = cpu_peaks(hw)
        vendor = _text(hw, "vendor").fillna(_text(X, "device_name"))
        isa = _text(hw, "isa_flags")
        compiler = _text(X, "compiler")
        os_name = _text(hw, "os").fillna(_text(X, "os"))
        n_threads = num(X, "n_threads")
        proc = _processors(X)
        core_ghz = cores * max_clock.fillna(clock) / 1e3
        mem_channel_bw = dimms * mts * 8 / 1e3
        workload = {k: i for i, k in enumerate(self.workloads_)}
        bench = {k: i for i, k in enumerate(self.benchmarks_)}
        family = {k: i for i, k in enumerate(self.families_)}
        out = pd.DataFrame({
            # processor
            "sockets": sockets, "cores": cores, "threads": threads,
            "threads_per_core": threads / cores, "cores_per_socket": cores / sockets,
            "clock_mhz": clock, "max_clock_mhz": max_clock,
            "core_ghz": core_ghz, "log2_cores": log2(cores), "log2_core_ghz": log2(core_ghz),
            "family_code": proc["family"].map(family).astype("float64"),
            "cpu_generation": proc["generation"], "sku_number": proc["sku_number"],
            "vendor_intel": _contains(vendor, r"intel"), "vendor_amd": _contains(vendor, r"\bamd\b"),
            **{name: _contains(isa, rf"\b{flag}") for flag, name in ISA_FEATURES.items()},
            "log10_peak_gflops_fp64": log10(peaks["peak_gflops_fp64"]),
            "tdp_w": numeric(hw, "tdp_w"),
            # caches
            "l1d_kb": numeric(hw, "l1d_kb"), "l1i_kb": numeric(hw, "l1i_kb"), "l2_kb": l2_kb, "l3_mb": l3_mb,
            "l2_mb_total": l2_kb * cores / 1024, "l3_mb_per_core": l3_mb / cores,
            "cache_mb_per_core": (l2_kb / 1024).add(l3_mb / cores, fill_value=0.0).where(l2_kb.notna() | l3_mb.notna()),
            # memory
            "mem_gb": mem_gb, "mem_gb_per_core": mem_gb / cores, "mem_dimms": dimms,
            "mem_ddr_gen": numeric(hw, "mem_ddr_gen"), "mem_mts": mts,
            "mem_channel_bw_gbs": mem_channel_bw, "mem_bw_per_core_ghz": mem_channel_bw / core_ghz,
            "log10_mem_bw_gbs": log10(peaks["mem_bw_gbs"]),
            "mem_bw_gbs_per_core": peaks["mem_bw_gbs"] / cores,
            # system
            "numa_nodes": numeric(hw, "numa_nodes"),
            "os_linux": _contains(os_name, r"linux|ubuntu|red hat|rhel|suse|sles|centos|debian|rocky|alma|oracle"),
            "os_windows": _contains(os_name, r"windows"),
            **{f"compiler_{fam}": _contains(compiler, pat) for fam, pat in COMPILERS.items()},
            "compiler_version": pd.to_numeric(
                compiler.str.extract(r"(\d+(?:\.\d+)?)", expand=False), errors="coerce").astype("float64"),
            # workload
            "workload_code": _workload_keys(X).map(workload).astype("float64"),
            "benchmark_code": X["benchmark"].astype("string").map(bench).astype("float64"),
            "is_rate": _contains(_text(X, "benchmark"), r"rate"),
            "log2_n_threads": log2(n_threads),
            "thread_fraction": n_threads / threads,
            "log10_working_set_bytes": log10(num(X, "working_set_bytes")),
        }, index=X.index)
        return out.replace([np.inf, -np.inf], np.nan)
