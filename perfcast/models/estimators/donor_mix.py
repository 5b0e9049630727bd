"""Donor tables and the donor mix: learn a new device's error profile from every training device's errors.

Why: where the base model misjudges a configuration on the training devices (a kernel the library handles
badly, a tile that fits poorly, a dtype whose achieved rate the sheet misstates), it often misjudges it on a
new device in a related way, with device-dependent strength. The K measurements of the new device are too few
to learn that profile over every shape, but enough to learn *how much of each donor's profile* the new device
shares: a handful of weights. The mix models

    log(measured / start) = level(kind) + sum_j w_j(kind) * e_j(config) [+ b(kind) * log(base)]

where ``e_j = log(measured_j / base_j)`` is donor ``j``'s measured error of the base model for the same
configuration (0 where donor ``j`` did not measure it: no evidence, no change), ``start`` is the base
prediction (or the nearest donor's latency), and ``w`` is a ridge fit on the K rows whose penalty is chosen by
leave-one-out on them (``w = 0``, the level-only correction, is where the penalty pulls). The optional
``log(base)`` column lets the correction tilt with size (the new device's efficiency curve is steeper or
flatter than its sheet says). Kernel kinds with :data:`MIN_MIX_ROWS` rows get their own weights; the others
share the pooled ones.

A :class:`DonorTable` holds the donors' log latencies and log errors per configuration (hashed shape and dtype
feature values), so an adapted bundle recomputes the mix from its features alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features import feature_groups
from perfcast.models.estimators.hybrid import KIND_COLUMNS, KIND_PREFIXES, kernel_kinds
from perfcast.models.estimators.transfer import row_keys

#: the ridge penalties leave-one-out on the K rows chooses from (columns are log ratios, so unscaled)
MIX_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 3, 9))
#: rows of one kernel kind from which its mix weights are fitted by themselves (else: the pooled weights)
MIN_MIX_ROWS = 24
#: the mixes: their columns (``latency``: each donor's log latency over the start's, ``error``: each donor's log
#: error of the base model) and, with ``+base``, log(base)
MIXES: tuple[str, ...] = ("latency", "error", "latency+base", "error+base")


@dataclass
class DonorTable:
    """Training devices' measured latency per configuration (a configuration: the values of the task's shape
    and dtype feature columns, hashed), and the base model's log error there. ``devices[0]`` (the nearest
    by spec sheet) is also an alternative starting point for the correction: a sibling of the new device
    predicts it better than any model."""

    devices: list[str]
    columns: list[str]
    keys: np.ndarray  # sorted uint64 configuration hashes
    log_latency: np.ndarray  # (keys, devices): log of each donor's mean measured latency, NaN where not measured
    log_error: np.ndarray | None = None  # (keys, devices): log(measured / base prediction), NaN where unknown

    @property
    def device(self) -> str:
        return self.devices[0]

    @classmethod
    def build(cls, devices: str | Sequence[str], F: pd.DataFrame, latency: np.ndarray, task: str, *,
              device_of: np.ndarray | None = None, base: np.ndarray | None = None) -> DonorTable:
        """From the donors' feature frame ``F`` and measured latencies (repeats averaged in log). Several
        donors: ``device_of`` names each row's device and ``devices`` orders them (nearest first); ``base``
        (the base model's prediction of each row) adds the error table the donor mix reads."""
        devices = [devices] if isinstance(devices, str) else [str(d) for d in devices]
        groups = feature_groups(task)
        columns = [c for g in ("shape", "dtype") for c in groups[g] if c in F.columns]
        latency = np.asarray(latency, dtype="float64").ravel()
        ok = np.isfinite(latency) & (latency > 0)
        frame = pd.DataFrame({"key": row_keys(F, columns)[ok],
                              "device": np.full(len(F), devices[0], dtype=object)[ok] if device_of is None
                              else np.asarray(device_of, dtype=object)[ok],
                              "latency": np.log(latency[ok])})
        if base is not None:
            frame["error"] = frame["latency"] - np.log(np.asarray(base, dtype="float64").ravel()[ok])
        table = frame[frame["device"].isin(devices)].groupby(["key", "device"]).mean().unstack("device")
        keys = table.index.to_numpy(dtype=np.uint64)
        def pick(name: str) -> np.ndarray:  # (keys, devices); no shared configuration: an empty table
            if name not in table.columns.get_level_values(0):
                return np.full((len(keys), len(devices)), np.nan)
            return table[name].reindex(columns=devices).to_numpy(dtype="float64")

        return cls(devices, columns, keys, pick("latency"), pick("error") if base is not None else None)

    def _rows(self, F: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        keys = row_keys(F, self.columns)
        if not len(self.keys):
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        at = np.clip(np.searchsorted(self.keys, keys), 0, len(self.keys) - 1)
        return at, self.keys[at] == keys

    def lookup(self, F: pd.DataFrame) -> np.ndarray:
        """Each row's log latency on the nearest donor (NaN where it did not measure the configuration)."""
        at, found = self._rows(F)
        return np.where(found, self.log_latency[at, 0] if len(self.keys) else np.nan, np.nan)

    def latencies(self, F: pd.DataFrame, log_base: np.ndarray) -> np.ndarray:
        """(rows, donors): each donor's log latency over ``log_base`` on the row's configuration, 0 where unknown."""
        at, found = self._rows(F)
        if not len(self.keys):
            return np.zeros((len(F), len(self.devices)))
        got = found[:, None] & np.isfinite(self.log_latency[at])
        return np.where(got, np.nan_to_num(self.log_latency[at], nan=0.0) - log_base[:, None], 0.0)

    def errors(self, F: pd.DataFrame) -> np.ndarray:
        """(rows, donors): each donor's log error of the base model on the row's configuration, 0 where unknown."""
        at, found = self._rows(F)
        if self.log_error is None or not len(self.keys):
            return np.zeros((len(F), len(self.devices)))
        return np.where(found[:, None], np.nan_to_num(self.log_error[at], nan=0.0), 0.0)

    def start(self, F: pd.DataFrame, base: np.ndarray) -> np.ndarray:
        """The nearest donor's latency where it measured the configuration, else ``base``."""
        d = self.lookup(F)
        return np.where(np.isfinite(d), np.exp(d), np.asarray(base, dtype="float64").ravel())

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"donor_keys": self.keys, "donor_log_latency": self.log_latency}
        if self.log_error is not None:
            arrays["donor_log_error"] = self.log_error
        return {"devices": list(self.devices), "columns": list(self.columns)}, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> DonorTable:
        """Also reads a one-donor table saved before tables held several (``device``, 1-D latencies)."""
        devices = [str(d) for d in params.get("devices", [params.get("device")])]
        latency = np.asarray(arrays["donor_log_latency"], dtype="float64").reshape(len(arrays["donor_keys"]), -1)
        return cls(devices, [str(c) for c in params["columns"]], arrays["donor_keys"], latency,
                   arrays.get("donor_log_error"))


@dataclass
class DonorMix:
    """Fitted mix weights per kernel kind over the columns of mix ``name`` (one of :data:`MIXES`)."""

    weights: dict[str, list[float]]
    pooled: list[float]
    name: str = "latency"

    def __post_init__(self) -> None:
        if self.name not in MIXES:
            raise ValueError(f"unknown donor mix {self.name!r}; known: {', '.join(MIXES)}")
        self._by_pattern: dict[bytes, np.ndarray] = {}  # kind-column values -> weights (a one-row request
        # would otherwise pay more for naming its kernel kind than for the mix)

    def log_ratio(self, table: DonorTable, F: pd.DataFrame, base: np.ndarray) -> np.ndarray:
        """Per row, the mix's log correction (its level is the :class:`Correction`'s)."""
        Z = design(table, F, base, self.name)
        flags = np.nan_to_num(F[[c for c in F.columns if c.startswith(KIND_PREFIXES) or c in KIND_COLUMNS]]
                              .to_numpy(dtype="float64"), nan=0.0) > 0.5
        uniq, first, inverse = np.unique(flags, axis=0, return_index=True, return_inverse=True)
        new = [i for i, row in enumerate(uniq) if row.tobytes() not in self._by_pattern]
        for i, kind in zip(new, kernel_kinds(F.iloc[first[new]]), strict=True):
            self._by_pattern[uniq[i].tobytes()] = np.asarray(self.weights.get(str(kind), self.pooled))
        W = np.stack([self._by_pattern[row.tobytes()] for row in uniq])[inverse.ravel()]
        return np.einsum("ij,ij->i", Z, W)

    def to_json(self) -> dict[str, Any]:
        return {"weights": {k: [float(v) for v in w] for k, w in self.weights.items()},
                "pooled": [float(v) for v in self.pooled], "name": self.name}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DonorMix:
        return cls({str(k): [float(v) for v in w] for k, w in doc["weights"].items()},
                   [float(v) for v in doc["pooled"]], str(doc["name"]))


def design(table: DonorTable, F: pd.DataFrame, base: np.ndarray, name: str) -> np.ndarray:
    """The columns of mix ``name`` (see :data:`MIXES`): per donor, its log latency over ``base``'s (or its log
    error of the base model) on the row's configuration, 0 where it did not measure it; then ``log(base)``."""
    log_base = np.log(np.asarray(base, dtype="float64").ravel())
    Z = table.latencies(F, log_base) if name.startswith("latency") else table.errors(F)
    return np.column_stack([Z, log_base]) if name.endswith("+base") else Z


def _ridge(Z: np.ndarray, r: np.ndarray) -> list[float]:
    """Ridge weights (intercept free, penalty by efficient leave-one-out over :data:`MIX_ALPHAS`)."""
    from sklearn.linear_model import RidgeCV  # fitting only: loading an adapted bundle skips scikit-learn

    return [float(v) for v in RidgeCV(alphas=MIX_ALPHAS).fit(Z, r).coef_]


def fit_mix(table: DonorTable, F: pd.DataFrame, base: np.ndarray, log_ratio: np.ndarray, *, name: str) -> DonorMix:
    """Fit mix ``name`` to ``log_ratio`` (``log(measured / base)``) of rows ``F`` (``base``: the start)."""
    Z = design(table, F, base, name)
    kinds = kernel_kinds(F).to_numpy()
    weights = {str(k): _ridge(Z[kinds == k], log_ratio[kinds == k]) for k in pd.unique(kinds)
               if (kinds == k).sum() >= MIN_MIX_ROWS}
    return DonorMix(weights, _ridge(Z, log_ratio), name)


def cross_fitted_mix(table: DonorTable, F: pd.DataFrame, base: np.ndarray, log_ratio: np.ndarray,
                     folds: Sequence[tuple[np.ndarray, np.ndarray]], *, name: str) -> np.ndarray:
    """Each row's mix correction from a mix fitted without it (``folds``: (fit, held) index pairs), so what
    is fitted on top of it, and the intervals, see out-of-sample mix errors."""
    out = np.zeros(len(log_ratio))
    for fit_idx, held_idx in folds:
        mix = fit_mix(table, F.iloc[fit_idx], base[fit_idx], log_ratio[fit_idx], name=name)
        out[held_idx] = mix.log_ratio(table, F.iloc[held_idx], base[held_idx])
    return out
