"""Configuration spaces: what probes build ``space()`` from.

Full grids for the axes a model must see exhaustively, quasi-random (Sobol / Latin hypercube via
``scipy.stats.qmc``) samples over log-sizes for the rest, since runtimes vary over decades of sizes. Kept
apart from the sweep runner, which imports the probes (to summarize their records), so probes and runner
do not import each other.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import psutil
from scipy.stats import qmc


def grid(base: Mapping[str, Any] | None = None, **axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of ``axes`` values, each merged onto ``base`` (last axis varies fastest)."""
    base = dict(base or {})
    names = list(axes)
    return [{**base, **dict(zip(names, combo))} for combo in itertools.product(*(axes[n] for n in names))]


def log_uniform_sample(
    n: int,
    ranges: Mapping[str, tuple[int, int]],
    *,
    base: Mapping[str, Any] | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
    seed: int = 0,
    method: str = "sobol",
) -> list[dict[str, Any]]:
    """``n`` configurations spread evenly over log-sized integer ``ranges`` (inclusive) and ``choices``.

    ``method``: "sobol" (scrambled Sobol, the most even), "lhs" (Latin hypercube) or "random". Each
    categorical axis in ``choices`` takes one more dimension of the design, so it is balanced too.
    Seeded: the same call gives the same configurations (a resumed sweep must see the same keys).
    """
    choices = dict(choices or {})
    for name, (lo, hi) in ranges.items():
        if not 1 <= lo <= hi:
            raise ValueError(f"range of {name!r} must satisfy 1 <= lo <= hi for a log scale, got ({lo}, {hi})")
    d = len(ranges) + len(choices)
    if method == "sobol":
        u = qmc.Sobol(d, scramble=True, seed=seed).random_base2(max(0, math.ceil(math.log2(max(n, 1)))))[:n]
    elif method == "lhs":
        u = qmc.LatinHypercube(d, seed=seed).random(n)
    elif method == "random":
        u = np.random.default_rng(seed).random((n, d))
    else:
        raise ValueError(f"unknown sampling method {method!r}: use 'sobol', 'lhs' or 'random'")
    cols: dict[str, list[Any]] = {}
    for j, (name, (lo, hi)) in enumerate(ranges.items()):
        # sample log(x) uniformly on [log lo, log(hi + 1)) and floor: every integer gets its log-width share
        x = np.floor(np.exp(np.log(lo) + u[:, j] * (np.log(hi + 1) - np.log(lo))))
        cols[name] = np.clip(x, lo, hi).astype(int).tolist()
    for j, (name, values) in enumerate(choices.items(), start=len(ranges)):
        idx = np.minimum((u[:, j] * len(values)).astype(int), len(values) - 1)
        cols[name] = [values[i] for i in idx]
    base = dict(base or {})
    return [{**base, **{name: cols[name][i] for name in cols}} for i in range(n)]


def thread_counts() -> list[int]:
    """CPU thread counts worth measuring: 1 and every physical core this process may use."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return sorted({1, min(physical, logical)})
