"""Zero-shot (K = 0) interval variants re-drawn from a base model's cross-fitted calibration rows.

Why: one conformal quantile per model (the attention default) gives a near-twin of a trained GPU (a GB300 beside
a trained B300, ~10% error) the same width as a GPU unlike any trained one (the Intel B60, ~60%): the one is
covered 100%, the other a quarter of the time. How the width should depend on the device is not known in
advance, so several rules are drawn from the same cross-fitted rows (:class:`CrossFitted`: every training row
scored by the fold model that did not see its device) and one is chosen per left-out GPU by leave-one-GPU-out on
the other GPUs' coverage (:mod:`perfcast.experiments.adapt_bench`). A rule is a :data:`Variant`:

* **width** as a function of the spec-sheet distance ``d`` of the row's device to the nearest hardware its model
  was fitted on (:class:`~perfcast.models.uncertainty.novelty.HardwareNovelty`): ``pooled`` (none), ``isotonic``
  (the ``scale = true`` of the GEMM presets: flat beyond the calibrated distances), ``linear`` (least squares of
  |log error| on d: it keeps growing past the farthest calibration device) or ``device`` (each held-out device's
  90% quantile of |log error| regressed on its mean distance: the quantile itself, not the mean, is extrapolated);
  scores are divided by that σ(d) and the conformal quantile of the quotients is taken;
* **groups** (Mondrian): one quantile per attention phase (``phase``) or per kernel kind (``kind``: dtype, and
  phase for attention), from at least :data:`MIN_GROUP_ROWS` rows;
* **scale** of the half-width (the folds' models are fitted on fewer devices than the final one).

The base model's own (preset) intervals are a candidate too (:data:`PRESET`); the guard of :func:`select_variants`
(opt-in) keeps them unless choosing among the variants also did better one level deeper.

**Out of distribution** (stated in advance, not chosen): a device whose vendor no training row has (the Intel B60
among NVIDIA parts) gets at least the largest per-device quantile of the cross-fitted rows, and is flagged.

**Served**: a variant fitted is a :class:`~perfcast.models.uncertainty.calibration.ZeroShotRule` (plain numbers in
the model's :class:`~perfcast.models.uncertainty.calibration.IntervalCalibration`, saved in its bundle's manifest);
:meth:`CrossFittedScores.bounds` draws the benchmark's bounds through the same code a loaded ``Predictor`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from perfcast.models.estimators.hybrid import KIND_COLUMNS, KIND_PREFIXES
from perfcast.models.estimators.vendor import vendors
from perfcast.models.uncertainty.calibration import (
    MIN_SPREAD,
    IntervalCalibration,
    Spread,
    Width,
    ZeroShotRule,
    conformal_quantile,
    group_labels,
)
from perfcast.models.uncertainty.intervals import log_ratio_scores, novelty_columns
from perfcast.models.uncertainty.novelty import HardwareNovelty

#: (width rule, Mondrian groups or None, half-width scale, calibrated on the entries matched by vendor novelty)
Variant = tuple[str, str | None, float, bool]
WIDTHS: tuple[str, ...] = ("pooled", "isotonic", "linear", "device")
#: the candidate that keeps the base model's own (preset) intervals: a family where no variant helps keeps them
PRESET: Variant = ("preset", None, 1.0, False)
#: fewest cross-fitted rows of a Mondrian group for its own quantile (fewer: the pooled one)
MIN_GROUP_ROWS = 50
#: fewest cross-fitted rows of a held-out device for its own quantile (``device`` width, OOD rule)
MIN_DEVICE_ROWS = 20
#: the attention phase flag (Mondrian ``phase`` groups)
PHASE_COLUMNS: tuple[str, ...] = ("is_decode",)
#: suffix of a Mondrian grouping whose groups also fit their own σ(d)
OWN = " own"
#: how :func:`select_variants` scores a candidate on the other devices' (device, part) coverages, before the mean
#: |coverage - level| (its tie-break): ``count``, the share outside the band; ``distance``, the mean distance
#: outside it (a part at 79% counts as little as it misses by: under ``count`` one part crossing the band's edge
#: can swap the choice for a rule that misses every other part by far more; benchmarks/ANALYSIS_k0cov.md round 2)
OBJECTIVES: tuple[str, ...] = ("count", "distance")


def kind_columns(F: pd.DataFrame) -> list[str]:
    """The flag columns naming a row's kernel kind (dtype one-hots, and the attention phase)."""
    return [c for c in F.columns if c.startswith(KIND_PREFIXES) or c in KIND_COLUMNS]


def labels_of(F: pd.DataFrame, group: str | None) -> np.ndarray:
    """Each row's Mondrian label under ``group`` (None: one group)."""
    if group is None:
        return np.full(len(F), "all", dtype=object)
    return group_labels(F, list(PHASE_COLUMNS) if group == "phase" else kind_columns(F))


@dataclass
class CrossFittedScores:
    """A base model's cross-fitted calibration entries described for re-drawing its intervals: each entry's
    |log(y / ŷ)| by the fold model that did not see its device, that device's distance to the fold's fitting
    hardware, its device, whether the device was in the fold's fitting rows (a ``seen_share`` row), and its
    feature rows (for Mondrian labels); plus the novelty reference of all training hardware and its vendors."""

    score: np.ndarray
    distance: np.ndarray
    device: np.ndarray
    seen: np.ndarray
    features: pd.DataFrame
    novelty: HardwareNovelty
    vendors: frozenset[str]
    #: the entry's vendor was in none of its fold's fitting rows (a foreign stack, as the B60 among NVIDIA parts)
    foreign: np.ndarray
    #: the base model's own calibration (what :data:`PRESET` serves, and what a chosen rule is added to)
    base: IntervalCalibration

    @classmethod
    def of(cls, model: Any, X: pd.DataFrame, y: np.ndarray, devices: np.ndarray) -> CrossFittedScores:
        """From a fitted :class:`~perfcast.models.uncertainty.intervals.ConformalRegressor` (its ``cross_fitted_``),
        its training input ``X``, first target ``y`` and the rows' device ids."""
        cf = model.cross_fitted_
        step = model.estimator_[0]
        F = step.transform(X).reset_index(drop=True)
        novelty = HardwareNovelty.fit(F, novelty_columns(model.estimator, step.task))
        devices = np.asarray(devices, dtype=object)
        vendor = vendors(F)
        distance, seen, start = np.empty(len(cf.row)), np.empty(len(cf.row), dtype=bool), 0
        foreign = np.empty(len(cf.row), dtype=bool)
        for fit_idx, held_idx in cf.folds:
            part = slice(start, start + len(held_idx))
            distance[part] = novelty.distance(F.iloc[held_idx], among=F.iloc[fit_idx])
            seen[part] = np.isin(devices[held_idx], devices[fit_idx])
            foreign[part] = ~np.isin(vendor[held_idx], vendor[fit_idx])
            start += len(held_idx)
        score = log_ratio_scores(np.asarray(y, dtype="float64")[cf.row], cf.pred[:, 0])
        keep = np.isfinite(np.asarray(y, dtype="float64")[cf.row]) & ~np.isnan(cf.pred[:, 0])
        return cls(score[keep], distance[keep], devices[cf.row][keep], seen[keep],
                   F.iloc[cf.row[keep]].reset_index(drop=True), novelty, frozenset(vendor), foreign[keep],
                   model.calibration_)

    def spread(self, width: str, level: float, among: np.ndarray | None = None) -> Spread | None:
        """σ(d) of a width rule fitted on the entries ``among`` (a mask; default every one). None: ``pooled``, or
        the entries leave nothing to fit. Remembered per arguments: the variants of a grid share a few fits."""
        memo = self.__dict__.setdefault("_spreads", {})
        key = (width, level, None if among is None else np.packbits(among).tobytes())
        if key not in memo:
            memo[key] = self._fit_spread(width, level, among)
        return memo[key]

    def _fit_spread(self, width: str, level: float, among: np.ndarray | None) -> Spread | None:
        ok = np.isfinite(self.score) & (True if among is None else among)
        d, s = self.distance[ok], self.score[ok]
        if width == "pooled" or len(d) < 2 or np.ptp(d) == 0:
            return None
        if width == "isotonic":
            return Spread.fit(d, s)
        if width == "linear":
            slope, icept = np.polyfit(d, s, 1)
        else:  # device: per held-out device, its quantile at the level against its mean distance
            pts = [(float(self.distance[rows].mean()), conformal_quantile(np.sort(self.score[rows]), level))
                   for dev in np.unique(self.device[~self.seen])
                   if (rows := (self.device == dev) & ~self.seen & ok).sum() >= MIN_DEVICE_ROWS]
            if (self.seen & ok).sum() >= MIN_DEVICE_ROWS:  # hardware seen, row not: the anchor at d = 0
                pts.append((0.0, conformal_quantile(np.sort(self.score[self.seen & ok]), level)))
            x, q = np.array(pts, dtype="float64").reshape(-1, 2).T
            if len(x) < 2 or np.ptp(x) == 0:
                return None
            slope, icept = np.polyfit(x, q, 1)
        slope = max(float(slope), 0.0)
        icept = max(float(icept), MIN_SPREAD)
        # a line as the spread's knots (geometric interpolation between two far knots would bend it)
        knots = np.linspace(0.0, max(4.0 * float(d.max()), 1.0), 64)
        return Spread(knots, np.maximum(icept + slope * knots, MIN_SPREAD))

    def _sigma(self, spread: Spread | None) -> np.ndarray:
        return spread(self.distance) if spread is not None else np.ones(len(self.score))

    def ood_half_width(self, level: float) -> float:
        """The largest per-device quantile of the cross-fitted rows of held-out devices (the OOD rule's floor)."""
        qs = [conformal_quantile(np.sort(self.score[rows]), level) for dev in np.unique(self.device[~self.seen])
              if (rows := (self.device == dev) & ~self.seen).sum() >= MIN_DEVICE_ROWS]
        finite = [q for q in qs if np.isfinite(q)]
        return max(finite) if finite else conformal_quantile(np.sort(self.score), level)

    def rule(self, variant: Variant, level: float = 0.9) -> ZeroShotRule:
        """The fitted rule of ``variant`` (plain numbers, served by a saved model; :data:`PRESET`: the model's own
        widths, with the out-of-distribution rule). With
        the variant's vendor matching, rows of a vendor the training rows have are calibrated on the entries whose
        vendor their fold model saw, rows of a foreign vendor on the foreign entries (every entry when there are
        too few), as the test is; without it, on every entry. Remembered per variant and level."""
        memo = self.__dict__.setdefault("_rules", {})
        if (variant, level) not in memo:
            width, group, scale, matched = variant
            by, own = (group.removesuffix(OWN), group.endswith(OWN)) if group else (None, False)
            sides = {}
            for side, flag in (("known", False), ("foreign", True))[:(2 if matched else 1) * (width != PRESET[0])]:
                among = self.foreign == flag if matched else np.ones(len(self.score), dtype=bool)
                sides[side] = self._widths(width, by, own, among if among.sum() >= MIN_DEVICE_ROWS
                                           else np.ones(len(self.score), dtype=bool), level)
            memo[(variant, level)] = ZeroShotRule(
                describe(variant), level, scale, self.ood_half_width(level), self.novelty, sorted(self.vendors),
                [] if by is None else list(PHASE_COLUMNS) if by == "phase" else kind_columns(self.features), sides)
        return memo[(variant, level)]

    def _widths(self, width: str, by: str | None, own_spread: bool, among: np.ndarray, level: float
                ) -> dict[str, Width]:
        """Group label -> :class:`Width` calibrated on the entries ``among`` ("*": the pooled one)."""
        spread = self.spread(width, level, among)
        out = {"*": Width(conformal_quantile(np.sort((self.score / self._sigma(spread))[among]), level), spread)}
        own = labels_of(self.features, by)
        for label in np.unique(own) if by is not None else ():
            mine = among & (own == label)
            if mine.sum() < MIN_GROUP_ROWS:
                continue
            fitted = self.spread(width, level, mine) if own_spread else spread
            out[str(label)] = Width(conformal_quantile(np.sort(self.score[mine] / self._sigma(fitted)[mine]), level),
                                    fitted)
        return out

    def calibration(self, variant: Variant, level: float = 0.9) -> IntervalCalibration:
        """The base model's calibration serving ``variant`` for hardware it was not trained on (:data:`PRESET`:
        as it is): what a saved model holds after ``model.calibration_ = scores.calibration(chosen)``."""
        return replace(self.base, zero_shot=self.rule(variant, level))

    def half_widths(self, variant: Variant, F: pd.DataFrame, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """(log half-width, out-of-distribution flag) of each row of the feature frame ``F`` under ``variant``
        (not :data:`PRESET`), every row taken as hardware not trained on."""
        rule = self.rule(variant, level)
        return rule.apply(np.full(len(F), np.nan), *_rows(F))

    def bounds(self, variant: Variant, F: pd.DataFrame, pred: np.ndarray, noise: np.ndarray, level: float = 0.9
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lo, hi, out-of-distribution flag) around the predictions ``pred`` of the rows of ``F`` under ``variant``:
        :meth:`IntervalCalibration.bounds` of :meth:`calibration`, the code a saved model serves with (``noise``:
        the rows' relative run-to-run noise, NaN: none)."""
        cal = self.calibration(variant, level)
        A, names = _rows(F)
        lo, hi = cal.bounds(np.asarray(pred, dtype="float64").reshape(len(F), 1),
                            np.asarray(noise, dtype="float64").reshape(len(F), 1), level, features=A, names=names)
        ood = cal.out_of_distribution(A, names)
        return lo[:, 0], hi[:, 0], np.zeros(len(F), dtype=bool) if ood is None else ood


def _rows(F: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...]]:
    """A feature frame as rows and column names (what a saved model's serving path reads)."""
    return F.to_numpy(dtype="float64", na_value=np.nan), tuple(str(c) for c in F.columns)


def variants(groups: tuple[str | None, ...], scales: tuple[float, ...], matched: tuple[bool, ...] = (False,)
             ) -> list[Variant]:
    """Every width rule with every Mondrian grouping, scale and vendor matching (the plain pooled, scale 1, unmatched
    first: it wins ties)."""
    return [(w, g, s, m) for m in matched for s in scales for w in WIDTHS for g in groups]


def zero_shot_variants(spec: dict[str, Any] | None) -> list[Variant]:
    """A preset's ``k0_intervals`` table (``groups``: Mondrian groupings, "none" for none; ``scales``;
    ``vendor_matched``: booleans; ``guard``, read by the benchmark: :func:`select_variants`' guard) as the
    candidates offered, :data:`PRESET` first (it wins ties); empty without one."""
    if not spec:
        return []
    groups = tuple(None if g == "none" else str(g) for g in spec.get("groups", ["none"]))
    return [PRESET, *variants(groups, tuple(float(s) for s in spec.get("scales", [1.0])),
                              tuple(bool(m) for m in spec.get("vendor_matched", [False])))]


def objective_of(spec: dict[str, Any] | None) -> str:
    """A preset's ``k0_intervals`` ``objective`` (default ``count``), checked against :data:`OBJECTIVES`."""
    objective = str((spec or {}).get("objective", OBJECTIVES[0]))
    if objective not in OBJECTIVES:
        raise ValueError(f"k0_intervals objective {objective!r} is not one of {', '.join(OBJECTIVES)}: set "
                         "[benchmark.options] k0_intervals.objective in the preset to one of them")
    return objective


def describe(variant: Variant) -> str:
    width, group, scale, matched = variant
    text = {"preset": "the preset's intervals", "pooled": "one width", "isotonic": "isotonic in distance",
            "linear": "linear in distance", "device": "device quantiles linear in distance"}[width]
    text += "" if group is None else f", per {group}"
    text += ", vendor-matched" if matched else ""
    return text if scale == 1.0 else f"{text}, x {scale:g}"


def select_variants(coverage: dict[tuple[str, str, Variant], float], parts: dict[str, list[str]],
                    candidates: list[Variant], level: float, band: tuple[float, float], guard: Variant | None = None,
                    objective: str = OBJECTIVES[0]) -> tuple[dict[str, Variant], dict[str, str]]:
    """Per device, the candidate chosen by leave-one-device-out on the *other* devices' coverage (``coverage``:
    (device, part, variant) -> share of its rows inside; its own entries are never read): least share of the
    others' (device, part) pairs outside ``band`` (``objective`` ``distance``: least mean distance outside it),
    then least mean |coverage - level|, then the earlier candidate.

    With a ``guard`` (:data:`PRESET`), the choosing itself is checked the same way, one level deeper: each other
    device gets the candidate chosen without it (and without this device), and unless those choices score better on
    the other devices than ``guard`` does, the device keeps ``guard`` (a family where choosing among the variants
    does not help keeps what it had: with a grid this large, the best on a few devices is partly luck).
    Returns the choice and its nested score (as text) per device."""
    chosen, nested = {}, {}
    for dev in parts:
        others = [d for d in parts if d != dev]
        best, score = _best(coverage, parts, others, candidates, level, band, objective)
        text = (f"{100 * score[0]:.0f}% out of band" if objective == "count" else
                f"{100 * score[0]:.1f} pt outside the band on average") + \
            f", {100 * score[1]:.1f} pt from {100 * level:.0f}% on average"
        if guard is not None and best != guard and len(others) < 2:  # the choosing cannot be checked
            best = guard
        elif guard is not None and best != guard:
            picks = {h: _best(coverage, parts, [d for d in others if d != h], candidates, level, band, objective)[0]
                     for h in others}
            ours = _score([coverage[(h, p, picks[h])] for h in others for p in parts[h]], level, band, objective)
            kept = _score([coverage[(h, p, guard)] for h in others for p in parts[h]], level, band, objective)
            text += (f"; choosing, on the others: {100 * ours[0]:.0f}% out of band, {100 * ours[1]:.1f} pt, "
                     f"{describe(guard)}: {100 * kept[0]:.0f}%, {100 * kept[1]:.1f} pt")
            if not ours < kept:
                best = guard
        chosen[dev], nested[dev] = best, text
    return chosen, nested


def _score(got: list[float], level: float, band: tuple[float, float], objective: str = OBJECTIVES[0]
           ) -> tuple[float, float]:
    """(share outside ``band``, or for ``distance`` the mean distance outside it; mean |coverage - level|),
    rounded so float noise never decides."""
    x = np.asarray(got, dtype="float64")
    outside = np.maximum(0.0, np.maximum(band[0] - x, x - band[1]))
    first = np.mean(outside > 0) if objective == "count" else np.mean(outside)
    return round(float(first), 12), round(float(np.mean(np.abs(x - level))), 12)


def _best(coverage: dict[tuple[str, str, Variant], float], parts: dict[str, list[str]], devices: list[str],
          candidates: list[Variant], level: float, band: tuple[float, float], objective: str = OBJECTIVES[0]
          ) -> tuple[Variant, tuple[float, float]]:
    """The candidate with the best :func:`_score` over ``devices``' parts (the earlier on ties), and its score."""
    score = {v: _score([coverage[(d, p, v)] for d in devices for p in parts[d]], level, band, objective)
             for v in candidates}
    best = min(candidates, key=lambda v: (*score[v], candidates.index(v)))
    return best, score[best]
