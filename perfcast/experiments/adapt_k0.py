"""K = 0 of the adaptation protocol for a GPU with a family sibling in training: the product's unseen-GPU default.

Why: with no measurement of a new board, what perfcast gives is its unseen-GPU default (the shrunk sibling copy,
model ``sibling``), not the adaptation's bare base model, and where a family sibling is in training that default
copies the sibling's measurements, which the bare base did not beat (benchmarks/ANALYSIS_adapt.md, round 15b). The
adaptation preset's ``k0_model`` option names, per kernel family, the benchmark protocol whose preset fits it; it is
fitted through :func:`~perfcast.experiments.presets.choose` exactly as that protocol fits it (its row budget, its
intervals), on the same training GPUs as the base. A GPU has a sibling by the family rule the unseen-GPU protocol
reports by (:func:`~perfcast.experiments.baselines.sibling_devices`); one without keeps the base. A GPU with one gets
the default at K = 0 only where, on every *other* GPU with a sibling, the default's K = 0 mean APE (mean over the
part's phases) is below the base's: leave-one-sibling-GPU-out, so no GPU's own rows choose its model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from perfcast.experiments.baselines import sibling_devices
from perfcast.experiments.presets import Choice, budget_rows, choose
from perfcast.experiments.results import Result
from perfcast.training.config import ConfigError

#: the key of the default's K = 0 rows among a device's adaptation variants (see ``adapt_device``)
K0_KEY = ("unseen-GPU default", "k0")


def k0_choice(options: dict[str, Any], task: str, protocol: str) -> tuple[str, Choice] | None:
    """(protocol, its preset) the ``k0_model`` option names for ``task`` (None when it names none); a name no preset
    runs, or a preset of another kernel family, is refused."""
    named = options.get("k0_model") or {}
    if not isinstance(named, dict):
        raise ValueError(f"{protocol}: [benchmark.options] k0_model must be a table of protocol names by kernel "
                         f"family, e.g. {{ {task} = \"aiconfigurator-unseen-gpu-{task}\" }}; got {named!r}")
    if task not in named:
        return None
    try:
        choice = choose(str(named[task]))
    except ConfigError as err:
        raise ValueError(f"{protocol}: [benchmark.options] k0_model names {named[task]!r} for {task}, which is no "
                         f"benchmark protocol with a preset: name one, e.g. aiconfigurator-unseen-gpu-{task} "
                         f"({err})") from err
    if choice.config.task != task:
        raise ValueError(f"{protocol}: [benchmark.options] k0_model names {named[task]!r} for {task}, but its "
                         f"preset fits {choice.config.task!r} kernels; name a {task} protocol")
    return str(named[task]), choice


@dataclass(frozen=True)
class SiblingK0:
    """The default of ``protocol`` (its preset ``choice``) to be fitted on ``train`` for a left-out GPU's K = 0."""

    choice: Choice
    protocol: str
    train: pd.DataFrame
    seed: int

    @classmethod
    def of(cls, named: tuple[str, Choice] | None, dev: str, train: pd.DataFrame, seed: int) -> SiblingK0 | None:
        """The default (:func:`k0_choice`) for ``dev`` when one is named and ``dev`` has a family sibling in
        ``train``."""
        if named is None or not sibling_devices(dev, sorted(train["device_id"].dropna().unique())):
            return None
        return cls(named[1], named[0], train, seed)

    def __call__(self, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(prediction, lo, hi, seconds to fit and predict) on ``test``, fitted as the default's protocol fits it."""
        start = time.perf_counter()
        rows, params, _ = budget_rows(self.choice.name, self.choice.params, self.train, self.choice.train_rows,
                                      self.seed)
        pred, lo, hi = self.choice.predict_interval(self.choice.fit(rows, self.seed, params), test)
        return pred, lo, hi, time.perf_counter() - start

    def describe(self) -> str:
        return (f"none at K = 0; the prediction and its interval are the unseen-GPU default's ({self.choice.name}, "
                f"the preset of {self.protocol}, {self.choice.train_rows:,} rows budget)")


def take_k0(found: dict[tuple[str, int], dict[Any, Result]], into: dict[str, dict[str, Result]]) -> None:
    """Move the default's K = 0 rows out of one device's ``found`` into ``into[device][part]``."""
    for (label, _), variants in found.items():
        res = variants.pop(K0_KEY, None)
        if res is not None:
            into.setdefault(res.device, {})[label] = res


def pick_k0(selected: dict[tuple[str, int], list[Result]], alt: dict[str, dict[str, Result]]
            ) -> dict[tuple[str, int], list[Result]]:
    """``selected`` with each sibling GPU's K = 0 rows replaced by the default's (``alt``) where, on every other GPU
    of ``alt``, the default's mean APE over the parts is below the base's; a note on each of those rows says why."""
    labels = [label for label, k in selected if k == 0]
    if not alt or not labels:
        return selected
    rows = {r.device: i for i, r in enumerate(selected[(labels[0], 0)])}
    mean = {d: (float(np.mean([selected[(lb, 0)][rows[d]].ours for lb in labels])),
                float(np.mean([alt[d][lb].ours for lb in labels]))) for d in alt}
    for dev in alt:
        others = [d for d in alt if d != dev]
        use = bool(others) and all(round(mean[d][1], 12) < round(mean[d][0], 12) for d in others)
        note = _note(use, others, mean)
        for label in labels:
            i = rows[dev]
            if use:
                selected[(label, 0)][i] = alt[dev][label]
            selected[(label, 0)][i].notes.append(note)
    return selected


def _note(use: bool, others: Sequence[str], mean: dict[str, tuple[float, float]]) -> str:
    seen = ", ".join(f"{d} {100 * mean[d][1]:.2f}% vs {100 * mean[d][0]:.2f}%" for d in others) or "none"
    return (f"K = 0 model chosen by leave-one-sibling-GPU-out: {'the unseen-GPU default' if use else 'the base'} "
            f"(the default's K = 0 mean APE vs the base's on the other GPUs with a family sibling in training: "
            f"{seen}; the default is used only where it is lower on every one)")
