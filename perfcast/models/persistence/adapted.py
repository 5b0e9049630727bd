"""Adapting a loaded bundle to one device, and saving the result as a bundle of its own.

Why here and not beside the correction (:mod:`perfcast.models.estimators.adapt`): these read and write bundles,
so they sit above both the estimators and the bundle code, and neither of those imports the other for them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.models.estimators.adapt import (
    DEFAULT_KRIGE,
    DEFAULT_MIXES,
    DEFAULT_SHAPE_DONORS,
    DEFAULT_SMOOTH,
    MIN_GROUP_ROWS,
    Adaptation,
    AdaptedRegressor,
    Correction,
    fit_adaptation,
    noise_of,
)
from perfcast.models.estimators.adapt_correction import DEFAULT_FLOORS
from perfcast.models.estimators.adapt_krige import KrigeRule, krige_rule
from perfcast.models.estimators.donor_mix import DonorTable
from perfcast.models.persistence.bundle import PerfcastModel, write_bundle
from perfcast.perf_probe.plan import represented


#: the named settings a user adapts with (`perfcast adapt --setting`, ``Predictor.adapt(setting=)``): ``fast``,
#: :func:`adapt_loaded`'s defaults, keeps an adapted bundle about as fast as its base; ``accurate`` is what the
#: aiconfigurator-adapt benchmark's leave-one-GPU-out chose per task and K (configs/aiconfigurator_adapt.toml:
#: GEMM ``krige_grow`` on few rows, ``krige`` on more; attention ``krige_phase_stack_kvw`` up to a few hundred rows,
#: ``krige_phase_kvw`` above, with the preset's ``attention_floor``), whose batches take a few times the base's
#: (benchmarks/PREDICT_SPEED.md)
SETTINGS: tuple[str, ...] = ("fast", "accurate")
#: ``accurate``, every task: the smooth shape term and the kriging of its residuals, used by default
ACCURATE: dict[str, Any] = {"smooth": True, "krige": -1.0}
#: ``accurate``, attention: the kriging's folds also choose how far apart the KV cache's dtypes sit (``kv_bytes``,
#: factor 0 the plain kriging) and may take a shorter length scale, as the preset's ``krige_phase_kvw`` and
#: ``krige_phase_stack_kvw`` settings, which leave-one-GPU-out chose in their parents' place: an fp8-KV decode
#: kernel's residual is otherwise interpolated from bf16-KV neighbours whose code path errs differently
ACCURATE_ATTENTION_KRIGE = krige_rule(ACCURATE["krige"], {"kv_bytes": [0.0, 0.5, 3.0]}, [0.25, 0.5, 1.0, 2.0],
                                      "attention")
#: ``accurate``, attention: each phase with this many rows adapted on its own too (its latency floor is
#: :data:`~perfcast.models.estimators.adapt_correction.DEFAULT_FLOORS`', as in every setting)
ACCURATE_PHASE_ROWS = 40
#: ``accurate``, attention: below this many rows a phase's guard stacks the model of all rows (chosen at 128 rows on
#: every GPU; the unstacked one at 512; the geometric midpoint between the two)
ACCURATE_STACK_BELOW = 256
#: ``accurate``, GEMM: below this many rows the shape terms' tree budget grows with their rows (``krige_grow``,
#: chosen at 32 rows on every GPU; ``krige`` at 128; the geometric midpoint between the two)
ACCURATE_GROW_BELOW = 64


def setting_options(setting: str, task: str, n_rows: int) -> dict[str, Any]:
    """:func:`adapt_loaded`'s keyword arguments for the named ``setting`` (see :data:`SETTINGS`) on ``n_rows`` rows."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown adaptation setting {setting!r}; choose one of {', '.join(SETTINGS)}")
    if setting == "fast":
        return {}
    if task != "attention":
        return {**ACCURATE, "grow_trees": True} if n_rows < ACCURATE_GROW_BELOW else dict(ACCURATE)
    return {**ACCURATE, "krige": ACCURATE_ATTENTION_KRIGE, "per_phase": ACCURATE_PHASE_ROWS,
            "per_phase_stack": n_rows < ACCURATE_STACK_BELOW}


def adapt_loaded(model: PerfcastModel, records: pd.DataFrame, *, seed: int = 0, donors: pd.DataFrame | None = None,
                 mixes: Sequence[str] = DEFAULT_MIXES, shape_donors: bool = DEFAULT_SHAPE_DONORS,
                 smooth: bool = DEFAULT_SMOOTH, krige: float | KrigeRule | None = DEFAULT_KRIGE,
                 per_phase: int | None = None, per_phase_stack: bool = False, grow_trees: bool = False,
                 candidates: pd.DataFrame | None = None,
                 floors: Mapping[str, float] = DEFAULT_FLOORS) -> tuple[PerfcastModel, Adaptation]:
    """A loaded :class:`~perfcast.models.persistence.bundle.PerfcastModel` corrected on ``records`` (a new model
    object; the base is untouched), and what the adaptation found. Single-target models, and joint runtime + power
    models (:func:`perfcast.models.persistence.power_adapted.adapt_joint_loaded`: a report, no donors). ``donors``:
    other devices' measured records of the same task (the first device named is the nearest), offered as a starting
    point and as the donor mix's errors (see :mod:`perfcast.models.estimators.donor_mix`); ``mixes``: the mixes
    offered; ``shape_donors``: the shape term may read the donors' latencies; ``smooth``, ``krige``, ``per_phase``,
    ``per_phase_stack`` and ``grow_trees``: see :func:`~perfcast.models.estimators.adapt.fit_adaptation`; ``floors``: per task, the
    ``floor`` share offered to the guard (a task not named: none); ``candidates``: the
    configurations the device will be asked about (e.g. the probe's space), the intervals then weighted for the
    shift between them and ``records`` (:meth:`~perfcast.models.estimators.adapt.Adaptation.regrouped`)."""
    if model.joint or len(model.targets) != 1:
        from perfcast.models.estimators.power_adapt import adapts_jointly
        from perfcast.models.persistence.power_adapted import adapt_joint_loaded

        if adapts_jointly(list(model.targets)):  # runtime + power (+ energy): each measured target corrected
            return adapt_joint_loaded(model, records, seed=seed)
        raise ValueError(f"adaptation corrects single-target models; this one predicts {model.targets}")
    target = model.targets[0]
    if target not in records.columns:
        raise ValueError(f"the adaptation records have no {target!r} column to correct the model with")
    inner = model.heads[0]
    inner = inner.inner if isinstance(inner, AdaptedRegressor) else inner  # re-adapting starts from the base again
    if len(records):
        F = model.features.transform(records)
        base = np.asarray(inner.predict(F), dtype="float64").reshape(len(F))
        table = None
        if donors is not None and len(donors):
            named = donors["device_id"].fillna(donors["device_name"]).astype(str).to_numpy()
            Fd = model.features.transform(donors)
            errors = any(m.startswith("error") for m in mixes)  # only an error mix needs the base on the donors
            table = DonorTable.build(list(pd.unique(named)), Fd, donors[target].to_numpy(dtype="float64"),
                                     model.task, device_of=named,
                                     base=np.asarray(inner.predict(Fd), dtype="float64").reshape(len(Fd))
                                     if errors else None)
        found = fit_adaptation(F, base, records[target].to_numpy(dtype="float64"), task=model.task, target=target,
                               noise=noise_of(records, target), level=model.calibration.level, seed=seed,
                               donors=table, mixes=mixes, shape_donors=shape_donors, smooth=smooth, krige=krige,
                               per_phase=per_phase, per_phase_stack=per_phase_stack, floor=floors.get(model.task),
                               grow_trees=grow_trees)
        if candidates is not None and found.scores is not None:  # the rows fit_adaptation kept: measured, base > 0
            y = records[target].to_numpy(dtype="float64")
            kept = np.isfinite(y) & (y > 0) & np.isfinite(base) & (base > 0)
            found = found.regrouped(MIN_GROUP_ROWS, weights=represented(candidates, records, model.task)[kept])
        domain = model.domain.extended(records, F)
    else:
        found, domain = Adaptation(Correction(), None, {}, 0), model.domain
    calibration = found.calibration or model.calibration
    lineage = {**found.report(), "base_model": str(model.path),
               "base_metadata": {k: v for k, v in model.metadata.items() if k != "adaptation"}}
    adapted = PerfcastModel(model.path, model.task, list(model.targets), model.features,
                            [found.regressor(inner)], False, calibration,
                            domain, {**model.metadata, "adaptation": lineage}, dict(model.versions))
    return adapted, found


def save_adapted(model: PerfcastModel, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> Path:
    """Write an adapted model (from :func:`adapt_loaded`) as a new bundle: its base and correction through the
    state protocol, the device's calibration, lineage in the metadata (never half-written)."""
    from perfcast.models.persistence.power_adapted import is_joint_adapted

    joint = is_joint_adapted(model)
    if len(model.heads) != 1 or not (joint or isinstance(model.heads[0], AdaptedRegressor)):
        raise ValueError("save_adapted writes a model returned by adapt_loaded / Predictor.adapt")
    return write_bundle(path, model.task, list(model.targets), model.features, list(model.heads), joint,
                        model.calibration, model.domain, {**model.metadata, **(metadata or {})})
