"""The guard's choice of latency floors: a floor is kept for a kernel kind only where its rows' folds support it.

Why a choice, not a rule: a floor that dominates a kind's measured latencies
(:func:`~perfcast.models.estimators.adapt_correction.latency_floors`) is right where the K rows are all small kernels
at a floor the base does not know (their ratio must not multiply the large kernels), but where the rows span the
sizes a fitted floor and slope can miss the latencies a correction without it fits. So the guard is run with the
floors and without them, and a kind keeps its floor only if the chosen correction's out-of-fold mean APE on that
kind's rows is lower with it (ties: no floor). Only when a floor is found on the rows is the guard run twice (three
times if some kinds keep theirs and some do not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from perfcast.models.estimators.adapt_correction import FloorRule, latency_floors, mean_ape


def supported_floors(guard: Callable[[FloorRule | None], Any], kinds: np.ndarray, base: np.ndarray, y: np.ndarray,
                     share: float) -> Any:
    """The adaptation ``guard(rule)`` (the guard on these rows, whose kernel kinds are ``kinds``, with the floors of
    ``rule``; None: none) with floors of at least ``share`` of a kind's median latency for the kinds whose chosen
    correction's cross-fitted residuals (the adaptation's ``residuals``) they lower; without floors where none is
    found."""
    found = latency_floors(pd.Series(kinds), base, y, share)
    plain = guard(None)
    if not found or plain.residuals is None:
        return plain
    floored = guard(FloorRule(share, frozenset(found)))
    kept = frozenset(kind for kind in found
                     if mean_ape(floored.residuals[kinds == kind]) < mean_ape(plain.residuals[kinds == kind]))
    if kept == frozenset(found):
        return floored
    return guard(FloorRule(share, kept)) if kept else plain
