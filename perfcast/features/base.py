"""What every feature transformer shares: input checks, fixed output columns, the scikit-learn contract.

Why a base class: the three task transformers differ only in the numbers they compute. Checking the
input (a record DataFrame with the task's required columns, positive sizes), returning the columns that
``groups.py`` declares in that order, and behaving as a scikit-learn transformer (``get_feature_names_out``,
``set_output``, cloneable) is written once here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from perfcast.features.groups import feature_names


class MissingColumnError(KeyError):
    """The records lack a column a feature needs (the message names it and the task)."""

    def __str__(self) -> str:
        return str(self.args[0])


class RecordFeatures(TransformerMixin, BaseEstimator):
    """Base transformer: record DataFrame in, numeric DataFrame of :func:`feature_names` (task) out."""

    task: ClassVar[str]
    #: columns every input row must have (non-missing)
    required: ClassVar[tuple[str, ...]]
    #: columns whose given values must be positive numbers (checked where present)
    positive: ClassVar[tuple[str, ...]] = ()

    def fit(self, X: pd.DataFrame, y: Any = None) -> RecordFeatures:
        """Check the records and learn what the subclass needs (see :meth:`_fit`); y is ignored."""
        X = self._check(X)
        self._fit(X)
        self.feature_names_out_ = np.asarray(feature_names(self.task), dtype=object)
        self.n_features_out_ = len(self.feature_names_out_)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Features of each record, as a float64 DataFrame with the input's index."""
        check_is_fitted(self, "feature_names_out_")
        X = self._check(X)
        out = self._features(X)
        names = list(self.feature_names_out_)
        absent = [c for c in names if c not in out.columns]
        if absent:  # a bug in the subclass, not bad input
            raise RuntimeError(f"{type(self).__name__} did not compute {absent}")
        return out[names].astype("float64").set_axis(X.index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output column names (fixed per task; see :mod:`perfcast.features.groups`)."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    # ---- hooks
    def _fit(self, X: pd.DataFrame) -> None:
        """Learn data-dependent state (default: none)."""

    def _features(self, X: pd.DataFrame) -> pd.DataFrame:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- input checks
    def _check(self, X: Any) -> pd.DataFrame:
        where = type(self).__name__
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"{where}: expected a DataFrame of {self.task} records, got {type(X).__name__}")
        absent = [c for c in self.required if c not in X.columns]
        if absent:
            raise MissingColumnError(
                f"{where}: the {self.task} records lack column(s) {absent}, which these features need "
                f"(see perfcast.datasets.schema for what each means)"
            )
        for c in self.required:
            n_missing = int(X[c].isna().sum())
            if n_missing:
                first = X.index[X[c].isna().to_numpy(dtype=bool)][0]
                raise ValueError(f"{where}: column {c!r} is missing in {n_missing} row(s) (first: row {first})")
        for c in (c for c in self.positive if c in X.columns):
            v = pd.to_numeric(X[c], errors="coerce").astype("float64")
            bad = ~(v > 0) & X[c].notna()
            if bad.any():
                first = X.index[bad.to_numpy(dtype=bool)][0]
                raise ValueError(
                    f"{where}: column {c!r} must hold positive numbers; row {first} has {X.at[first, c]!r} "
                    f"({int(bad.sum())} such row(s))"
                )
        return X


def num(X: pd.DataFrame, column: str, default: float = np.nan) -> pd.Series:
    """``X[column]`` as float64, ``default`` where missing or where the column is absent."""
    if column not in X.columns:
        return pd.Series(default, index=X.index, dtype="float64")
    return pd.to_numeric(X[column], errors="coerce").astype("float64").fillna(default)


def flag(mask: pd.Series) -> pd.Series:
    """A boolean Series (NA kept as NaN) as 1.0/0.0 floats."""
    return mask.astype("float64") if mask.dtype == bool else mask.astype("Float64").astype("float64")


def one_hot(values: pd.Series, categories: tuple[str, ...], prefix: str) -> pd.DataFrame:
    """Fixed-vocabulary one-hot columns ``<prefix><category>`` (all 0 for a missing value)."""
    return pd.DataFrame(
        {f"{prefix}{c}": (values == c).fillna(False).astype("float64") for c in categories}, index=values.index
    )


def log2(x: pd.Series) -> pd.Series:
    return np.log2(x.astype("float64"))


def log10(x: pd.Series) -> pd.Series:
    return np.log10(x.astype("float64"))
