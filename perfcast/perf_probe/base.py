"""The probe contract: a probe enumerates configurations and measures one at a time.

The sweep runner (``sweep.py``) owns everything around a probe — storing each finished measurement at
once, skipping what this hardware already measured (by ``key``), the time budget, progress — so a probe
only says *what* to measure and *how* to measure one configuration.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any


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
