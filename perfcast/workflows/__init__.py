"""Workflows a user runs end to end (quickstart, adapting a model to a new device), built on predictor and training."""
