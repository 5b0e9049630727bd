"""Distinct values of a small object array, and whether a mask has any flag set, without a fixed cost per call.

Why: a single request's features and domain check group a handful of one-element text arrays (dtype,
device id, vendor); :func:`pandas.factorize` has a fixed cost per call whatever the length, which adds up to
a sizeable part of a one-row prediction. Longer arrays still go to pandas (vectorised, hash-based).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from perfcast.lazy import is_missing, pandas as pd

#: arrays up to this long are grouped with a dict: :func:`pandas.factorize` pays its fixed cost even for one value
SMALL = 16


def factorize(values: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """(codes, distinct values in order of appearance) of an object array, -1 for a missing value: what
    :func:`pandas.factorize` gives, without its fixed cost for the few values of a single request."""
    if len(values) > SMALL:
        codes, uniques = pd.factorize(values)
        return codes, list(uniques)
    seen: dict[Any, int] = {}
    codes = np.fromiter((-1 if is_missing(v) else seen.setdefault(v, len(seen))
                         for v in values), dtype=np.intp, count=len(values))
    return codes, list(seen)


def flagged(mask: np.ndarray) -> bool:
    """Whether any of ``mask`` is set: a request's one flag read directly (``any()`` is a reduction call, and a
    one-row prediction tests a few dozen such masks)."""
    return bool(mask[0]) if len(mask) == 1 else bool(mask.any())
