"""One model per GPU vendor: a device is predicted only from devices whose software stack it shares.

Why: a kernel's launch floor and its efficiency curve over shapes belong to the vendor's library (cuBLAS /
CUTLASS kernels on NVIDIA, oneDNN / XMX kernels on Intel), not to the spec sheet. Pooled trees split on
spec numbers to tell the one Intel GPU from the NVIDIA ones, and a new NVIDIA board whose numbers fall on
the Intel side of such a split (low bandwidth, few SMs) inherits the Intel stack's microsecond floors and
curves. Fitting each vendor's rows apart removes that leak; a vendor no training row has is predicted by
the model of the vendor with the most training rows (the best-measured stack).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import column_positions
from perfcast.features.estimator_base import Regressor, check_fitted, clone
from perfcast.features.kernels import VENDOR_COLUMNS
from perfcast.models.estimators.rows import predict_rows

#: the label of rows whose vendor the features leave unknown
UNKNOWN = "unknown"


def vendors(X: pd.DataFrame) -> np.ndarray:
    """Each row's vendor from the one-hot ``vendor_*`` feature columns ("unknown" where none is set)."""
    return vendor_rows(X.to_numpy(dtype="float64", na_value=np.nan), tuple(X.columns))


def vendor_rows(A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """:func:`vendors` of feature rows ``A`` whose columns are ``names``."""
    present = tuple(c for c in VENDOR_COLUMNS if c in names)
    out = np.full(len(A), UNKNOWN, dtype=object)
    for c, j in zip(present, column_positions(names, present), strict=True):
        out[A[:, j] > 0.5] = c.removeprefix("vendor_")  # NaN (vendor unknown) compares false
    return out


@lru_cache(maxsize=64)
def _vendor_columns(names: tuple[str, ...]) -> tuple[tuple[str, ...], np.ndarray]:
    """The vendor names whose columns ``names`` has, and those columns' positions (found once per layout)."""
    present = tuple(c for c in VENDOR_COLUMNS if c in names)
    return tuple(c.removeprefix("vendor_") for c in present), column_positions(names, present)


def vendor_one(row: np.ndarray, vendors_at: tuple[str, ...], at: np.ndarray) -> str:
    """:func:`vendor_rows` of a single feature row (the last set vendor column wins, as there); ``vendors_at``,
    ``at``: :func:`_vendor_columns` of its columns."""
    out = UNKNOWN
    for name, v in zip(vendors_at, row[at].tolist(), strict=True):
        if v > 0.5:  # NaN (vendor unknown) compares false
            out = name
    return out


class VendorSplit(Regressor):
    """A clone of ``estimator`` fitted per vendor (see :func:`vendors`); rows of a vendor without training
    rows go to the vendor with the most. ``target`` is passed on to an estimator that takes one."""

    #: the fitted per-vendor models, saved as vendor0, vendor1, ... (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"estimators_": "vendor"}
    #: each feature row's group (a subclass splits by another key and overrides this and label_one)
    labels = staticmethod(vendor_rows)

    def label_one(self, row: np.ndarray, names: tuple[str, ...]) -> str:
        """A single feature row's group; the last layout's vendor positions are found by identity, not hashing."""
        last = self.__dict__.get("_last_columns")
        if last is None or last[0] is not names:
            last = self._last_columns = (names, *_vendor_columns(names))
        return vendor_one(row, last[1], last[2])

    def __init__(self, estimator: Any, target: str = "runtime_ms"):
        self.estimator = estimator
        self.target = target

    def fit(self, X: pd.DataFrame, y: Any) -> VendorSplit:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"a per-vendor model reads the vendor feature columns; got {type(X).__name__}")
        y = np.asarray(y, dtype="float64").ravel()
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        labels = self.labels(X.to_numpy(dtype="float64", na_value=np.nan), tuple(X.columns))
        names, counts = np.unique(labels, return_counts=True)
        order = np.argsort(-counts, kind="stable")  # most rows first: the fallback is vendors_[0]
        self.vendors_ = [str(names[i]) for i in order]
        self.estimators_ = []
        for name in self.vendors_:
            est = clone(self.estimator)
            if "target" in est.get_params(deep=False):
                est.set_params(target=self.target)
            rows = labels == name
            self.estimators_.append(est.fit(X.loc[rows], y[rows]))
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_rows(X.to_numpy(dtype="float64"), tuple(X.columns))

    def predict_rows(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`predict` of feature rows ``A`` whose columns are ``names`` (:mod:`.rows`)."""
        check_fitted(self, "estimators_")
        if len(A) == 1:  # a request: one vendor's model
            name = self.label_one(A[0], names)
            i = self.vendors_.index(name) if name in self.vendors_ else 0  # unknown: the first (most rows)
            return predict_rows(self.estimators_[i], A, names).ravel()
        labels = self.labels(A, names)
        which = np.zeros(len(A), dtype=np.int64)  # unknown vendors: the first (most rows)
        for i, name in enumerate(self.vendors_):
            which[labels == name] = i
        out = np.empty(len(A), dtype="float64")
        for i in np.unique(which):
            rows = which == i
            out[rows] = predict_rows(self.estimators_[i], A[rows] if not rows.all() else A, names).ravel()
        return out

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "estimators_")
        return {"target": self.target, "vendors": list(self.vendors_)}, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> VendorSplit:
        """A split whose ``predict`` works once its ``estimators_`` are set (the persistence layer does)."""
        out = cls(None, target=str(params.get("target", "runtime_ms")))  # type: ignore[arg-type]
        out.vendors_ = [str(v) for v in params["vendors"]]
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
