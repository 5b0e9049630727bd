"""Uncertainty and domain: conformal intervals, the training-domain guard and novelty (OOD) scores."""
