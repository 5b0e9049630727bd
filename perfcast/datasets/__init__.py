"""Measurement records: the schema, the Parquet store, importers for public datasets, spec sheets."""

from perfcast.datasets.schema import TASKS, SchemaError, columns, validate
from perfcast.datasets.store import AppendResult, RecordStore

__all__ = ["TASKS", "AppendResult", "RecordStore", "SchemaError", "columns", "validate"]
