"""What a fitted interval model keeps, and how it turns predictions into bounds.

:class:`IntervalCalibration` is plain numbers (JSON and ``.npy`` in a bundle): the sorted conformity scores
per target, the noise median, and, when scaled by hardware novelty, the novelty reference and each target's
:class:`Spread`. The predictor reads it to serve intervals without the fitting machinery; how the scores are
made (cross-conformal folds grouped like the test) is :mod:`perfcast.models.uncertainty.intervals`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import column_positions
from perfcast.features.kernels import VENDOR_COLUMNS
from perfcast.features.records import Records
from perfcast.models.estimators.vendor import vendor_rows
from perfcast.models.uncertainty.novelty import HardwareNovelty

DEFAULT_LEVEL = 0.9
#: target -> the quality column holding its measured run-to-run coefficient of variation
NOISE_COLUMNS: dict[str, str] = {"runtime_ms": "runtime_cv"}
#: smallest expected error σ(d) used (log-ratio units): keeps a score finite where the fit reached zero
MIN_SPREAD = 1e-4
#: why a row the zero-shot rule flags is out of distribution (:meth:`IntervalCalibration.out_of_distribution`)
FOREIGN_VENDOR = ("vendor never seen in training (no training GPU has it): the interval is at least the widest "
                  "held-out training GPU's")


def noise_of(records: pd.DataFrame, target: str) -> np.ndarray | None:
    """Each record's measured run-to-run variation of ``target`` (:data:`NOISE_COLUMNS`; NaN where unknown), or
    None when the records carry no such column: the floor of an interval fitted on them."""
    col = NOISE_COLUMNS.get(target)
    if col is None or col not in records.columns:
        return None
    return pd.to_numeric(records[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ⌈(n+1)·level⌉-th smallest of the sorted ``scores`` (inf when n is too small for the level)."""
    check_level(level)
    n = len(scores)
    rank = math.ceil((n + 1) * level)
    return float(scores[rank - 1]) if 1 <= rank <= n else math.inf


def _factors(half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp(-half), exp(half): what a prediction is multiplied by for its bounds (before the noise floor)."""
    with np.errstate(over="ignore"):
        return np.exp(-half), np.exp(half)


def _bounds_one(pred: np.ndarray, shrink: np.ndarray, grow: np.ndarray, noise: np.ndarray, q: float
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """:meth:`IntervalCalibration.bounds`' arithmetic for one row in Python floats (NaN noise read as 0): its
    products, minimum, maximum and clip are exact, so the same bits without ~10 NumPy calls per request. None
    when a value is not finite (Python's ``min``/``max`` do not propagate NaN as NumPy's do): the array path."""
    if pred.size == shrink.size == grow.size == noise.size == 1:  # one target (the usual): its four numbers
        p, s, g, n = pred.item(), shrink.item(), grow.item(), noise.item()
        n = 0.0 if n != n else n
        if not (math.isfinite(p) and math.isfinite(s) and math.isfinite(g) and math.isfinite(n)):
            return None
        lo, hi = _lo_hi(p, s, g, q * n)
        return np.array([[lo]]), np.array([[hi]])
    p, s, g = pred.ravel().tolist(), shrink.ravel().tolist(), grow.ravel().tolist()
    n = [0.0 if v != v else v for v in noise.ravel().tolist()]
    if not (len(p) == len(s) == len(g) == len(n) and all(map(math.isfinite, p + s + g + n))):
        return None
    lo, hi = zip(*(_lo_hi(*v, q * f) for v, f in zip(zip(p, s, g, strict=True), n, strict=True)), strict=True)
    return np.array([lo], dtype="float64"), np.array([hi], dtype="float64")


def _lo_hi(p: float, s: float, g: float, floor: float) -> tuple[float, float]:
    """One target's bounds from its prediction ``p``, interval factors ``s``/``g`` and noise floor, in Python floats
    (what the array path's clip, minimum and maximum give for finite values)."""
    return p * max(min(s, 1.0 - floor), 0.0), p * max(g, 1.0 + floor)


@lru_cache(maxsize=64)
def _normal_quantile(p: float) -> float:
    """The standard normal quantile at ``p`` (remembered per level: a request asks for the same one)."""
    return NormalDist().inv_cdf(p)


def check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"interval level must be a fraction in (0, 1), e.g. 0.9 for 90%; got {level!r}")


@dataclass
class Spread:
    """Expected |log(y / ŷ)| as a non-decreasing function of hardware novelty: the knots of an isotonic fit,
    interpolated geometrically between them (errors grow by factors: halfway between a seen device's error
    and a foreign one's is their geometric mean) and flat outside the calibrated range."""

    distance: np.ndarray
    value: np.ndarray

    @classmethod
    def fit(cls, distance: np.ndarray, score: np.ndarray) -> Spread:
        from sklearn.isotonic import IsotonicRegression  # fitting only: loading a model skips its import

        iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(distance, score)
        return cls(np.asarray(iso.X_thresholds_, dtype="float64"),
                   np.maximum(np.asarray(iso.y_thresholds_, dtype="float64"), MIN_SPREAD))

    def __call__(self, distance: np.ndarray) -> np.ndarray:
        return np.exp(np.interp(distance, self.distance, np.log(self.value)))

    def to_json(self) -> dict[str, list[float]]:
        return {"distance": self.distance.tolist(), "value": self.value.tolist()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Spread:
        return cls(np.asarray(doc["distance"], dtype="float64"), np.asarray(doc["value"], dtype="float64"))


@dataclass
class Width:
    """One calibration group's zero-shot half-width: its conformity quantile ``q`` times σ(d) (1 without one)."""

    q: float
    spread: Spread | None = None

    def __call__(self, distance: np.ndarray) -> np.ndarray:
        return self.q * (self.spread(distance) if self.spread is not None else np.ones(len(distance)))

    def to_json(self) -> dict[str, Any]:
        return {"q": self.q, "spread": None if self.spread is None else self.spread.to_json()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Width:
        return cls(float(doc["q"]), None if doc.get("spread") is None else Spread.from_json(doc["spread"]))


@dataclass
class ZeroShotRule:
    """The K = 0 interval rule chosen for hardware the model was not trained on (a variant of
    :mod:`perfcast.models.uncertainty.zero_shot`, fitted): for a row whose hardware is not a training one (spec-sheet
    distance d > 0) or whose vendor no training row has, the log half-width of the first target is ``scale`` times
    the row's group :class:`Width` at d (rows of a foreign vendor use the ``foreign`` side when the rule was
    calibrated by vendor); without ``widths`` (the preset's intervals chosen), the model's own. Either way a row of
    a vendor no training row has is flagged and its half-width is at least ``ood_floor``. Plain numbers, so a saved
    model serves exactly the intervals the benchmark scores; at another level, the model's own calibration serves
    (the widths are quantiles at ``level``)."""

    rule: str
    level: float
    scale: float
    ood_floor: float
    novelty: HardwareNovelty
    vendors: list[str]
    group_columns: list[str]
    #: side ("known" vendor, and "foreign" when calibrated by vendor) -> group label -> width ("*": any other label)
    widths: dict[str, dict[str, Width]]

    def columns(self) -> list[str]:
        """The feature columns the rule reads."""
        return [*self.group_columns, *self.novelty.columns, *VENDOR_COLUMNS]

    def apply(self, half: np.ndarray, A: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(log half-widths, out-of-distribution flag) of feature rows ``A`` (columns ``names``) whose half-widths
        under the model's own calibration are ``half``: the rule's where it applies (no ``widths``: the own ones
        kept), then the floor for a foreign vendor."""
        ood = ~np.isin(vendor_rows(A, names), self.vendors)
        half = np.array(half, dtype="float64")
        if self.widths:
            d = self.novelty.distance_rows(A, names)
            labels = group_labels(A, self.group_columns, names)
            applies = (d > 0) | ood
            for flag, side in ((False, "known"), (True, "foreign")):
                widths = self.widths.get(side, self.widths["known"])
                for label in np.unique(labels[applies & (ood == flag)]):
                    rows = applies & (ood == flag) & (labels == label)
                    half[rows] = self.scale * widths.get(str(label), widths["*"])(d[rows])
        half[ood] = np.maximum(half[ood], self.ood_floor)
        return half, ood

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "level": self.level, "scale": self.scale, "ood_floor": self.ood_floor,
                "novelty": self.novelty.to_json(), "vendors": list(self.vendors),
                "group_columns": list(self.group_columns),
                "widths": {s: {g: w.to_json() for g, w in per.items()} for s, per in self.widths.items()}}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ZeroShotRule:
        return cls(str(doc["rule"]), float(doc["level"]), float(doc["scale"]), float(doc["ood_floor"]),
                   HardwareNovelty.from_json(doc["novelty"]), [str(v) for v in doc["vendors"]],
                   [str(c) for c in doc["group_columns"]],
                   {str(s): {str(g): Width.from_json(w) for g, w in per.items()} for s, per in doc["widths"].items()})


@dataclass
class IntervalCalibration:
    """What a fitted interval model keeps: per target, the sorted conformity scores and the noise median, and,
    when scaled by hardware novelty, the novelty reference and each target's spread function.

    It is plain numbers (saved as JSON and ``.npy``), shared by :class:`ConformalRegressor` and the
    :class:`~perfcast.predictor.Predictor` so both turn predictions into the same bounds.
    """

    targets: list[str]
    #: target -> sorted |log(y / ŷ_out-of-fold)| / σ(d) (inf where a fold model predicted <= 0)
    scores: dict[str, np.ndarray]
    #: target -> median measured coefficient of variation of the training rows (NaN when none was measured)
    noise_median: dict[str, float]
    level: float = DEFAULT_LEVEL
    #: how the calibration folds were drawn (for the model card): column, number of groups and folds
    grouping: dict[str, Any] = field(default_factory=dict)
    #: the training hardware, when scores are scaled by novelty (None: plain |log(y / ŷ)| scores)
    novelty: HardwareNovelty | None = None
    #: target -> σ(d), present exactly when ``novelty`` is
    spread: dict[str, Spread] = field(default_factory=dict)
    #: Mondrian groups: feature columns whose flags (> 0.5) name a row's group (see :func:`group_labels`)
    group_columns: list[str] = field(default_factory=list)
    #: group label -> target -> sorted scores of that group's rows; rows of a group not listed use :attr:`scores`
    group_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    #: the K = 0 rule for hardware not trained on (None: the scores above serve every row)
    zero_shot: ZeroShotRule | None = None

    @property
    def scaled(self) -> bool:
        """Whether bounds need the rows' features (scores are in units of σ(d))."""
        return self.novelty is not None

    def quantiles(self, level: float | None = None) -> np.ndarray:
        """Per target, the score quantile q at ``level`` (default: the calibrated one): the log-ratio
        half-width, or, when :attr:`scaled`, its multiple of σ(d)."""
        lvl = self.level if level is None else level
        return np.array([conformal_quantile(self.scores[t], lvl) for t in self.targets])

    def noise(self, records: pd.DataFrame | Records | None, n_rows: int) -> np.ndarray:
        """(n_rows, targets) relative noise: the records' own measured cv, else the training median."""
        if n_rows == 1 and (records is None or not any(NOISE_COLUMNS.get(t) in records for t in self.targets)):
            return np.asarray([[self.noise_median.get(t, np.nan) for t in self.targets]], dtype="float64")
        out = np.empty((n_rows, len(self.targets)))
        for j, t in enumerate(self.targets):
            own = np.full(n_rows, np.nan)
            col = NOISE_COLUMNS.get(t)
            if records is not None and col in records:  # a frame's or Records' columns
                own = Records.of(records).number(col)
            out[:, j] = np.where(np.isfinite(own), own, self.noise_median.get(t, np.nan))
        return out

    def scale(self, features: pd.DataFrame | np.ndarray | None, n_rows: int,
              names: tuple[str, ...] | None = None) -> np.ndarray:
        """(n_rows, targets) σ(d) of each row from its feature frame, or its feature rows and their column
        ``names`` (all ones when not :attr:`scaled`)."""
        if not self.scaled:
            return np.ones((n_rows, len(self.targets)))
        if features is None:
            raise ValueError("these intervals are scaled by hardware novelty: pass features= (the frame the "
                             "model's feature transformer made from the records) to bounds()")
        if len(features) != n_rows:
            raise ValueError(f"features has {len(features)} rows but the predictions have {n_rows}")
        d = self.novelty.distance(features) if names is None else self.novelty.distance_rows(features, names)
        return np.column_stack([self.spread[t](d) for t in self.targets])

    def half_widths(self, n_rows: int, level: float, features: pd.DataFrame | np.ndarray | None = None,
                    names: tuple[str, ...] | None = None) -> np.ndarray:
        """(n_rows, targets) log-ratio half-widths: the score quantile (of the row's Mondrian group when the
        calibration has groups and ``features`` names them, else pooled) times σ(d); ``features`` is a frame, or
        feature rows whose columns are ``names``."""
        half = np.tile(self.quantiles(level), (n_rows, 1))
        if self.group_scores and features is not None:
            labels = group_labels(features, self.group_columns, names)
            for label, scores in self.group_scores.items():
                rows = labels == label
                if rows.any():
                    half[rows] = [conformal_quantile(scores[t], level) for t in self.targets]
        half = half * self.scale(features, n_rows, names)
        rule = self.zero_shot
        if rule is not None and features is not None and math.isclose(level, rule.level):
            half[:, 0] = rule.apply(half[:, 0], *_rows_of(features, names))[0]
        return half

    def out_of_distribution(self, features: pd.DataFrame | np.ndarray, names: tuple[str, ...] | None = None
                            ) -> np.ndarray | None:
        """Per row, whether the zero-shot rule flags it (a vendor no training row has); None without a rule."""
        if self.zero_shot is None:
            return None
        A, names = _rows_of(features, names)
        return ~np.isin(vendor_rows(A, names), self.zero_shot.vendors)

    def bounds(self, pred: np.ndarray, noise: np.ndarray, level: float | None = None,
               features: pd.DataFrame | np.ndarray | None = None, names: tuple[str, ...] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) for a (rows, targets) prediction matrix and matching relative ``noise`` (NaN = unknown);
        ``features`` (the rows' feature frame, or feature rows whose columns are ``names``) is needed when
        :attr:`scaled`."""
        lvl = self.level if level is None else level
        if len(pred) == 1 and names is not None:
            shrink, grow = self._factors_one(lvl, features, names)
            one = _bounds_one(pred, shrink, grow, noise, _normal_quantile(0.5 + lvl / 2))
            if one is not None:
                return one
        else:
            shrink, grow = _factors(self.half_widths(len(pred), lvl, features, names))
        known = len(pred) == 1 and all(map(math.isfinite, np.ravel(noise).tolist()))  # a request's usual noise
        floor = _normal_quantile(0.5 + lvl / 2) * (noise if known else np.nan_to_num(noise, nan=0.0))
        with np.errstate(over="ignore"):
            lo = pred * np.clip(np.minimum(shrink, 1.0 - floor), 0.0, None)
            hi = pred * np.maximum(grow, 1.0 + floor)
        return lo, hi

    def _factors_one(self, level: float, A: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``_factors(half_widths(...))`` of a single feature row: a function of the level and of the row's
        group and novelty columns only, so remembered per their values (read-only)."""
        last = self.__dict__.get("_factor_last")  # the last columns' positions, found without hashing them
        if last is None or last[0] is not names:
            where = self.__dict__.setdefault("_factor_columns", {})  # names -> positions of the columns read
            at = where.get(names)
            if at is None:
                wanted = [*self.group_columns, *(self.novelty.columns if self.scaled else ()),
                          *(self.zero_shot.columns() if self.zero_shot is not None else ())]
                at = where[names] = column_positions(names, tuple(c for c in dict.fromkeys(wanted) if c in names))
            last = self._factor_last = (names, at, at.tobytes())
        _, at, columns = last
        memo = self.__dict__.setdefault("_factor_memo", {})
        key = (level, columns, A[0, at].tobytes())  # the columns read and their values
        hit = memo.get(key)
        if hit is None:
            if len(memo) >= 4096:
                memo.clear()
            hit = memo[key] = _factors(self.half_widths(1, level, A, names))
            for factor in hit:
                factor.setflags(write=False)
        return hit

    def to_json(self) -> dict[str, Any]:
        """Everything but the score arrays (saved beside as ``.npy``)."""
        doc = {"targets": self.targets, "level": self.level, "grouping": self.grouping,
               "noise_median": {t: (None if np.isnan(v) else v) for t, v in self.noise_median.items()},
               "n_scores": {t: len(s) for t, s in self.scores.items()}}
        if self.group_scores:  # a bundle written before Mondrian groups has no such key: pooled scores only
            doc["groups"] = {"columns": list(self.group_columns), "scores": {
                g: {t: s.tolist() for t, s in per.items()} for g, per in self.group_scores.items()}}
        if self.scaled:
            doc["novelty"] = self.novelty.to_json()
            doc["spread"] = {t: f.to_json() for t, f in self.spread.items()}
        if self.zero_shot is not None:  # absent from bundles without one: they load as before
            doc["zero_shot"] = self.zero_shot.to_json()
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], scores: Mapping[str, np.ndarray]) -> IntervalCalibration:
        noise = {t: (np.nan if v is None else float(v)) for t, v in doc["noise_median"].items()}
        novelty = HardwareNovelty.from_json(doc["novelty"]) if doc.get("novelty") else None
        spread = {t: Spread.from_json(f) for t, f in doc.get("spread", {}).items()}
        groups = doc.get("groups") or {"columns": [], "scores": {}}
        return cls(list(doc["targets"]), {t: np.asarray(scores[t], dtype="float64") for t in doc["targets"]},
                   noise, float(doc["level"]), dict(doc.get("grouping", {})), novelty, spread,
                   [str(c) for c in groups["columns"]],
                   {str(g): {t: np.asarray(per[t], dtype="float64") for t in doc["targets"]}
                    for g, per in groups["scores"].items()},
                   ZeroShotRule.from_json(doc["zero_shot"]) if doc.get("zero_shot") else None)


def _rows_of(features: pd.DataFrame | np.ndarray, names: tuple[str, ...] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Feature rows and their column names from a frame, or the rows and names as given."""
    if names is None:
        return features.to_numpy(dtype="float64", na_value=np.nan), tuple(str(c) for c in features.columns)
    return np.asarray(features, dtype="float64"), names


def group_labels(features: pd.DataFrame | np.ndarray, columns: list[str],
                 names: tuple[str, ...] | None = None) -> np.ndarray:
    """Each row's Mondrian group: the names of ``columns`` it has set (> 0.5, NaN or absent read as unset) joined
    by ``+``, or ``"none"`` (``features`` a frame, or rows whose columns are ``names``). Why flags: a group is a
    kernel kind (e.g. the attention phase, ``is_decode``), whose errors differ enough that one pooled quantile
    over-covers one kind and under-covers another."""
    have = list(features.columns) if names is None else list(names)
    present = [c for c in columns if c in have]
    if not present:
        return np.full(len(features), "none", dtype=object)
    values = features[present].to_numpy(dtype="float64") if names is None else \
        np.asarray(features, dtype="float64")[:, [have.index(c) for c in present]]
    flags = np.nan_to_num(values, nan=0.0) > 0.5
    bits = np.arange(len(present), dtype=np.int64)
    codes, inverse = np.unique(flags.astype(np.int64) @ (np.int64(1) << bits), return_inverse=True)
    names = np.asarray(present, dtype=object)
    text = np.array(["+".join(names[(int(c) >> bits) & 1 == 1]) or "none" for c in codes], dtype=object)
    return text[inverse.ravel()]
