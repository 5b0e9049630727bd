"""Estimators: the regressors a registry name builds (trees on physics baselines, transfer, power, adaptation)."""
