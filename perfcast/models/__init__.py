"""models stage of perfcast: registered estimators, each a Pipeline of task features and a per-target model."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from perfcast.models.registry import MODELS, PerTargetRegressor, make_model, model_names


def __getattr__(name: str) -> Any:
    """The registry's names, imported on first use (PEP 562): loading a saved model (``persistence``) needs
    none of the training libraries the registry pulls in."""
    if name in __all__:
        value = getattr(import_module("perfcast.models.registry"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'perfcast.models' has no attribute {name!r}")


__all__ = ["MODELS", "PerTargetRegressor", "make_model", "model_names"]
