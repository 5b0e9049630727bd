"""Split-conformal scores reweighted for covariate shift between the calibration rows and the rows asked about.

Why: an adaptation's intervals are calibrated on the K rows a probe plan measured, which over-represent sparse
shape regions and small kernel kinds, while the intervals are asked for on the device's whole list of shapes.
Weighted split-conformal (Tibshirani, Barber, Candès and Ramdas 2019, "Conformal prediction under covariate
shift") weights each calibration score by the density ratio asked-about / calibration at its row. Here each
row's weight is how many candidate shapes it stands for (:func:`perfcast.perf_probe.plan.represented`), and the
test point's share of the weight is its expectation over the candidates (one quantile per group, not one per
row). The weighted distribution is then re-drawn as :data:`POINTS` equally weighted scores whose conformal
quantile at every level is the weighted one, so a calibration stores plain sorted scores as before: a bundle
holds numbers only and reads them unchanged.
"""

from __future__ import annotations

import numpy as np

#: equally weighted scores the weighted distribution is re-drawn as (its conformal quantile at level a is the
#: weighted quantile at ceil((POINTS + 1) a) / (POINTS + 1), within 0.1 pt of a)
POINTS = 999


def query_share(weights: np.ndarray) -> float:
    """The expected weight share of the test point, its row drawn like the candidates: each calibration row's
    cell is drawn with probability w_i / sum(w), and then weighs w_i / (sum(w) + w_i)."""
    w = np.asarray(weights, dtype="float64")
    total = float(w.sum())
    if total <= 0 or not np.isfinite(total):
        raise ValueError(f"query_share: weights must be finite, non-negative and not all zero; got sum {total}")
    return float(np.sum(w / total * w / (total + w)))


def weighted_scores(scores: np.ndarray, weights: np.ndarray, points: int = POINTS) -> np.ndarray:
    """``points`` sorted scores, equally weighted, whose distribution is that of ``scores`` weighted by
    ``weights`` with :func:`query_share` of the mass at +inf (Tibshirani et al.'s test point): the j-th is the
    smallest score whose cumulative share reaches j / (points + 1) (inf beyond the finite scores' share)."""
    s = np.asarray(scores, dtype="float64")
    w = np.asarray(weights, dtype="float64")
    if s.shape != w.shape:
        raise ValueError(f"weighted_scores: {len(s)} scores but {len(w)} weights (one weight per score)")
    if (w < 0).any():
        raise ValueError("weighted_scores: weights must be non-negative (a density ratio)")
    order = np.argsort(s, kind="stable")
    share = w[order] / w.sum() * (1.0 - query_share(w))
    cumulative = np.cumsum(share)
    wanted = np.arange(1, points + 1) / (points + 1)
    at = np.searchsorted(cumulative, wanted - 1e-12, side="left")
    return np.where(at < len(s), s[order][np.minimum(at, len(s) - 1)], np.inf)


def reweighted(scores: np.ndarray, weights: np.ndarray | None, level: float) -> np.ndarray:
    """Sorted scores for a calibration: ``scores`` re-drawn weighted by ``weights`` (:func:`weighted_scores`), or
    plainly sorted without weights or where the weighted quantile at ``level`` is infinite (the test point's share
    above 1 - level: too few rows for the shift; an infinite interval would serve no one)."""
    from perfcast.models.uncertainty.calibration import conformal_quantile

    if weights is None:
        return np.sort(scores)
    drawn = weighted_scores(scores, weights)
    return drawn if np.isfinite(conformal_quantile(drawn, level)) else np.sort(scores)
