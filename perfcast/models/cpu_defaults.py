"""The default model for each public CPU dataset: one place that the configs, tests and benchmarks agree on.

Why these: measured on the datasets' own protocols (numbers in the configs' comments).

- SPEC CPU2017, ``future``: LightGBM on score / baseline, where the baseline is a per-(suite, vendor) power
  law of cores, cores x GHz, processor generation and memory bandwidth. Trees cannot predict beyond the
  largest score they saw, and every year brings more cores and a new generation; the power law carries the
  trend (rate scores ≈ cores¹, speed scores ≈ cores^0.1) and the trees learn what it misses.
- PerfCastDB sample, ``ncpp-paper``: the NCPP group-attention network on score / per-(workload, sub-test)
  geometric mean, so one network spans SPECrate ratios, MB/s, ns and GFLOP/s (each workload has a single
  hardware configuration here, so a power law of hardware cannot be learned from it; none is used).

``configs/<config>`` holds the same model (``tests/test_cpu_models.py`` checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sklearn.pipeline import Pipeline

from perfcast.models.registry import make_model


@dataclass(frozen=True)
class CpuDefault:
    """A registered model name and its parameters, with the training config that uses them."""

    model: str
    params: dict[str, Any] = field(default_factory=dict)
    #: file name under the repository's ``configs/``
    config: str = ""


DEFAULTS: dict[str, CpuDefault] = {
    "spec-cpu2017": CpuDefault(
        model="normalized",
        params={
            "base": "lightgbm",
            "group_by": ["workload_code", "vendor_intel", "vendor_amd"],
            "scale_by": ["log2_cores", "log2_core_ghz", "cpu_generation", "log10_mem_bw_gbs"],
        },
        config="spec_cpu2017_future.toml",
    ),
    "perfcastdb-sample": CpuDefault(
        model="normalized",
        params={"base": "group_attention", "group_by": ["benchmark_code", "workload_code"]},
        config="perfcastdb_group_attention.toml",
    ),
}


def cpu_model(dataset: str, targets: tuple[str, ...] = ("score",), **overrides: Any) -> Pipeline:
    """A new, unfitted pipeline of ``dataset``'s default model; ``overrides`` replace or add parameters."""
    if dataset not in DEFAULTS:
        raise ValueError(f"no default CPU model for dataset {dataset!r}; known: {', '.join(DEFAULTS)}")
    default = DEFAULTS[dataset]
    return make_model(default.model, "cpu_bench", list(targets), {**default.params, **overrides})
