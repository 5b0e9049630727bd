"""Measurement records, the layer every stage shares: the schema, the Parquet store, spec sheets, value parsing.

Probes write records through it and importers fill it from public datasets, so it sits below both. The store's
names are imported on first use (PEP 562): the store needs pyarrow's Parquet and filesystem modules and
filelock, which loading a model and predicting never use (benchmarks/PREDICT_SPEED.md, load section).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perfcast.records.schema import TASKS, SchemaError, columns, validate

if TYPE_CHECKING:
    from perfcast.records.store import AppendResult, RecordStore

#: names defined by the store module
_STORE = frozenset({"AppendResult", "RecordStore"})


def __getattr__(name: str) -> Any:
    if name in _STORE:
        from perfcast.records import store

        value = getattr(store, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'perfcast.records' has no attribute {name!r}")


__all__ = ["TASKS", "AppendResult", "RecordStore", "SchemaError", "columns", "validate"]
