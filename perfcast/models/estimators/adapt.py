"""Adapt a trained predictor to a new device from K measurements of it: level, shape residual, intervals.

Why a correction of the base model rather than a new model: K (32-512) measurements of one device are far too
few to learn a kernel's latency from scratch, but plenty to learn how the device differs from what the base
model (trained on other hardware, reading the new device's spec sheet) predicts. That difference,
``r = log(measured / base)``, is mostly

* a **level** per kernel kind (dtype, attention phase): the spec sheet misstates the achievable peak;
* a **shape** term: the efficiency curve over sizes differs (other tiles, caches, kernels), which a small,
  strongly regularised LightGBM learns from the base model's features and ``log(base)``.

**The guard.** Which of {none, level, level+shape} is used is decided by K-fold cross-validation on the K rows
themselves (out-of-fold mean APE, the metric the predictor is judged by: with errors of 2-3x on an unlike GPU,
a correction can shrink mean |r| yet raise the mean APE by trading under-predictions, whose APE is at most
100%, for over-predictions; the simpler one wins ties), pooled and again per kernel kind with enough rows
(:data:`MIN_KIND_ROWS`), so a correction the rows do not support is dropped where it does not help (a shape
term that fits prefill may hurt decode) and K = 0 (or too few rows to validate) is the base model exactly.

**Donors.** Other devices' measurements of the same configurations (:mod:`~perfcast.models.estimators.donor_mix`)
are offered to the same guard three ways: the nearest donor's latency as the start, a ridge mix of every
donor's latency under the correction, and the donors' latencies as features of the shape term.

**Per phase.** With ``per_phase``, an attention phase with enough rows is also adapted by the same guard on its
rows alone, and keeps that where its rows' folds find it better than the pooled adaptation (:func:`by_phase`).

**Floors.** With ``floor``, a kernel kind's level may come with a latency floor the base does not know
(:func:`~perfcast.models.estimators.adapt_correction.latency_floors`): the folds of a few small measured kernels at
a floor cannot see that their ratio must not multiply the large kernels, so the correction's form keeps it from it.

**Intervals.** The chosen correction's cross-fitted residuals on the K rows are the conformity scores of a
split-conformal interval (:class:`~perfcast.models.uncertainty.calibration.IntervalCalibration`, never narrower
than the rows' measured run-to-run noise), one quantile per Mondrian group (:data:`INTERVAL_GROUPS`: the attention
phase) with at least :data:`MIN_GROUP_ROWS` rows, the pooled quantile for the rest; with too few rows for a
finite quantile, the base's stays. :meth:`Adaptation.regrouped` re-draws the groups and scales the scores (one scale,
or one per phase), the scaled scores being what a bundle stores.

Public surface: :class:`~perfcast.models.estimators.adapt_correction.Correction` (numbers + LightGBM text),
:func:`fit_adaptation` (rows -> correction + calibration + the cross-validation report), :class:`AdaptedModel` (a
fitted in-memory base corrected), :class:`~perfcast.models.estimators.adapted_regressor.AdaptedRegressor` (a bundle's head
corrected, what :mod:`perfcast.models.persistence.adapted` saves; its own module, imported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from perfcast.models.estimators.adapt_correction import (MODES, SHAPED, Correction, FloorRule, cross_fitted,
                                                         fit_correction, mean_ape)
from perfcast.models.estimators.adapt_floor import supported_floors
from perfcast.models.estimators.adapt_krige import Kriging, KrigeRule, with_kriging
from perfcast.models.estimators.adapt_stack import SharedAlone, rescored, with_stack
from perfcast.models.estimators.adapted_regressor import INTERVAL_GROUPS, AdaptedRegressor, starting_point
from perfcast.models.estimators.donor_mix import DonorMix, DonorTable, cross_fitted_mix, fit_mix
from perfcast.models.estimators.hybrid import KIND_COLUMNS, KIND_PREFIXES, kernel_kinds
from perfcast.models.uncertainty.calibration import (
    IntervalCalibration,
    conformal_quantile,
    group_labels,
    noise_of,
)
from perfcast.models.uncertainty.weighted_conformal import reweighted

#: fewest rows the guard validates a correction on; below it the base model is kept unchanged
MIN_ROWS = 4
#: rows of one kernel kind from which the guard chooses that kind's correction by itself (else: the pooled choice)
MIN_KIND_ROWS = 8
#: cross-validation folds on the adaptation rows
N_SPLITS = 5
#: the donor mixes offered by default: configs/aiconfigurator_adapt.toml's setting chosen by leave-one-GPU-out
DEFAULT_MIXES: tuple[str, ...] = ("latency",)
#: whether the shape term reads the donors' latencies by default (the same setting)
DEFAULT_SHAPE_DONORS = True
#: whether the guard is offered the ``smooth`` shape term by default: no, though leave-one-GPU-out chose it at
#: K >= 128; its linear leaves are compiled (:mod:`perfcast.models.persistence.compiled_linear`) and a request costs
#: about what the base's does, but a batch still takes several times the base's time (benchmarks/PREDICT_SPEED.md)
DEFAULT_SMOOTH = False
#: whether a kernel kind with enough rows chooses among every shape term by default (else: none / level / the
#: pooled best shape term): no, leave-one-GPU-out chose it for no attention GPU and it changed no GEMM mean
DEFAULT_KIND_SHAPES = False
#: the share by which the kriging of the residuals left must cut their cross-validated error to be used by default
#: (None: not offered by default; the aiconfigurator-adapt preset's ``krige`` setting offers it,
#: benchmarks/ANALYSIS_adapt.md round 8). Not the default: it comes with ``smooth``, whose batch time is the cost above
DEFAULT_KRIGE: float | None = None
#: fewest adaptation rows of a group for its own interval quantile (fewer: the pooled one); None: pooled only.
#: The preset's threshold leave-one-GPU-out chose for every GPU at K >= 128 (benchmarks/ANALYSIS_adapt.md)
MIN_GROUP_ROWS: int | None = 20
#: the attention phases' :data:`INTERVAL_GROUPS` labels, named (for a result's notes)
PHASE_NAMES: dict[str, str] = {"none": "context", "is_decode": "generation"}


@dataclass
class Adaptation:
    """What :func:`fit_adaptation` found: the correction (fitted on every row), the device's interval
    calibration (None: keep the base's), and per candidate the cross-validated mean APE."""

    correction: Correction
    calibration: IntervalCalibration | None
    cv_error: dict[str, float]
    n_rows: int
    #: the donors' table (None: the correction reads no donor)
    donors: DonorTable | None = None
    #: the donor mix under the correction (None: no mix)
    mix: DonorMix | None = None
    #: the correction starts from the nearest donor's latency where it has one (else from the base model)
    from_donor: bool = False
    #: the chosen correction's cross-fitted |log error| per row, and each row's Mondrian group (the scores the
    #: calibration is made of, kept so :meth:`regrouped` can re-draw the groups without refitting)
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    #: the chosen correction's signed cross-fitted log residuals (``scores`` before the absolute value)
    residuals: np.ndarray | None = None
    #: the model of the K rows alone stacked with the correction (:mod:`~perfcast.models.estimators.adapt_stack`),
    #: with its weight in the geometric mean (0: not stacked)
    alone: Any = None
    alone_weight: float = 0.0
    #: the kriging of the residuals left (:mod:`~perfcast.models.estimators.adapt_krige`; None: not used)
    krige: Kriging | None = None
    #: each row's kernel kind as a Mondrian group (dtype, and phase for attention), and the flag columns naming it
    kind_labels: np.ndarray | None = None
    kind_columns: tuple[str, ...] = ()
    #: an attention phase's own adaptation (its :data:`INTERVAL_GROUPS` label -> one fitted on its rows alone), for
    #: each phase whose rows' folds chose it over this pooled one (see :func:`by_phase`); the rest use the pooled one
    phases: dict[str, Adaptation] = field(default_factory=dict)

    def regrouped(self, min_group_rows: int | None, by_kind: bool = False,
                  scale: float | Mapping[str, float] = 1.0, weights: np.ndarray | None = None) -> Adaptation:
        """This adaptation with one interval quantile per Mondrian group (:data:`INTERVAL_GROUPS`, or with
        ``by_kind`` the kernel kind) of at least ``min_group_rows`` rows, the pooled quantile for the rest (None:
        pooled only), every score times ``scale``: one number, or one per attention phase (a row's
        :data:`INTERVAL_GROUPS` label -> its scale, 1 for a label not named). Why a scale: the scores come from fold
        models fitted on 4/5 of the rows, which err more than the correction fitted on all of them; how much more
        is measured across devices (leave one GPU out in :mod:`perfcast.experiments.adapt_bench`), not on one
        device's rows, and differs between prefill and decode. ``weights``: each row's density ratio asked-about /
        measured rows (:func:`~perfcast.perf_probe.plan.represented`), every group's scores then re-drawn weighted
        for the plan's covariate shift (:func:`~perfcast.models.uncertainty.weighted_conformal.reweighted`). The
        scaled scores are what is stored (scale and weighting noted in ``grouping``), so a bundle reads them as any
        other."""
        cal = self.calibration
        if cal is None or self.scores is None:
            return self
        labels, columns = (self.kind_labels, list(self.kind_columns)) if by_kind else (self.labels,
                                                                                     list(INTERVAL_GROUPS))
        per_phase = isinstance(scale, Mapping)
        factors = np.array([float(scale.get(str(label), 1.0)) for label in self.labels]) if per_phase \
            else np.full(len(self.scores), float(scale))
        noted = {str(k): float(v) for k, v in sorted(scale.items())} if per_phase else float(scale)
        scores = self.scores * factors
        if weights is not None and len(weights) != len(scores):
            raise ValueError(f"regrouped: {len(weights)} weights for {len(scores)} adaptation rows (one per row)")
        groups = {}
        target = cal.targets[0]
        if min_group_rows is not None and len(set(labels)) > 1:
            for label in sorted(set(labels)):
                rows = labels == label
                own = reweighted(scores[rows], None if weights is None else weights[rows], cal.level)
                if rows.sum() >= min_group_rows and math.isfinite(conformal_quantile(own, cal.level)):
                    groups[str(label)] = {target: own}
        grouping = cal.grouping if (factors == 1.0).all() else {**cal.grouping, "score_scale": noted}
        grouping = grouping if weights is None else {**grouping, "shift_weighted": True}
        pooled = reweighted(scores, weights, cal.level)
        return replace(self, calibration=replace(cal, scores={target: pooled}, grouping=grouping,
                                                 group_columns=columns if groups else [], group_scores=groups))

    def report(self) -> dict[str, Any]:
        """A JSON summary for a model card / MLflow."""
        return {"mode": self.correction.mode, "kind_modes": dict(self.correction.kind_modes), "rows": self.n_rows,
                "cv_mean_ape": dict(self.cv_error), "recalibrated": self.calibration is not None,
                "starts_from": f"donor {self.donors.device}" if self.from_donor else "base model",
                "donors": None if self.donors is None else list(self.donors.devices),
                "donor_mix": None if self.mix is None else self.mix.to_json(),
                "shape_reads_donors": bool(self.correction.extra_columns), "chosen": self.chosen(),
                "latency_floors": dict(self.correction.floors),
                "k_rows_model_weight": float(self.alone_weight),
                "kriging": None if self.krige is None else self.krige.state()[0],
                "phases": {label: own.report() for label, own in self.phases.items()}}

    def chosen(self) -> str:
        """The key of ``cv_mean_ape`` that won (as :func:`fit_adaptation` names its candidates)."""
        if self.mix is not None:
            return f"mix {self.mix.name} {self.correction.mode}"
        return ("donor " if self.from_donor else "") + self.correction.mode

    def describe(self) -> str:
        """One phrase naming the chosen correction, for a result's notes."""
        text = self.correction.mode
        if self.mix is not None:
            text += f", on a {self.mix.name} mix of {len(self.donors.devices)} donors"
        if self.correction.extra_columns:
            text += ", shape term reading the donors' latencies"
        if self.correction.floors:
            text += ", latency floor for " + ", ".join(f"{k} ({f:.3g})" for k, f in sorted(self.correction.floors.items()))
        if self.from_donor:
            text += f", started from {self.donors.device}'s latencies"
        if self.alone_weight:
            text += f", stacked with a model of the K rows alone (weight {self.alone_weight:g})"
        if self.krige is not None:
            text += f", residuals kriged (length {self.krige.length_scale:g}, weight {self.krige.weight:g})"
        return text + "".join(f"; {PHASE_NAMES.get(label, label)} rows: their own {own.describe()}"
                              for label, own in self.phases.items())

    def regressor(self, inner: Any) -> AdaptedRegressor:
        """``inner`` (the base estimator) corrected as found."""
        return AdaptedRegressor(inner, self.correction, self.donors, self.mix, self.from_donor, self.alone,
                                self.alone_weight, self.krige, [own.regressor(None) for own in self.phases.values()],
                                tuple(self.phases))


def fit_adaptation(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, *, task: str, target: str = "runtime_ms",
                   noise: np.ndarray | None = None, level: float = 0.9, seed: int = 0,
                   donors: DonorTable | None = None, mixes: Sequence[str] = (), shape_donors: bool = False,
                   smooth: bool = DEFAULT_SMOOTH, min_group_rows: int | None = MIN_GROUP_ROWS,
                   kind_shapes: bool = DEFAULT_KIND_SHAPES, stack: bool = True,
                   krige: float | KrigeRule | None = DEFAULT_KRIGE, per_phase: int | None = None,
                   per_phase_stack: bool = False, floor: float | None = None, grow_trees: bool = False) -> Adaptation:
    """Choose and fit the correction (see :func:`fit_correction_of`) of the base model; with ``donors``, also of
    the nearest donor's latencies, and of the better of the two times each of ``mixes`` (names in
    :data:`~perfcast.models.estimators.donor_mix.MIXES`; cross-fitted, so the choice and the intervals see the
    mix's out-of-sample errors), keeping whichever cross-validates best on the rows (the simpler wins ties).
    ``shape_donors``: the shape term also reads each donor's log latency over the start; ``smooth``: the
    ``smooth`` shape term is offered too; ``min_group_rows``: see :meth:`Adaptation.regrouped`; ``kind_shapes``:
    see :func:`fit_correction_of`; ``stack``: offer a model of the rows alone stacked with it (:func:`with_stack`;
    a caller that keeps only the correction passes False); ``krige``: then offer the kriging of the residuals
    left if it cuts their cross-validated error by this share (None: not offered; a KrigeRule: its share, with its
    length scales and stretched columns; see :func:`last_stages`);
    ``per_phase``: an attention phase with at least this many rows is also adapted on its rows alone, and keeps
    that where its rows' folds find it better (None: one adaptation for every row; see :func:`by_phase`);
    ``per_phase_stack``: a phase's own guard is offered the model of ALL the K rows stacked (cross-fitted on the
    pooled guard's folds, :class:`~perfcast.models.estimators.adapt_stack.SharedAlone`) instead of one of its rows
    alone, so it has the stack wherever the pooled guard has it (a phase's rows alone are often too few); ``floor``:
    a kernel kind's level may come with a latency floor of at least that share of its median latency
    (:func:`~perfcast.models.estimators.adapt_correction.latency_floors`; None: levels only); ``grow_trees``: every
    shape term's tree budget grows with its rows (:func:`~perfcast.models.estimators.adapt_correction.tree_budget`)."""
    if per_phase_stack and per_phase is None:
        raise ValueError("fit_adaptation: per_phase_stack=True needs per_phase (the fewest rows of a phase adapted "
                         "by its own guard); pass per_phase=n or drop per_phase_stack")
    base = np.asarray(base, dtype="float64").ravel()
    y = np.asarray(y, dtype="float64").ravel()
    ok = np.isfinite(y) & (y > 0) & np.isfinite(base) & (base > 0)
    F, base, y = F.loc[ok], base[ok], y[ok]
    noise = None if noise is None else np.asarray(noise, dtype="float64")[ok]
    shared = None
    if per_phase_stack and stack and len(y) >= N_SPLITS:  # on the pooled guard's folds (:func:`last_stages`)
        from sklearn.model_selection import KFold  # fitting only: loading an adapted bundle skips scikit-learn
        folds = list(KFold(n_splits=N_SPLITS, shuffle=True, random_state=seed).split(np.arange(len(y))))
        shared = SharedAlone.fit(F, y, target, seed, folds)
    found = _pooled(F, base, y, task=task, target=target, noise=noise, level=level, seed=seed, donors=donors,
                    mixes=mixes, shape_donors=shape_donors, smooth=smooth, kind_shapes=kind_shapes, stack=stack,
                    krige=krige, shared=shared, floor=floor, grow_trees=grow_trees)
    if per_phase is not None:
        found = by_phase(found, F, y, per_phase, lambda rows: _pooled(
            F.loc[rows], base[rows], y[rows], task=task, target=target,
            noise=None if noise is None else noise[rows], level=level, seed=seed, donors=donors, mixes=mixes,
            shape_donors=shape_donors, smooth=smooth, kind_shapes=kind_shapes, stack=stack, krige=krige,
            shared=None if shared is None else shared.of(rows), floor=floor, grow_trees=grow_trees))
    return found.regrouped(min_group_rows)


def _pooled(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, *, task: str, target: str, noise: np.ndarray | None,
            level: float, seed: int, donors: DonorTable | None, mixes: Sequence[str], shape_donors: bool,
            smooth: bool, kind_shapes: bool, stack: bool, krige: float | KrigeRule | None,
            shared: SharedAlone | None = None, floor: float | None = None, grow_trees: bool = False) -> Adaptation:
    """:func:`fit_adaptation` of rows ``F`` (every one measured, base and latency positive) by one guard for all of
    them, its intervals not yet grouped (``shared``: see :func:`last_stages`)."""
    if donors is None or len(y) < 2 * N_SPLITS:
        found = fit_correction_of(F, base, y, task=task, target=target, noise=noise, level=level, seed=seed,
                                  smooth=smooth, kind_shapes=kind_shapes, floor=floor, grow_trees=grow_trees)
        return last_stages(found, F, base, y, task, target, seed, stack, krige, shared)

    def attempt(start: np.ndarray) -> Adaptation:
        extra = donors.latencies(F, np.log(start)) if shape_donors else None
        return replace(fit_correction_of(F, start, y, task=task, target=target, noise=noise, level=level, seed=seed,
                                         extra=extra, smooth=smooth, kind_shapes=kind_shapes, floor=floor,
                                         grow_trees=grow_trees),
                       donors=donors if shape_donors else None)

    found, errors = attempt(base), {}
    errors.update(found.cv_error)
    start = donors.start(F, base)
    if not np.array_equal(start, base):  # the donor measured some of the rows
        other = attempt(start)
        errors.update({f"donor {m}": v for m, v in other.cv_error.items()})
        if min(other.cv_error.values()) < min(found.cv_error.values()):
            found = replace(other, donors=donors, from_donor=True)
    start = starting_point(donors, F, base, from_donor=found.from_donor)
    r = np.log(y / start)
    from sklearn.model_selection import KFold  # fitting only: loading an adapted bundle skips scikit-learn
    folds = list(KFold(n_splits=N_SPLITS, shuffle=True, random_state=seed).split(r))
    for name in mixes:
        if name.startswith("error") and donors.log_error is None:
            continue  # a table built without the base's predictions has no errors to mix
        other = attempt(start * np.exp(cross_fitted_mix(donors, F, start, r, folds, name=name)))
        errors.update({f"mix {name} {m}": v for m, v in other.cv_error.items()})
        if min(other.cv_error.values()) < min(found.cv_error.values()):
            found = replace(other, donors=donors, from_donor=found.from_donor,
                            mix=fit_mix(donors, F, start, r, name=name))
    found = replace(found, cv_error=errors)
    return last_stages(found, F, base, y, task, target, seed, stack, krige, shared)


def by_phase(found: Adaptation, F: pd.DataFrame, y: np.ndarray, least: int,
             fit: Callable[[np.ndarray], Adaptation]) -> Adaptation:
    """``found`` (one adaptation of every row ``F``) with, for each attention phase (:data:`INTERVAL_GROUPS` label)
    of at least ``least`` rows, ``fit(rows)`` (the same guard on that phase's rows alone) where its cross-fitted
    mean APE on them is below ``found``'s (ties: the pooled one). Why: one guard chooses the start, mix, shape
    term, stack and kriging by the pooled error of both phases, and a near-tie won by prefill can cost decode;
    each phase's own folds choose for it only where it has rows enough to validate a choice. The intervals are
    recalibrated on each row's chosen cross-fitted residual."""
    if found.residuals is None or found.calibration is None:
        return found
    labels = group_labels(F, list(INTERVAL_GROUPS))
    if len(set(labels)) < 2:
        return found
    residuals, phases, errors = found.residuals.copy(), {}, dict(found.cv_error)
    for label in sorted(set(labels)):
        rows = labels == label
        if rows.sum() < least:
            continue
        own = fit(rows)
        if own.residuals is None:
            continue
        errors.update({f"{PHASE_NAMES.get(label, label)} alone": mean_ape(own.residuals),
                       f"{PHASE_NAMES.get(label, label)} pooled": mean_ape(found.residuals[rows])})
        if mean_ape(own.residuals) < mean_ape(found.residuals[rows]):
            phases[label], residuals[rows] = own, own.residuals
    found = replace(found, cv_error=errors)
    return rescored(found, residuals, phases=phases) if phases else found


def last_stages(found: Adaptation, F: pd.DataFrame, base: np.ndarray, y: np.ndarray, task: str, target: str,
                seed: int, stack: bool, krige: float | KrigeRule | None,
                shared: SharedAlone | None = None) -> Adaptation:
    """``found`` then, if asked, offered the stack (:func:`~perfcast.models.estimators.adapt_stack.with_stack`;
    ``shared``: of that K-rows model, not one of these rows alone) and the kriging (:func:`~perfcast.models.estimators.adapt_krige.with_kriging`, used where it cuts the
    cross-validated error by the share ``krige``; a negative share: even where the folds find it slightly worse,
    as the K rows' folds understate its gain on a device's denser table), on the guard's folds."""
    if found.residuals is None or found.calibration is None or not (stack or krige is not None):
        return found
    from sklearn.model_selection import KFold  # fitting only: loading an adapted bundle skips scikit-learn
    folds = list(KFold(n_splits=N_SPLITS, shuffle=True, random_state=seed).split(np.arange(len(y))))
    found = with_stack(found, F, y, target, seed, folds, shared) if stack else found
    return with_kriging(found, F, base, task, folds, krige) if krige is not None else found


def fit_correction_of(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, *, task: str, target: str = "runtime_ms",
                      noise: np.ndarray | None = None, level: float = 0.9, seed: int = 0,
                      extra: np.ndarray | None = None, smooth: bool = DEFAULT_SMOOTH,
                      kind_shapes: bool = DEFAULT_KIND_SHAPES, floor: float | FloorRule | None = None,
                      grow_trees: bool = False) -> Adaptation:
    """Choose and fit the correction of ``base`` (the base predictions of rows ``F``) toward measurements
    ``y`` (see the module docstring), and the device's interval calibration from its cross-fitted residuals.
    ``noise``: each row's measured run-to-run variation (NaN: unknown); ``smooth``: offer that shape term too;
    ``kind_shapes``: a kernel kind with enough rows chooses among every shape term, not only the pooled best;
    ``floor``: a kernel kind's level may come with a dominant latency floor where its folds support it
    (:func:`~perfcast.models.estimators.adapt_floor.supported_floors`; a FloorRule: with those floors);
    ``grow_trees``: every shape term's tree budget grows with its rows
    (:func:`~perfcast.models.estimators.adapt_correction.tree_budget`)."""
    base = np.asarray(base, dtype="float64").ravel()
    y = np.asarray(y, dtype="float64").ravel()
    ok = np.isfinite(y) & (y > 0) & np.isfinite(base) & (base > 0)
    F, base, y = F.loc[ok] if not ok.all() else F, base[ok], y[ok]
    extra = None if extra is None else extra[ok]
    n = len(y)
    if n < MIN_ROWS:
        return Adaptation(Correction(), None, {}, n)
    if floor is not None and not isinstance(floor, FloorRule):  # a share: the floors the folds support
        return supported_floors(lambda rule: fit_correction_of(F, base, y, task=task, target=target, level=level,
            noise=None if noise is None else np.asarray(noise)[ok], seed=seed, extra=extra, smooth=smooth,
            kind_shapes=kind_shapes, floor=rule, grow_trees=grow_trees), kernel_kinds(F).to_numpy(), base, y,
            float(floor))
    from sklearn.model_selection import KFold  # fitting only: loading an adapted bundle skips scikit-learn
    folds = list(KFold(n_splits=min(N_SPLITS, n), shuffle=True, random_state=seed).split(np.arange(n)))
    modes = MODES if smooth else tuple(m for m in MODES if m != "smooth")
    oof = cross_fitted(F, base, y, folds, modes, task, seed, extra, floor, grow_trees)
    cv_error = {m: mean_ape(oof[m]) for m in modes}
    offered = ("none", "level", _best(cv_error, tuple(m for m in SHAPED if m in modes)))  # one shape term per correction
    best = _best(cv_error, offered)
    among = modes if kind_shapes else offered
    kinds = kernel_kinds(F).to_numpy()
    kind_modes = {}
    for kind in pd.unique(kinds):
        rows = kinds == kind
        if rows.sum() >= MIN_KIND_ROWS:
            kind_modes[str(kind)] = _best({m: mean_ape(oof[m][rows]) for m in among}, among)
    used = np.array([kind_modes.get(str(kind), best) for kind in kinds], dtype=object)
    shaped = [m for m in among if m in SHAPED and m in used]  # each shape term some kind reads, fitted on every row
    first = offered[-1] if offered[-1] in shaped else max(used, key=MODES.index)
    correction = fit_correction(F, base, y, first, task, seed, extra, floor, grow_trees=grow_trees)
    more = {m: fit_correction(F, base, y, m, task, seed, extra, floor, grow_trees=grow_trees).shape_text
            for m in shaped if m != first}
    correction = replace(correction, mode=best, kind_modes={k: m for k, m in kind_modes.items() if m != best},
                         more_shapes=more)
    chosen = np.select([used == m for m in among], [oof[m] for m in among])
    scores = np.sort(np.abs(chosen))
    calibration = None
    if math.isfinite(conformal_quantile(scores, level)):
        cv = np.asarray(noise, dtype="float64")[ok] if noise is not None else np.array([])
        measured = cv[np.isfinite(cv)]
        calibration = IntervalCalibration([target], {target: scores},
                                          {target: float(np.median(measured)) if len(measured) else np.nan},
                                          float(level), {"by": "adaptation rows (cross-fitted)", "n_splits": len(folds),
                                                         "n_groups": n})
    kind_columns = tuple(c for c in F.columns if c.startswith(KIND_PREFIXES) or c in KIND_COLUMNS)
    return Adaptation(correction, calibration, cv_error, n, scores=np.abs(chosen),
                      labels=group_labels(F, list(INTERVAL_GROUPS)), residuals=chosen,
                      kind_labels=group_labels(F, list(kind_columns)), kind_columns=kind_columns)


def _best(errors: dict[str, float], among: tuple[str, ...] = MODES) -> str:
    """The mode of ``among`` of least error, the simplest on a tie."""
    return min(among, key=lambda m: (round(errors[m], 12), MODES.index(m)))


class AdaptedModel:
    """A fitted in-memory base model (a :class:`~perfcast.models.uncertainty.intervals.ConformalRegressor` around a
    perfcast pipeline) corrected for one device by :func:`fit_adaptation` on that device's records. ``fit`` with no
    rows keeps the base model exactly; ``predict`` / ``predict_with_interval`` mirror the ConformalRegressor's."""

    def __init__(self, base: Any, target: str = "runtime_ms", level: float | None = None, seed: int = 0,
                 donors: DonorTable | None = None, mixes: Sequence[str] = (), shape_donors: bool = False,
                 smooth: bool = DEFAULT_SMOOTH, min_group_rows: int | None = MIN_GROUP_ROWS,
                 kind_shapes: bool = DEFAULT_KIND_SHAPES, krige: float | KrigeRule | None = DEFAULT_KRIGE,
                 per_phase: int | None = None, per_phase_stack: bool = False, floor: float | None = None,
                 grow_trees: bool = False):
        self.base = base
        self.target = target
        self.level = level
        self.seed = seed
        self.donors = donors
        self.mixes = mixes
        self.shape_donors = shape_donors
        self.smooth = smooth
        self.min_group_rows = min_group_rows
        self.kind_shapes = kind_shapes
        self.krige = krige
        self.per_phase = per_phase
        self.per_phase_stack = per_phase_stack
        self.floor = floor
        self.grow_trees = grow_trees

    def parts(self, X: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """(features, base prediction) of ``X``: compute once and pass as ``parts=`` to reuse them (row
        selections of both stay aligned)."""
        F = self.base.estimator_[0].transform(X)
        return F, np.asarray(self.base.estimator_[-1].predict(F), dtype="float64").reshape(len(X), -1)[:, 0]

    def fit(self, records: pd.DataFrame, parts: tuple[pd.DataFrame, np.ndarray] | None = None) -> AdaptedModel:
        """Adapt on the device's ``records`` (no rows: the base model unchanged)."""
        level = self.level if self.level is not None else self.base.calibration_.level
        if len(records) == 0:
            self.adaptation_ = Adaptation(Correction(), None, {}, 0)
            return self
        F, base = parts if parts is not None else self.parts(records)
        self.adaptation_ = fit_adaptation(F, base, records[self.target].to_numpy(dtype="float64"),
                                          task=self.base.estimator_[0].task, target=self.target,
                                          noise=noise_of(records, self.target), level=level, seed=self.seed,
                                          donors=self.donors, mixes=self.mixes,
                                          shape_donors=self.shape_donors, smooth=self.smooth,
                                          min_group_rows=self.min_group_rows, kind_shapes=self.kind_shapes,
                                          krige=self.krige, per_phase=self.per_phase,
                                          per_phase_stack=self.per_phase_stack, floor=self.floor,
                                          grow_trees=self.grow_trees)
        return self

    def predict_with_interval(self, X: pd.DataFrame, level: float | None = None,
                              parts: tuple[pd.DataFrame, np.ndarray] | None = None
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, lo, hi) of the adapted target (1-D), one pass of the base model (none with ``parts``)."""
        a = self.adaptation_
        if a.correction.mode == "none" and not a.correction.kind_modes and a.calibration is None:
            pred, lo, hi = self.base.predict_with_interval(X, level)
            return tuple(np.asarray(v, dtype="float64").reshape(len(X), -1)[:, 0] for v in (pred, lo, hi))
        F, base = parts if parts is not None else self.parts(X)
        pred = a.regressor(None).adjust(F, base)
        return (pred, *self.interval(X, pred, (F, base), level))

    def interval(self, X: pd.DataFrame, pred: np.ndarray, parts: tuple[pd.DataFrame, np.ndarray],
                 level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) around the adapted prediction ``pred`` of rows ``X`` (``parts``: their features and base
        predictions), so intervals of several calibrations of one correction need one prediction."""
        cal = self.adaptation_.calibration
        F, base = parts
        if cal is None:  # too few rows for a finite quantile: the base model's interval, moved with the prediction
            _, lo, hi = self.base.predict_with_interval(X, level)
            ratio = pred / base
            return np.asarray(lo, dtype="float64").ravel() * ratio, np.asarray(hi, dtype="float64").ravel() * ratio
        lo, hi = cal.bounds(pred.reshape(-1, 1), cal.noise(X, len(X)), level, features=F)
        return lo[:, 0], hi[:, 0]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_with_interval(X)[0]
