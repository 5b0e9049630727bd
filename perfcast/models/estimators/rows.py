"""Feature rows as a float array and its column names: how a served request reaches the heads.

Why not the feature DataFrame: a request is one row, and every frame built, selected from or converted costs
a fixed amount of pandas machinery, several times what the row's arithmetic costs. The heads that serve
(hybrid, ensemble, per-vendor split, sibling transfer) take ``(A, names)`` in ``predict_rows`` and read columns
by position (:func:`perfcast.features.base.column_positions`); their DataFrame ``predict`` is that method on
the frame's array, so a batch and a request run the same arithmetic. An estimator without the method (a
library model, an adapted bundle's correction) gets a frame of the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import column_index


def named_frame(A: np.ndarray, names: tuple[str, ...]) -> pd.DataFrame:
    """The rows ``A`` as a float frame with columns ``names`` (for a step that reads by name)."""
    return pd.DataFrame(A, columns=column_index(names), copy=False)


def predict_rows(estimator: Any, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """``estimator``'s float64 prediction of feature rows ``A`` (columns ``names``): its ``predict_rows``
    when it has one, else its ``predict`` of :func:`named_frame`."""
    method = getattr(estimator, "predict_rows", None)
    out = method(A, names) if method is not None else estimator.predict(named_frame(A, names))
    return np.asarray(out, dtype="float64")


__all__ = ["named_frame", "predict_rows"]
