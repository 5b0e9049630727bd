"""Scoring a benchmark row: every number of a row (perfcast, each baseline, the interval) on the same test
rows, and the mean over devices that summary rows report. The metric functions are
:mod:`perfcast.eval.metrics`'s, the one scorer training and evaluation use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from perfcast.eval import metrics
from perfcast.experiments.results import Anchor, Result

def score(protocol: str, target: str, device: str, truth: Any, ours: Any, model: str, wall_s: float, *,
          metric: str = "mape", baselines: dict[str, Any] | None = None, interval: tuple[Any, Any] | None = None,
          anchor: Anchor | None = None, notes: Sequence[str] = ()) -> Result:
    """One :class:`Result`, every number taken on the rows where the truth and every baseline are known
    (a note says how many test rows a baseline could not cover, and so were left out)."""
    t = np.asarray(truth, dtype="float64")
    keep = np.isfinite(t)
    base = {k: np.asarray(v, dtype="float64") for k, v in (baselines or {}).items()}
    notes = list(notes)
    for name, v in base.items():
        missing = int((keep & ~np.isfinite(v)).sum())
        if missing:
            notes.append(f"{missing:,} of {int(keep.sum()):,} test rows left out: {name} has no value for them")
        keep &= np.isfinite(v)
    if not keep.any():
        raise ValueError(f"{protocol} / {target} / {device}: no test row is covered by every baseline "
                         f"({', '.join(base)}); nothing to compare")
    fn = metrics.METRICS[metric]
    p = np.asarray(ours, dtype="float64")
    cov = width = None
    if interval is not None:
        lo, hi = (np.asarray(b, dtype="float64")[keep] for b in interval)
        cov = metrics.coverage(t[keep], lo, hi)
        sized = np.isfinite(lo) & np.isfinite(hi) & (lo + hi > 0)
        if not sized.all():  # an unbounded or non-positive interval has no relative width
            notes.append(f"{int((~sized).sum()):,} of {len(lo):,} intervals are unbounded or not positive (the "
                         f"model has no calibrated error there); the width is over the rest")
        width = metrics.mean_width(lo[sized], hi[sized]) if sized.any() else float("inf")
    return Result(protocol, target, device, metric, fn(t[keep], p[keep]), model, int(keep.sum()), wall_s,
                  anchor=anchor, baselines={k: fn(t[keep], v[keep]) for k, v in base.items()}, coverage=cov,
                  width=width, notes=notes)


def with_values(baselines: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """``baselines`` without those that have no value on any row (a copy from GPUs that measured none of these
    configurations), and a note naming each one left out. Why: :func:`score` takes every number on the rows that
    every baseline covers, so one baseline without a value would leave no row to score (a new GPU whose family
    sibling measured another grid of shapes)."""
    kept: dict[str, np.ndarray] = {}
    notes = []
    for name, values in baselines.items():
        values = np.asarray(values, dtype="float64")
        if np.isfinite(values).any():
            kept[name] = values
        else:
            notes.append(f"{name}: no training GPU it copies from measured any of these configurations, so no value")
    return kept, notes


def macro_mean(rows: Sequence[Result], device: str, notes: Sequence[str] = (), wall_s: float | None = None
               ) -> Result:
    """The mean of per-device rows (each device weighs the same, whatever its row count); its wall time is
    ``wall_s``, else the sum of the rows' (one fit per device). Interval coverage and width are pooled over
    the rows instead: coverage is asked of the share of test rows inside their interval, which a mean over
    devices would misstate whenever devices differ in row count."""
    first = rows[0]
    names = [k for k in first.baselines if all(k in r.baselines for r in rows)]
    intervals = all(r.coverage is not None and r.width is not None for r in rows)
    weights = [r.n for r in rows]
    return Result(first.protocol, first.target, device, first.metric, float(np.mean([r.ours for r in rows])),
                  first.model, sum(r.n for r in rows), sum(r.wall_s for r in rows) if wall_s is None else wall_s,
                  summary=True, probe_budget=first.probe_budget, devices=tuple(r.device for r in rows),
                  baselines={k: float(np.mean([r.baselines[k] for r in rows])) for k in names},
                  coverage=float(np.average([r.coverage for r in rows], weights=weights)) if intervals else None,
                  width=float(np.average([r.width for r in rows], weights=weights)) if intervals else None,
                  notes=[f"mean over {len(rows)} GPUs ({', '.join(r.device for r in rows)})"
                         + ("; coverage and width pooled over their rows" if intervals else ""), *notes])


def miss_note(result: Result, reason: str) -> None:
    """Append ``reason`` to a row whose score misses its anchor (nothing when it meets it)."""
    if result.anchor is not None and result.beats() is False:
        result.notes.append(reason)
