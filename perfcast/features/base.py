"""What every feature transformer shares: input checks, fixed output columns, the scikit-learn contract.

Why a base class: the three task transformers differ only in the numbers they compute. Checking the
input (a record DataFrame with the task's required columns, positive sizes), returning the columns that
``groups.py`` declares in that order, and behaving as a scikit-learn transformer (``get_feature_names_out``,
``set_output``, cloneable) is written once here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from perfcast.lazy import is_missing, is_instance, pandas as pd

from perfcast.features.distinct import factorize, flagged
from perfcast.features.estimator_base import Transformer, check_fitted
from perfcast.features.groups import feature_names
from perfcast.features.records import Records


class MissingColumnError(KeyError):
    """The records lack a column a feature needs (the message names it and the task)."""

    def __str__(self) -> str:
        return str(self.args[0])


class RecordFeatures(Transformer):
    """Base transformer: record DataFrame in, numeric DataFrame of :func:`feature_names` (task) out."""

    task: ClassVar[str]
    #: columns every input row must have (non-missing)
    required: ClassVar[tuple[str, ...]]
    #: columns whose given values must be positive numbers (checked where present)
    positive: ClassVar[tuple[str, ...]] = ()

    def fit(self, X: pd.DataFrame | Records, y: Any = None) -> RecordFeatures:
        """Check the records and learn what the subclass needs (see :meth:`_fit`); y is ignored."""
        self._fit(self._check(X))
        self.feature_names_out_ = np.asarray(feature_names(self.task), dtype=object)
        self.n_features_out_ = len(self.feature_names_out_)
        return self

    def transform(self, X: pd.DataFrame | Records) -> pd.DataFrame:
        """Features of each record (a DataFrame, or :class:`Records` for a request that never became one), as a
        float64 DataFrame with the input's index."""
        check_fitted(self, "feature_names_out_")
        R = self._check(X)
        out = self._features(R)
        return self._ordered(out, R)

    def transform_array(self, X: pd.DataFrame | Records) -> np.ndarray:
        """:meth:`transform`'s numbers as a (rows, features) float64 array in :meth:`get_feature_names_out`
        order, without the DataFrame: a served request's heads read rows by column position
        (:func:`column_positions`), and building and reading a one-row frame costs more than its arithmetic."""
        check_fitted(self, "feature_names_out_")
        R = self._check(X)
        if type(self)._columns is RecordFeatures._columns:  # a transformer that computes with pandas
            return self._ordered(self._features(R), R).to_numpy(dtype="float64")
        cols = self._columns(R)
        if tuple(cols) != self.names_out():
            return self._ordered(frame(cols, R.index), R).to_numpy(dtype="float64")
        return matrix(cols, len(R))

    def names_out(self) -> tuple[str, ...]:
        """The output names as a tuple (the key :func:`column_positions` caches by), made once."""
        names = self.__dict__.get("_names_tuple")
        if names is None or len(names) != len(self.feature_names_out_):
            names = self.__dict__["_names_tuple"] = FeatureNames(str(c) for c in self.feature_names_out_)
        return names

    def _ordered(self, out: pd.DataFrame, R: Records) -> pd.DataFrame:
        """``out`` with the declared columns in order, as float64, on the records' index."""
        names = list(self.feature_names_out_)
        if not np.array_equal(out.columns.to_numpy(dtype=object), self.feature_names_out_):
            absent = [c for c in names if c not in out.columns]
            if absent:  # a bug in the subclass, not bad input
                raise RuntimeError(f"{type(self).__name__} did not compute {absent}")
            out = out[names]
        if not all(t == np.float64 for t in out.dtypes):  # frame() builds float64 already: no copy then
            out = out.astype("float64")
        return out if out.index is R.index else out.set_axis(R.index)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output column names (fixed per task; see :mod:`perfcast.features.groups`)."""
        check_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    # ---- hooks
    def _fit(self, X: Records) -> None:
        """Learn data-dependent state (default: none)."""

    def _features(self, X: Records) -> pd.DataFrame:
        """The feature frame (default: :meth:`_columns` as one float block)."""
        return frame(self._columns(X), X.index)

    def _columns(self, X: Records) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        """Feature name -> values, in :func:`feature_names` order; a transformer computing with pandas overrides
        :meth:`_features` instead."""
        raise NotImplementedError

    # ---- input checks
    def _check(self, X: Any) -> Records:
        where = type(self).__name__
        if not (isinstance(X, Records) or is_instance(X, "pandas", "DataFrame")):
            raise TypeError(f"{where}: expected a DataFrame of {self.task} records, got {type(X).__name__}")
        R = Records.of(X)
        if len(R) == 1 and self._clear_one(R):
            return R
        absent = [c for c in self.required if c not in R]
        if absent:
            raise MissingColumnError(
                f"{where}: the {self.task} records lack column(s) {absent}, which these features need "
                f"(see perfcast.records.schema for what each means)"
            )
        for c in self.required:
            blank = R.missing(c)
            if flagged(blank):
                raise ValueError(f"{where}: column {c!r} is missing in {int(blank.sum())} row(s) (first: row "
                                 f"{R.index[blank][0]})")
        for c in (c for c in self.positive if c in R):
            if len(R) == 1 and (R.number(c)[0] > 0 or R.missing(c)[0]):  # a request's value, read directly
                continue
            bad = ~(R.number(c) > 0) & ~R.missing(c)
            if flagged(bad):
                first = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{where}: column {c!r} must hold positive numbers; row {R.index[first]} has "
                    f"{R.value(c, first)!r} ({int(bad.sum())} such row(s))"
                )
        return R

    def _clear_one(self, R: Records) -> bool:
        """Whether a single row passes every check of :meth:`_check`, told from its values in Python: a request's
        numbers (float64) and text (str) as the predictor gives them. Anything else (or anything to report) is
        left to the general checks, which word it."""
        for c in self.required:
            v = R.value(c, 0) if c in R else None
            if not (isinstance(v, str) or (type(v) is np.float64 and v == v)):  # noqa: PLR0124 (NaN test)
                return False
        for c in self.positive:
            if c in R:
                v = R.value(c, 0)
                if not (type(v) is np.float64 and (v > 0 or v != v)):  # noqa: PLR0124 (missing is allowed)
                    return False
        return True


def missing(s: pd.Series) -> np.ndarray:
    """Where ``s`` is missing, as a bool array (a float column's NaN checked without a pandas operation)."""
    return np.isnan(s.to_numpy()) if s.dtype == np.float64 else s.isna().to_numpy(dtype=bool)


def values(X: pd.DataFrame, column: str, default: float = np.nan) -> np.ndarray:
    """``X[column]`` as a float64 array, ``default`` where missing or where the column is absent."""
    if column not in X.columns:
        return np.full(len(X), default, dtype="float64")
    s = X[column]
    v = s.to_numpy() if s.dtype == np.float64 else pd.to_numeric(s, errors="coerce").astype("float64").to_numpy()
    return v if np.isnan(default) else np.where(np.isnan(v), default, v)


def num(X: pd.DataFrame, column: str, default: float = np.nan) -> pd.Series:
    """:func:`values` as a Series with ``X``'s index."""
    return pd.Series(values(X, column, default), index=X.index, dtype="float64")


def float_columns(X: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """(rows, names) of ``X`` as float64 (NaN where missing), the same numbers as ``X[list(names)]`` gives. Why not
    that: a feature frame is one float block, so converting it whole is a view and picking columns from the array
    costs microseconds, where pandas' column selection costs ~50x more on every request. The columns' positions
    are found once per column index (a model's feature frames share one: :func:`column_index`)."""
    hit = _POSITIONS.get((id(X.columns), names))
    if hit is None or hit[0] is not X.columns:
        at = X.columns.get_indexer(list(names))
        if (at < 0).any():
            raise KeyError(f"the frame lacks column(s) {[c for c, i in zip(names, at, strict=True) if i < 0]}")
        if len(_POSITIONS) >= 256:  # frames made while fitting come and go: keep the cache small
            _POSITIONS.clear()
        hit = _POSITIONS[id(X.columns), names] = (X.columns, at)
    try:
        return X.to_numpy(dtype="float64", na_value=np.nan)[:, hit[1]]
    except (TypeError, ValueError):  # other columns are not numbers: convert only these
        return X.iloc[:, hit[1]].to_numpy(dtype="float64", na_value=np.nan)


#: (id of a column index, names) -> (that index, the names' positions in it), for :func:`float_columns`
_POSITIONS: dict[tuple[int, tuple[str, ...]], tuple[pd.Index, np.ndarray]] = {}


def text_map(text: np.ndarray, fn: Callable[[str], Any]) -> np.ndarray:
    """``fn`` of each distinct value of an object array of text (None stays None), computed once per value."""
    if len(text) == 1:  # a request's one value: no codes to build (missing as factorize reads it)
        out = np.empty(1, dtype=object)
        v = text[0]
        out[0] = None if is_missing(v) else fn(str(v))
        return out
    codes, uniques = factorize(text)
    return np.asarray([fn(str(u)) for u in uniques] + [None], dtype=object)[codes]


def frame(columns: dict[str, Any], index: pd.Index) -> pd.DataFrame:
    """A float64 DataFrame of equally long columns (arrays or Series), built as one block.

    Why column by column into one (columns, rows) array: that is how pandas stores a block, so the frame
    takes it without the strided copy a (rows, columns) stack costs (most of a large batch's frame time)."""
    if not columns:
        return pd.DataFrame(None, index=index, columns=column_index(()))
    return pd.DataFrame(matrix(columns, len(index)), index=index, columns=column_index(tuple(columns)), copy=False)


def matrix(columns: dict[str, Any], n_rows: int) -> np.ndarray:
    """(rows, columns) float64 array of equally long columns, a transposed view of one (columns, rows) block
    (see :func:`frame` for why that layout)."""
    if n_rows == 1:  # a request's one-value columns as Python numbers, then one array (joining ~60 arrays costs
        try:  # twice as much: np.array and np.concatenate probe each for its shape)
            return np.array(list(map(np.ndarray.item, columns.values())), dtype="float64").reshape(1, -1)
        except (ValueError, TypeError):  # a scalar (not an array) or a longer column among them
            pass
    data = np.array(list(columns.values()), dtype="float64")  # one call when every column is an array of n_rows
    if data.shape != (len(columns), n_rows):  # scalars among them: broadcast column by column
        data = np.empty((len(columns), n_rows))
        for i, v in enumerate(columns.values()):
            data[i] = np.asarray(v, dtype="float64")
    return data.T


class FeatureNames(tuple):
    """A tuple of feature names that hashes once: a request's heads look their column positions and memos up
    by the names, a few dozen times per request, and a plain tuple of ~60 strings is hashed on every lookup."""

    def __hash__(self) -> int:
        cached = self.__dict__.get("hash")
        if cached is None:
            cached = self.__dict__["hash"] = tuple.__hash__(self)
        return cached


def column_positions(names: tuple[str, ...], wanted: tuple[str, ...]) -> np.ndarray:
    """Positions of ``wanted`` among ``names`` (the columns of a feature array), found once per pair: the
    heads read a feature row by position, which is what a frame's column selection costs on every call.
    A KeyError names the absent ones. :class:`FeatureNames` (a transformer's output names) keep theirs in a
    dictionary of their own, keyed by ``wanted`` alone: a request asks a dozen times, and the shared cache's
    key would hash the ~60 names through :meth:`FeatureNames.__hash__` (Python code) each time."""
    if type(names) is FeatureNames:
        memo = names.__dict__.get("positions")
        if memo is None:
            memo = names.__dict__["positions"] = {}
        at = memo.get(wanted)
        if at is None:
            at = memo[wanted] = _column_positions(names, wanted)
        return at
    return _column_positions(names, wanted)


@lru_cache(maxsize=1024)
def _column_positions(names: tuple[str, ...], wanted: tuple[str, ...]) -> np.ndarray:
    """:func:`column_positions`, cached per pair."""
    at = {c: i for i, c in enumerate(names)}
    absent = [c for c in wanted if c not in at]
    if absent:
        raise KeyError(f"the features lack column(s) {absent}")
    out = np.asarray([at[c] for c in wanted], dtype=np.intp)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=64)
def column_index(names: tuple[str, ...]) -> pd.Index:
    """One shared object-dtype Index per list of feature names. Why: a frame's column lookups then hash
    Python strings (pandas' default string dtype converts on every lookup), and code that reads the same
    columns per call can cache their positions for as long as ``frame.columns is`` this index."""
    return pd.Index(names, dtype=object)


def log2_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``np.log2`` of each column; a request's one-value columns in one ufunc call (the same loop element by
    element), given back as (1,) views of its result: one call instead of one per column."""
    values = list(columns.values())
    if values and len(values[0]) == 1:  # (each column's one number read as matrix() reads it)
        try:
            return dict(zip(columns, np.log2(np.array(list(map(np.ndarray.item, values)))).reshape(-1, 1),
                            strict=True))
        except (ValueError, TypeError):  # a longer column among them
            pass
    return {name: np.log2(v) for name, v in columns.items()}


def log2(x: pd.Series) -> pd.Series:
    return np.log2(x.astype("float64"))


def log10(x: pd.Series) -> pd.Series:
    return np.log10(x.astype("float64"))
