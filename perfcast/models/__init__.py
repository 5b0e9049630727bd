"""models stage of perfcast: registered estimators, each a Pipeline of task features and a per-target model."""

from perfcast.models.registry import MODELS, PerTargetRegressor, make_model, model_names

__all__ = ["MODELS", "PerTargetRegressor", "make_model", "model_names"]
