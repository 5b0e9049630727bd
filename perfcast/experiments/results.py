"""What a benchmark run is made of: its rows (:class:`Result`), the published numbers and goals they are read
against, the command line's choices (:class:`RunConfig`) and the records shared between protocols
(:class:`Workspace`).

Why a module of its own: every benchmark suite (gpperf, neusight, aiconfigurator, spec/ncpp, power, adapt)
produces these rows and ``benchmarks/accuracy.py`` renders them, Markdown and JSON from the same rows.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore

@dataclass(frozen=True)
class Anchor:
    """A published number: who published it and its value (a fraction for APE metrics)."""

    source: str
    value: float


@dataclass(frozen=True)
class Goal:
    """What the accuracy issue asks of a row: at most ``value`` (an APE fraction), and below the baseline
    named ``below`` on the same rows when one is named."""

    value: float
    below: str | None = None

    def text(self) -> str:
        return f"≤ {100 * self.value:g}%" + (f" and < {self.below}" if self.below else "")


#: the interval coverage every unseen-hardware row is asked to land in, for 90 % intervals
COVERAGE_GOAL: tuple[float, float] = (0.87, 0.93)
#: the adaptation issue's coverage band for every GPU, by the number K of measured configurations: wide at K = 0
#: (spec sheet only), narrowing as measurements come in; a K between two entries is held to the smaller K's band
ADAPT_COVERAGE_GOALS: dict[int, tuple[float, float]] = {0: (0.80, 0.97), 128: (0.85, 0.95), 512: (0.87, 0.93)}
#: the protocols that adapt to K measurements of the test device (their rows carry ``probe_budget`` = K)
ADAPT_PROTOCOLS: tuple[str, ...] = ("aiconfigurator-adapt", "neusight-adapt")


def coverage_goal(protocol: str, probe_budget: int = 0) -> tuple[float, float]:
    """The band a row's 90 % interval coverage is asked to land in: :data:`ADAPT_COVERAGE_GOALS` for the
    adaptation protocols, :data:`COVERAGE_GOAL` for the rest."""
    if protocol not in ADAPT_PROTOCOLS:
        return COVERAGE_GOAL
    return ADAPT_COVERAGE_GOALS[max(k for k in ADAPT_COVERAGE_GOALS if k <= max(probe_budget, 0))]


def coverage_met(coverage: float | None, protocol: str, probe_budget: int = 0) -> bool | None:
    """Whether ``coverage`` lands in the row's :func:`coverage_goal` (None without intervals)."""
    if coverage is None:
        return None
    lo, hi = coverage_goal(protocol, probe_budget)
    return bool(lo <= coverage <= hi)


def judge_coverage(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``docs`` (rows as :meth:`Result.as_json` writes them, older files' included) with their coverage judged
    again: each row's ``coverage_goal`` from its protocol and K, and a summary row (``device == "mean"``) judged
    per GPU, as the issues ask ("on every GPU"): ``in_band`` = [its GPUs in their band, its GPUs with intervals],
    ``coverage_ok`` only if all are. A summary row names its GPUs in ``devices``; without them (files written
    before) it keeps the pooled verdict."""
    def key(d: dict[str, Any]) -> tuple[Any, ...]:
        return d["protocol"], d["target"], d["metric"], d.get("probe_budget", 0)

    out = []
    for d in docs:
        k = d.get("probe_budget", 0)
        out.append({**d, "coverage_goal": list(coverage_goal(d["protocol"], k)),
                    "coverage_ok": coverage_met(d.get("coverage"), d["protocol"], k)})
    for d in out:
        if d["device"] != "mean" or not d.get("devices") or d.get("coverage") is None:
            continue
        per_gpu = [o for o in out if o["device"] != "mean" and key(o) == key(d) and o["label"] in d["devices"]
                   and o.get("coverage") is not None]
        d["in_band"] = [sum(bool(o["coverage_ok"]) for o in per_gpu), len(per_gpu)]
        d["coverage_ok"] = bool(per_gpu) and d["in_band"][0] == d["in_band"][1]
    return out


@dataclass
class Result:
    """One row of the benchmark table: perfcast's score beside the anchor's and the baselines' on the same rows."""

    protocol: str
    target: str
    device: str
    metric: str  # a key of perfcast.eval.metrics.METRICS
    #: perfcast's score; None when the data holds no honest test set (a note says why)
    ours: float | None
    model: str
    n: int
    wall_s: float
    anchor: Anchor | None = None
    baselines: dict[str, float] = field(default_factory=dict)
    coverage: float | None = None
    #: mean relative width of the interval, (hi - lo) / midpoint (0.2 means +-10 %)
    width: float | None = None
    notes: list[str] = field(default_factory=list)
    goal: Goal | None = None
    #: measurements of the test device the prediction used (0: none, the device is predicted from its sheet)
    probe_budget: int = 0
    #: a mean over per-device rows (written with ``device="mean"``)
    summary: bool = False
    #: what the model's settings were chosen on (the preset's ``benchmark.selected_on``)
    selected_on: str | None = None
    #: the devices a summary row averages (their rows judge its coverage per GPU, :func:`judge_coverage`)
    devices: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The row as ``benchmarks/accuracy.py --json`` writes it (fractions, ``device="mean"`` for summaries)."""
        summary = self.summary
        return {"protocol": self.protocol, "task": self.task, "target": self.target,
                "device": "mean" if summary else self.device, "label": self.device,
                "probe_budget": self.probe_budget, "metric": self.metric,
                "value": None if self.ours is None else float(self.ours),
                "coverage": self.coverage, "width": self.width, "n": self.n, "model": self.model,
                "selected_on": self.selected_on, "wall_s": self.wall_s,
                "baselines": dict(self.baselines), "anchor": None if self.anchor is None else
                {"source": self.anchor.source, "value": self.anchor.value},
                "goal": None if self.goal is None else self.goal.text(), "goal_met": self.meets_goal(),
                "beats_ref": self.beats(), "coverage_ok": self.coverage_ok(),
                "coverage_goal": list(coverage_goal(self.protocol, self.probe_budget)),
                **({"devices": list(self.devices)} if summary else {}), "notes": list(self.notes)}

    @property
    def task(self) -> str:
        """The record task the row scores, from its protocol name (a protocol of both kernel families, such as
        aiconfigurator-adapt, names an attention row's phase in its target)."""
        if any(f"({phase})" in self.target for phase in ("context", "generation")):
            return "attention"
        for key, task in (("attention", "attention"), ("spec", "cpu_bench"), ("ncpp", "cpu_bench")):
            if key in self.protocol:
                return task
        return "gemm"

    def meets_goal(self) -> bool | None:
        """Whether the row reaches its :class:`Goal` (None without one)."""
        if self.goal is None or self.ours is None:
            return None
        below = self.goal.below is None or (self.goal.below in self.baselines
                                            and _better(self.ours, self.baselines[self.goal.below], False))
        return bool(self.ours <= self.goal.value and below)

    def coverage_ok(self) -> bool | None:
        """Whether the interval coverage lands in its :func:`coverage_goal` (None without intervals; a summary's
        pooled coverage here, per GPU once :func:`judge_coverage` sees its GPUs' rows)."""
        return coverage_met(self.coverage, self.protocol, self.probe_budget)

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "r2"

    def beats(self) -> bool | None:
        """Whether ours beats the anchor (or, without one, every baseline); None when there is nothing to beat."""
        refs = [self.anchor.value] if self.anchor else [v for v in self.baselines.values() if np.isfinite(v)]
        if not refs or self.ours is None:
            return None
        best = max(refs) if self.higher_is_better else min(refs)
        return _better(self.ours, best, self.higher_is_better)


def _better(ours: float, ref: float, higher_is_better: bool) -> bool:
    """Strictly better by more than floating-point noise: a model that copies a baseline (the sibling copy
    beyond its validated distance) scores equal to it up to rounding in the last bits, a tie, not a win."""
    if np.isclose(ours, ref, rtol=1e-9, atol=0.0):
        return False
    return ours > ref if higher_is_better else ours < ref


@dataclass(frozen=True)
class RunConfig:
    """What the command line chose: data, the future protocol's cutoff year, a model for every protocol, and the
    kernel families an adaptation protocol runs (empty: all)."""

    data_root: Path
    cutoff: int | None = None
    model: str | None = None
    seed: int = 0
    parts: tuple[str, ...] = ()


class Workspace:
    """Records imported once per run (one temporary store per dataset) and models that protocols share.

    Why: aiconfigurator alone takes ~30 s to import and several protocols read it; the NeuSight model is
    both the neusight-ood model and the whole-model check's.
    """

    def __init__(self, data_root: Path, tmp: Path):
        self.data_root = Path(data_root)
        self.tmp = Path(tmp)
        self._records: dict[tuple[str, str], pd.DataFrame] = {}
        self.fitted: dict[str, Any] = {}

    def records(self, dataset: str, task: str) -> pd.DataFrame:
        """Every ``task`` record of ``dataset`` (imported from ``data_root/<dataset>`` on first use)."""
        key = (dataset, task)
        if key not in self._records:
            path = self.data_root / dataset
            if not path.is_dir():
                raise FileNotFoundError(f"dataset folder {path} not found; pass --data-root, the directory laid "
                                        f"out like shared/datasets (one folder per dataset)")
            store = RecordStore(self.tmp / dataset)
            if not store.parts(task):
                get_importer(dataset).run(path, store)
            self._records[key] = store.read(task)
        return self._records[key]


@contextmanager
def workspace(data_root: Path) -> Iterator[Workspace]:
    """A :class:`Workspace` whose stores live in a temporary directory removed on exit."""
    with tempfile.TemporaryDirectory(prefix="perfcast-bench-") as tmp:
        yield Workspace(data_root, Path(tmp))

