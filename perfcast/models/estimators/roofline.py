"""The analytical roofline model: no fitting, predicts what the spec sheet alone says.

Why keep a model that learns nothing: it is the floor every learned model must beat, it predicts any
device with a spec sheet, and the hybrid model learns only the ratio of the measurement to it. Runtime
is the roofline time max(FLOPs / peak, bytes / bandwidth); power is the board's TDP (the power a kernel
that saturates the device draws); energy is their product.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import column_positions
from perfcast.features.estimator_base import Regressor

ROOFLINE_COLUMN = "log10_roofline_ms"
TDP_COLUMN = "tdp_w"
#: target -> the feature columns its baseline needs
NEEDS: dict[str, tuple[str, ...]] = {
    "runtime_ms": (ROOFLINE_COLUMN,),
    "power_w": (TDP_COLUMN,),
    "energy_j": (ROOFLINE_COLUMN, TDP_COLUMN),
}


def baseline(X: pd.DataFrame, target: str) -> np.ndarray:
    """The analytical prediction of ``target`` from a gemm/attention feature frame (one value per row).

    Raises a ValueError naming the target, the missing feature column, or how many rows lack a value.
    """
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"the roofline baseline reads named feature columns; got {type(X).__name__}, "
                        f"expected the DataFrame a perfcast feature transformer outputs")
    return baseline_rows(X.to_numpy(dtype="float64", na_value=np.nan), tuple(X.columns), target)


def baseline_rows(A: np.ndarray, names: tuple[str, ...], target: str) -> np.ndarray:
    """:func:`baseline` of feature rows ``A`` whose columns are ``names``."""
    if target not in NEEDS:
        raise ValueError(
            f"no analytical baseline for target {target!r}: the roofline and hybrid models predict "
            f"{', '.join(NEEDS)} (use a learned model such as 'lightgbm' for other targets)"
        )
    try:
        at = column_positions(names, NEEDS[target])
    except KeyError:
        absent = [c for c in NEEDS[target] if c not in names]
        raise ValueError(
            f"the roofline baseline of {target!r} needs feature column(s) {absent}, which only the gemm and "
            f"attention feature transformers produce"
        ) from None
    if len(A) == 1 and target == "runtime_ms" and math.isfinite(A[0, at[0]]):  # a request: its one column read
        return 10.0 ** A[:, at[0]]  # as a view (the same ufunc call as below)
    values = A[:, at]
    cols = dict(zip(NEEDS[target], values.T, strict=True))
    finite = None if len(A) == 1 and all(map(math.isfinite, values[0].tolist())) else np.isfinite(values)
    if finite is not None and not finite.all():  # (a request's one row is checked in Python floats)
        unknown = ~finite.all(axis=1)
        which = [c for c, v in cols.items() if not np.isfinite(v).all()]
        raise ValueError(
            f"{int(unknown.sum())} row(s) have no {'/'.join(which)} (e.g. a device without a TDP in its spec "
            f"sheet), so the roofline baseline of {target!r} is undefined for them"
        )
    runtime = 10.0 ** cols[ROOFLINE_COLUMN] if ROOFLINE_COLUMN in cols else None
    if target == "runtime_ms":
        return runtime
    if target == "power_w":
        return cols[TDP_COLUMN]
    return runtime * cols[TDP_COLUMN] / 1e3


class RooflineRegressor(Regressor):
    """Predicts :func:`baseline` of ``target``; ``fit`` only checks that the baseline is computable."""

    def __init__(self, target: str = "runtime_ms"):
        self.target = target

    def fit(self, X: pd.DataFrame, y: Any = None) -> RooflineRegressor:
        baseline(X, self.target)
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return baseline(X, self.target)

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"target": self.target}, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RooflineRegressor:
        return cls(str(params["target"]))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.requires_fit = True
        return tags
