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

The fitted baseline is plain numbers (:meth:`TargetNormalizer.to_json` / :meth:`TargetNormalizer.from_json`),
so a saved model stores it as data beside its inner estimator, never as pickled code.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from perfcast.features import feature_groups
from perfcast.features.estimator_base import Regressor, check_fitted, clone
from perfcast.models.estimators.log_target import log_space
from perfcast.models.estimators.per_target import PerTargetRegressor
from perfcast.models.estimators.trees import tree_model

#: the default group: the CPU features' code of (benchmark, sub-test, variant)
DEFAULT_GROUP_BY: tuple[str, ...] = ("workload_code",)
#: the parts of one fitted power-law table, in the order :meth:`TargetNormalizer._power_law` returns them
_LAW = ("intercept", "center", "slope")


class TargetNormalizer(Regressor):
    """Fit ``estimator`` on y / baseline(X) and predict estimator(X) × baseline(X).

    Parameters
    ----------
    estimator : the regressor of the ratio; it gets y in the form given (DataFrame, Series or array), NaN
        kept where a target was not measured.
    group_by : feature columns whose values name a group (NaN is a value of its own), most general first:
        an unseen key falls back to its longest seen prefix.
    scale_by : numeric feature columns of the per-group power law (use log features: ``log2_cores``).
        Empty: the baseline is the group's geometric mean.
    ridge : shrinkage of the power-law slopes toward 0, relative to the group's own spread; keeps a small
        group from learning a wild slope.
    min_rows : groups with fewer measured rows keep slope 0 (their geometric mean only).
    """

    #: the fitted ratio model, saved in the normaliser's own folder (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"estimator_": ""}

    def __init__(self, estimator: Any | None = None, group_by: Sequence[str] = DEFAULT_GROUP_BY,
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
        if self.estimator is None:
            raise ValueError("TargetNormalizer needs an estimator to learn the ratio to the baseline")
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
        z = np.log(np.where(measured, Y, 1.0))
        # one table of power laws per level: the full key, then ever shorter prefixes of group_by
        self.levels_ = []
        for width in range(len(self.group_by), 0, -1):
            table = keys.iloc[:, :width].drop_duplicates().sort_values(list(keys.columns[:width]))
            codes = _codes(keys.iloc[:, :width], table)
            fits = [self._power_law(z[codes == i], measured[codes == i], S[codes == i]) for i in range(len(table))]
            self.levels_.append({"keys": table.to_numpy(dtype="float64"),
                                 **{name: np.stack([f[i] for f in fits]) for i, name in enumerate(_LAW)}})
        self.pooled_ = dict(zip(_LAW, self._power_law(z, measured, S)))
        ratio = np.where(measured, Y / np.exp(self._log_baseline(keys, S)), np.nan)
        self.estimator_ = clone(self.estimator).fit(X, _like(y, ratio))
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def _inputs(self, X: pd.DataFrame, where: str) -> tuple[pd.DataFrame, np.ndarray]:
        """Each row's group key columns (float, NaN kept) and scale_by values (rows x scales, NaN kept)."""
        if not len(self.group_by):
            raise ValueError("TargetNormalizer: group_by must name at least one column")
        need = [*self.group_by, *self.scale_by]
        absent = [c for c in need if c not in X.columns]
        if absent:
            raise ValueError(f"TargetNormalizer.{where}: X lacks column(s) {absent} named in group_by/scale_by; "
                             f"it has {list(X.columns)[:12]}{' ...' if X.shape[1] > 12 else ''}")
        keys = X[list(self.group_by)].apply(pd.to_numeric, errors="coerce").astype("float64")
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
        law = {name: np.repeat(np.asarray(self.pooled_[name])[None], len(keys), axis=0) for name in _LAW}
        done = np.zeros(len(keys), dtype=bool)
        for level in self.levels_:
            width = level["keys"].shape[1]
            codes = _codes(keys.iloc[:, :width], pd.DataFrame(level["keys"], columns=keys.columns[:width]))
            use = (codes >= 0) & ~done
            for name in _LAW:
                law[name][use] = level[name][codes[use]]
            done |= use
        self.fallback_rows_ = int((~done).sum())
        Sc = np.nan_to_num(S - law["center"], nan=0.0)
        return law["intercept"] + np.einsum("rs,rst->rt", Sc, law["slope"])

    def baseline(self, X: pd.DataFrame) -> np.ndarray:
        """The baseline of each row (rows x targets), in the target's units."""
        check_fitted(self, "levels_")
        keys, S = self._inputs(X, "predict")
        return np.exp(self._log_baseline(keys, S))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_fitted(self, "estimator_")
        base = self.baseline(X)
        pred = np.asarray(self.estimator_.predict(X), dtype="float64")
        return pred * (base[:, 0] if pred.ndim == 1 else base)

    # ---------------------------------------------------------------------------------- as plain data
    def to_json(self) -> dict[str, Any]:
        """The fitted baseline as JSON-able numbers (NaN group keys as None); the inner estimator is not in it."""
        check_fitted(self, "levels_")

        def law(d: dict[str, Any]) -> dict[str, Any]:
            return {name: np.asarray(d[name]).tolist() for name in _LAW}

        return {
            "group_by": list(self.group_by), "scale_by": list(self.scale_by),
            "levels": [{"keys": pd.DataFrame(lv["keys"]).astype(object).where(~np.isnan(lv["keys"]), None)
                        .to_numpy().tolist(), **law(lv)} for lv in self.levels_],
            "pooled": law(self.pooled_),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TargetNormalizer:
        """A normaliser whose :meth:`baseline` works again from :meth:`to_json` output (no inner estimator)."""
        out = cls(group_by=tuple(doc["group_by"]), scale_by=tuple(doc["scale_by"]))
        n_scales = len(out.scale_by)

        def law(d: dict[str, Any], *lead: int) -> dict[str, np.ndarray]:
            # shapes restored explicitly: with no scale_by, JSON's empty lists lose their dimensions
            intercept = np.asarray(d["intercept"], dtype="float64").reshape(*lead, -1)
            return {"intercept": intercept,
                    "center": np.asarray(d["center"], dtype="float64").reshape(*lead, n_scales),
                    "slope": np.asarray(d["slope"], dtype="float64").reshape(*lead, n_scales, intercept.shape[-1])}

        out.levels_ = [{"keys": np.asarray(lv["keys"], dtype="float64").reshape(len(lv["intercept"]), -1),
                        **law(lv, len(lv["intercept"]))} for lv in doc["levels"]]
        out.pooled_ = law(doc["pooled"])
        return out

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self.to_json(), {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> TargetNormalizer:
        return cls.from_json(params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.multi_output = True
        return tags


def _codes(keys: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """Row position in ``table`` of each row of ``keys`` (-1 where absent); NaN matches NaN, as in a merge."""
    table = table.set_axis(list(keys.columns), axis=1).assign(_code=np.arange(len(table)))
    found = keys.merge(table, how="left", on=list(keys.columns), sort=False)["_code"]
    return found.fillna(-1).to_numpy(dtype=np.int64)


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


#: inner models the normaliser can wrap: the tree ensembles, and the group-attention network
BASES: tuple[str, ...] = ("lightgbm", "xgboost", "rf", "extra_trees", "group_attention")


def normalized(task: str, targets: list[str], params: dict[str, Any]) -> Any:
    """Registry factory: per target, a ``TargetNormalizer`` around a tree ensemble fitted on log(ratio);
    or one around the group-attention network for all targets jointly (it standardises its own log-target).

    Reserved ``params``: ``base`` (one of :data:`BASES`, default "lightgbm"), ``group_by`` and ``scale_by``
    (see :class:`TargetNormalizer`), ``monotone`` (LightGBM only: feature name -> +1/-1, the learned ratio may
    only rise/fall with it), ``log_target`` (trees only; default True: relative error is what scores
    are judged by), ``seeds`` (trees only: a seed bag, the geometric mean of one tree model per seed, which
    steadies predictions for processors between the trained ones). The rest go to the inner model.
    """
    rest = dict(params)
    base = rest.pop("base", "lightgbm")
    norm = {"group_by": tuple(rest.pop("group_by", DEFAULT_GROUP_BY)), "scale_by": tuple(rest.pop("scale_by", ()))}
    if base not in BASES:
        raise ValueError(f"normalized: base must be one of {', '.join(BASES)}, got {base!r}")
    seeds = rest.pop("seeds", None)
    monotone = rest.pop("monotone", None)
    if base == "group_attention":  # torch is imported only when the network is asked for
        from perfcast.models.estimators.group_attention import GroupAttentionRegressor

        if seeds is not None:
            raise ValueError("normalized: seeds (a seed bag) is for tree bases; the group-attention network takes "
                             "random_state")
        if monotone:
            raise ValueError("normalized: monotone is for a LightGBM base; the group-attention network has none")

        net = GroupAttentionRegressor(groups=feature_groups(task), **rest)
        return PerTargetRegressor(TargetNormalizer(net, **norm), targets, log_target=False, joint=True)
    log = rest.pop("log_target", True)
    if monotone:
        rest["monotone_constraints"] = monotone_constraints(task, monotone, base)
    inner = tree_model(base, rest)
    if log:
        inner = log_space(inner)
    if seeds is not None:
        from perfcast.models.estimators.ensemble import GeometricEnsemble

        inner = GeometricEnsemble([inner], seeds=list(seeds))
    return PerTargetRegressor(TargetNormalizer(inner, **norm), targets, log_target=False)


def monotone_constraints(task: str, monotone: dict[str, int], base: str) -> list[int]:
    """LightGBM's positional ``monotone_constraints`` from feature names (the task's output column order)."""
    from perfcast.features import feature_names

    names = feature_names(task)
    unknown = sorted(set(monotone) - set(names))
    if base != "lightgbm" or unknown or any(v not in (-1, 0, 1) for v in monotone.values()):
        raise ValueError(f"normalized: monotone needs base 'lightgbm' (got {base!r}), features of {task} "
                         f"(unknown: {unknown}) and signs -1, 0 or +1 (got {sorted(set(monotone.values()))})")
    return [int(monotone.get(c, 0)) for c in names]
