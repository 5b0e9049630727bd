"""One model per attention phase: prefill (context) and decode (generation) apart.

Why: the two phases run different kernel families bound by different resources. A prefill kernel (FMHA) is
bound by its tensor FLOPs, a decode kernel (XQA/MMHA) by its KV-cache read; their efficiency curves, launch floors
and the device terms that carry them to a new GPU (FLOPs per SM against bytes per SM) differ. Pooled trees spend
splits telling the phases apart; fitted apart, each phase gets its own latency floor and every leaf of its trees
(NeuSight fits one model per operator for the same reason: layout_split.py). Rows without the phase column form
their own group; a phase no training row has is predicted by the phase with the most rows.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from perfcast.features.base import column_positions
from perfcast.models.estimators.vendor import UNKNOWN, VendorSplit

#: the feature column that names a row's phase (1: decode)
PHASE_COLUMN = "is_decode"


def phase_rows(A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Each feature row's phase (``"prefill"`` or ``"decode"``); "unknown" where it is missing or the features
    have no phase column."""
    flag = A[:, column_positions(names, (PHASE_COLUMN,))[0]] if PHASE_COLUMN in names else np.full(len(A), np.nan)
    return np.select([flag > 0.5, flag <= 0.5], ["decode", "prefill"], UNKNOWN).astype(object)


class PhaseSplit(VendorSplit):
    """A clone of ``estimator`` fitted per attention phase (:func:`phase_rows`); ``vendors_`` holds the phases.
    Rows of a phase without training rows go to the phase with the most."""

    #: the fitted per-phase models, saved as phase0, phase1, ... (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"estimators_": "phase"}
    labels = staticmethod(phase_rows)

    def label_one(self, row: np.ndarray, names: tuple[str, ...]) -> str:
        """A single feature row's phase (a request's)."""
        return str(phase_rows(row.reshape(1, -1), names)[0])
