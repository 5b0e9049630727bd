"""The hybrid model: an analytical baseline times a learned efficiency, log(measured / baseline).

Why: across devices, runtime spans many decades but the *efficiency* (how far below the roofline a
kernel runs) is a bounded, smooth function of shape, tiling and architecture. Learning that ratio with a
gradient-boosting model lets the analytical part carry the extrapolation (bigger shapes, a faster GPU
from its spec sheet) and the trees only the correction, which is why it is the default for
cross-hardware work.

The runtime baseline is the roofline time plus a *latency floor*: a kernel that moves a few kilobytes
still takes the launch and synchronisation time of its library (microseconds; more for an FP8 GEMM that
quantises its input first: benchmarks/DESIGN_FIGURES.md). Without it the learned ratio
of a tiny kernel is floor / roofline, which swings by decades with the device's bandwidth and is what a
tree cannot carry to a new device; with it the ratio is about 1 on every device. The floor is learned per
kernel kind (dtype, and prefill/decode for attention) from the training rows whose roofline time is a
small fraction of their runtime, so it is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import column_positions
from perfcast.features.estimator_base import Regressor, check_fitted, clone
from perfcast.features.extrapolation import RELATIVE, relative_features
from perfcast.models.estimators.layout_split import layout_rows
from perfcast.models.estimators.physical_base import (EXP_PER_CLOCK, L2_BYTES_PER_CLOCK, L2_ROWS, decode_rows,
                                                      fit_power_limit, fit_rate, fit_size_trend, l2_speedup,
                                                      physical_roofline, size_trend_factor)
from perfcast.models.estimators.roofline import ROOFLINE_COLUMN, baseline_rows
from perfcast.models.estimators.rows import named_frame

#: a row is latency-bound (its runtime is the library's floor) when its roofline time is below this share
LATENCY_BOUND = 0.05
#: fewest latency-bound rows a kernel kind needs for its own floor (else the pooled floor is used)
MIN_FLOOR_ROWS = 20
#: feature columns whose values name the kernel kind a floor belongs to
KIND_PREFIXES: tuple[str, ...] = ("dtype_",)
KIND_COLUMNS: tuple[str, ...] = ("is_decode",)
#: the trees' input column ``l2_feature`` adds: log10 of how much the L2 term shortened the row's memory time
L2_SPEEDUP = "log10_l2_speedup"


@lru_cache(maxsize=64)
def kind_columns(names: tuple[str, ...]) -> tuple[str, ...]:
    """The columns among ``names`` whose values name the kernel kind (:data:`KIND_PREFIXES`, :data:`KIND_COLUMNS`)."""
    return tuple(c for c in names if c.startswith(KIND_PREFIXES) or c in KIND_COLUMNS)


def kind_name(columns: Sequence[str], code: int) -> str:
    """The kind label of a row whose set kind columns (of ``columns``) are the bits of ``code``."""
    if not columns:
        return "all"
    return "+".join(c for i, c in enumerate(columns) if (code >> i) & 1) or "none"


def kernel_kinds(X: pd.DataFrame) -> pd.Series:
    """A label per row naming its kernel kind: the dtype one-hot that is set, plus the attention phase."""
    cols = list(kind_columns(tuple(X.columns)))
    if not cols:
        return pd.Series("all", index=X.index)
    flags = X[cols].fillna(0.0).to_numpy(dtype="float64") > 0.5
    bits = np.arange(len(cols), dtype=np.int64)
    codes = flags.astype(np.int64) @ (np.int64(1) << bits)  # each row's set columns as one bit pattern
    text = {int(c): kind_name(cols, int(c)) for c in np.unique(codes)}
    return pd.Series(codes, index=X.index).map(text).astype("object")


def learn_floors(X: pd.DataFrame, y: np.ndarray) -> tuple[dict[str, float], float]:
    """Per kernel kind, the median runtime of its latency-bound rows; and the pooled floor (0 if none)."""
    roof = 10.0 ** X[ROOFLINE_COLUMN].to_numpy(dtype="float64")
    bound = roof <= LATENCY_BOUND * y
    if bound.sum() < MIN_FLOOR_ROWS:
        return {}, 0.0
    kinds = kernel_kinds(X)[bound]
    times = pd.Series(y[bound], index=kinds.index)
    per = times.groupby(kinds).agg(["median", "size"])
    floors = {str(k): float(v) for k, v in per.loc[per["size"] >= MIN_FLOOR_ROWS, "median"].items()}
    return floors, float(np.median(y[bound]))


class HybridRegressor(Regressor):
    """Fits ``estimator`` (default: LightGBM) to log(y / baseline) of ``target``; predicts baseline x exp(fit).

    ``columns`` restricts the features the estimator sees (None: all) and may name device-relative terms
    (:data:`~perfcast.features.extrapolation.RELATIVE`), computed here from the frame; the baseline always reads
    its own columns. ``latency_floor`` adds the learned per-kind floor to the runtime baseline (see the module
    docstring). ``monotone`` maps feature names to +1/-1: the learned log-ratio may only rise/fall with
    that feature, where physics says so (e.g. -1 for watts per peak TFLOP: more power budget per unit of
    compute never makes a kernel slower); it needs a LightGBM estimator. ``relative`` adds the columns of
    :func:`perfcast.features.extrapolation.relative_features` (work relative to the device: FLOPs per SM,
    intensity over the ridge point...), which ``columns`` and ``monotone`` may then name: they stay in the
    training range for a large shape on a large new GPU, where absolute sizes do not. ``power_limit``
    (``"global"`` or ``"generation"``) and ``wave_quantised`` put the board's power limit and the partly empty
    last wave into the runtime baseline (:mod:`perfcast.models.estimators.physical_base`), so they extrapolate
    as physics rather than as the trees' last step; ``tiles`` makes that base NeuSight's tile formulation (waves x
    one tile's time bounded by the SM's share of peak and bandwidth), so the trees learn its per-tile utilisation.
    ``size_trend`` (``"op"`` or ``"pooled"``) continues the learned ratio past the largest training FLOPs with the
    within-device slope of the training devices' largest shapes (per operand layout or pooled), where trees
    are flat; never below the plain roofline. ``balance_ops`` weighs each operand layout's rows alike in the fit
    (NeuSight has about three bmm rows per linear one; its goals weigh the two ops alike).
    ``l2_resident`` moves the bytes of a kernel that fits in the device's L2 at an L2 rate fitted on the training
    rows (:func:`~perfcast.models.estimators.physical_base.fit_rate`; off by default); with ``l2_rows="decode"``
    only on attention decode rows (their KV-cache read), the rate fitted on them; ``l2_feature`` (needs
    ``l2_resident``) also gives the trees :data:`L2_SPEEDUP`, how much that term shortened the row's memory time (0
    where inactive), so rows whose base moved are not pooled with those whose base did not. ``softmax_exp`` bounds
    an attention row's compute time by its softmax exponentials at a per-SM rate fitted likewise (off by default).
    """

    #: the fitted ratio model, saved in the hybrid's own folder (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"estimator_": ""}

    def __init__(self, target: str = "runtime_ms", estimator: Any | None = None,
                 columns: list[str] | None = None, latency_floor: bool = True,
                 monotone: Mapping[str, int] | None = None, relative: bool = False,
                 power_limit: str | None = None, wave_quantised: bool = False, tiles: bool = False,
                 size_trend: str | None = None, balance_ops: bool = False, l2_resident: bool = False,
                 l2_rows: str = "all", softmax_exp: bool = False, l2_feature: bool = False):
        self.target = target
        self.estimator = estimator
        self.columns = columns
        self.latency_floor = latency_floor
        self.monotone = monotone
        self.relative = relative
        self.power_limit = power_limit
        self.wave_quantised = wave_quantised
        self.tiles = tiles
        self.size_trend = size_trend
        self.balance_ops = balance_ops
        self.l2_resident = l2_resident
        self.l2_rows = l2_rows
        self.softmax_exp = softmax_exp
        self.l2_feature = l2_feature

    # ------------------------------------------------------------------ baseline
    def _baseline(self, A: np.ndarray, names: tuple[str, ...], l2: float | None = None,
                  exp: float | None = None) -> np.ndarray:
        """The runtime baseline of feature rows ``A`` (columns ``names``); ``l2`` and ``exp`` override the fitted
        L2 and softmax rates."""
        power = getattr(self, "power_", None)
        l2 = getattr(self, "l2_rate_", 0.0) if l2 is None else l2
        exp = getattr(self, "exp_rate_", 0.0) if exp is None else exp
        if self.target == "runtime_ms" and (power is not None or self.wave_quantised or self.tiles or l2 > 0
                                            or exp > 0):
            base = physical_roofline(A, names, power, self.wave_quantised, self.tiles, l2,
                                     self.l2_rows, exp)
        else:
            base = baseline_rows(A, names, self.target)
        if self.target == "runtime_ms" and (self.floors_ or self.pooled_floor_):
            base = base + self._floor(A, names)
        return base

    def _floor(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """Each row's latency floor by kernel kind (:func:`kernel_kinds`), named once per distinct pattern of the
        kind columns and remembered, so a one-row request costs no pandas grouping."""
        last = self.__dict__.get("_last_floors")  # the last columns' entry, found without hashing them
        if last is not None and last[0] is names:
            idx, known, rows = last[1]
        else:  # columns -> (kind positions, pattern -> floor, a row's kind-column bytes -> its floor as an array)
            cache = self.__dict__.setdefault("_kind_floors", {})
            if names not in cache:
                cache[names] = (column_positions(names, kind_columns(names)), {}, {})
            idx, known, rows = cache[names]
            self._last_floors = (names, cache[names])
        if len(A) == 1:  # a request: its floor remembered per bit pattern of its kind columns (read-only)
            flags = A[0, idx]
            hit = rows.get(key := flags.tobytes())
            if hit is None:
                code = sum(1 << i for i, v in enumerate(flags.tolist()) if v > 0.5)  # NaN compares false
                if code not in known:
                    known[code] = float(self.floors_.get(kind_name(kind_columns(names), code), self.pooled_floor_))
                hit = rows[key] = np.asarray([known[code]], dtype="float64")
                hit.setflags(write=False)
            return hit
        flags = A[:, idx] > 0.5  # kernel_kinds' fillna(0) > 0.5: NaN compares false
        codes = flags.astype(np.int64) @ (np.int64(1) << np.arange(len(idx), dtype=np.int64))
        uniq, inverse = np.unique(codes, return_inverse=True)
        for c in (int(c) for c in uniq if int(c) not in known):
            known[c] = float(self.floors_.get(kind_name(kind_columns(names), c), self.pooled_floor_))
        return np.asarray([known[int(c)] for c in uniq], dtype="float64")[inverse.ravel()]

    def _derived(self, names: Sequence[str]) -> list[str]:
        """The device-relative columns this hybrid reads that the features (columns ``names``) lack (the
        transformers do not emit them)."""
        wanted = RELATIVE if self.relative else (self.columns or ())
        return [c for c in wanted if c in RELATIVE and c not in names]

    def _inputs(self, X: pd.DataFrame) -> pd.DataFrame:
        selected = self._selected(X)
        if not self.l2_feature:
            return selected
        speedup = l2_speedup(X.to_numpy(dtype="float64"), tuple(X.columns), getattr(self, "l2_rate_", 0.0))
        return selected.assign(**{L2_SPEEDUP: speedup})

    def _selected(self, X: pd.DataFrame) -> pd.DataFrame:
        """The feature columns the trees read (``columns``, with the device-relative ones computed)."""
        derived = self._derived(X.columns)
        if derived:
            X = pd.concat([X, relative_features(X, derived)], axis=1)
        if self.columns is None:
            return X
        absent = [c for c in self.columns if c not in X.columns]
        if absent:
            raise ValueError(f"hybrid: columns {absent} are not features of this task; it has {list(X.columns)}")
        return X[list(self.columns)]

    def _input_array(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`_inputs` of feature rows ``A`` (columns ``names``) as a float matrix, read by position: a
        loaded forest reads the matrix anyway, and a frame's column selection costs most of a request."""
        last = self.__dict__.get("_last_input_at")  # the last columns' positions, found without hashing them
        if last is not None and last[0] is names:
            at = last[1]
        else:
            cache = self.__dict__.setdefault("_input_at", {})  # names -> positions (None: all, as they are)
            if names not in cache:
                if self._derived(names):  # computed columns have no position in A
                    return self._inputs(named_frame(A, names)).to_numpy(dtype="float64")
                cache[names] = None if self.columns is None else column_positions(names, tuple(self.columns))
            at = cache[names]
            self._last_input_at = (names, at)
        inputs = A if at is None else A[:, at]
        if not self.l2_feature:
            return inputs
        return np.column_stack([inputs, l2_speedup(A, names, getattr(self, "l2_rate_", 0.0))])

    def _estimator(self, names: list[str]) -> Any:
        import lightgbm as lgb  # fitting only: a loaded model's kernel_kinds need neither import

        from perfcast.models.estimators.trees import tree_model

        est = clone(self.estimator) if self.estimator is not None else tree_model("lightgbm")
        if self.monotone:
            unknown = sorted(set(self.monotone) - set(names))
            if unknown:
                raise ValueError(f"hybrid: monotone constraint on {unknown}, which are not among the features used")
            bad = {k: v for k, v in self.monotone.items() if v not in (-1, 0, 1)}
            if bad:
                raise ValueError(f"hybrid: monotone signs must be -1, 0 or +1; got {bad}")
            if not isinstance(est, lgb.LGBMModel):
                raise ValueError(f"hybrid: monotone constraints need a LightGBM estimator, not {type(est).__name__}")
            est.set_params(monotone_constraints=[int(self.monotone.get(c, 0)) for c in names])
        return est

    # ------------------------------------------------------------------ fit / predict
    def fit(self, X: pd.DataFrame, y: Any) -> HybridRegressor:
        y = np.asarray(y, dtype="float64").ravel()
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if not (y > 0).all():
            raise ValueError(f"the hybrid model learns log({self.target} / baseline): every target must be > 0 "
                             f"({int((~(y > 0)).sum())} are not; missing measurements must be dropped first)")
        self.floors_, self.pooled_floor_ = {}, 0.0
        for memo in ("_kind_floors", "_input_at", "_last_floors", "_last_input_at"):
            self.__dict__.pop(memo, None)
        if self.latency_floor and self.target == "runtime_ms":
            self.floors_, self.pooled_floor_ = learn_floors(X, y)
        self.power_ = None
        if self.power_limit is not None and self.target == "runtime_ms":
            self.power_ = fit_power_limit(X, y, self.power_limit)
        if self.l2_feature and not self.l2_resident:
            raise ValueError("hybrid: l2_feature reads the L2-resident base's memory time; set l2_resident = true too")
        self.l2_rate_, self.exp_rate_ = 0.0, 0.0
        A, names = X.to_numpy(dtype="float64"), tuple(X.columns)
        if self.softmax_exp and self.target == "runtime_ms":
            self.exp_rate_ = fit_rate(X, y, lambda rate: self._baseline(A, names, exp=rate), EXP_PER_CLOCK)
        if self.l2_rows not in L2_ROWS:
            raise ValueError(f"hybrid: l2_rows must be one of {L2_ROWS}, got {self.l2_rows!r}")
        if self.l2_resident and self.target == "runtime_ms":
            rows = decode_rows(A, names) if self.l2_rows == "decode" else None
            self.l2_rate_ = fit_rate(X, y, lambda rate: self._baseline(A, names, rate), L2_BYTES_PER_CLOCK, rows)
        inputs = self._inputs(X)
        self.estimator_ = self._estimator(list(inputs.columns))
        log_ratio = np.log(y / self._baseline(X.to_numpy(dtype="float64"), tuple(X.columns)))
        self.estimator_.fit(inputs, log_ratio, **self._op_weights(X))
        self.trend_ = None if self.size_trend is None else fit_size_trend(X, log_ratio, self.size_trend)
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def _op_weights(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """``sample_weight`` giving each operand layout the same total weight (mean 1), if ``balance_ops``."""
        if not self.balance_ops:
            return {}
        labels = layout_rows(X.to_numpy(dtype="float64"), tuple(X.columns))
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weights = len(labels) / (len(counts) * counts[inverse.ravel()])
        return {"sample_weight": weights}

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_rows(X.to_numpy(dtype="float64"), tuple(X.columns))

    def predict_rows(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`predict` of feature rows ``A`` whose columns are ``names`` (the served path: no frame)."""
        check_fitted(self, "estimator_")
        if getattr(self.estimator_, "reads_arrays", False):  # a loaded forest
            inputs = self._input_array(A, names)
        else:  # a library model fitted on named columns
            inputs = self._inputs(named_frame(A, names))
        pred = self._baseline(A, names) * np.exp(self.estimator_.predict(inputs))
        trend = getattr(self, "trend_", None)
        if trend is None:
            return pred
        factor = size_trend_factor(A, names, str(self.size_trend), trend)
        roofline = 10.0 ** A[:, column_positions(names, (ROOFLINE_COLUMN,))[0]]
        return np.where(factor < 1.0, np.maximum(pred * factor, np.minimum(pred, roofline)), pred)

    # ------------------------------------------------------------------ state (perfcast.models.persistence)
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "estimator_")
        return {"target": self.target, "columns": None if self.columns is None else list(self.columns),
                "relative": bool(self.relative), "wave_quantised": bool(self.wave_quantised), "tiles": bool(self.tiles),
                "size_trend": self.size_trend, "trend": getattr(self, "trend_", None),
                "balance_ops": bool(self.balance_ops),
                "power": None if getattr(self, "power_", None) is None else dict(self.power_),
                "floors": {k: float(v) for k, v in self.floors_.items()}, "pooled_floor": float(self.pooled_floor_),
                **({"l2_rate": float(self.l2_rate_)} if getattr(self, "l2_rate_", 0.0) > 0 else {}),
                **({"l2_rows": self.l2_rows} if getattr(self, "l2_rate_", 0.0) > 0 and self.l2_rows != "all" else {}),
                **({"exp_rate": float(self.exp_rate_)} if getattr(self, "exp_rate_", 0.0) > 0 else {}),
                **({"l2_feature": True} if self.l2_feature else {})}, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> HybridRegressor:
        """A hybrid whose ``predict`` works once its ``estimator_`` is set (the persistence layer does)."""
        out = cls(target=str(params["target"]), columns=params.get("columns"),
                  relative=bool(params.get("relative", False)),
                  wave_quantised=bool(params.get("wave_quantised", False)), tiles=bool(params.get("tiles", False)),
                  size_trend=params.get("size_trend"), balance_ops=bool(params.get("balance_ops", False)),
                  l2_feature=bool(params.get("l2_feature", False)))
        trend = params.get("trend")
        out.trend_ = None if trend is None else {str(g): {str(k): float(v) for k, v in t.items()}
                                                 for g, t in trend.items()}
        power = params.get("power")
        out.power_ = None if power is None else {str(k): float(v) for k, v in power.items()}
        out.floors_ = {str(k): float(v) for k, v in params.get("floors", {}).items()}
        out.pooled_floor_ = float(params.get("pooled_floor", 0.0))
        out.l2_rate_ = float(params.get("l2_rate", 0.0))
        out.l2_resident = out.l2_rate_ > 0
        out.l2_rows = str(params.get("l2_rows", "all"))
        out.exp_rate_ = float(params.get("exp_rate", 0.0))
        out.softmax_exp = out.exp_rate_ > 0
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
