"""perf_probe stage of perfcast (see ARCHITECTURE.md): measure this machine and write records.

``PROBES`` maps a CLI probe name to its :class:`~perfcast.perf_probe.base.Probe` class. It is built on
first access (PEP 562) rather than at import: probe modules import ``perfcast.perf_probe.timing`` (and so
this package), and importing them here eagerly would make that a circular import.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_PROBE_CLASSES = {
    "gemm": "perfcast.perf_probe.gemm:GemmProbe",
    "attention": "perfcast.perf_probe.attention:AttentionProbe",
    "cpu": "perfcast.perf_probe.cpu_kernels:CpuProbe",
}


def __getattr__(name: str) -> Any:
    if name == "PROBES":
        probes = {}
        for probe_name, target in _PROBE_CLASSES.items():
            module, cls = target.split(":")
            probes[probe_name] = getattr(import_module(module), cls)
        globals()["PROBES"] = probes
        return probes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PROBES"]
