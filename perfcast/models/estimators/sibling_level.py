"""The level of the transfer's correction of a sibling copy, measured on a fixed reference set of configurations.

Why: the transfer's correction of a sibling's measurement (``log f̂(x, target) − log y(x, sibling)``) has a
shape (how it changes with the configuration) and a level (its typical value for the pair and kernel kind).
Across an architecture step the level is what misleads (GB200 against B300 / GB300: every spec-sheet ratio
points the wrong way) while the shape carries. Removing the level needs it measured somewhere other than the
rows being predicted, or a row's prediction would depend on its batch. Here it is the median of the
correction over a fixed reference set, the first :data:`REFERENCE_ROWS` configurations (by hash) the
sibling measured of that kind, featurized for the *target's* spec sheet
(:func:`~perfcast.features.on_device.featurize_on_device`): a property of (target, sibling, kind) and the
fitted transfer, the same for a one-row request as for a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from perfcast.features.groups import GPU_HARDWARE
from perfcast.features.on_device import featurize_on_device
from perfcast.models.estimators.transfer import SiblingTransfer, hash_rows, row_keys

#: reference configurations kept per (training device, kernel kind): enough for a stable median (the
#: correction's spread within a kind is a few percent), few enough to featurize and predict in milliseconds
REFERENCE_ROWS = 256


@dataclass
class Reference:
    """The reference configurations: feature rows (as measured, on their own device), their device key and
    kernel kind. Data only; saved with the model as arrays."""

    rows: pd.DataFrame
    device: np.ndarray
    kind: np.ndarray

    @classmethod
    def choose(cls, X: pd.DataFrame, devices: np.ndarray, configs: np.ndarray, kinds: np.ndarray,
               per: int = REFERENCE_ROWS) -> Reference:
        """Per (device, kind) the ``per`` configurations of least hash (one row each): a draw that does not
        depend on which other devices are in training, nor on the rows' order."""
        frame = pd.DataFrame({"device": devices, "kind": kinds.astype(str), "config": configs,
                              "pos": np.arange(len(X))}).drop_duplicates(["device", "config"])
        pick = frame.sort_values(["device", "kind", "config"], kind="stable").groupby(["device", "kind"]).head(per)
        pos = np.sort(pick["pos"].to_numpy())
        return cls(X.iloc[pos].reset_index(drop=True), devices[pos].astype(np.uint64), kinds[pos].astype(str))

    @classmethod
    def empty(cls, columns: list[str]) -> Reference:
        return cls(pd.DataFrame(columns=columns, dtype="float64"), np.empty(0, dtype=np.uint64), np.empty(0, dtype=str))


def correction_levels(X: pd.DataFrame, kinds: np.ndarray, siblings: np.ndarray, transfer: SiblingTransfer,
                      reference: Reference, tables: pd.DataFrame, memo: dict) -> np.ndarray:
    """(rows, training devices): the median transfer correction of copying that device, over its reference
    configurations of the row's kind featurized for the row's device; NaN where the device is no sibling of
    the row's (``siblings``) or has no reference of the kind. ``memo``: (device hardware, kind) -> (transfer,
    levels), so a device and kind is computed once per fitted transfer."""
    out = np.full(siblings.shape, np.nan)
    hw = X[list(GPU_HARDWARE)].to_numpy(dtype="float64")
    groups = pd.DataFrame({"h": hash_rows(hw), "k": kinds.astype(str)}).groupby(["h", "k"], sort=False).indices
    for (_, kind), pos in groups.items():
        first = int(pos[0])
        key = (hw[first].tobytes(), kind, siblings[first].tobytes())
        hit = memo.get(key)
        if hit is None or hit[0] is not transfer:
            if len(memo) >= 1024:
                memo.clear()
            hit = memo[key] = (transfer, _levels(dict(zip(GPU_HARDWARE, hw[first], strict=True)), kind,
                                                 siblings[first], transfer, reference, tables))
        out[pos] = hit[1]
    return out


def _levels(hardware: dict[str, float], kind: str, siblings: np.ndarray, transfer: SiblingTransfer,
            reference: Reference, tables: pd.DataFrame) -> np.ndarray:
    """One device's and kind's row of :func:`correction_levels`."""
    levels = np.full(len(transfer.devices_), np.nan)
    wanted = {int(d): j for j, d in enumerate(transfer.devices_) if siblings[j]}
    sel = (reference.kind == kind) & np.isin(reference.device, np.asarray(list(wanted), dtype=np.uint64))
    if not sel.any():
        return levels
    rows = featurize_on_device(reference.rows[sel], hardware)
    own = np.log(transfer.estimator_.predict(rows)) + transfer.correction(rows)
    device = reference.device[sel]
    measured = tables["log_y"].reindex(pd.MultiIndex.from_arrays([device, row_keys(rows, transfer.config_columns)]))
    diff = pd.Series(own - measured.to_numpy(dtype="float64")).groupby(device).median()
    for dev, value in diff.items():
        levels[wanted[int(dev)]] = value
    return levels
