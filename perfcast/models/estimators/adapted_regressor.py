"""An adapted model's head: a fitted base estimator corrected for one device, as a bundle saves and serves it.

Why a module of its own: :mod:`perfcast.models.estimators.adapt` fits the correction (the guard, the donors, the
phases' own adaptations, the intervals); what a loaded bundle runs for every request is only this arithmetic, so
serving reads it without the fitting code's choices. :func:`starting_point` is shared with the fit, whose
cross-validation starts from exactly what is served.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.models.estimators.adapt_correction import Correction
from perfcast.models.estimators.adapt_krige import Kriging
from perfcast.models.estimators.adapt_stack import blend, stacked
from perfcast.models.estimators.donor_mix import DonorMix, DonorTable
from perfcast.models.estimators.rows import named_frame, predict_rows
from perfcast.models.uncertainty.calibration import group_labels

#: Mondrian interval groups: the feature columns naming a row's group (the attention phase: prefill and decode
#: errors differ, so one pooled quantile over-covers one and under-covers the other); absent columns: pooled. A
#: phase's own correction (``per_phase``) is keyed by the same labels.
INTERVAL_GROUPS: tuple[str, ...] = ("is_decode",)


class AdaptedRegressor:
    """A fitted base estimator corrected for one device: ``start * exp(mix + correction)``, where ``start`` is the
    base prediction, or the nearest donor's measured latency where it has one, and ``mix`` the donor mix
    (:mod:`perfcast.models.estimators.donor_mix`), stacked with ``alone`` (a model of the K rows alone) by
    ``alone_weight``, times ``krige``'s kriged residual. Rows of an attention phase named in ``phase_labels`` are
    corrected by that phase's own member of ``phases`` instead (the same arithmetic, no base of its own). What an
    adapted bundle saves and serves."""

    #: the base estimator, saved in the adapted model's own folder, the K-rows model (None: not stacked) in its own
    #: sub-folder, and the phases' own corrections in theirs (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"inner": "", "alone": "alone", "phases": "phase"}

    def __init__(self, inner: Any, correction: Correction, donors: DonorTable | None = None,
                 mix: DonorMix | None = None, from_donor: bool = False, alone: Any = None,
                 alone_weight: float = 0.0, krige: Kriging | None = None,
                 phases: list[AdaptedRegressor] | None = None, phase_labels: tuple[str, ...] = ()):
        self.inner = inner
        self.correction = correction
        self.donors = donors
        self.mix = mix
        self.from_donor = from_donor
        self.alone = alone
        self.alone_weight = alone_weight
        self.krige = krige
        self.phases = phases or None
        self.phase_labels = tuple(phase_labels) if phases else ()

    def predict(self, F: pd.DataFrame) -> np.ndarray:
        return self.adjust(F, np.asarray(self.inner.predict(F), dtype="float64").reshape(len(F)))

    def adjust(self, F: pd.DataFrame, base: np.ndarray) -> np.ndarray:
        """The adapted prediction of rows ``F`` from their base predictions ``base``."""
        pred = kriged(stacked(corrected(self.correction, self.donors, F, base, self.mix, self.from_donor), self.alone,
                              self.alone_weight, F), self.krige, F, base)
        for rows, own in self._by_phase(group_labels(F, list(INTERVAL_GROUPS)) if self.phases else None):
            pred[rows] = own.adjust(F.loc[rows], base[rows])
        return pred

    def predict_rows(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`predict` of feature rows ``A`` whose columns are ``names`` (:mod:`.rows`): the same
        arithmetic; without donors nothing reads a frame, with them the donor tables get one."""
        return self.adjust_rows(A, names, predict_rows(self.inner, A, names).reshape(len(A)))

    def adjust_rows(self, A: np.ndarray, names: tuple[str, ...], base: np.ndarray) -> np.ndarray:
        """:meth:`adjust` of feature rows ``A`` whose columns are ``names``."""
        if self.donors is not None or self.mix is not None or self.from_donor:
            pred = corrected(self.correction, self.donors, named_frame(A, names), base, self.mix, self.from_donor)
        else:
            pred = base * np.exp(self.correction.log_ratio(None, base, A, names=names))
        if self.alone is not None and self.alone_weight > 0.0:
            pred = blend(pred, predict_rows(self.alone, A, names).reshape(len(A)), self.alone_weight)
        pred = pred if self.krige is None else pred * np.exp(self.krige.log_ratio(None, base, A, names))
        for rows, own in self._by_phase(group_labels(A, list(INTERVAL_GROUPS), names) if self.phases else None):
            pred[rows] = own.adjust_rows(A[rows], names, base[rows])
        return pred

    def _by_phase(self, labels: np.ndarray | None) -> list[tuple[np.ndarray, AdaptedRegressor]]:
        """(rows, the phase's own correction) for each phase with one that has rows among ``labels``."""
        if labels is None:
            return []
        return [(labels == label, own) for label, own in zip(self.phase_labels, self.phases)
                if (labels == label).any()]

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The correction's and the mix's numbers and the donors' identities (JSON); the donor tables and the
        shape model's LightGBM text as arrays; the phases' own corrections are children, named here in order."""
        arrays: dict[str, np.ndarray] = {}
        donors = None
        if self.donors is not None:
            donors, arrays = self.donors.state()
        texts = {"shape_text": self.correction.shape_text,
                 **{f"shape_text_{m}": text for m, text in self.correction.more_shapes.items()}}
        arrays.update({k: np.frombuffer(v.encode("utf-8"), dtype=np.uint8) for k, v in texts.items() if v is not None})
        krige = None
        if self.krige is not None:
            krige, more = self.krige.state()
            arrays.update(more)
        return {"correction": self.correction.to_json(), "donors": donors, "from_donor": self.from_donor,
                "mix": None if self.mix is None else self.mix.to_json(),
                "alone_weight": float(self.alone_weight), "krige": krige,
                "phase_labels": list(self.phase_labels)}, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> AdaptedRegressor:
        """The adapted model without its base and its phases' own corrections (the persistence layer sets
        ``inner`` and ``phases``). A bundle saved before donor mixes started from its donor whenever it had one."""
        text = arrays["shape_text"].tobytes().decode("utf-8") if "shape_text" in arrays else None
        more = {m: arrays[f"shape_text_{m}"].tobytes().decode("utf-8")
                for m in params["correction"].get("more_shapes", [])}
        donors = params.get("donors")
        table = None if not donors else DonorTable.from_state(donors, arrays)
        mix = None if not params.get("mix") else DonorMix.from_json(params["mix"])
        made = cls(None, Correction.from_json(params["correction"], text, more_shapes=more), table, mix,
                   bool(params.get("from_donor", table is not None)),
                   alone_weight=float(params.get("alone_weight", 0.0)),
                   krige=None if not params.get("krige") else Kriging.from_state(params["krige"], arrays))
        made.phase_labels = tuple(str(label) for label in params.get("phase_labels", ()))
        return made


def starting_point(donors: DonorTable | None, F: pd.DataFrame, base: np.ndarray, mix: DonorMix | None = None,
                   from_donor: bool = False) -> np.ndarray:
    """What the correction multiplies: the base prediction, or the nearest donor's latency (see
    :class:`AdaptedRegressor`), times the donor mix."""
    base = np.asarray(base, dtype="float64").ravel()
    start = donors.start(F, base) if from_donor else base
    return start if mix is None else start * np.exp(mix.log_ratio(donors, F, start))


def corrected(correction: Correction, donors: DonorTable | None, F: pd.DataFrame, base: np.ndarray,
              mix: DonorMix | None = None, from_donor: bool = False) -> np.ndarray:
    """The adapted prediction of rows ``F`` from their base predictions (see :class:`AdaptedRegressor`)."""
    start = starting_point(donors, F, base, mix, from_donor)
    extra = donors.latencies(F, np.log(start)) if correction.extra_columns else None
    return start * np.exp(correction.log_ratio(F, start, extra=extra))


def kriged(pred: np.ndarray, krige: Kriging | None, F: pd.DataFrame, base: np.ndarray) -> np.ndarray:
    """``pred`` times the kriged residual of rows ``F`` (base predictions ``base``), if there is a kriging."""
    return pred if krige is None else pred * np.exp(krige.log_ratio(F, base))
