"""GPPerf (NYU student project, RTX 4070): a CUTLASS SGEMM profiler sweep and a naive tiled SGEMM.

Both are test/benchmark data only (no license): read from the shared copy, never bundled.

``gpperf-cutlass`` (``cutlass_*.csv.gz``, one tidy row per profiler record, file order = run order):

* The kernel name is the truth: ``cutlass_simt_sgemm_128x128_8x2_nn_align1`` gives tile 128x128x8,
  2 stages, layout ``nn``. The ``layout``/``block_*``/``stages``/``epilogue`` columns were profiler
  settings that were never applied (dataset README); they are kept as ``x_layout``, ``x_block_m``, ...
  because the gpperf-paper protocol uses them as features.
* Every row is kept (16,128). ``repeat`` numbers the rows of one executed configuration
  (m, n, k, kernel, alpha, beta) in file order: 28 each, the 7 x 4 never-applied block/layout labels.
  ``x_record`` is the file's record number, so file order can be rebuilt after a store round-trip.
  (The README's "288 configs x 56 repeats" also pools alpha, which does nothing, and keeps only
  whether beta is 0: group by m, n, k, kernel, beta != 0 to get that view.)
* ``power_w`` is an nvidia-smi reading taken around (mostly after) the run, missing in 84% of rows;
  missing stays NaN. ``energy_j`` is the source's power x runtime: present exactly where power is.
  The source's ``energy_j_raw`` (the same, truncated to 1 mJ) and derived columns (flops, bytes,
  gflops, ...) are not kept: they follow from the kept columns.
* Clocks, temperatures, utilisation and the GPU-info columns are kept as ``x_<source name>``. The
  GPU-info values (max clocks, power limit, memory) stay extras rather than hardware columns so that the
  RTX 4070 is described by its spec sheet alone and gets the same ``hw_id`` in both GPPerf sets.

``gpperf-ada-matmul`` (``tiled_*.csv.gz``): the project's naive shared-memory tiled kernel
(``matmul.cu``: one cudaEvent-timed launch per process, tile = block edge = k step).

* ``tiled_rtx4070.csv.gz``: one row per (m, n, k, tile): kernel runtime (one launch; missing for 54
  tiles that were only power-profiled) and average board power (nvidia-smi polled every 100 ms over the
  whole process -- allocation, init, kernel and a cuBLAS check -- averaged over 3 processes). Because
  that power window is not the kernel's, the file's ``energy_j`` (power x kernel runtime, computed by
  the dataset's curator) is not imported.
* ``tiled_rtx4070_repeats.csv.gz``: a separate run (the project's ``nohup.out`` log), 3 launches per
  configuration, kept as rows with ``repeat`` 0..2 and no power. First launches include outliers of
  seconds (cold start); they are real measurements and are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.datasets.importers.base import Importer, register, require
from perfcast.datasets.importers.common import (
    gpu_hardware,
    parse_kernel_names,
    read_checked_csv,
)


def _finish(recs: pd.DataFrame, device_names: pd.Series) -> dict[str, pd.DataFrame]:
    """Common GEMM columns of both GPPerf sets, plus hardware columns for ``device_names``."""
    recs = recs.assign(batch=1, dtype="float32")
    return {"gemm": recs.join(gpu_hardware(device_names))}


# ---------------------------------------------------------------------------------------- CUTLASS sweep
CUTLASS_CONFIG = ("m", "n", "k", "kernel", "alpha", "beta")
#: source columns kept as ``x_<name>``: never-applied profiler labels, run conditions, GPU info
CUTLASS_EXTRAS: tuple[str, ...] = (
    "record", "layout", "block_m", "block_n", "block_k", "stages", "epilogue",
    "sm_clock_mhz", "mem_clock_mhz", "temp_c", "gpu_util", "mem_util", "pre_temp_c", "mem_free", "mem_used",
    "pre_gpu_util", "pre_mem_util", "compute_cap", "max_mem_clock", "max_gfx_clock", "power_limit",
    "mem_total", "compute_mode",
)
CUTLASS_COLUMNS: tuple[str, ...] = (
    *CUTLASS_CONFIG, "datetime_utc", "runtime_ms", "power_w", "energy_j", "gpu_name", *CUTLASS_EXTRAS,
)
POWER_TAKEN = "nvidia-smi board power sampled around the run (mostly after it; many readings are idle)"
POWER_MISSING = "no nvidia-smi reading was logged for this run"


@register("gpperf-cutlass")
class GPPerfCutlassImporter(Importer):
    """CUTLASS SIMT SGEMM profiler sweep, 36 sizes x 4 layouts, runtime and (sparse) power."""

    description = "GPPerf CUTLASS SGEMM profiler sweep on an RTX 4070 (runtime, sparse power)"

    def units(self, root: Path) -> list[Path]:
        return require(root.glob("cutlass_*.csv.gz"), root, "CUTLASS profiler tables (cutlass_*.csv.gz)", self.name)

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        raw = read_checked_csv(unit, CUTLASS_COLUMNS, self.name)
        has_power = raw["power_w"].notna()
        recs = pd.DataFrame({
            "source": self.name,
            "source_file": unit.relative_to(root).as_posix(),
            "collected_at": pd.to_datetime(raw["datetime_utc"], utc=True),
            "repeat": raw.groupby(list(CUTLASS_CONFIG), sort=False, dropna=False).cumcount(),
            "op": "sgemm",
            "backend": "cutlass",
            **{c: raw[c] for c in CUTLASS_CONFIG},
            "runtime_ms": raw["runtime_ms"],
            "power_w": raw["power_w"],
            "energy_j": raw["energy_j"].where(has_power),
            "power_source": "nvidia-smi",
            "power_note": np.where(has_power, POWER_TAKEN, POWER_MISSING),
        }, index=raw.index)
        recs = recs.join(parse_kernel_names(raw["kernel"]))
        recs = recs.join(raw[list(CUTLASS_EXTRAS)].add_prefix("x_"))
        return _finish(recs, raw["gpu_name"])


# ---------------------------------------------------------------------------------------- naive tiled
#: the only device of the tiled-matmul data (SOURCE.txt: the README's rows show an RTX 4070)
ADA_DEVICE = "NVIDIA GeForce RTX 4070"
TILED_COLUMNS: tuple[str, ...] = ("m", "n", "k", "tile", "runtime_ms", "runtime_n", "power_w")
REPEATS_COLUMNS: tuple[str, ...] = ("m", "n", "k", "tile", "runtime_ms", "rep")
ADA_POWER_NOTE = ("nvidia-smi power.draw polled every 100 ms over the whole process (setup, kernel, cuBLAS "
                  "check), averaged over 3 processes: not kernel-only power")


@register("gpperf-ada-matmul")
class GPPerfAdaMatmulImporter(Importer):
    """Naive tiled SGEMM (tile 1..32): kernel runtime and whole-process average board power."""

    description = "GPPerf naive tiled SGEMM on an RTX 4070: runtime (with repeats) and average power"

    def units(self, root: Path) -> list[Path]:
        return require(root.glob("tiled_*.csv.gz"), root, "tiled SGEMM tables (tiled_*.csv.gz)", self.name)

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        header = pd.read_csv(unit, nrows=0).columns
        raw = read_checked_csv(unit, REPEATS_COLUMNS if "rep" in header else TILED_COLUMNS, self.name)
        recs = pd.DataFrame({
            "source": self.name,
            "source_file": unit.relative_to(root).as_posix(),
            "op": "tiled_sgemm",
            "backend": "cuda-naive",
            "m": raw["m"], "n": raw["n"], "k": raw["k"],
            "tile_m": raw["tile"], "tile_n": raw["tile"], "tile_k": raw["tile"],
            "runtime_ms": raw["runtime_ms"],
        }, index=raw.index)
        if "rep" in raw.columns:
            recs = recs.assign(repeat=raw["rep"], power_source="none")
        else:
            recs = recs.assign(
                n_repeats=raw["runtime_n"], power_w=raw["power_w"], power_source="nvidia-smi",
                power_note=np.where(raw["power_w"].notna(), ADA_POWER_NOTE, None),
            )
        return _finish(recs, pd.Series(ADA_DEVICE, index=raw.index))
