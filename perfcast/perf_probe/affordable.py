"""Leave out the configurations whose one call would take too long on this machine.

Why: a probe's full space is written for every machine. One call of an 8192^3 GEMM takes seconds in float32 on a
2-core CPU and minutes in bfloat16 on a CPU without native bfloat16, and a measurement makes at least eight calls
(check, warm-up, repeats), so a sweep or an adaptation plan drawing such shapes would run for hours. Before a full
sweep, each group of configurations that share a kernel (every key but the shape, ``DeviceProbe.shape_keys``) is
timed on a ladder of its own configurations, smallest first, each at least :data:`STEP` times the work of the last,
until one call lasts ``max_call_s / STEP`` (the next rung would reach the limit: a kernel whose rate falls with its
size, such as bfloat16 on a CPU without it, is timed near the sizes the limit decides on). A configuration whose
work at that rate (work per second) would take longer than ``max_call_s`` is left out. The ladder never calls a
configuration its rate so far puts over that limit. The rate is rounded down to a power of two, so an estimate errs
towards leaving out and timing noise seldom moves a configuration across the limit. A rate near a power of two can
still move one step between runs; a resumed plan then draws a few configurations the first run did not, and what was
measured stays stored (nothing is redone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from perfcast.perf_probe.base import DeviceProbe, Probe

#: the longest one call of a configuration may take (seconds) for it to be measured
MAX_CALL_S = 1.0
#: each rung of the ladder does at least this many times the work of the one before
STEP = 4.0


@dataclass
class Affordable:
    """The configurations kept (in their order), those left out with the seconds one call was estimated to take,
    and each kernel group's rate (work per second; None where its ladder could not run)."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    left_out: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    rates: dict[tuple[tuple[str, str], ...], float | None] = field(default_factory=dict)


def affordable(probe: DeviceProbe, configs: Sequence[dict[str, Any]], max_call_s: float = MAX_CALL_S) -> Affordable:
    """Split ``configs`` into those one call of which fits ``max_call_s`` on this machine and the rest."""
    if not max_call_s > 0:
        raise ValueError(f"max_call_s must be a positive number of seconds, got {max_call_s!r}")
    out = Affordable()
    sized = [(cfg, probe.work(cfg), probe.rate_group(cfg)) for cfg in configs]
    groups: dict[tuple[tuple[str, str], ...], list[tuple[float, dict[str, Any]]]] = {}
    for cfg, work, group in sized:
        if work is not None:
            groups.setdefault(group, []).append((work, cfg))
    for group, members in groups.items():
        out.rates[group] = _rate(probe, sorted(members, key=lambda m: m[0]), max_call_s)
    for cfg, work, group in sized:
        rate = None if work is None else out.rates[group]
        seconds = 0.0 if rate is None else work / rate
        if seconds <= max_call_s:
            out.kept.append(cfg)
        else:
            out.left_out.append((cfg, seconds))
    return out


def affordable_space(probe: Probe, quick: bool) -> tuple[list[dict[str, Any]] | None,
                                                          list[tuple[dict[str, Any], float]]]:
    """A full sweep's configurations one call of which fits :data:`MAX_CALL_S` here, and those left out with their
    estimates; ``(None, [])`` for a quick sweep (its space is small already) or a probe without estimates (the
    probe's own space, unfiltered)."""
    if quick or not isinstance(probe, DeviceProbe):
        return None, []
    fit = affordable(probe, probe.space(quick=False), MAX_CALL_S)
    return fit.kept, fit.left_out


def _rate(probe: DeviceProbe, ladder: list[tuple[float, dict[str, Any]]], max_call_s: float) -> float | None:
    """Work per second of the group's kernel, from one warm call per rung of ``ladder`` ((work, configuration),
    least work first; None: its smallest configuration cannot run here, and the sweep then records why, as for any
    failed configuration)."""
    rate, last = None, 0.0
    for work, cfg in ladder:
        if work < STEP * last:
            continue
        if rate is not None and work / rate > max_call_s:
            break
        try:
            seconds = probe.call_ms(cfg) / 1e3
        except Exception:  # noqa: BLE001 - a kernel that cannot run is the sweep's to report, not the estimate's
            break
        rate, last = work / max(seconds, 1e-9), work
        if seconds >= max_call_s / STEP:
            break
    return None if rate is None else 2.0 ** math.floor(math.log2(rate))
