"""Per-group target normalisation: one model spans benchmarks whose scores differ in unit and scale.

Why: a CPU record's score is in the unit of its (workload, sub-test): SPECrate ratios, MB/s, ns, GFLOP/s.
A single model fitted on raw scores spends its capacity on telling units apart, and a tree cannot
predict past the largest score it saw. :class:`TargetNormalizer` divides every target by a per-group
*baseline* learned from the training rows and lets the wrapped estimator learn only the ratio; predictions
are multiplied back. The baseline of a group is its geometric mean score, optionally times a power law of
some features (``scale_by``): ``log y ≈ a_g + b_g · (s - s̄_g)``. With ``scale_by=["log2_cores"]`` a rate
benchmark gets b ≈ 1 per doubling (throughput grows with cores) and a single-copy one b ≈ 0, learned from
the data, so a model can reach core counts that no training row had.

A group never seen in training falls back to the longest prefix of its ``group_by`` key that was seen
(with ``group_by=["benchmark_code", "workload_code"]`` a new sub-test gets its benchmark's baseline), and
past that to the power law of all training rows together: the best guess available, but a poor one when
units differ; ``fallback_rows_`` says how many rows of the last prediction had no group prefix at all.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

#: the default group: the CPU features' code of (benchmark, sub-test, variant)
DEFAULT_GROUP_BY: tuple[str, ...] = ("workload_code",)


class TargetNormalizer(RegressorMixin, BaseEstimator):
    """Fit ``estimator`` on y / baseline(X) and predict estimator(X) × baseline(X).

    Parameters
    ----------
    estimator : the regressor of the ratio (e.g. a ``PerTargetRegressor``); it gets y in the same form as
        given (DataFrame, Series or array), NaN kept where a target was not measured.
    group_by : feature columns whose values name a group (NaN is a value of its own), most general first:
        an unseen key falls back to its longest seen prefix.
    scale_by : numeric feature columns of the per-group power law (use log features: ``log2_cores``).
        Empty: the baseline is the group's geometric mean.
    ridge : shrinkage of the power-law slopes toward 0, relative to the group's own spread; keeps a small
        group from learning a wild slope.
    min_rows : groups with fewer measured rows keep slope 0 (their geometric mean only).
    """

    def __init__(self, estimator: BaseEstimator, group_by: Sequence[str] = DEFAULT_GROUP_BY,
                 scale_by: Sequence[str] = (), ridge: float = 0.01, min_rows: int = 10):
        self.estimator = estimator
        self.group_by = group_by
        self.scale_by = scale_by
        self.ridge = ridge
        self.min_rows = min_rows

    # ------------------------------------------------------------------------------------------ fit
    def fit(self, X: pd.DataFrame, y: Any) -> TargetNormalizer:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"TargetNormalizer needs a feature DataFrame (it groups by column name), "
                            f"got {type(X).__name__}")
        if self.ridge < 0 or int(self.min_rows) < 2:
            raise ValueError(f"ridge must be >= 0 and min_rows >= 2, got ridge={self.ridge}, "
                             f"min_rows={self.min_rows}")
        Y = _matrix(y, len(X))
        measured = ~np.isnan(Y)
        bad = measured & ~(Y > 0)
        if bad.any():
            raise ValueError(f"TargetNormalizer divides by a geometric mean, so targets must be > 0; "
                             f"{int(bad.sum())} measured value(s) are <= 0 (mark unmeasured targets NaN)")
        keys, S = self._inputs(X, "fit")
        self.n_targets_ = Y.shape[1]
        z = np.log(np.where(measured, Y, 1.0))
        # one table of power laws per level: the full key, then ever shorter prefixes of group_by
        self.levels_ = []
        for width in range(len(self.group_by), 0, -1):
            codes, groups = pd.factorize(pd.MultiIndex.from_frame(keys.iloc[:, :width]), sort=True)
            fits = [self._power_law(z[codes == i], measured[codes == i], S[codes == i]) for i in range(len(groups))]
            self.levels_.append({"groups": groups, **{name: np.stack([f[i] for f in fits])
                                                      for i, name in enumerate(("intercept", "center", "slope"))}})
        self.pooled_ = self._power_law(z, measured, S)
        ratio = np.where(measured, Y / np.exp(self._log_baseline(keys, S)), np.nan)
        self.estimator_ = clone(self.estimator).fit(X, _like(y, ratio))
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def _inputs(self, X: pd.DataFrame, where: str) -> tuple[pd.DataFrame, np.ndarray]:
        """Each row's group key columns (NaN as +inf, a value of its own) and scale_by values (NaN kept)."""
        if not len(self.group_by):
            raise ValueError("TargetNormalizer: group_by must name at least one column")
        need = [*self.group_by, *self.scale_by]
        absent = [c for c in need if c not in X.columns]
        if absent:
            raise ValueError(f"TargetNormalizer.{where}: X lacks column(s) {absent} named in group_by/scale_by; "
                             f"it has {list(X.columns)[:12]}{' ...' if X.shape[1] > 12 else ''}")
        keys = X[list(self.group_by)].apply(pd.to_numeric, errors="coerce").astype("float64").fillna(np.inf)
        S = X[list(self.scale_by)].to_numpy(dtype="float64") if len(self.scale_by) else np.empty((len(X), 0))
        return keys.reset_index(drop=True), S

    def _power_law(self, z: np.ndarray, measured: np.ndarray, S: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Intercept (targets), scale centre (scales) and slopes (scales x targets) of one group's rows."""
        n_scales, n_targets = S.shape[1], z.shape[1]
        intercept, slope = np.zeros(n_targets), np.zeros((n_scales, n_targets))
        with warnings.catch_warnings():  # a scale unknown in every row of the group: centre 0, no slope
            warnings.simplefilter("ignore", RuntimeWarning)
            center = np.nan_to_num(np.nanmean(S, axis=0), nan=0.0) if len(S) else np.zeros(n_scales)
        Sc = np.nan_to_num(S - center, nan=0.0)  # an unknown scale sits at the centre: no slope applied
        for j in range(n_targets):
            rows = measured[:, j]
            if not rows.any():
                continue
            zj, Sj = z[rows, j], Sc[rows]
            intercept[j] = zj.mean()
            if n_scales and rows.sum() >= int(self.min_rows):
                gram = Sj.T @ Sj
                penalty = float(self.ridge) * np.diag(np.diag(gram)) + 1e-12 * np.eye(n_scales)
                slope[:, j] = np.linalg.solve(gram + penalty, Sj.T @ (zj - intercept[j]))
        return intercept, center, slope

    # -------------------------------------------------------------------------------------- predict
    def _log_baseline(self, keys: pd.DataFrame, S: np.ndarray) -> np.ndarray:
        """log baseline (rows x targets) from the longest key prefix seen in training, else the pooled law."""
        n = len(keys)
        intercept, center, slope = (np.repeat(p[None], n, axis=0) for p in self.pooled_)
        done = np.zeros(n, dtype=bool)
        for level in self.levels_:
            width = level["groups"].nlevels
            codes = level["groups"].get_indexer(pd.MultiIndex.from_frame(keys.iloc[:, :width]))
            use = (codes >= 0) & ~done
            intercept[use], center[use], slope[use] = (level[name][codes[use]] for name in ("intercept", "center", "slope"))
            done |= use
        self.fallback_rows_ = int((~done).sum())
        Sc = np.nan_to_num(S - center, nan=0.0)
        return intercept + np.einsum("rs,rst->rt", Sc, slope)

    def baseline(self, X: pd.DataFrame) -> np.ndarray:
        """The baseline of each row (rows x targets), in the target's units."""
        check_is_fitted(self, "estimator_")
        keys, S = self._inputs(X, "predict")
        return np.exp(self._log_baseline(keys, S))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        base = self.baseline(X)
        pred = np.asarray(self.estimator_.predict(X), dtype="float64")
        return pred * (base[:, 0] if pred.ndim == 1 else base)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.multi_output = True
        return tags


def _matrix(y: Any, n_rows: int) -> np.ndarray:
    arr = np.asarray(pd.DataFrame(y) if isinstance(y, pd.Series) else y, dtype="float64")
    arr = arr.reshape(len(arr), -1)
    if arr.shape[0] != n_rows:
        raise ValueError(f"X has {n_rows} rows but y has {arr.shape[0]}")
    return arr


def _like(y: Any, values: np.ndarray) -> Any:
    """``values`` in the form of ``y`` (DataFrame/Series keep names and index; arrays keep their rank)."""
    if isinstance(y, pd.DataFrame):
        return pd.DataFrame(values, index=y.index, columns=y.columns)
    if isinstance(y, pd.Series):
        return pd.Series(values[:, 0], index=y.index, name=y.name)
    return values[:, 0] if np.ndim(y) == 1 else values


def normalized(task: str, targets: list[str], params: dict[str, Any]) -> TargetNormalizer:
    """Registry factory: ``TargetNormalizer`` around another registered model, fitted on the ratio.

    Reserved ``params``: ``base`` (the inner model's registry name, default "lightgbm"), ``group_by`` and
    ``scale_by`` (see :class:`TargetNormalizer`); the rest go to the inner model. The ratio is learned in
    log space unless ``log_target`` says otherwise: relative error is what the scores are judged by.
    """
    from perfcast.models.registry import MODELS  # the registry imports this module

    rest = dict(params)
    base = rest.pop("base", "lightgbm")
    group_by = tuple(rest.pop("group_by", DEFAULT_GROUP_BY))
    scale_by = tuple(rest.pop("scale_by", ()))
    if base not in MODELS or base == "normalized":
        raise ValueError(f"normalized: base must be another registered model, got {base!r}; "
                         f"known: {', '.join(m for m in MODELS if m != 'normalized')}")
    if base != "group_attention":  # the network standardises its own (log-)target
        rest.setdefault("log_target", True)
    return TargetNormalizer(MODELS[base](task, targets, rest), group_by=group_by, scale_by=scale_by)
