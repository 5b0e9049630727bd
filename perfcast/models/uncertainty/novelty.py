"""How new a row's hardware is to a model: the distance from its hardware description to the nearest trained one.

Why: a model's error on hardware it never saw grows with how unlike the trained hardware it is. A GB300
beside a trained B300, or an A100 80GB beside a trained A100 40GB, is predicted almost as well as its
twin; an Intel B60 among NVIDIA parts, or next year's 128-core processor, is not. Interval calibration
(:mod:`perfcast.models.uncertainty.intervals`) divides its conformity scores by a function of this distance, so a
near-twin of trained hardware gets a narrow interval and an outlier a wide one, each calibrated.

The description is the task's hardware feature columns (:data:`HARDWARE_GROUPS`: the GPU spec sheet; the
CPU's processor, caches and memory) as the feature transformer emits them. Columns positive throughout
training are compared in log (ratios matter, not differences); every column is divided by its spread
over the distinct training descriptions (1 where training shows no spread, so a value no trained device
had still counts); the distance is the root-mean-square difference over the columns, and a value known on
one side only counts as a difference of :data:`UNKNOWN_GAP`. Seen hardware is at distance 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import column_positions, float_columns
from perfcast.features.groups import feature_groups

#: task -> the feature groups that describe the hardware (everything else describes the work)
HARDWARE_GROUPS: dict[str, tuple[str, ...]] = {
    "gemm": ("hardware",), "attention": ("hardware",), "cpu_bench": ("processor", "caches", "memory"),
}
#: standardised difference counted for a column known on one side only
UNKNOWN_GAP = 1.0
#: pairwise differences held in memory at once (query rows x reference rows x columns)
_CHUNK = 4_000_000


def hardware_columns(task: str) -> list[str]:
    """The feature columns that describe the hardware of ``task``'s rows."""
    if task not in HARDWARE_GROUPS:
        raise ValueError(f"no hardware description for task {task!r}; known tasks: {', '.join(HARDWARE_GROUPS)}")
    groups = feature_groups(task)
    return [c for g in HARDWARE_GROUPS[task] for c in groups[g]]


def _distinct(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``Z`` (NaN-aware) and each row's index into them."""
    if len(Z) <= 1:  # a single request: nothing to group
        return Z, np.zeros(len(Z), dtype=np.intp)
    frame = pd.DataFrame(Z)
    codes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    return Z[first], inverse.reshape(-1)


@dataclass
class HardwareNovelty:
    """Standardisation of the hardware columns and the distinct standardised descriptions trained on."""

    columns: list[str]
    #: per column: compared in log
    log: np.ndarray
    center: np.ndarray
    spread: np.ndarray
    #: (descriptions, columns) distinct standardised training descriptions (NaN = unknown)
    reference: np.ndarray

    @classmethod
    def fit(cls, F: pd.DataFrame, columns: Sequence[str]) -> HardwareNovelty:
        """Learn the scaling from the training feature frame ``F`` and keep its distinct descriptions."""
        absent = [c for c in columns if c not in F.columns]
        if absent:
            raise ValueError(f"hardware novelty: the feature frame lacks column(s) {absent}")
        A = F[list(columns)].to_numpy(dtype="float64", na_value=np.nan)
        known = np.isfinite(A)
        log = ((A > 0) | ~known).all(axis=0) & known.any(axis=0)
        L = np.where(log, np.log(np.where(known & (A > 0), A, 1.0)), A)
        L[~known] = np.nan
        D, _ = _distinct(L)
        seen = np.isfinite(D)
        count = np.maximum(seen.sum(axis=0), 1)
        center = np.where(seen, D, 0.0).sum(axis=0) / count
        spread = np.sqrt(np.where(seen, (D - center) ** 2, 0.0).sum(axis=0) / count)
        spread = np.where(spread > 0, spread, 1.0)
        out = cls(list(columns), log, center, spread, np.empty((0, len(columns))))
        out.reference = out._distinct_standardized(F)
        return out

    def standardize(self, F: pd.DataFrame) -> np.ndarray:
        """(rows, columns) standardised hardware descriptions of ``F`` (NaN where unknown)."""
        absent = [c for c in self.columns if c not in F.columns]
        if absent:
            raise ValueError(f"hardware novelty: the feature frame lacks column(s) {absent}; pass the frame the "
                             f"model's feature transformer produced")
        return self._standardized(float_columns(F, tuple(self.columns)))

    def _standardized(self, A: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            A = np.where(self.log, np.log(np.where(A > 0, A, np.nan)), A)
        return (A - self.center) / self.spread

    def _distinct_standardized(self, F: pd.DataFrame) -> np.ndarray:
        return _distinct(self.standardize(F))[0]

    def distance(self, F: pd.DataFrame, among: pd.DataFrame | None = None) -> np.ndarray:
        """Each row's distance to the nearest description trained on (or, given ``among``, to the nearest
        description in that feature frame: the part a calibration fold's model was fitted on)."""
        return self._nearest(self.standardize(F), self.reference if among is None else
                             self._distinct_standardized(among))

    def distance_rows(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`distance` (to the trained descriptions) of feature rows ``A`` whose columns are ``names``. A single
        row's distance, a function of its hardware columns only, is remembered per device description."""
        hw = A[:, column_positions(names, tuple(self.columns))]
        if len(hw) != 1:
            return self._nearest(self._standardized(hw), self.reference)
        memo = self.__dict__.setdefault("_memo", {})
        key = hw.tobytes()
        hit = memo.get(key)
        if hit is None:
            if len(memo) >= 4096:
                memo.clear()
            hit = memo[key] = self._nearest(self._standardized(hw), self.reference)
            hit.setflags(write=False)
        return hit

    @staticmethod
    def _nearest(Z: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Each standardised row's distance to the nearest row of ``ref``."""
        if len(ref) == 0:
            raise ValueError("hardware novelty: no reference description to measure distance to")
        Q, inverse = _distinct(Z)
        best = np.empty(len(Q))
        step = max(1, _CHUNK // max(1, ref.size))
        for start in range(0, len(Q), step):  # chunks of distinct descriptions, each one broadcast
            diff = Q[start:start + step, None, :] - ref[None, :, :]
            gap = np.where(np.isnan(diff), UNKNOWN_GAP, diff)
            gap = np.where(np.isnan(Q[start:start + step, None, :]) & np.isnan(ref[None, :, :]), 0.0, gap)
            best[start:start + step] = np.sqrt((gap ** 2).mean(axis=2)).min(axis=1)
        return best[inverse]

    def to_json(self) -> dict[str, Any]:
        """Plain lists (NaN as None) for a model bundle's manifest."""
        ref = [[None if np.isnan(v) else float(v) for v in row] for row in self.reference]
        return {"columns": self.columns, "log": [bool(v) for v in self.log], "center": self.center.tolist(),
                "spread": self.spread.tolist(), "reference": ref}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HardwareNovelty:
        cols = list(doc["columns"])
        ref = np.array([[np.nan if v is None else v for v in row] for row in doc["reference"]], dtype="float64")
        return cls(cols, np.asarray(doc["log"], dtype=bool), np.asarray(doc["center"], dtype="float64"),
                   np.asarray(doc["spread"], dtype="float64"), ref.reshape(-1, len(cols)))
