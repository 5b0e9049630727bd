"""Measurement records, the layer every stage shares: the schema, the Parquet store, spec sheets, value parsing.

Probes write records through it and importers fill it from public datasets, so it sits below both.
"""

from perfcast.records.schema import TASKS, SchemaError, columns, validate
from perfcast.records.store import AppendResult, RecordStore

__all__ = ["TASKS", "AppendResult", "RecordStore", "SchemaError", "columns", "validate"]
