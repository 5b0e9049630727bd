"""features stage of perfcast: one scikit-learn transformer per task, record DataFrame -> numeric features.

The transformers are fitted inside each model's pipeline, so a saved model carries them; their output
columns are fixed per task and grouped in :mod:`perfcast.features.groups`.
"""

from __future__ import annotations

from perfcast.features.attention import AttentionFeatures
from perfcast.features.base import MissingColumnError, RecordFeatures
from perfcast.features.cpu import CpuFeatures
from perfcast.features.gemm import GemmFeatures
from perfcast.features.groups import feature_groups, feature_names
from perfcast.features.hardware import UnknownDeviceError
from perfcast.features.roofline import UnknownDtypeError, normalize_dtype

TRANSFORMERS: dict[str, type[RecordFeatures]] = {
    "gemm": GemmFeatures,
    "attention": AttentionFeatures,
    "cpu_bench": CpuFeatures,
}


def feature_transformer(task: str) -> RecordFeatures:
    """A new (unfitted) feature transformer for ``task``."""
    if task not in TRANSFORMERS:
        raise ValueError(f"no feature transformer for task {task!r}; known tasks: {', '.join(TRANSFORMERS)}")
    return TRANSFORMERS[task]()


__all__ = [
    "TRANSFORMERS",
    "AttentionFeatures",
    "CpuFeatures",
    "GemmFeatures",
    "MissingColumnError",
    "RecordFeatures",
    "UnknownDeviceError",
    "UnknownDtypeError",
    "feature_groups",
    "feature_names",
    "feature_transformer",
    "normalize_dtype",
]
