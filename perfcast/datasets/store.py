"""The record store: a directory of Parquet files per task, appended atomically, read as one table.

Layout: ``<root>/<task>/part-<utc-time>-<uuid>.parquet``. Each append validates the batch, drops records
whose ``record_id`` is already stored, writes a temporary file and renames it into place, all under a
per-task file lock, so two processes appending at once neither corrupt nor lose records and a crash
never leaves a half-written part visible. Reads union every part and dedupe by ``record_id``.
"""

from __future__ import annotations

import os
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from filelock import FileLock

from perfcast.datasets.schema import TASKS, columns, validate

DEFAULT_STORE_ENV = "PERFCAST_STORE"


def default_store_path() -> Path:
    """``$PERFCAST_STORE`` if set, else ``~/.perfcast/store``."""
    env = os.environ.get(DEFAULT_STORE_ENV)
    return Path(env) if env else Path.home() / ".perfcast" / "store"


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows offered, rows written, and the file written (None if nothing new)."""

    task: str
    offered: int
    written: int
    path: Path | None

    @property
    def duplicates(self) -> int:
        return self.offered - self.written


class RecordStore:
    """A directory of validated records, one sub-directory of Parquet parts per task."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root is not None else default_store_path()

    def __repr__(self) -> str:
        return f"RecordStore({str(self.root)!r})"

    # ---- paths and locking
    def _task_dir(self, task: str) -> Path:
        columns(task)  # raises a clear error for an unknown task
        return self.root / task

    def _lock(self, task: str) -> FileLock:
        d = self._task_dir(task)
        d.mkdir(parents=True, exist_ok=True)
        return FileLock(str(d / ".lock"), timeout=600)

    def parts(self, task: str) -> list[Path]:
        """The visible Parquet parts of ``task`` (temporary files are never listed)."""
        d = self._task_dir(task)
        return sorted(d.glob("part-*.parquet")) if d.exists() else []

    # ---- writing
    def append(self, df: pd.DataFrame, task: str) -> AppendResult:
        """Validate ``df`` as ``task`` records and store those not already present.

        Raises :class:`~perfcast.datasets.schema.SchemaError` (listing every problem) before anything is
        written, so a bad batch never touches stored data.
        """
        offered = len(df)
        recs = validate(df, task)
        recs = recs.drop_duplicates("record_id", keep="first")
        if recs.empty:
            return AppendResult(task, offered, 0, None)
        with self._lock(task):
            known = self.record_ids(task)
            if len(known):
                new = pc.invert(pc.is_in(pa.array(recs["record_id"].to_numpy(dtype=object)), value_set=known))
                recs = recs[new.to_numpy(zero_copy_only=False)]
            if recs.empty:
                return AppendResult(task, offered, 0, None)
            path = self._write_part(recs, task)
        return AppendResult(task, offered, len(recs), path)

    def _write_part(self, recs: pd.DataFrame, task: str) -> Path:
        d = self._task_dir(task)
        d.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        final = d / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = d / f".tmp-{final.name}"
        with warnings.catch_warnings():
            # pyarrow reads tz-aware columns through Series.values, which pandas 3.1 flags as deprecated
            warnings.filterwarnings("ignore", message=".*timezone information.*")
            table = pa.Table.from_pandas(recs.reset_index(drop=True), preserve_index=False)
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        return final

    def compact(self, task: str) -> int:
        """Merge every part of ``task`` into one file (many small probe appends make many parts).

        The merged file is made visible before the old parts are removed; a reader in between sees
        duplicates, which :meth:`read` drops. Returns the number of records kept.
        """
        with self._lock(task):
            old = self.parts(task)
            if len(old) <= 1:
                return len(self.read(task)) if old else 0
            df = self.read(task)
            self._write_part(df, task)
            for p in old:
                p.unlink()
            return len(df)

    # ---- reading
    def record_ids(self, task: str) -> pa.Array:
        """Every stored ``record_id`` of ``task`` as an Arrow array (reads only that column)."""
        chunks = [pq.read_table(p, columns=["record_id"]).column(0) for p in self.parts(task)]
        if not chunks:
            return pa.array([], type=pa.string())
        return pa.chunked_array([c.cast(pa.string()) for ch in chunks for c in ch.chunks], type=pa.string()).combine_chunks()

    def read(
        self, task: str, columns_: list[str] | None = None, filters: dict[str, object] | None = None
    ) -> pd.DataFrame:
        """All records of ``task`` as one DataFrame, deduplicated by ``record_id``.

        ``columns_`` limits the columns read; ``filters`` keeps rows whose column equals the value (or is in
        the list of values), e.g. ``{"source": "neusight", "device_id": ["t4", "v100"]}``.
        """
        parts = self.parts(task)
        if not parts:
            from perfcast.datasets.schema import empty

            out = empty(task)
            return out[columns_] if columns_ else out
        want = None
        if columns_ is not None:
            want = list(dict.fromkeys(["record_id", *columns_, *(filters or {})]))
        tables = []
        for p in parts:
            t = pq.read_table(p, columns=[c for c in want if c in pq.read_schema(p).names] if want else None)
            tables.append(t)
        table = pa.concat_tables(_unify(tables), promote_options="permissive")
        df = table.to_pandas(types_mapper=_types_mapper)
        for key, val in (filters or {}).items():
            vals = val if isinstance(val, (list, tuple, set)) else [val]
            df = df[df[key].isin(list(vals))]
        df = df.drop_duplicates("record_id").reset_index(drop=True)
        if columns_ is not None and "record_id" not in columns_:
            df = df.drop(columns="record_id")
        return df

    def counts(self) -> pd.DataFrame:
        """Records per (task, source, device_name), for ``perfcast data ls``."""
        frames = []
        for task in TASKS:
            df = self.read(task, columns_=["source", "device_name"])
            if df.empty:
                continue
            g = df.groupby(["source", "device_name"], dropna=False).size().reset_index(name="records")
            g.insert(0, "task", task)
            frames.append(g)
        if not frames:
            return pd.DataFrame(columns=["task", "source", "device_name", "records"])
        return pd.concat(frames, ignore_index=True)


def _unify(tables: list[pa.Table]) -> list[pa.Table]:
    """Cast columns whose type differs between parts (an ``x_`` extra that was all-null in one file
    and numeric in another, say) to string, so parts written at different times always read together."""
    types: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    clash = {n for n, ts in types.items() if len(ts) > 1 and not all(pa.types.is_string(x) or
             pa.types.is_large_string(x) for x in ts) and not all(pa.types.is_integer(x) for x in ts)}
    if not clash:
        return tables
    return [t.cast(pa.schema([pa.field(f.name, pa.string()) if f.name in clash else f for f in t.schema]))
            for t in tables]


def _types_mapper(t: pa.DataType) -> object | None:
    """Read Arrow strings back as pandas' nullable string dtype (what validation produces)."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype()
    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    return None
