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

At K > 0, with the preset's ``sibling_start = true``, such a GPU is also adapted from the default: its predictions
replace the nearest donor's latency as the start the K-row guard may choose instead of the base
(:class:`~perfcast.models.estimators.adapt_donors.StartTable`; round 16a). That variant is used for a GPU at a K by
the same leave-one-sibling-GPU-out rule: only where, on every other GPU with a sibling, its mean APE at that K (after
the protocol's own choice of setting and intervals) is below the nearest-donor variant's (:func:`pick_start`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from perfcast.experiments.baselines import sibling_devices
from perfcast.experiments.presets import Choice, budget_rows, choose
from perfcast.experiments.results import Result
from perfcast.training.config import ConfigError

#: the key of the default's K = 0 rows among a device's adaptation variants (see ``adapt_device``)
K0_KEY = ("unseen-GPU default", "k0")
#: what a variant adapted from the default's start is keyed under: ``(START, (setting, interval variant))``
START = "unseen-GPU default start"


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


def sibling_start(options: dict[str, Any], task: str, protocol: str) -> bool:
    """Whether the preset's ``sibling_start`` asks for the default's start at K > 0 (default: no); it needs a
    ``k0_model`` naming the default for ``task``."""
    value = options.get("sibling_start", False)
    if not isinstance(value, bool):
        raise ValueError(f"{protocol}: [benchmark.options] sibling_start must be true or false (adapt a GPU with a "
                         f"family sibling in training also from the unseen-GPU default at K > 0); got {value!r}")
    if value and task not in (options.get("k0_model") or {}):
        raise ValueError(f"{protocol}: [benchmark.options] sibling_start = true needs k0_model to name the "
                         f"unseen-GPU default for {task}, e.g. k0_model = {{ {task} = "
                         f"\"aiconfigurator-unseen-gpu-{task}\" }}, or sibling_start = false")
    return value


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

    def point(self, test: pd.DataFrame) -> tuple[np.ndarray, float]:
        """(prediction, seconds to fit and predict) on ``test``: the default's model without its intervals' folds,
        whose final model is the same fit (a start needs no interval)."""
        start = time.perf_counter()
        rows, params, _ = budget_rows(self.choice.name, self.choice.params, self.train, self.choice.train_rows,
                                      self.seed)
        pred = self.choice.predict(self.choice.fit_point(rows, self.seed, params), test)[:, 0]
        return pred, time.perf_counter() - start

    def describe(self) -> str:
        return (f"none at K = 0; the prediction and its interval are the unseen-GPU default's ({self.choice.name}, "
                f"the preset of {self.protocol}, {self.choice.train_rows:,} rows budget)")


def take_k0(found: dict[tuple[str, int], dict[Any, Result]], into: dict[str, dict[str, Result]]) -> None:
    """Move the default's K = 0 rows out of one device's ``found`` into ``into[device][part]``."""
    for (label, _), variants in found.items():
        res = variants.pop(K0_KEY, None)
        if res is not None:
            into.setdefault(res.device, {})[label] = res


def take_start(found: dict[tuple[str, int], dict[Any, Result]], into: dict[str, dict[tuple[str, int], dict]]
               ) -> None:
    """Move the variants adapted from the default's start out of one device's ``found`` into
    ``into[device][(part, K)][(setting, interval variant)]``."""
    for key, variants in found.items():
        for tagged in [v for v in variants if v[0] == START]:
            res = variants.pop(tagged)
            into.setdefault(res.device, {}).setdefault(key, {})[tagged[1]] = res


def with_starts(per_device: dict[tuple[str, int], list[dict[Any, Result]]],
                starts: dict[str, dict[tuple[str, int], dict[Any, Result]]]
                ) -> dict[tuple[str, int], list[dict[Any, Result]]]:
    """A copy of ``per_device`` (every Result copied, so choosing among it notes nothing on the originals) with each
    device of ``starts`` adapted from the default's start wherever it was (K > 0)."""
    out = {}
    for key, devices in per_device.items():
        out[key] = []
        for variants in devices:
            dev = next(iter(variants.values())).device
            own = starts.get(dev, {}).get(key, variants)
            out[key].append({v: replace(r, notes=list(r.notes)) for v, r in own.items()})
    return out


def pick_start(selected: dict[tuple[str, int], list[Result]], alt: dict[tuple[str, int], list[Result]] | None,
               devices: Sequence[str]) -> dict[tuple[str, int], list[Result]]:
    """``selected`` (the protocol's rows adapted from the nearest donor's start) with, per K > 0, each of ``devices``
    (the GPUs with a family sibling in training) taking its row of ``alt`` (the protocol's rows with those GPUs
    adapted from the default's start) where, on every other one of ``devices``, ``alt``'s mean APE over the parts at
    that K is below ``selected``'s; a note on each of their rows says which and why."""
    if alt is None or not devices:
        return selected
    for k in sorted({k for _, k in selected if k}):
        labels = [label for label, kk in selected if kk == k]
        rows = {r.device: i for i, r in enumerate(selected[(labels[0], k)])}
        mean = {d: tuple(float(np.mean([rs[(lb, k)][rows[d]].ours for lb in labels])) for rs in (selected, alt))
                for d in devices}
        for dev, (use, others) in _leave_one_out(mean).items():
            note = (f"start at K = {k} chosen by leave-one-sibling-GPU-out: "
                    f"{'the unseen-GPU default' if use else 'the nearest donor'} (or the base, as the K rows' guard "
                    f"chose; the mean APE adapted from the default's start vs from the nearest donor's on the other "
                    f"GPUs with a family sibling in training: {_seen(others, mean)}; the default's start is used "
                    f"only where it is lower on every one)")
            for label in labels:
                i = rows[dev]
                if use:
                    selected[(label, k)][i] = alt[(label, k)][i]
                selected[(label, k)][i].notes.append(note)
    return selected


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
    for dev, (use, others) in _leave_one_out(mean).items():
        note = (f"K = 0 model chosen by leave-one-sibling-GPU-out: {'the unseen-GPU default' if use else 'the base'} "
                f"(the default's K = 0 mean APE vs the base's on the other GPUs with a family sibling in training: "
                f"{_seen(others, mean)}; the default is used only where it is lower on every one)")
        for label in labels:
            i = rows[dev]
            if use:
                selected[(label, 0)][i] = alt[dev][label]
            selected[(label, 0)][i].notes.append(note)
    return selected


def _leave_one_out(mean: dict[str, tuple[float, float]]) -> dict[str, tuple[bool, list[str]]]:
    """Per GPU of ``mean`` (GPU -> (old, new) mean APE): whether it takes the new (lower than the old on every OTHER
    GPU of ``mean``; none other: no), and those others. A GPU's own numbers never decide it."""
    out = {}
    for dev in mean:
        others = [d for d in mean if d != dev]
        out[dev] = (bool(others) and all(round(mean[d][1], 12) < round(mean[d][0], 12) for d in others), others)
    return out


def _seen(others: Sequence[str], mean: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{d} {100 * mean[d][1]:.2f}% vs {100 * mean[d][0]:.2f}%" for d in others) or "none"
