"""A donor table whose alternative start is another model's prediction instead of the nearest donor's latency.

Why: the adaptation's guard chooses between two starts, the base model and the nearest donor's measured latency
(:meth:`~perfcast.models.estimators.donor_mix.DonorTable.start`). For a device with a family sibling among the
training devices, a better start than the sibling's raw latency may exist: the product's unseen-GPU default (the
shrunk sibling copy), which is what a user adapting the default would start from (benchmarks/ANALYSIS_adapt.md,
round 16a). :class:`StartTable` offers that model's predictions as the alternative start, so the same guard chooses
between it and the base on the same folds; the donor mix and the shape term still read the real donors' latencies.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from perfcast.models.estimators.donor_mix import DonorTable


@dataclass
class StartTable(DonorTable):
    """``DonorTable`` whose :meth:`lookup` (the alternative start) reads ``starts``, another model's predictions
    keyed by configuration as the donors' latencies are (rows sharing a configuration key get their log mean)."""

    starts: DonorTable | None = None

    @classmethod
    def of(cls, donors: DonorTable, name: str, F: pd.DataFrame, prediction: np.ndarray, task: str) -> StartTable:
        """``donors`` with the start ``prediction`` of rows ``F`` (their features), named ``name`` in notes; every
        row the adaptation will see must be among ``F`` (elsewhere the start falls back to the base model)."""
        own = DonorTable.build(name, F, prediction, task)
        if own.columns != donors.columns:
            raise ValueError(f"StartTable.of: the start's configuration columns {own.columns} differ from the "
                             f"donors' {donors.columns}; build both from the same feature frame's columns")
        return cls(**{f.name: getattr(donors, f.name) for f in fields(DonorTable)}, starts=own)

    @property
    def device(self) -> str:
        return self.starts.device

    def lookup(self, F: pd.DataFrame) -> np.ndarray:
        """Each row's log start (NaN where the start model was not asked about the configuration)."""
        return self.starts.lookup(F)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        raise ValueError("a StartTable holds another model's predictions of the rows it was built on and cannot be "
                         "saved in a bundle; adapt with a plain DonorTable to save the adapted model")
