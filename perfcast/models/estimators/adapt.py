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

**Intervals.** The chosen correction's cross-fitted residuals on the K rows are the conformity scores of a
plain split-conformal interval (:class:`~perfcast.models.uncertainty.calibration.IntervalCalibration`, never
narrower than the rows' measured run-to-run noise); with too few rows for a finite quantile, the base's stays.

Public surface: :class:`Correction` (numbers + LightGBM text), :func:`fit_adaptation` (rows -> correction +
calibration + the cross-validation report), :class:`AdaptedModel` (a fitted in-memory base corrected),
:class:`AdaptedRegressor` (a bundle's head corrected, what :mod:`perfcast.models.persistence.adapted` saves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from perfcast.features import feature_groups
from perfcast.models.persistence.compiled import compile_lightgbm
from perfcast.models.estimators.donor_mix import DonorMix, DonorTable, cross_fitted_mix, fit_mix
from perfcast.models.estimators.hybrid import KIND_COLUMNS, KIND_PREFIXES, kernel_kinds
from perfcast.models.uncertainty.calibration import NOISE_COLUMNS, IntervalCalibration, conformal_quantile

#: the corrections the guard chooses between, simplest first (ties go to the simpler one)
MODES: tuple[str, ...] = ("none", "level", "shape", "fine", "smooth")
#: the modes with a shape term: ``shape`` (strong regularisation), ``fine`` (more, smaller leaves), if asked for
#: ``smooth`` (``fine`` with a linear model per leaf); the one that cross-validates best is offered per adaptation
SHAPED: tuple[str, ...] = ("shape", "fine", "smooth")
#: fewest rows the guard validates a correction on; below it the base model is kept unchanged
MIN_ROWS = 4
#: rows of one kernel kind from which the guard chooses that kind's correction by itself (else: the pooled choice)
MIN_KIND_ROWS = 8
#: cross-validation folds on the adaptation rows
N_SPLITS = 5
#: pseudo-rows of the pooled level a kernel kind's own median is shrunk toward (few rows of a kind: mostly pooled)
LEVEL_PRIOR = 3.0
#: feature groups the shape model reads (besides log(base)); hardware columns are one value on one device
SHAPE_GROUPS: tuple[str, ...] = ("shape", "dtype", "work", "tiling")
#: the shape model: few, shallow, shrunk trees (K is small); rows per leaf grows with K (see shape_params)
SHAPE_PARAMS: dict[str, Any] = {"n_estimators": 200, "learning_rate": 0.07, "num_leaves": 8, "reg_lambda": 5.0,
                                "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8,
                                "min_split_gain": 0.0, "verbose": -1, "n_jobs": 1}
#: the donor mixes offered by default: configs/aiconfigurator_adapt.toml's setting chosen by leave-one-GPU-out
DEFAULT_MIXES: tuple[str, ...] = ("latency",)
#: whether the shape term reads the donors' latencies by default (the same setting)
DEFAULT_SHAPE_DONORS = True
#: the ``fine`` shape term: what it changes in :data:`SHAPE_PARAMS`
FINE_PARAMS: dict[str, Any] = {"n_estimators": 300, "num_leaves": 16, "reg_lambda": 1.0}
#: the ``smooth`` shape term: what it changes in ``fine``. A linear fit in each leaf follows an efficiency curve
#: between the few measured sizes instead of stepping (piecewise constant) across it
SMOOTH_PARAMS: dict[str, Any] = {"linear_tree": True, "linear_lambda": 1.0}
#: whether the guard is offered the ``smooth`` shape term by default: no, though leave-one-GPU-out chose it, as
#: linear leaves are outside the compiled tree walker and slow an adapted bundle's predictions several-fold
DEFAULT_SMOOTH = False


def shape_params(n_rows: int, seed: int, mode: str = "shape") -> dict[str, Any]:
    """LightGBM parameters for ``n_rows`` adaptation rows: at least 5 rows (and, for ``shape``, ~2% of them) per
    leaf."""
    if mode in ("fine", "smooth"):
        return {**SHAPE_PARAMS, **FINE_PARAMS, **(SMOOTH_PARAMS if mode == "smooth" else {}), "min_child_samples": 5,
                "random_state": seed}
    return {**SHAPE_PARAMS, "min_child_samples": max(5, n_rows // 50), "random_state": seed}


@dataclass
class Correction:
    """``log(measured / base)`` as a function of a row's features and its base prediction.

    ``mode`` is one of :data:`MODES` (``kind_modes`` overrides it per kernel kind); ``levels`` maps a kernel kind (:func:`~perfcast.models.estimators.hybrid.kernel_kinds`)
    to its log level, ``pooled`` is the level of kinds not measured; ``shape_text`` is the LightGBM model text of
    the shape term over ``columns`` + log(base) (None without one). Everything is numbers and text, so a bundle
    stores it as JSON and LightGBM text and nothing in it is executed.
    """

    mode: str = "none"
    levels: dict[str, float] = field(default_factory=dict)
    pooled: float = 0.0
    columns: list[str] = field(default_factory=list)
    shape_text: str | None = None
    threads: int = 1
    kind_modes: dict[str, str] = field(default_factory=dict)
    #: columns the shape model reads after log(base): the donors' log latencies over it (0: none)
    extra_columns: int = 0

    def __post_init__(self) -> None:
        self._kinds: dict[int, tuple[float, bool]] = {}  # kind-column bit pattern -> (level, shape applies)
        self._layouts: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._shape = None
        if self.shape_text is not None:
            self._shape = compile_lightgbm(self.shape_text)
            if self._shape is None:  # outside the walker's coverage: LightGBM's own parser
                import lightgbm as lgb

                self._shape = lgb.Booster(model_str=self.shape_text)

    def log_ratio(self, F: pd.DataFrame, base: np.ndarray, A: np.ndarray | None = None,
                  extra: np.ndarray | None = None) -> np.ndarray:
        """Per row, the log correction to add to ``log(base)`` (``A``: ``F`` as a float array, if at hand;
        ``extra``: the :attr:`extra_columns` the shape model reads, one row per row of ``F``).

        Kernel kinds are named once per distinct pattern of the kind columns and remembered, and the shape
        model reads array columns, so a one-row request costs about what the base model's does."""
        base = np.asarray(base, dtype="float64").ravel()
        if (self.mode == "none" and not self.kind_modes) or not len(base):
            return np.zeros(len(base))
        A = F.to_numpy(dtype="float64") if A is None else A
        kind_at, shape_at = self._layout(F)
        flags = np.nan_to_num(A[:, kind_at], nan=0.0) > 0.5  # kernel_kinds' fillna(0) > 0.5
        codes = flags.astype(np.int64) @ (np.int64(1) << np.arange(len(kind_at), dtype=np.int64))
        uniq, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        new = [(int(c), int(r)) for c, r in zip(uniq, first, strict=True) if int(c) not in self._kinds]
        if new:
            for (code, _), kind in zip(new, kernel_kinds(F.iloc[[r for _, r in new]]), strict=True):
                mode = self.kind_modes.get(kind, self.mode)
                self._kinds[code] = (0.0 if mode == "none" else self.levels.get(kind, self.pooled), mode in SHAPED)
        level, shaped = (np.asarray(v)[inverse.ravel()] for v in zip(*(self._kinds[int(c)] for c in uniq)))
        out = level.astype("float64")
        if self._shape is not None and shaped.any():
            rows = shaped.astype(bool)
            X = np.column_stack([A[rows][:, shape_at], np.log(base[rows]),
                                 *([] if extra is None else [extra[rows]])])
            out[rows] += self._shape_predict(X)
        return out

    def _layout(self, F: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the kernel-kind columns and of the shape model's columns in ``F`` (found once per layout)."""
        key = tuple(F.columns)
        if key not in self._layouts:
            names = list(F.columns)
            kind_at = np.flatnonzero([c.startswith(KIND_PREFIXES) or c in KIND_COLUMNS for c in names])
            self._layouts[key] = (kind_at, np.asarray([names.index(c) for c in self.columns], dtype=np.int64))
        return self._layouts[key]

    def _shape_predict(self, X: np.ndarray) -> np.ndarray:
        if hasattr(self._shape, "roots"):  # a CompiledForest
            return self._shape.predict(X, self.threads)
        return np.asarray(self._shape.predict(X, num_threads=self.threads), dtype="float64")

    def to_json(self) -> dict[str, Any]:
        """Everything but the shape model's text (saved beside as a file)."""
        return {"mode": self.mode, "levels": dict(self.levels), "pooled": float(self.pooled),
                "columns": list(self.columns), "kind_modes": dict(self.kind_modes),
                "extra_columns": int(self.extra_columns)}

    @classmethod
    def from_json(cls, doc: dict[str, Any], shape_text: str | None, threads: int = 1) -> Correction:
        kind_modes = {str(k): str(v) for k, v in doc.get("kind_modes", {}).items()}
        bad = sorted({doc.get("mode"), *kind_modes.values()} - set(MODES))
        if bad:
            raise ValueError(f"unknown adaptation mode(s) {bad}; known: {', '.join(MODES)}")
        return cls(doc["mode"], {str(k): float(v) for k, v in doc.get("levels", {}).items()},
                   float(doc.get("pooled", 0.0)), [str(c) for c in doc.get("columns", [])], shape_text, threads,
                   kind_modes, int(doc.get("extra_columns", 0)))


def shape_columns(F: pd.DataFrame, task: str) -> list[str]:
    """The feature columns the shape term reads: those of :data:`SHAPE_GROUPS` the frame has."""
    groups = feature_groups(task)
    return [c for g in SHAPE_GROUPS for c in groups.get(g, []) if c in F.columns]


def shape_matrix(F: pd.DataFrame, columns: list[str], base: np.ndarray, extra: np.ndarray | None = None
                 ) -> np.ndarray:
    """The shape model's input (when fitting it): ``F[columns]``, log(base), then the ``extra`` columns."""
    return np.column_stack([F[columns].to_numpy(dtype="float64"), np.log(np.asarray(base, dtype="float64")),
                            *([] if extra is None else [extra])])


def _levels(kinds: pd.Series, r: np.ndarray) -> tuple[dict[str, float], float]:
    """Per-kind median of ``r``, shrunk toward the pooled median by :data:`LEVEL_PRIOR` pseudo-rows."""
    pooled = float(np.median(r))
    per = pd.Series(r, index=kinds.index).groupby(kinds.to_numpy()).agg(["median", "size"])
    levels = {str(k): float((row["size"] * row["median"] + LEVEL_PRIOR * pooled) / (row["size"] + LEVEL_PRIOR))
              for k, row in per.iterrows()}
    return levels, pooled


def fit_correction(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, mode: str, task: str, seed: int = 0,
                   extra: np.ndarray | None = None) -> Correction:
    """The correction of kind ``mode`` fitted on rows with features ``F``, base predictions and measurements."""
    if mode == "none" or len(y) == 0:
        return Correction()
    r = np.log(y / base)
    kinds = kernel_kinds(F)
    levels, pooled = _levels(kinds, r)
    if mode == "level":
        return Correction("level", levels, pooled)
    import lightgbm as lgb

    cols = shape_columns(F, task)
    rest = r - kinds.map(levels).astype("float64").to_numpy()
    model = lgb.LGBMRegressor(**shape_params(len(y), seed, mode)).fit(shape_matrix(F, cols, base, extra), rest)
    return Correction(mode, levels, pooled, cols, model.booster_.model_to_string(),
                      extra_columns=0 if extra is None else extra.shape[1])


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

    def report(self) -> dict[str, Any]:
        """A JSON summary for a model card / MLflow."""
        return {"mode": self.correction.mode, "kind_modes": dict(self.correction.kind_modes), "rows": self.n_rows,
                "cv_mean_ape": dict(self.cv_error), "recalibrated": self.calibration is not None,
                "starts_from": f"donor {self.donors.device}" if self.from_donor else "base model",
                "donors": None if self.donors is None else list(self.donors.devices),
                "donor_mix": None if self.mix is None else self.mix.to_json(),
                "shape_reads_donors": bool(self.correction.extra_columns), "chosen": self.chosen()}

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
        if self.from_donor:
            text += f", started from {self.donors.device}'s latencies"
        return text

    def regressor(self, inner: Any) -> AdaptedRegressor:
        """``inner`` (the base estimator) corrected as found."""
        return AdaptedRegressor(inner, self.correction, self.donors, self.mix, self.from_donor)


class AdaptedRegressor:
    """A fitted base estimator corrected for one device: ``start * exp(mix + correction)``, where ``start`` is the
    base prediction, or the nearest donor's measured latency where it has one, and ``mix`` the donor mix
    (:mod:`perfcast.models.estimators.donor_mix`). What an adapted bundle saves and serves."""

    #: the base estimator, saved in the adapted model's own folder (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"inner": ""}

    def __init__(self, inner: Any, correction: Correction, donors: DonorTable | None = None,
                 mix: DonorMix | None = None, from_donor: bool = False):
        self.inner = inner
        self.correction = correction
        self.donors = donors
        self.mix = mix
        self.from_donor = from_donor

    def predict(self, F: pd.DataFrame) -> np.ndarray:
        base = np.asarray(self.inner.predict(F), dtype="float64").reshape(len(F))
        return corrected(self.correction, self.donors, F, base, self.mix, self.from_donor)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The correction's and the mix's numbers and the donors' identities (JSON); the donor tables and the
        shape model's LightGBM text as arrays."""
        arrays: dict[str, np.ndarray] = {}
        donors = None
        if self.donors is not None:
            donors, arrays = self.donors.state()
        if self.correction.shape_text is not None:
            arrays["shape_text"] = np.frombuffer(self.correction.shape_text.encode("utf-8"), dtype=np.uint8)
        return {"correction": self.correction.to_json(), "donors": donors, "from_donor": self.from_donor,
                "mix": None if self.mix is None else self.mix.to_json()}, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> AdaptedRegressor:
        """The adapted model without its base (the persistence layer sets ``inner``). A bundle saved before
        donor mixes started from its donor whenever it had one."""
        text = arrays["shape_text"].tobytes().decode("utf-8") if "shape_text" in arrays else None
        donors = params.get("donors")
        table = None if not donors else DonorTable.from_state(donors, arrays)
        mix = None if not params.get("mix") else DonorMix.from_json(params["mix"])
        return cls(None, Correction.from_json(params["correction"], text), table, mix,
                   bool(params.get("from_donor", table is not None)))


def starting_point(donors: DonorTable | None, F: pd.DataFrame, base: np.ndarray, mix: DonorMix | None = None,
                   from_donor: bool = False) -> np.ndarray:
    """What the correction multiplies: the base prediction, or the nearest donor's latency (see
    :class:`AdaptedRegressor`), times the donor mix."""
    base = np.asarray(base, dtype="float64").ravel()
    start = donors.start(F, base) if from_donor else base
    return start if mix is None else start * np.exp(mix.log_ratio(donors, F, start))


def corrected(correction: Correction, donors: DonorTable | None, F: pd.DataFrame, base: np.ndarray,
              mix: DonorMix | None = None, from_donor: bool = False) -> np.ndarray:
    """The adapted prediction of rows ``F`` from their base predictions (see :class:`AdaptedRegressor`)."""
    start = starting_point(donors, F, base, mix, from_donor)
    extra = donors.latencies(F, np.log(start)) if correction.extra_columns else None
    return start * np.exp(correction.log_ratio(F, start, extra=extra))


def fit_adaptation(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, *, task: str, target: str = "runtime_ms",
                   noise: np.ndarray | None = None, level: float = 0.9, seed: int = 0,
                   donors: DonorTable | None = None, mixes: Sequence[str] = (), shape_donors: bool = False,
                   smooth: bool = DEFAULT_SMOOTH) -> Adaptation:
    """Choose and fit the correction (see :func:`fit_correction_of`) of the base model; with ``donors``, also of
    the nearest donor's latencies, and of the better of the two times each of ``mixes`` (names in
    :data:`~perfcast.models.estimators.donor_mix.MIXES`; cross-fitted, so the choice and the intervals see the
    mix's out-of-sample errors), keeping whichever cross-validates best on the rows (the simpler wins ties).
    ``shape_donors``: the shape term also reads each donor's log latency over the start; ``smooth``: the
    ``smooth`` shape term is offered too."""
    base = np.asarray(base, dtype="float64").ravel()
    y = np.asarray(y, dtype="float64").ravel()
    ok = np.isfinite(y) & (y > 0) & np.isfinite(base) & (base > 0)
    if donors is None or ok.sum() < 2 * N_SPLITS:
        return fit_correction_of(F, base, y, task=task, target=target, noise=noise, level=level, seed=seed,
                                 smooth=smooth)
    F, base, y = F.loc[ok], base[ok], y[ok]
    noise = None if noise is None else np.asarray(noise, dtype="float64")[ok]

    def attempt(start: np.ndarray) -> Adaptation:
        extra = donors.latencies(F, np.log(start)) if shape_donors else None
        return replace(fit_correction_of(F, start, y, task=task, target=target, noise=noise, level=level, seed=seed,
                                         extra=extra, smooth=smooth), donors=donors if shape_donors else None)

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
    return replace(found, cv_error=errors)


def fit_correction_of(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, *, task: str, target: str = "runtime_ms",
                      noise: np.ndarray | None = None, level: float = 0.9, seed: int = 0,
                      extra: np.ndarray | None = None, smooth: bool = DEFAULT_SMOOTH) -> Adaptation:
    """Choose and fit the correction of ``base`` (the base predictions of rows ``F``) toward measurements
    ``y`` (see the module docstring), and the device's interval calibration from its cross-fitted residuals.
    ``noise``: each row's measured run-to-run variation (NaN: unknown); ``smooth``: offer that shape term too."""
    base = np.asarray(base, dtype="float64").ravel()
    y = np.asarray(y, dtype="float64").ravel()
    ok = np.isfinite(y) & (y > 0) & np.isfinite(base) & (base > 0)
    F, base, y = F.loc[ok] if not ok.all() else F, base[ok], y[ok]
    extra = None if extra is None else extra[ok]
    n = len(y)
    if n < MIN_ROWS:
        return Adaptation(Correction(), None, {}, n)
    from sklearn.model_selection import KFold  # fitting only: loading an adapted bundle skips scikit-learn
    folds = list(KFold(n_splits=min(N_SPLITS, n), shuffle=True, random_state=seed).split(np.arange(n)))
    modes = MODES if smooth else tuple(m for m in MODES if m != "smooth")
    oof = {m: np.empty(n) for m in modes}
    for fit_idx, held_idx in folds:
        Ff, Fh = F.iloc[fit_idx], F.iloc[held_idx]
        for m in modes:
            c = fit_correction(Ff, base[fit_idx], y[fit_idx], m, task, seed, None if extra is None else extra[fit_idx])
            oof[m][held_idx] = np.log(y[held_idx] / base[held_idx]) - c.log_ratio(
                Fh, base[held_idx], extra=None if extra is None else extra[held_idx])
    cv_error = {m: _ape(oof[m]) for m in modes}
    offered = ("none", "level", _best(cv_error, tuple(m for m in SHAPED if m in modes)))  # one shape term per correction
    best = _best(cv_error, offered)
    kinds = kernel_kinds(F).to_numpy()
    kind_modes = {}
    for kind in pd.unique(kinds):
        rows = kinds == kind
        if rows.sum() >= MIN_KIND_ROWS:
            kind_modes[str(kind)] = _best({m: _ape(oof[m][rows]) for m in offered}, offered)
    used = pd.Series(kinds).map(kind_modes).fillna(best).to_numpy()
    needed = max(used, key=MODES.index)
    correction = fit_correction(F, base, y, needed, task, seed, extra)
    correction = replace(correction, mode=best, kind_modes={k: m for k, m in kind_modes.items() if m != best})
    chosen = np.select([used == m for m in offered], [oof[m] for m in offered])
    scores = np.sort(np.abs(chosen))
    calibration = None
    if math.isfinite(conformal_quantile(scores, level)):
        cv = np.asarray(noise, dtype="float64")[ok] if noise is not None else np.array([])
        measured = cv[np.isfinite(cv)]
        calibration = IntervalCalibration([target], {target: scores},
                                          {target: float(np.median(measured)) if len(measured) else np.nan},
                                          float(level), {"by": "adaptation rows (cross-fitted)", "n_splits": len(folds),
                                                         "n_groups": n})
    return Adaptation(correction, calibration, cv_error, n)


def _ape(log_ratio: np.ndarray) -> float:
    """Mean APE of predictions whose residuals are ``log(measured / predicted)``."""
    return float(np.mean(np.abs(np.expm1(-log_ratio))))


def _best(errors: dict[str, float], among: tuple[str, ...] = MODES) -> str:
    """The mode of ``among`` of least error, the simplest on a tie."""
    return min(among, key=lambda m: (round(errors[m], 12), MODES.index(m)))


def noise_of(records: pd.DataFrame, target: str) -> np.ndarray | None:
    col = NOISE_COLUMNS.get(target)
    if col is None or col not in records.columns:
        return None
    return pd.to_numeric(records[col], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


class AdaptedModel:
    """A fitted in-memory base model (a :class:`~perfcast.models.uncertainty.intervals.ConformalRegressor` around a
    perfcast pipeline) corrected for one device by :func:`fit_adaptation` on that device's records. ``fit`` with no
    rows keeps the base model exactly; ``predict`` / ``predict_with_interval`` mirror the ConformalRegressor's."""

    def __init__(self, base: Any, target: str = "runtime_ms", level: float | None = None, seed: int = 0,
                 donors: DonorTable | None = None, mixes: Sequence[str] = (), shape_donors: bool = False,
                 smooth: bool = DEFAULT_SMOOTH):
        self.base = base
        self.target = target
        self.level = level
        self.seed = seed
        self.donors = donors
        self.mixes = mixes
        self.shape_donors = shape_donors
        self.smooth = smooth

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
                                          shape_donors=self.shape_donors, smooth=self.smooth)
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
        pred = corrected(a.correction, a.donors, F, base, a.mix, a.from_donor)
        cal = a.calibration
        if cal is None:  # too few rows for a finite quantile: the base model's interval, moved with the prediction
            _, lo, hi = self.base.predict_with_interval(X, level)
            ratio = pred / base
            return pred, np.asarray(lo, dtype="float64").ravel() * ratio, np.asarray(hi, dtype="float64").ravel() * ratio
        lo, hi = cal.bounds(pred.reshape(-1, 1), cal.noise(X, len(X)), level)
        return pred, lo[:, 0], hi[:, 0]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_with_interval(X)[0]
