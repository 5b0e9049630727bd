"""pandas imported on first use, for the modules a prediction request passes through.

Why: a request given as a dict (``Predictor.predict({...})``, ``perfcast predict --set ...``) is answered with
NumPy arrays alone, and importing pandas (with pyarrow) would be most of such a command's time. Those modules
write ``from perfcast.lazy import pandas as pd``: the name reads as pandas everywhere (type checkers see the real
module), and pandas is imported the first time one of its attributes is read.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any


class LazyModule:
    """A stand-in for the module ``name`` that imports it when an attribute is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: Any = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def is_instance(obj: Any, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)`` without importing ``module``: no instance exists before it is imported."""
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(obj, getattr(loaded, name))


def is_missing(value: Any) -> bool:
    """A scalar that means "no value": None, NaN or ``pandas.NA`` (checked first: NA refuses ``!=`` as a bool)."""
    module = sys.modules.get("pandas")
    return value is None or (module is not None and value is module.NA) or value != value


if TYPE_CHECKING:
    import pandas
else:
    pandas = LazyModule("pandas")

__all__ = ["LazyModule", "is_instance", "is_missing", "pandas"]
