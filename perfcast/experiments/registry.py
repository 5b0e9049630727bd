"""Every benchmark protocol by name, and running a list of them on one workspace.

Why this module: a protocol is one runner (a function of the workspace and the command line's choices) in
its suite's module, and one preset in ``configs/`` naming it under ``[benchmark] protocols``; this table is
the one list ``benchmarks/accuracy.py`` offers, and :func:`run` stamps each row with what its preset's
settings were chosen on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from perfcast.experiments.adapt_bench import aiconfigurator_adapt, neusight_adapt
from perfcast.experiments.aiconfigurator import (
    aiconfigurator_unseen_gpu_attention,
    aiconfigurator_unseen_gpu_gemm,
    aiconfigurator_unseen_shape,
)
from perfcast.experiments.cpu import ncpp_paper, spec_cpu2017_future
from perfcast.experiments.gpperf import gpperf_paper, gpperf_unseen_shape
from perfcast.experiments.neusight import neusight_ood, neusight_whole_model
from perfcast.experiments.power_bench import aiconfigurator_power
from perfcast.experiments.presets import choose
from perfcast.experiments.results import Result, RunConfig, workspace
from perfcast.experiments.sibling import aiconfigurator_sibling_attention, aiconfigurator_sibling_gemm

Runner = Callable[..., list[Result]]

RUNNERS: dict[str, Runner] = {
    "gpperf-paper": gpperf_paper,
    "gpperf-unseen-shape": gpperf_unseen_shape,
    "neusight-ood": neusight_ood,
    "neusight-whole-model": neusight_whole_model,
    "aiconfigurator-unseen-gpu-gemm": aiconfigurator_unseen_gpu_gemm,
    "aiconfigurator-unseen-gpu-attention": aiconfigurator_unseen_gpu_attention,
    "aiconfigurator-unseen-shape": aiconfigurator_unseen_shape,
    "spec-cpu2017-future": spec_cpu2017_future,
    "ncpp-paper": ncpp_paper,
    "aiconfigurator-power": aiconfigurator_power,
    "aiconfigurator-adapt": aiconfigurator_adapt,
    "neusight-adapt": neusight_adapt,
    "aiconfigurator-sibling-gemm": aiconfigurator_sibling_gemm,
    "aiconfigurator-sibling-attention": aiconfigurator_sibling_attention,
}
#: the protocols whose rows carry a 90 % interval coverage
UNSEEN_HARDWARE: tuple[str, ...] = (
    "neusight-ood", "aiconfigurator-unseen-gpu-gemm", "aiconfigurator-unseen-gpu-attention", "spec-cpu2017-future",
    "ncpp-paper", "aiconfigurator-power", "aiconfigurator-adapt", "neusight-adapt",
    "aiconfigurator-sibling-gemm", "aiconfigurator-sibling-attention",
)


def run(names: Sequence[str], cfg: RunConfig) -> list[Result]:
    """Every named protocol's rows, in order, sharing one workspace, each row carrying its preset's
    ``selected_on``."""
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; known: {', '.join(RUNNERS)}")
    rows: list[Result] = []
    with workspace(cfg.data_root) as ws:
        for name in names:
            selected_on = choose(name, cfg.model).selected_on
            for row in RUNNERS[name](ws, cfg):
                row.selected_on = row.selected_on or selected_on  # a runner that selects inside fit says so
                rows.append(row)
    return rows
