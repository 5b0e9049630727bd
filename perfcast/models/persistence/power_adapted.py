"""Adapting a loaded joint runtime + power bundle to one device (the power side of :mod:`.adapted`).

Why here: like :mod:`perfcast.models.persistence.adapted` it reads and builds loaded bundles, which the
estimators below it must not know about; :func:`perfcast.models.persistence.adapted.adapt_loaded` hands a joint
power model to :func:`adapt_joint_loaded`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from perfcast.models.estimators.power_adapt import AdaptedJointRegressor, fit_joint_adaptation, report
from perfcast.models.persistence.bundle import PerfcastModel


def adapt_joint_loaded(model: PerfcastModel, records: pd.DataFrame, *, seed: int = 0
                       ) -> tuple[PerfcastModel, dict[str, Any]]:
    """A loaded joint power model corrected on ``records`` (a new model; the base is untouched) and the
    adaptation's report. Records need ``runtime_ms`` or ``power_w`` (NaN where a row has no reading)."""
    targets = list(model.targets)
    if not any(t in records.columns for t in ("runtime_ms", "power_w")):
        raise ValueError(f"the adaptation records have neither a runtime_ms nor a power_w column to correct this "
                         f"model of {targets} with")
    inner = model.heads[0]
    inner = inner.inner if isinstance(inner, AdaptedJointRegressor) else inner  # re-adapting starts from the base
    corrections, calibration, found, domain = {}, model.calibration, {}, model.domain
    if len(records):
        F = model.features.transform(records)
        domain = model.domain.extended(records, F)
        base = np.asarray(inner.predict(F), dtype="float64").reshape(len(F), -1)
        corrections, calibration, found = fit_joint_adaptation(F, base, records, targets, task=model.task,
                                                               calibration=model.calibration, seed=seed)
    lineage = {**report(found), "base_model": str(model.path),
               "base_metadata": {k: v for k, v in model.metadata.items() if k != "adaptation"}}
    adapted = PerfcastModel(model.path, model.task, targets, model.features,
                            [AdaptedJointRegressor(inner, targets, corrections)], True, calibration, domain,
                            {**model.metadata, "adaptation": lineage}, dict(model.versions))
    return adapted, lineage


def is_joint_adapted(model: PerfcastModel) -> bool:
    """Whether ``model`` came from :func:`adapt_joint_loaded` (it saves as a joint bundle)."""
    return len(model.heads) == 1 and isinstance(model.heads[0], AdaptedJointRegressor)
