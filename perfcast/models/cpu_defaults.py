"""The default model for each public CPU dataset: one place that the configs, tests and benchmarks agree on.

Why these: measured on the datasets' own protocols (numbers in the configs' comments).

- SPEC CPU2017, ``future``: LightGBM on score / baseline, where the baseline is a per-(suite, vendor) power
  law of cores, cores x GHz, processor generation, memory bandwidth and threads per core. Trees cannot
  predict beyond the largest score they saw, and every year brings more cores and a new generation; the
  power law carries the trend (rate scores ≈ cores¹, speed scores ≈ cores^0.1) and the trees learn what it
  misses. Threads per core is the one field of a SPEC result that tells core types apart: without it the
  law credits a 144-core, SMT-less E-core Xeon 6 with P-core throughput. Intel rate results without SMT
  come mostly from parts sold without it (Xeon Bronze, Celeron, many Xeon E), which are also weaker per
  core, so the law's factor for SMT (about 1.2x CFP2017rate, 1.5x CINT2017rate; ~1x for speed runs) is more
  than SMT alone gives a processor tested both ways (median 1.02x / 1.04x): it also carries their weaker cores.
- PerfCastDB sample, ``ncpp-paper``: the NCPP group-attention network on score / per-(workload, sub-test)
  geometric mean, so one network spans SPECrate ratios, MB/s, ns and GFLOP/s (each workload has a single
  hardware configuration here, so a power law of hardware cannot be learned from it; none is used).

``configs/<config>`` holds the same model (``tests/test_cpu_models.py`` checks that they agree).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sklearn.pipeline import Pipeline

from perfcast.features.cpu import SCORE_RISES_WITH_PER_CORE
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
            # chosen by forward-chaining inside the training years (perfcast.experiments.cpu_selection)
            "scale_by": ["log2_cores", "log2_core_ghz", "log10_mem_bw_gbs", "threads_per_core"],
            "seeds": [0, 1, 2], "monotone": SCORE_RISES_WITH_PER_CORE, "monotone_constraints_method": "advanced",
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
