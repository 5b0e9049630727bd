"""What a model of some targets answers with: its targets, the outputs derived from them, their intervals.

Why a module of its own: the predictor builds these columns and training logs them as the served model's
output schema; both read the rule here, and loading a model to predict imports nothing heavy for it.
"""

from __future__ import annotations


def derived_outputs(targets: list[str]) -> list[str]:
    """Outputs a model of ``targets`` answers beyond them: energy (J) = power x runtime when it predicts both
    but not energy itself (:func:`perfcast.models.estimators.power.energy_interval` gives its interval)."""
    return ["energy_j"] if {"runtime_ms", "power_w"} <= set(targets) and "energy_j" not in targets else []


def answer_columns(targets: list[str]) -> list[str]:
    """The columns :meth:`perfcast.predictor.Predictor.predict` answers with for a model of ``targets``, in its
    order: each target and derived output with its interval, then ``in_distribution`` and ``ood_reason``."""
    values = [f"{t}{s}" for t in [*targets, *derived_outputs(targets)] for s in ("", "_lo", "_hi")]
    return [*values, "in_distribution", "ood_reason"]
