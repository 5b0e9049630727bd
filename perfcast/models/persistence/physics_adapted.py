"""Adapting a loaded GEMM bundle to a CPU with the physics term (:mod:`perfcast.models.estimators.physics`) as
well as the ordinary correction, keeping whichever cross-validates better on the adaptation rows.

Why a separate step around :func:`~perfcast.models.persistence.adapted.adapt_loaded` rather than another mode
inside it: the physics term is for one task on one kind of device (CPU GEMMs, the quickstart's flow); the
adaptation modes serve every task on GPUs. The two are compared on the same footing: the ordinary correction's
cross-validated mean APE against the physics term's cross-fitted predictions corrected further by the same
correction search (so its intervals, too, are calibrated on residuals of fits that did not see the row).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from perfcast.models.estimators.adapt import MIN_ROWS, AdaptedRegressor, fit_adaptation, noise_of
from perfcast.models.estimators.physics import COLUMNS, PhysicsCorrected, fit_physics
from perfcast.models.persistence.adapted import adapt_loaded
from perfcast.models.persistence.bundle import PerfcastModel


def adapt_with_physics(model: PerfcastModel, records: pd.DataFrame, *, seed: int = 0,
                       donors: pd.DataFrame | None = None) -> PerfcastModel:
    """``model`` adapted to ``records`` (one device's GEMMs) by :func:`adapt_loaded`, or by the physics term
    plus its correction when that has the lower cross-validated mean APE on ``records``; the model's
    ``adaptation`` metadata records both candidates' CV errors and which was kept."""
    plain, found = adapt_loaded(model, records, seed=seed, donors=donors)
    if model.task != "gemm" or found.n_rows < MIN_ROWS:
        return plain
    target = model.targets[0]
    inner = model.heads[0]
    inner = inner.inner if isinstance(inner, AdaptedRegressor) else inner
    F = model.features.transform(records)
    base = np.asarray(inner.predict(F), dtype="float64").reshape(len(F))
    y = records[target].to_numpy(dtype="float64")
    term, oof = fit_physics(F, base, y, seed=seed)
    physics = fit_adaptation(F, base * np.exp(oof), y, task=model.task, target=target,
                             noise=noise_of(records, target), level=model.calibration.level, seed=seed)
    cv = {**found.cv_error, **{f"physics {m}": v for m, v in physics.cv_error.items()}}
    if min(physics.cv_error.values()) >= min(found.cv_error.values()):
        return replace(plain, metadata={**plain.metadata, "adaptation": {
            **plain.metadata["adaptation"], "cv_mean_ape": cv, "physics_kept": False}})
    mode = physics.correction.mode
    report = {**physics.report(), "mode": "physics" if mode == "none" else f"physics+{mode}", "cv_mean_ape": cv,
              "physics_kept": True, "physics_columns": list(COLUMNS)}
    lineage = {**plain.metadata["adaptation"], **report}
    head = physics.regressor(PhysicsCorrected(inner, term))
    return replace(plain, heads=[head], calibration=physics.calibration or model.calibration,
                   metadata={**plain.metadata, "adaptation": lineage})

