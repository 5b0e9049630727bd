"""Gradient-boosted and bagged tree ensembles with defaults that suit performance data.

Why these defaults: performance tables are a few thousand to a few hundred thousand rows of smooth,
monotone-ish features; deeper boosted trees with row/column subsampling fit them well, and every model is
seeded so a run is reproducible. All four handle NaN features (unknown SM count, unknown layout).
The boosters default to one thread: their OpenMP workers spin-wait, and on a machine whose cores are
shared (CI, other jobs) ``n_jobs=-1`` ran many times slower than one thread (benchmarks/DESIGN_FIGURES.md);
pass ``n_jobs`` to use more.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import xgboost as xgb
from sklearn.base import RegressorMixin
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

DEFAULTS: dict[str, dict[str, Any]] = {
    "rf": {"n_estimators": 300, "n_jobs": -1, "random_state": 0},
    "extra_trees": {"n_estimators": 300, "n_jobs": -1, "random_state": 0},
    "xgboost": {
        "n_estimators": 800, "learning_rate": 0.05, "max_depth": 8, "subsample": 0.8, "colsample_bytree": 0.8,
        "tree_method": "hist", "n_jobs": 1, "random_state": 0,
    },
    "lightgbm": {
        "n_estimators": 800, "learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 20,
        "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "n_jobs": 1, "random_state": 0,
        "verbose": -1,
    },
}
CLASSES: dict[str, type[RegressorMixin]] = {
    "rf": RandomForestRegressor,
    "extra_trees": ExtraTreesRegressor,
    "xgboost": xgb.XGBRegressor,
    "lightgbm": lgb.LGBMRegressor,
}


def tree_model(kind: str, params: dict[str, Any] | None = None) -> RegressorMixin:
    """A new ``kind`` ensemble ('rf', 'extra_trees', 'xgboost', 'lightgbm') with defaults overridden by ``params``."""
    if kind not in CLASSES:
        raise ValueError(f"unknown tree model {kind!r}; known: {', '.join(CLASSES)}")
    cls = CLASSES[kind]
    merged = {**DEFAULTS[kind], **(params or {})}
    try:
        return cls(**merged)
    except TypeError as e:  # an unknown keyword: say which model and what it accepts
        raise ValueError(f"bad parameter for {kind} ({cls.__name__}): {e}") from None
