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
)
from perfcast.datasets.importers.base import REGISTRY, Importer, get_importer, register

__all__ = ["REGISTRY", "Importer", "get_importer", "register"]
