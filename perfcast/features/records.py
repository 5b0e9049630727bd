"""Records as columns of NumPy arrays: what feature transformers and the domain guard read.

Why not a DataFrame throughout: a served request is one row, and every ``frame[column]`` costs a fixed amount of
pandas machinery whatever the length, so the twenty-odd column reads of a prediction cost more than its
arithmetic. :class:`Records` wraps either a DataFrame (a batch; each column converted once, on first use) or a
dict of one-element arrays (a request, never turned into a DataFrame unless a step needs one), and gives both
the same reads: numbers as float64, text as object arrays with ``None`` for missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from perfcast.lazy import is_instance, pandas as pd

from perfcast.records.hardware_specs import Catalog


class Records:
    """Named columns of equal length, read as NumPy arrays; see the module docstring for why."""

    def __init__(self, columns: Mapping[str, Any] | None = None, *, frame: pd.DataFrame | None = None,
                 catalog: Catalog | None = None):
        if (columns is None) == (frame is None):
            raise TypeError("Records takes either columns (a mapping of arrays) or frame= (a DataFrame)")
        self._frame = frame
        #: a DataFrame's columns are read from it when first asked for (``frame[c]`` is the cost avoided)
        self._columns: dict[str, Any] = dict.fromkeys(frame.columns) if frame is not None else dict(columns)
        lengths = {len(v) for v in self._columns.values()} if frame is None else {len(frame)}
        if len(lengths) > 1:
            raise ValueError(f"columns differ in length: {sorted(lengths)}")
        self._len = lengths.pop() if lengths else 0
        self._index: pd.Index | None = None
        self._numbers: dict[str, np.ndarray] = {}
        self._texts: dict[str, np.ndarray] = {}
        #: the spec sheets the rows' devices were checked against (a request's, by the predictor), which the
        #: features then read instead of asking :func:`~perfcast.records.hardware_specs.catalog` again
        self.catalog = catalog

    @classmethod
    def of(cls, X: Records | pd.DataFrame) -> Records:
        """``X`` as :class:`Records` (itself when it is one already)."""
        if isinstance(X, Records):
            return X
        if isinstance(X, pd.DataFrame):
            return cls(frame=X)
        raise TypeError(f"expected a DataFrame of records, got {type(X).__name__}")

    # ------------------------------------------------------------------------------------ shape
    def __len__(self) -> int:
        return self._len

    def __contains__(self, column: object) -> bool:
        return column in self._columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def index(self) -> pd.Index:
        """Row labels: the DataFrame's, else 0..n-1 (what error messages name)."""
        if self._index is None:
            self._index = self._frame.index if self._frame is not None else pd.RangeIndex(self._len)
        return self._index

    def frame(self) -> pd.DataFrame:
        """The records as a DataFrame (built once, for the steps that need pandas)."""
        if self._frame is None:
            self._frame = pd.DataFrame({c: (v if isinstance(v, (np.ndarray, pd.api.extensions.ExtensionArray))
                                            else list(v)) for c, v in self._columns.items()},
                                       index=self.index)
        return self._frame

    def with_column(self, column: str, values: np.ndarray) -> Records:
        """These records with ``column`` replaced by ``values`` (a batch stays a DataFrame, a request a dict)."""
        if self._frame is not None:
            return Records(frame=self._frame.assign(**{column: values}), catalog=self.catalog)
        return Records({**self._columns, column: values}, catalog=self.catalog)

    # ------------------------------------------------------------------------------------ reads
    def raw(self, column: str) -> Any:
        """The column as given (a Series for a DataFrame, else the array or list)."""
        v = self._columns[column]
        if v is None:
            v = self._columns[column] = self._frame[column]
        return v

    def number(self, column: str, default: float = np.nan) -> np.ndarray:
        """The column as float64, ``default`` where missing, unparseable or where the column is absent."""
        v = self._numbers.get(column)
        if v is None:
            if column not in self._columns:
                return np.array([default]) if self._len == 1 else np.full(self._len, default, dtype="float64")
            raw = self.raw(column)
            arr = raw.to_numpy() if is_instance(raw, "pandas", "Series") else raw
            if not (isinstance(arr, np.ndarray) and arr.dtype == np.float64):
                arr = pd.to_numeric(pd.Series(raw, copy=False), errors="coerce").to_numpy(dtype="float64",
                                                                                       na_value=np.nan)
            v = self._numbers[column] = arr
        if default != default or (self._len == 1 and v[0] == v[0]):  # NaN default; a request's given value as it is
            return v
        return np.where(np.isnan(v), default, v)

    def text(self, column: str) -> np.ndarray:
        """The column as an object array of ``str`` (``None`` where missing or absent)."""
        if column not in self._columns:
            return np.full(self._len, None, dtype=object)
        v = self._texts.get(column)
        if v is None:
            raw = self.raw(column)
            if isinstance(raw, np.ndarray) and raw.dtype == object and (
                    isinstance(raw[0], str) if len(raw) == 1 else all(isinstance(x, str) for x in raw)):
                v = raw
            else:
                v = pd.Series(raw, copy=False).astype("string").to_numpy(dtype=object, na_value=None)
            self._texts[column] = v
        return v

    def missing(self, column: str) -> np.ndarray:
        """Where the column is missing (NaN, None, NA), as a bool array (all true where it is absent)."""
        if column not in self._columns:
            return np.ones(self._len, dtype=bool)
        raw = self.raw(column)
        arr = raw.to_numpy() if is_instance(raw, "pandas", "Series") else raw
        if isinstance(arr, np.ndarray) and arr.dtype == np.float64:
            return np.isnan(arr)
        if isinstance(arr[0], str) if len(arr) == 1 else len(arr) <= 16 and all(isinstance(v, str) for v in arr):
            return np.zeros(len(arr), dtype=bool)  # a request's text: never missing
        return np.asarray(pd.isna(arr), dtype=bool)

    def value(self, column: str, row: int) -> Any:
        """The given value at position ``row`` (for error messages, and a single row's checks)."""
        raw = self.raw(column)
        return raw.iloc[row] if is_instance(raw, "pandas", "Series") else raw[row]


__all__ = ["Records"]
