"""Importers for the public datasets, one module each, registered by name (see ``base.REGISTRY``)."""

from perfcast.datasets.importers import (  # noqa: F401  (import registers)
    aiconfigurator,
    aiconfigurator_power,
    gpperf,
    neusight,
    perfcastdb,
    spec_cpu2017,
    specpower,
    uci_hardware,
    vidur,
)
from perfcast.datasets.importers.base import REGISTRY, Importer, register

__all__ = ["REGISTRY", "Importer", "get_importer", "register"]


def get_importer(name: str) -> Importer:
    """The importer registered as ``name`` (a clear error lists the known names).

    It lives here, not in ``base``, because only this package has imported (and so registered) every importer.
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]()
