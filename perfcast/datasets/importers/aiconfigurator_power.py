"""NVIDIA aiconfigurator's kernel tables *with board power* -> ``gemm`` and ``attention`` records.

Same layout and columns as :mod:`perfcast.datasets.importers.aiconfigurator` (whose loaders read every table
here), plus two columns the collector recorded with NVML *while the timed loop ran*:

* ``power`` (mean board power, W) -> ``power_w``;
* ``power_limit`` (the board's power limit during collection, W) -> ``power_limit_w``, a condition of the
  measurement (a capped board draws less), kept beside it rather than as a spec-sheet number.

``energy_j = power_w * runtime_ms / 1000``: the energy of one kernel run at the measured mean power.
The framework (``backend``: trtllm, vllm) and ``kernel`` (aiconfigurator's ``kernel_source``: torch_flow,
deepgemm, vllm_default, vllm_flashinfer, vllm_triton_attn) name the kernel library: configuration, as in the
latency importer, never hardware. A power reading that cannot be a board's (not a positive finite number,
or above 3x the power limit) rejects the whole file with every such row named by its position in the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.datasets.importers.aiconfigurator import AIConfiguratorImporter
from perfcast.datasets.importers.base import DatasetLayoutError, register

SOURCE = "aiconfigurator-power"
#: a reading above this multiple of the power limit is a logging error, not a board's power
MAX_LIMIT_MULTIPLE = 3.0
POWER_NOTE = "NVML board power sampled every 100 ms over the kernel's timed loop (aiconfigurator collector)"
#: most offending rows an error message lists
SHOWN = 20


class PowerValueError(DatasetLayoutError):
    """Power readings no board can produce; the message names every offending row of the file (a layout error, so
    ``perfcast data import`` reports it and exits with code 2)."""


def check_power(df: pd.DataFrame, path: Path) -> None:
    """Raise :class:`PowerValueError` naming each row whose ``x_power`` is present but not a positive finite
    number at most :data:`MAX_LIMIT_MULTIPLE` x its ``x_power_limit``, or whose limit is not positive."""
    power = pd.to_numeric(df["x_power"], errors="coerce").to_numpy(dtype="float64")
    limit = pd.to_numeric(df["x_power_limit"], errors="coerce").to_numpy(dtype="float64")
    given = df["x_power"].notna().to_numpy()
    with np.errstate(invalid="ignore"):
        bad_limit = ~(np.isfinite(limit) & (limit > 0)) & given
        bad_power = given & ~bad_limit & ~(np.isfinite(power) & (power > 0) & (power <= MAX_LIMIT_MULTIPLE * limit))
    bad = np.flatnonzero(bad_power | bad_limit)
    if not len(bad):
        return
    lines = [f"row {i}: power={df['x_power'].iloc[i]!r} W, power_limit={df['x_power_limit'].iloc[i]!r} W"
             for i in bad[:SHOWN]]
    more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    raise PowerValueError(
        f"{SOURCE}: {path}: {len(bad)} row(s) (0-based, in file order) have a power reading no board can draw: "
        f"power must be a positive finite number of watts, at most {MAX_LIMIT_MULTIPLE:g}x a positive power "
        f"limit. Nothing from this file was stored; fix or drop these rows and import again:\n  "
        + "\n  ".join(lines) + more)


def with_power(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Latency records of one table (from the aiconfigurator loaders) with the power columns mapped."""
    absent = [c for c in ("x_power", "x_power_limit") if c not in df.columns]
    if absent:
        raise DatasetLayoutError(f"{SOURCE}: {path} lacks column(s) {[c[2:] for c in absent]}; this importer reads "
                                 f"the power tables (use 'aiconfigurator' for latency-only tables)")
    check_power(df, path)
    out = df.rename(columns={"x_power": "power_w", "x_power_limit": "power_limit_w"})
    out["energy_j"] = out["power_w"] * out["runtime_ms"] / 1e3
    has = out["power_w"].notna()
    out["power_source"] = np.where(has, "nvml", "none")
    out["power_note"] = np.where(has, POWER_NOTE, "no power reading in the table")
    out["source"] = SOURCE
    return out


@register(SOURCE)
class AIConfiguratorPowerImporter(AIConfiguratorImporter):
    """NVIDIA aiconfigurator power tables (Apache-2.0): kernel latency and NVML board power, per library."""

    description = "NVIDIA aiconfigurator kernel latency + board power during the kernel (gemm, attention)"

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        return {task: with_power(df, unit) for task, df in super().load(root, unit).items()}
