"""Benchmark presets: each protocol's model, parameters, row budget, interval calibration and options come
from the one ``configs/*.toml`` whose ``[benchmark]`` table names the protocol, and are fitted through
training's own fit functions, so ``perfcast train CONFIG`` and ``benchmarks/accuracy.py`` fit the same model
the same way.

Why: tuned settings kept in code beside the configs drifted apart (three spellings of one protocol, interval
settings in two places); a preset is now one file, and ``tests/test_presets.py`` ties every protocol to it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.training import train
from perfcast.training.config import ModelConfig, TrainConfig, load_preset


@functools.cache
def preset(protocol: str) -> TrainConfig:
    """The validated preset of a benchmark protocol (read once per process)."""
    return load_preset(protocol)


@dataclass(frozen=True)
class Choice:
    """What one protocol fits: its preset (with the model ``--model`` asked for, if any) and the preset's
    benchmark settings."""

    config: TrainConfig
    train_rows: int | None
    #: what the settings were chosen on; says so when ``--model`` replaced the preset's model
    selected_on: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.model.name

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.config.model.params)

    def fit(self, rows: pd.DataFrame, seed: int, params: dict[str, Any] | None = None, groups: Any = None
            ) -> ConformalRegressor:
        """The preset's model with its calibrated intervals, fitted on the records ``rows``."""
        return train.fit_conformal(self.config, rows, params, seed=seed, groups=groups)

    def fit_point(self, rows: pd.DataFrame, seed: int, params: dict[str, Any] | None = None) -> Pipeline:
        """The preset's model fitted on the records ``rows``, without intervals (protocols that report none)."""
        return train.fit_model(self.config, rows, params, seed=seed)

    def predict(self, model: Pipeline | ConformalRegressor, rows: pd.DataFrame) -> np.ndarray:
        """(rows, targets) point predictions of a fitted model for the records ``rows``."""
        pred = model.predict(train.model_input(rows, self.config.task))
        return np.asarray(pred, dtype="float64").reshape(len(rows), -1)

    def predict_interval(self, model: ConformalRegressor, rows: pd.DataFrame
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, lo, hi) of the first target of a :meth:`fit` model."""
        return train.predict_interval(model, rows, self.config.task)


def choose(protocol: str, override: str | None = None) -> Choice:
    """``protocol``'s preset, its model replaced by ``override`` (the ``--model`` option, default parameters)."""
    config = preset(protocol)
    bench = config.benchmark
    if bench is None:  # load_preset found the protocol under [benchmark]: only a changed file gets here
        raise ValueError(f"the preset of {protocol!r} has no [benchmark] table")
    selected = bench.selected_on
    if override is not None:
        config = config.model_copy(update={"model": ModelConfig(name=override)})
        selected = f"none: --model {override} with default parameters replaced the preset's model"
    return Choice(config, bench.train_rows, selected, dict(bench.options))


def sample_rows(df: pd.DataFrame, limit: int | None, seed: int) -> tuple[pd.DataFrame, str | None]:
    """At most ``limit`` rows drawn with ``seed``, and a note saying so (None when nothing was dropped)."""
    if limit is None or len(df) <= limit:
        return df, None
    return df.sample(limit, random_state=seed), f"trained on {limit:,} of {len(df):,} training rows (seed {seed})"


def budget_rows(name: str, params: dict[str, Any], df: pd.DataFrame, limit: int | None, seed: int
                ) -> tuple[pd.DataFrame, dict[str, Any], str | None]:
    """(rows, params, note) within the row budget ``limit``. A model that samples its own fitting rows
    (``max_rows``: the sibling transfer and the shrunk sibling copy around it, whose sibling tables need every
    measured row) gets every row and the budget as its ``max_rows``; any other model gets a seeded sample of
    ``limit`` rows."""
    if name not in ("transfer", "sibling"):
        rows, note = sample_rows(df, limit, seed)
        return rows, params, note
    cap = min(x for x in (params.get("max_rows"), limit, len(df)) if x is not None)
    note = None if cap >= len(df) else (f"base model fitted on {cap:,} of {len(df):,} training rows (seed {seed}); "
                                        f"every row enters the sibling residual table")
    return df, {**params, "max_rows": cap}, note
