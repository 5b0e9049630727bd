"""perfcast: predict runtime and power of GEMM, attention and CPU benchmarks on hardware you have not run.

Every public name is imported on first use (PEP 562), so ``import perfcast`` and ``perfcast --help`` load no
data or model library, and ``from perfcast import Predictor`` loads only what predicting needs (no MLflow,
torch or Optuna: those are imported by the code paths that use them).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from perfcast._version import __version__

#: public name -> the module that defines it
_LAZY: dict[str, str] = {"Predictor": "perfcast.predictor", "RecordStore": "perfcast.records.store"}

if TYPE_CHECKING:
    import pandas as pd

    from perfcast.records.store import RecordStore
    from perfcast.predictor import Predictor


def load_dataset(task: str, store: str | None = None) -> pd.DataFrame:
    """Every stored record of ``task`` as one DataFrame (``store`` defaults to ``$PERFCAST_STORE``)."""
    from perfcast.records.store import RecordStore

    return RecordStore(store).read(task)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'perfcast' has no attribute {name!r}")


__all__ = ["Predictor", "RecordStore", "__version__", "load_dataset"]
