"""The correction an adaptation fits: a level per kernel kind and an optional shape term (LightGBM text).

Why its own module: :mod:`perfcast.models.estimators.adapt` chooses among corrections (the guard), recalibrates
intervals and serves the adapted model; this is the correction itself, plain numbers and LightGBM text that a
bundle stores, predicted by the compiled walkers (:mod:`perfcast.models.persistence.compiled`, and
:mod:`perfcast.models.persistence.compiled_linear` for the ``smooth`` term's linear leaves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features import feature_groups
from perfcast.models.estimators.hybrid import KIND_COLUMNS, KIND_PREFIXES, kernel_kinds, kind_columns, kind_name
from perfcast.models.persistence.compiled import compile_lightgbm

#: the corrections the guard chooses between, simplest first (ties go to the simpler one)
MODES: tuple[str, ...] = ("none", "level", "shape", "fine", "smooth")
#: the modes with a shape term: ``shape`` (strong regularisation), ``fine`` (more, smaller leaves), if asked for
#: ``smooth`` (``fine`` with a linear model per leaf); the one that cross-validates best is offered per adaptation
SHAPED: tuple[str, ...] = ("shape", "fine", "smooth")
#: pseudo-rows of the pooled level a kernel kind's own median is shrunk toward (few rows of a kind: mostly pooled)
LEVEL_PRIOR = 3.0
#: fewest rows of a kernel kind from which its level may come with a latency floor (two numbers fitted: 4 rows each)
MIN_FLOOR_ROWS = 8
#: fewest rows of a floored kind whose fitted work part ``a * start`` reaches its floor ``f`` for the slope ``a`` to be
#: fitted (see :func:`latency_floors`); with fewer, the kind's work is the start's (``a = 1``) where a positive floor
#: then fits
MIN_SLOPE_ROWS = 4
#: per task, the share of a kind's median latency a latency floor must reach to be offered to the guard by default
#: (:func:`~perfcast.models.persistence.adapted.adapt_loaded`; a task not named: no floor): attention, as the
#: benchmark preset's ``attention_floor`` (benchmarks/ANALYSIS_adapt.md round 12a)
DEFAULT_FLOORS: dict[str, float] = {"attention": 0.5}
#: feature groups the shape model reads (besides log(base)); hardware columns are one value on one device
SHAPE_GROUPS: tuple[str, ...] = ("shape", "dtype", "work", "tiling")
#: the shape model: few, shallow, shrunk trees (K is small); rows per leaf grows with K (see shape_params)
SHAPE_PARAMS: dict[str, Any] = {"n_estimators": 200, "learning_rate": 0.07, "num_leaves": 8, "reg_lambda": 5.0,
                                "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8,
                                "min_split_gain": 0.0, "verbose": -1, "n_jobs": 1}
#: the ``fine`` shape term: what it changes in :data:`SHAPE_PARAMS`
FINE_PARAMS: dict[str, Any] = {"n_estimators": 300, "num_leaves": 16, "reg_lambda": 1.0}
#: the ``smooth`` shape term: what it changes in ``fine``. A linear fit in each leaf follows an efficiency curve
#: between the few measured sizes instead of stepping (piecewise constant) across it
SMOOTH_PARAMS: dict[str, Any] = {"linear_tree": True, "linear_lambda": 1.0}
#: the tree budget of a shape term fitted on few rows with ``grow_trees`` (round 12b's speed budget, not fitted)
SMALL_TREES: dict[str, Any] = {"n_estimators": 40, "learning_rate": 0.15}
#: with ``grow_trees``: a shape term fitted on at most the first count of rows has :data:`SMALL_TREES`' budget, one
#: on at least the second its mode's full budget, geometric in the rows between (benchmarks/ANALYSIS_adapt.md,
#: round 14a: where the leave-one-GPU-out choice of round 13a took the small budget, and where it took the full one)
GROW_ROWS: tuple[int, int] = (32, 128)


def tree_budget(n_rows: int, full: dict[str, Any]) -> dict[str, Any]:
    """``n_estimators`` and ``learning_rate`` of a shape term fitted on ``n_rows`` rows whose full budget is
    ``full``'s: :data:`SMALL_TREES` up to ``GROW_ROWS[0]`` rows, ``full``'s from ``GROW_ROWS[1]``, each geometric in
    the rows between. Why: a few rows' residual shape is learnt in few, larger steps without fitting their noise
    (round 13a's K = 32 gain), while many rows need the full budget to follow it (its losses at K = 128-512)."""
    low, high = GROW_ROWS
    share = min(1.0, max(0.0, math.log(max(n_rows, 1) / low) / math.log(high / low)))
    blend = {k: SMALL_TREES[k] ** (1.0 - share) * full[k] ** share for k in SMALL_TREES}
    return {"n_estimators": int(round(blend["n_estimators"])), "learning_rate": blend["learning_rate"]}


def shape_params(n_rows: int, seed: int, mode: str = "shape", grow_trees: bool = False) -> dict[str, Any]:
    """LightGBM parameters for ``n_rows`` adaptation rows: at least 5 rows (and, for ``shape``, ~2% of them) per
    leaf; ``grow_trees``: the tree budget of :func:`tree_budget`."""
    if mode in ("fine", "smooth"):
        params = {**SHAPE_PARAMS, **FINE_PARAMS, **(SMOOTH_PARAMS if mode == "smooth" else {}),
                  "min_child_samples": 5, "random_state": seed}
    else:
        params = {**SHAPE_PARAMS, "min_child_samples": max(5, n_rows // 50), "random_state": seed}
    return {**params, **tree_budget(n_rows, params)} if grow_trees else params


@dataclass
class Correction:
    """``log(measured / base)`` as a function of a row's features and its base prediction.

    ``mode`` is one of :data:`MODES` (``kind_modes`` overrides it per kernel kind); ``levels`` maps a kernel kind (:func:`~perfcast.models.estimators.hybrid.kernel_kinds`)
    to its log level, ``pooled`` is the level of kinds not measured; ``shape_text`` is the LightGBM model text of
    the shape term over ``columns`` + log(base) (None without one), and ``more_shapes`` maps a shaped mode to its
    own term where kinds chose different ones (a kind whose mode is not in it reads ``shape_text``). Everything is numbers and text, so a bundle
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
    #: shaped mode -> LightGBM text of its own shape term (kinds of that mode read it instead of ``shape_text``)
    more_shapes: dict[str, str] = field(default_factory=dict)
    #: kernel kind -> its latency floor ``f`` (the base's unit): that kind's level term is ``log(exp(level) + f /
    #: base)``, not ``level`` (see :func:`fit_correction`'s ``floor``; a kind not named: no floor)
    floors: dict[str, float] = field(default_factory=dict)
    #: a fold's shape term as fitted, ``predict(X, threads)`` (:func:`fit_correction` with ``saved=False``): read
    #: as ``shape_text`` would be, never saved
    live: Callable[[np.ndarray, int], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # kind-column bit pattern -> (level, the shape term it reads: "" = shape_text, a mode, or None = none, floor)
        self._kinds: dict[int, tuple[float, str | None, float]] = {}
        self._layouts: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        texts = {"": self.shape_text, **self.more_shapes} if self.shape_text is not None else dict(self.more_shapes)
        self._models = {m: _shape_model(text) for m, text in texts.items()}
        if self.live is not None:
            self._models[""] = self.live

    def log_ratio(self, F: pd.DataFrame | None, base: np.ndarray, A: np.ndarray | None = None,
                  extra: np.ndarray | None = None, names: tuple[str, ...] | None = None) -> np.ndarray:
        """Per row, the log correction to add to ``log(base)`` (``A``: ``F`` as a float array, if at hand;
        ``extra``: the :attr:`extra_columns` the shape model reads, one row per row of ``F``). ``F`` may be None
        when ``A`` and its column ``names`` are given (a served request's rows: no frame is built unless a
        kernel kind is seen for the first time).

        Kernel kinds are named once per distinct pattern of the kind columns and remembered, and the shape
        model reads array columns, so a one-row request costs about what the base model's does."""
        base = np.asarray(base, dtype="float64").ravel()
        if (self.mode == "none" and not self.kind_modes) or not len(base):
            return np.zeros(len(base))
        A = F.to_numpy(dtype="float64") if A is None else A
        kind_at, shape_at = self._layout(tuple(F.columns) if names is None else names)
        if len(base) == 1 and extra is None:  # a request whose kind is known: no grouping
            code = sum(1 << i for i, v in enumerate(A[0, kind_at].tolist()) if v > 0.5)  # as below (NaN: false)
            if code in self._kinds:
                level, term, floor = self._kinds[code]
                out = np.asarray([level if not floor else math.log(math.exp(level) + floor / base[0])])
                if term is not None and term in self._models:
                    out += self._models[term](np.concatenate([A[0, shape_at], np.log(base)])[None, :], self.threads)
                return out
        flags = np.nan_to_num(A[:, kind_at], nan=0.0) > 0.5  # kernel_kinds' fillna(0) > 0.5
        codes = flags.astype(np.int64) @ (np.int64(1) << np.arange(len(kind_at), dtype=np.int64))
        uniq, inverse = np.unique(codes, return_inverse=True)
        new = [int(c) for c in uniq if int(c) not in self._kinds]
        if new:
            columns = kind_columns(tuple(F.columns) if names is None else names)  # kind_at's columns, in order
            for code in new:
                kind = kind_name(columns, code)  # kernel_kinds' label of the pattern
                mode = self.kind_modes.get(kind, self.mode)
                term = (mode if mode in self.more_shapes else "") if mode in SHAPED else None
                self._kinds[code] = (0.0 if mode == "none" else self.levels.get(kind, self.pooled), term,
                                     0.0 if mode == "none" else self.floors.get(kind, 0.0))
        known = [self._kinds[int(c)] for c in uniq]
        out = np.asarray([lv for lv, _, _ in known], dtype="float64")[inverse.ravel()]
        floors = np.asarray([f for _, _, f in known], dtype="float64")[inverse.ravel()]
        if floors.any():  # a floor adds latency, so the kind's ratio to the base falls as the base grows
            out = np.log(np.exp(out) + floors / base)
        terms = np.asarray([term for _, term, _ in known], dtype=object)[inverse.ravel()]
        for term in {term for _, term, _ in known if term is not None and term in self._models}:
            rows = terms == term
            X = np.column_stack([A[rows][:, shape_at], np.log(base[rows]),
                                 *([] if extra is None else [extra[rows]])])
            out[rows] += self._models[term](X, self.threads)
        return out

    def _layout(self, key: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the kernel-kind columns and of the shape model's columns among the feature columns
        ``key`` (found once per layout; the last one's without hashing ``key``)."""
        last = self.__dict__.get("_last_layout")
        if last is not None and last[0] is key:
            return last[1]
        if key not in self._layouts:
            names = list(key)
            kind_at = np.flatnonzero([c.startswith(KIND_PREFIXES) or c in KIND_COLUMNS for c in names])
            self._layouts[key] = (kind_at, np.asarray([names.index(c) for c in self.columns], dtype=np.int64))
        self._last_layout = (key, self._layouts[key])
        return self._layouts[key]

    def to_json(self) -> dict[str, Any]:
        """Everything but the shape model's text (saved beside as a file)."""
        return {"mode": self.mode, "levels": dict(self.levels), "pooled": float(self.pooled),
                "columns": list(self.columns), "kind_modes": dict(self.kind_modes),
                "extra_columns": int(self.extra_columns), "more_shapes": sorted(self.more_shapes),
                **({"floors": dict(self.floors)} if self.floors else {})}

    @classmethod
    def from_json(cls, doc: dict[str, Any], shape_text: str | None, threads: int = 1,
                  more_shapes: dict[str, str] | None = None) -> Correction:
        """The correction :meth:`to_json` described, with its shape terms' texts (``more_shapes``: mode -> text)."""
        kind_modes = {str(k): str(v) for k, v in doc.get("kind_modes", {}).items()}
        bad = sorted({doc.get("mode"), *kind_modes.values()} - set(MODES))
        if bad:
            raise ValueError(f"unknown adaptation mode(s) {bad}; known: {', '.join(MODES)}")
        return cls(doc["mode"], {str(k): float(v) for k, v in doc.get("levels", {}).items()},
                   float(doc.get("pooled", 0.0)), [str(c) for c in doc.get("columns", [])], shape_text, threads,
                   kind_modes, int(doc.get("extra_columns", 0)), dict(more_shapes or {}),
                   {str(k): float(v) for k, v in doc.get("floors", {}).items()})


def _shape_model(text: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """A shape term's LightGBM text as ``predict(X, threads)``: the compiled walkers (linear leaves: their own),
    else LightGBM's own parser."""
    if "\nis_linear=1" in text:  # the smooth term's linear leaves: their walker needs numba at once
        from perfcast.models.persistence.compiled_linear import compile_linear_lightgbm

        forest = compile_linear_lightgbm(text)
    else:
        forest = compile_lightgbm(text)
    if forest is not None:
        return forest.predict
    import lightgbm as lgb

    booster = lgb.Booster(model_str=text)
    return lambda X, threads: np.asarray(booster.predict(X, num_threads=threads), dtype="float64")


def shape_columns(F: pd.DataFrame, task: str) -> list[str]:
    """The feature columns the shape term reads: those of :data:`SHAPE_GROUPS` the frame has."""
    groups = feature_groups(task)
    return [c for g in SHAPE_GROUPS for c in groups.get(g, []) if c in F.columns]


def shape_matrix(F: pd.DataFrame, columns: list[str], base: np.ndarray, extra: np.ndarray | None = None
                 ) -> np.ndarray:
    """The shape model's input (when fitting it): ``F[columns]``, log(base), then the ``extra`` columns."""
    return np.column_stack([F[columns].to_numpy(dtype="float64"), np.log(np.asarray(base, dtype="float64")),
                            *([] if extra is None else [extra])])


def mean_ape(log_ratio: np.ndarray) -> float:
    """Mean APE of predictions whose residuals are ``log(measured / predicted)`` (the guard's metric)."""
    return float(np.mean(np.abs(np.expm1(-log_ratio))))


def _levels(kinds: pd.Series, r: np.ndarray) -> tuple[dict[str, float], float]:
    """Per-kind median of ``r``, shrunk toward the pooled median by :data:`LEVEL_PRIOR` pseudo-rows."""
    pooled = float(np.median(r))
    per = pd.Series(r, index=kinds.index).groupby(kinds.to_numpy()).agg(["median", "size"])
    levels = {str(k): float((row["size"] * row["median"] + LEVEL_PRIOR * pooled) / (row["size"] + LEVEL_PRIOR))
              for k, row in per.iterrows()}
    return levels, pooled


@dataclass(frozen=True)
class FloorRule:
    """Latency floors of at least ``share`` of a kind's median latency (:func:`latency_floors`), for the kernel
    kinds ``kinds`` only (None: any kind): those the guard's folds kept
    (:func:`~perfcast.models.estimators.adapt_floor.supported_floors`)."""

    share: float
    kinds: frozenset[str] | None = None


def fit_correction(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, mode: str, task: str, seed: int = 0,
                   extra: np.ndarray | None = None, floor: float | FloorRule | None = None,
                   saved: bool = True, grow_trees: bool = False) -> Correction:
    """The correction of kind ``mode`` fitted on rows with features ``F``, base predictions and measurements;
    with ``floor``, a kernel kind's level may come with a latency floor of at least that share of its rows' median
    latency (:func:`latency_floors`; a :class:`FloorRule`: for its kinds only; None: levels only). ``saved=False``
    (a cross-validation fold's correction, which predicts its held-out rows once): the shape term predicts with
    the fitted booster, whose sums the compiled walkers reproduce, and is neither written as text nor compiled,
    the larger part of an adaptation's time otherwise. ``grow_trees``: its shape term's tree budget by
    :func:`tree_budget`."""
    if mode == "none" or len(y) == 0:
        return Correction()
    r = np.log(y / base)
    kinds = kernel_kinds(F)
    levels, pooled = _levels(kinds, r)
    rule = floor if floor is None or isinstance(floor, FloorRule) else FloorRule(float(floor))
    floors = latency_floors(kinds, base, y, rule.share, rule.kinds) if rule is not None else {}
    levels.update({kind: a for kind, (a, _) in floors.items()})
    floors = {kind: f for kind, (_, f) in floors.items()}
    if mode == "level":
        return Correction("level", levels, pooled, floors=floors)
    import lightgbm as lgb

    cols = shape_columns(F, task)
    rest = r - Correction("level", levels, pooled, floors=floors).log_ratio(F, base)
    # the scikit-learn wrapper's model, without its text round trip (keep_training_booster): text is written once
    booster = lgb.train(shape_params(len(y), seed, mode, grow_trees),
                        lgb.Dataset(shape_matrix(F, cols, base, extra), rest), keep_training_booster=True)
    width = 0 if extra is None else extra.shape[1]
    if not saved:
        return Correction(mode, levels, pooled, cols, extra_columns=width, floors=floors,
                          live=lambda X, threads: np.asarray(booster.predict(X, num_threads=threads), dtype="float64"))
    return Correction(mode, levels, pooled, cols, booster.model_to_string(), extra_columns=width, floors=floors)


def cross_fitted(F: pd.DataFrame, base: np.ndarray, y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]],
                 modes: Sequence[str], task: str, seed: int = 0, extra: np.ndarray | None = None,
                 floor: float | FloorRule | None = None, grow_trees: bool = False) -> dict[str, np.ndarray]:
    """Per mode, each row's ``log(measured / corrected)`` by the correction of that mode fitted on the other folds
    (each fold's correction unsaved: :func:`fit_correction`'s ``saved``; ``grow_trees``: its)."""
    oof = {m: np.empty(len(y)) for m in modes}
    for fit, held in folds:
        Ff, Fh = F.iloc[fit], F.iloc[held]
        for m in modes:
            c = fit_correction(Ff, base[fit], y[fit], m, task, seed, None if extra is None else extra[fit], floor,
                               saved=False, grow_trees=grow_trees)
            oof[m][held] = np.log(y[held] / base[held]) - c.log_ratio(
                Fh, base[held], extra=None if extra is None else extra[held])
    return oof


def latency_floors(kinds: pd.Series, base: np.ndarray, y: np.ndarray, share: float,
                   only: frozenset[str] | None = None) -> dict[str, tuple[float, float]]:
    """Per kernel kind of at least :data:`MIN_FLOOR_ROWS` rows (of ``only``, if given), ``(log a, f)`` of
    ``y = a * base + f`` (least squares of the relative error), where both are positive and ``f`` is at least
    ``share`` of the kind's median ``y`` (the floor dominates its measured latencies). Why: a device whose launch /
    latency floor the base does not know (an out-of-vendor GPU's small decode kernels) shows a large ratio on small
    kernels; as a level (a constant log ratio) that ratio multiplies the large kernels too, which few small measured
    rows cannot reveal to the guard's folds; as a floor it fades where the base grows past it. Why only a dominant
    floor: a slight one, fitted on a narrow range of small kernels, mostly bends the slope ``a`` that the large
    kernels inherit.

    Why the slope needs rows of its own: ``a`` is what the large kernels inherit (``log(a + f / base)`` tends to
    ``log a``), but a row at the floor says next to nothing about it; fitted from rows almost all at the floor (a
    few larger ones decide it), it carries a ratio no row measured to kernels far above the rows' range. So ``a`` is
    fitted only where at least :data:`MIN_SLOPE_ROWS` of the kind's rows have a fitted work part ``a * base`` at
    least their floor; with fewer, the floor adds to the start's own work (``a = 1``, ``f`` refitted): its level term
    fades to the start's (ratio 1) as the work outgrows the floor, as nothing measured says otherwise. Where no
    positive floor adds to the start (the start already reaches the kind's latencies, as a donor's measured latency
    that carries the donor's own floor may), the start is not work alone and the fitted slope is kept."""
    out = {}
    for kind, rows in pd.Series(np.arange(len(y))).groupby(kinds.to_numpy()):
        at = rows.to_numpy()
        if len(at) < MIN_FLOOR_ROWS or (only is not None and str(kind) not in only):
            continue
        u, v = base[at] / y[at], 1.0 / y[at]
        (a, f), *_ = np.linalg.lstsq(np.column_stack([u, v]), np.ones(len(at)), rcond=None)
        if not (a > 0 and f > 0 and f >= share * float(np.median(y[at]))):
            continue
        if np.count_nonzero(a * base[at] >= f) < MIN_SLOPE_ROWS:  # the slope is not measured: the start's work
            own = float(np.dot(1.0 - u, v) / np.dot(v, v))
            a, f = (1.0, own) if own > 0 else (a, f)
        out[str(kind)] = (float(np.log(a)), float(f))
    return out
