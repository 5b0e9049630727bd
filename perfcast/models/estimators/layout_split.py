"""One model per GEMM operand layout: NeuSight's per-op predictors (bmm and linear apart).

Why: NeuSight fits one utilisation model per operator, because a batched matmul (``nn``: a batch of small
products, the batch running as waves) and a linear layer (``tn``: one large product over a transposed weight)
run different cuBLAS kernel families whose efficiency curves, launch floors and power draw differ. Pooled
low-capacity trees spend their few splits telling the two apart; fitted apart, each op gets its own latency
floor, power fit and every leaf of its trees. Rows whose layout the features leave unknown form their own
group, and a layout no training row has is predicted by the model of the layout with the most rows.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from perfcast.features.base import column_positions
from perfcast.models.estimators.vendor import UNKNOWN, VendorSplit

#: the feature columns that name a row's operand layout (1: that operand is transposed)
LAYOUT_COLUMNS: tuple[str, ...] = ("trans_a", "trans_b")


def layout_rows(A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Each feature row's layout (``"nn"``, ``"tn"``, ...) from :data:`LAYOUT_COLUMNS`; "unknown" where either
    is missing or the features have no such columns."""
    if not set(LAYOUT_COLUMNS) <= set(names):
        return np.full(len(A), UNKNOWN, dtype=object)
    flags = A[:, column_positions(names, LAYOUT_COLUMNS)]
    letters = np.where(flags > 0.5, "t", "n").astype(object)
    out = letters[:, 0] + letters[:, 1]
    out[np.isnan(flags).any(axis=1)] = UNKNOWN
    return out


def layout_one(row: np.ndarray, names: tuple[str, ...]) -> str:
    """:func:`layout_rows` of a single feature row."""
    return str(layout_rows(row.reshape(1, -1), names)[0])


class LayoutSplit(VendorSplit):
    """A clone of ``estimator`` fitted per operand layout (:func:`layout_rows`); ``vendors_`` holds the layouts.
    Rows of a layout without training rows go to the layout with the most."""

    #: the fitted per-layout models, saved as layout0, layout1, ... (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"estimators_": "layout"}
    labels = staticmethod(layout_rows)
    label_one = staticmethod(layout_one)
