"""The output columns of every task's feature transformer, grouped: the one place that names them.

Why grouped: the group-attention network (NCPP-style) attends within and across groups of related
features (processor, caches, memory, system, workload for CPUs; shape, dtype, work, tiling, hardware for
GPU kernels), and every column must belong to exactly one group. The transformers emit exactly these
columns in this order, whatever data they were fitted on, so ``feature_groups(task)`` is known before
fitting and a saved model's columns never depend on which categories its training data happened to hold.
"""

from __future__ import annotations

from perfcast.features.roofline import DTYPES

#: spec-sheet / record hardware numbers every GPU-kernel task uses (``peak_tflops`` is the row dtype's peak;
#: ``log10_watts_per_tflop`` the board power per peak TFLOP/s of that dtype, i.e. how much of its boost
#: clock a device can sustain under full load; ``vendor_*`` tell the software stacks apart)
GPU_HARDWARE: tuple[str, ...] = (
    "sm_count", "cores_per_sm", "clock_mhz", "max_clock_mhz", "mem_bw_gbs", "mem_gb", "l2_mb",
    "peak_tflops", "peak_tflops_fp32", "tdp_w", "compute_capability", "log10_watts_per_tflop",
    "vendor_nvidia", "vendor_amd", "vendor_intel",
)
#: roofline terms shared by the GPU-kernel tasks (the models read ``log10_roofline_ms`` by this name)
WORK: tuple[str, ...] = (
    "log10_flops", "log10_bytes", "log10_intensity", "log10_compute_ms", "log10_memory_ms",
    "log10_roofline_ms", "compute_memory_balance",
)
WAVES: tuple[str, ...] = ("log2_ctas", "log2_waves", "last_wave_fill", "wave_efficiency")
DTYPE_ONE_HOT: tuple[str, ...] = tuple(f"dtype_{d}" for d in DTYPES)


def _aligned(dims: str, multiples: tuple[int, ...] = (8, 64, 128)) -> tuple[str, ...]:
    return tuple(f"{d}_align{a}" for d in dims for a in multiples)


GROUPS: dict[str, dict[str, tuple[str, ...]]] = {
    "gemm": {
        "shape": ("log2_m", "log2_n", "log2_k", "log2_batch", *_aligned("mnk"), "trans_a", "trans_b",
                  "beta_nonzero"),
        "dtype": ("a_bytes", "b_bytes", "c_bytes", *DTYPE_ONE_HOT),
        "work": WORK,
        "tiling": ("tile_m", "tile_n", *WAVES),
        "hardware": GPU_HARDWARE,
    },
    "attention": {
        "shape": ("log2_batch", "log2_heads", "log2_kv_heads", "log2_gqa_ratio", "log2_seq_q", "log2_seq_kv",
                  "log2_head_dim", "log2_window", "log2_beam_width", "causal", "is_decode"),
        "dtype": ("q_bytes", "kv_bytes", *DTYPE_ONE_HOT),
        "work": (*WORK, "log10_kv_bytes"),
        "tiling": WAVES,
        "hardware": GPU_HARDWARE,
    },
    "cpu_bench": {
        "processor": ("sockets", "cores", "threads", "threads_per_core", "cores_per_socket", "clock_mhz",
                      "max_clock_mhz", "core_ghz", "log2_cores", "log2_core_ghz", "family_code", "cpu_generation",
                      "sku_number", "vendor_intel", "vendor_amd", "isa_avx2", "isa_avx512",
                      "isa_amx", "log10_peak_gflops_fp64", "tdp_w"),
        "caches": ("l1d_kb", "l1i_kb", "l2_kb", "l3_mb", "l2_mb_total", "l3_mb_per_core", "cache_mb_per_core"),
        "memory": ("mem_gb", "mem_gb_per_core", "mem_dimms", "mem_ddr_gen", "mem_mts", "mem_channel_bw_gbs",
                   "mem_bw_per_core_ghz", "log10_mem_bw_gbs", "mem_bw_gbs_per_core"),
        "system": ("numa_nodes", "os_linux", "os_windows", "compiler_gcc", "compiler_intel", "compiler_aocc",
                   "compiler_llvm", "compiler_version"),
        "workload": ("workload_code", "benchmark_code", "is_rate", "log2_n_threads", "thread_fraction",
                     "log10_working_set_bytes"),
    },
}


def feature_groups(task: str) -> dict[str, list[str]]:
    """Group name -> output column names of ``task``'s feature transformer (every column in one group)."""
    if task not in GROUPS:
        raise ValueError(f"no feature groups for task {task!r}; known tasks: {', '.join(GROUPS)}")
    return {g: list(cols) for g, cols in GROUPS[task].items()}


def feature_names(task: str) -> list[str]:
    """All output columns of ``task``'s transformer, in output order."""
    return [c for cols in feature_groups(task).values() for c in cols]
