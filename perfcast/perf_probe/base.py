"""The probe contract: a probe enumerates configurations and measures one at a time.

The sweep runner (``sweep.py``) owns everything around a probe — storing each finished measurement at
once, skipping what this hardware already measured (by ``key``), the time budget, progress — so a probe
only says *what* to measure and *how* to measure one configuration.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any


class KernelCheckError(RuntimeError):
    """A kernel's result failed its correctness check (GEMM, attention, solve, CG, ...): never time it."""


class Probe(ABC):
    """One family of benchmark kernels (gemm, attention, cpu) producing records of one task."""

    #: CLI name: ``perfcast probe NAME``
    name: str = ""
    #: record task the probe writes (schema.TASKS)
    task: str = ""

    @abstractmethod
    def space(self, quick: bool = False) -> list[dict[str, Any]]:
        """The configurations to measure, in the order to measure them (``quick``: a short sweep)."""

    @abstractmethod
    def run(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        """Measure one configuration; return record dicts (config, targets, quality columns).

        The runner adds identity, hardware and provenance columns (``source``, ``hw_id``, fingerprint,
        ``params_json`` = ``key(config)``, ``software``, ``collected_at``) before storing.
        """

    def available(self) -> tuple[bool, str]:
        """Whether the probe can run here, and if not, why (e.g. 'no CUDA device')."""
        return True, ""

    @staticmethod
    def key(config: dict[str, Any]) -> str:
        """Canonical JSON of a configuration: what a resumed sweep compares to skip finished work."""
        return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


class DeviceProbe(Probe):
    """A probe that sweeps each device it is given ("cpu", "cuda", "cuda:N"): its space is the union of
    per-device spaces. ``measure_kw`` goes to :func:`perfcast.perf_probe.timing.measure`."""

    def __init__(self, devices: tuple[str, ...] | None = None, **measure_kw: Any):
        import torch

        self.devices = devices or (("cpu", "cuda") if torch.cuda.is_available() else ("cpu",))
        self.measure_kw = measure_kw
        #: configurations whose result was already checked against the reference (checked once each)
        self._checked: set[tuple[Any, ...]] = set()

    def space(self, quick: bool = False) -> list[dict[str, Any]]:
        return [cfg for dev in self.devices for cfg in self.device_space(dev, quick)]

    @abstractmethod
    def device_space(self, device: str, quick: bool) -> list[dict[str, Any]]:
        """The configurations to measure on one device."""

    #: the configuration keys that shape one call (its sizes, and what only rearranges them: a GEMM's layout).
    #: Configurations alike in every other key run one kernel at about the same rate (work per second), so one of
    #: them timed estimates the others' calls (:mod:`perfcast.perf_probe.affordable`).
    shape_keys: tuple[str, ...] = ()

    def work(self, config: dict[str, Any]) -> float | None:
        """The work of one call (FLOPs), or None where the probe has no estimate (then nothing is left out)."""
        return None

    def call_ms(self, config: dict[str, Any]) -> float:
        """Milliseconds of one warm call of the configuration's kernel (no check, no repeats: an estimate of its
        cost before it is measured)."""
        raise NotImplementedError(f"probe {self.name!r} cannot time one call")

    def rate_group(self, config: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        """What configurations sharing a kernel (and so a rate) have in common: every key but the shape."""
        return tuple(sorted((k, str(v)) for k, v in config.items() if k not in self.shape_keys))
