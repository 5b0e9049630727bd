"""Adapt a joint runtime + power model (:mod:`perfcast.models.estimators.power`) to a device from K measured rows.

Why a separate piece beside :mod:`perfcast.models.estimators.adapt`: that module corrects one target; a power
model answers runtime, board power and energy from one head. A probe that can read the board's power (NVML on a
GPU, RAPL on a CPU: the ``power_w`` column :mod:`perfcast.perf_probe.timing` writes) measures runtime and power
of the same run, so both are corrected, each by the adaptation's own correction (a level per kernel kind, a
shape term, chosen by cross-validation on the rows and dropped where it does not help: never worse than no
correction out of fold) fitted on that target's rows; rows without a power reading (a probe on a machine with
no readable counter) adapt runtime only and leave power as the base predicts it. Energy is not corrected on
its own: it stays power x runtime of the corrected pair, so the three outputs remain consistent.

Intervals: each corrected target's interval is recalibrated on its cross-fitted residuals on the rows (as the
single-target adaptation does); energy's combines the runtime and power half-widths in quadrature (as
:func:`perfcast.models.estimators.power.energy_interval` does for a model not calibrated on energy).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from perfcast.models.estimators.adapt import Adaptation, Correction, fit_adaptation, noise_of
from perfcast.models.uncertainty.calibration import IntervalCalibration

#: the targets a probe measures and the adaptation corrects (energy follows from them)
MEASURED: tuple[str, ...] = ("runtime_ms", "power_w")
ENERGY = "energy_j"


def adapts_jointly(targets: list[str]) -> bool:
    """Whether a model of ``targets`` is adapted here: a joint model of power with runtime (and energy)."""
    return "power_w" in targets and len(targets) > 1 and set(targets) <= {*MEASURED, ENERGY}


class AdaptedJointRegressor:
    """A fitted joint head (rows -> (rows, targets)) with per-target corrections; energy = power x runtime."""

    #: the base head, saved in the adapted model's own folder (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"inner": ""}

    def __init__(self, inner: Any, targets: list[str], corrections: dict[str, Correction]):
        self.inner = inner
        self.targets = list(targets)
        self.corrections = dict(corrections)

    def predict(self, F: pd.DataFrame) -> np.ndarray:
        base = np.asarray(self.inner.predict(F), dtype="float64").reshape(len(F), -1)
        return corrected(self.targets, self.corrections, F, base)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Targets and each correction's numbers (JSON); each shape model's LightGBM text as an array."""
        arrays = {f"shape_text_{t}": np.frombuffer(c.shape_text.encode("utf-8"), dtype=np.uint8)
                  for t, c in self.corrections.items() if c.shape_text is not None}
        return {"targets": self.targets, "corrections": {t: c.to_json() for t, c in self.corrections.items()}}, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> AdaptedJointRegressor:
        """The adapted head without its base (the persistence layer sets ``inner``)."""
        corrections = {}
        for t, doc in params["corrections"].items():
            text = arrays.get(f"shape_text_{t}")
            corrections[str(t)] = Correction.from_json(doc, None if text is None else text.tobytes().decode("utf-8"))
        return cls(None, [str(t) for t in params["targets"]], corrections)


def corrected(targets: list[str], corrections: dict[str, Correction], F: pd.DataFrame, base: np.ndarray
              ) -> np.ndarray:
    """(rows, targets) adapted predictions from the base head's ``base`` (same layout)."""
    out = np.array(base, dtype="float64", copy=True)
    for t, c in corrections.items():
        j = targets.index(t)
        out[:, j] = base[:, j] * np.exp(c.log_ratio(F, base[:, j]))
    if ENERGY in targets and all(t in targets for t in MEASURED):
        out[:, targets.index(ENERGY)] = out[:, targets.index("power_w")] * out[:, targets.index("runtime_ms")] / 1e3
    return out


def fit_joint_adaptation(F: pd.DataFrame, base: np.ndarray, records: pd.DataFrame, targets: list[str], *, task: str,
                         calibration: IntervalCalibration, seed: int = 0
                         ) -> tuple[dict[str, Correction], IntervalCalibration, dict[str, Adaptation]]:
    """Per measured target with readings in ``records``, the adaptation's correction (see the module docstring);
    the adapted interval calibration (``calibration``, the base's, where a target could not be recalibrated);
    and each target's :class:`Adaptation` (for the report)."""
    found: dict[str, Adaptation] = {}
    for t in (t for t in MEASURED if t in targets and t in records.columns):
        y = pd.to_numeric(records[t], errors="coerce").to_numpy(dtype="float64")
        found[t] = fit_adaptation(F, base[:, targets.index(t)], y, task=task, target=t, noise=noise_of(records, t),
                                  level=calibration.level, seed=seed, stack=False)
    corrections = {t: a.correction for t, a in found.items()
                   if a.correction.mode != "none" or a.correction.kind_modes}
    return corrections, recalibrated(calibration, targets, found), found


def recalibrated(base: IntervalCalibration, targets: list[str], found: dict[str, Adaptation]) -> IntervalCalibration:
    """``base`` with each recalibrated target's scores replaced by its cross-fitted ones, energy's in quadrature
    of runtime's and power's; ``base`` itself when nothing was recalibrated, or when ``base`` scales its scores
    by hardware novelty (plain and scaled scores cannot share one calibration) and a target is left over."""
    own = {t: a.calibration.scores[t] for t, a in found.items() if a.calibration is not None}
    if not own:
        return base
    scores: dict[str, np.ndarray] = {}
    for t in targets:
        if t in own:
            scores[t] = own[t]
        elif t == ENERGY and any(m in own for m in MEASURED) and (not base.scaled or all(m in own for m in MEASURED)):
            scores[t] = quadrature(*(own[m] if m in own else base.scores[m] for m in MEASURED))
        elif not base.scaled:
            scores[t] = base.scores[t]
        else:
            return base
    n = {t: len(found[t].calibration.scores[t]) for t in own}
    return IntervalCalibration(list(targets), scores, dict(base.noise_median), base.level,
                               {"by": "adaptation rows (cross-fitted)", "rows": n,
                                **({"energy_j": "runtime and power half-widths in quadrature"}
                                   if ENERGY in scores and ENERGY not in own else {})})


def quadrature(a: np.ndarray, b: np.ndarray, points: int = 512) -> np.ndarray:
    """Sorted scores whose every quantile is the quadrature sum of ``a``'s and ``b``'s at that quantile."""
    levels = (np.arange(points) + 0.5) / points
    return np.sort(np.hypot(np.quantile(a, levels), np.quantile(b, levels)))


def report(found: dict[str, Adaptation]) -> dict[str, Any]:
    """The adaptation's JSON summary: the single-target report's keys (``mode``, ``cv_mean_ape`` per target and
    mode, ...) and each target's own report."""
    per = {t: a.report() for t, a in found.items()}
    return {"mode": ", ".join(f"{t}: {r['mode']}" for t, r in per.items()) or "none",
            "rows": max((a.n_rows for a in found.values()), default=0),
            "cv_mean_ape": {f"{t} {m}": v for t, r in per.items() for m, v in r["cv_mean_ape"].items()},
            "recalibrated": any(r["recalibrated"] for r in per.values()), "starts_from": "base model",
            "targets": per}
