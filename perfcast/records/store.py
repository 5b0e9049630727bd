"""The record store: immutable, content-addressed Parquet parts per task, read as one table.

Layout: ``<root>/<task>/part-<utc-time>-<sha256>.parquet``. A part's name carries the SHA-256 of its
bytes, computed when it is written and checked whenever it is read, so a flipped bit or a truncated file
is a named :class:`CorruptPartError` (or, with ``on_bad="skip"``, a loud warning), never silently changed
values. ``perfcast data check`` verifies every part and ``perfcast data repair`` moves damaged ones to
``<root>/quarantine/<task>/`` (nothing is deleted).

The root is a local path or any pyarrow filesystem URI (``file://``, ``s3://``, ``gs://``, ...).

* Local: each append validates the batch, drops records whose ``record_id`` is already stored, writes a
  temporary file and renames it into place, all under a per-task file lock, so concurrent writers neither
  corrupt nor lose records and a crash never leaves a half-written part visible.
* Other filesystems: writers take no lock. Parts are immutable and named by their content, so writers
  on many nodes never overwrite each other (object stores make a whole object visible at once); a
  record two writers stored at once is in two parts and is deduplicated by ``record_id`` on read.

Parts written before checksums (``part-<time>-<12 hex>.parquet``) still read: they are *legacy*,
unverified beyond Parquet's own structure; ``perfcast data repair`` seals the readable ones by renaming
them to their content hash (bytes unchanged), after which they are verified like any other part.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePath, PurePosixPath
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from filelock import FileLock

from perfcast.records.schema import TASKS, columns, validate

DEFAULT_STORE_ENV = "PERFCAST_STORE"
QUARANTINE = "quarantine"
#: a checksummed part: its name ends in the SHA-256 (hex) of its bytes
PART_RE = re.compile(r"^part-(?P<stamp>\d{8}T\d{12})-(?P<digest>[0-9a-f]{64})\.parquet$")
OnBad = Literal["raise", "skip"]


def default_store_path() -> Path:
    """``$PERFCAST_STORE`` if set, else ``~/.perfcast/store``."""
    env = os.environ.get(DEFAULT_STORE_ENV)
    return Path(env) if env else Path.home() / ".perfcast" / "store"


class StoreError(Exception):
    """A named problem with the store itself (not with the records offered to it)."""


class CorruptPartError(StoreError):
    """A part's bytes no longer match its checksum, or it cannot be read as Parquet."""

    def __init__(self, path: PurePath | str, reason: str, root: PurePath | str):
        self.path = path
        self.reason = reason
        super().__init__(
            f"damaged store part {path}: {reason}. Run `perfcast data check --store {root}` to list every "
            f"damaged part and `perfcast data repair --store {root}` to move them to {QUARANTINE}/ "
            f"(nothing is deleted), then re-import or re-probe to restore their records."
        )


class StoreNotWritableError(StoreError):
    """The store cannot take new parts (a file in the way, no permission, a full disk, ...)."""


class CorruptPartWarning(UserWarning):
    """A damaged part was skipped at the caller's request (``on_bad="skip"``): its records are missing."""


@dataclass(frozen=True)
class AppendResult:
    """What an append did: rows offered, rows written, and the file written (None if nothing new)."""

    task: str
    offered: int
    written: int
    path: PurePath | None

    @property
    def duplicates(self) -> int:
        return self.offered - self.written


@dataclass(frozen=True)
class PartStatus:
    """One part as ``check`` found it: "ok" (checksum matches), "legacy" (no checksum, reads) or "bad"."""

    task: str
    path: PurePath
    status: Literal["ok", "legacy", "bad"]
    detail: str = ""


#: parts verified in this process: (filesystem type, path) -> (size, mtime); a rewritten file is re-hashed
_VERIFIED: dict[tuple[str, str], tuple[int, object]] = {}
#: a store keeps the record ids of its checksummed parts up to this many rows in memory: a sweep appends one
#: small part per measurement, and re-reading every earlier part's ids on each append grows with the square
#: of the sweep (large imported parts are few and are read as before)
ID_CACHE_MAX_ROWS = 10_000


def _sha256(data: bytes | pa.Buffer) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


class RecordStore:
    """Validated records, one folder of immutable Parquet parts per task, on any pyarrow filesystem."""

    def __init__(self, root: str | os.PathLike[str] | None = None, filesystem: pafs.FileSystem | None = None):
        if filesystem is not None:
            fs, base = filesystem, str(root)
        elif root is None or isinstance(root, os.PathLike) or "://" not in str(root):
            fs, base = pafs.LocalFileSystem(), str(Path(root).expanduser() if root is not None
                                                  else default_store_path())
        else:
            fs, base = pafs.FileSystem.from_uri(str(root))
        self.fs = fs
        self.local = isinstance(fs, pafs.LocalFileSystem)
        #: a Path for a local store (as before); the filesystem path otherwise
        self.root: PurePath = Path(base) if self.local else PurePosixPath(base)
        self.uri = str(root) if root is not None and not self.local else str(self.root)
        #: per task, the record_id columns of its small checksummed parts (:meth:`_tables`)
        self._ids: dict[str, dict[str, tuple[tuple[int, int], pa.Table]]] = {}

    def __repr__(self) -> str:
        return f"RecordStore({self.uri!r})"

    # ---- paths and locking
    def _task_dir(self, task: str) -> PurePath:
        columns(task)  # raises a clear error for an unknown task
        return self.root / task

    def _make_dir(self, d: PurePath) -> None:
        try:
            self.fs.create_dir(str(d), recursive=True)
        except (OSError, pa.ArrowException) as e:
            raise self._not_writable(e) from None

    def _not_writable(self, e: BaseException) -> StoreNotWritableError:
        why = getattr(e, "strerror", None) or str(e)
        hint = "pass --store a directory" if self.local and Path(self.root).is_file() else (
            "free space, fix its permissions or pass --store another directory")
        what = "is a file, not a directory" if self.local and Path(self.root).is_file() else f"cannot be written ({why})"
        return StoreNotWritableError(f"record store {self.uri} {what}: {hint}; nothing was stored")

    def lock(self, task: str) -> contextlib.AbstractContextManager[object]:
        """The per-task writer lock: a file lock for a local store, none elsewhere (content addressing)."""
        d = self._task_dir(task)
        self._make_dir(d)
        if not self.local:
            return contextlib.nullcontext()
        return FileLock(str(Path(d) / ".lock"), timeout=600)

    def check_writable(self, task: str) -> None:
        """Create the task folder and a scratch file in it, or raise :class:`StoreNotWritableError`.

        Why: a probe must learn that its store is unusable before it spends minutes measuring."""
        d = self._task_dir(task)
        self._make_dir(d)
        probe = str(d / f".tmp-writable-{uuid.uuid4().hex}")
        try:
            with self.fs.open_output_stream(probe) as fh:
                fh.write(b"perfcast")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as e:
            raise self._not_writable(e) from None

    def parts(self, task: str) -> list[PurePath]:
        """The visible Parquet parts of ``task``, oldest first (temporary files are never listed)."""
        d = self._task_dir(task)
        return [d / i.base_name for i in self._part_infos(task)]

    def _part_infos(self, task: str) -> list[pafs.FileInfo]:
        """:meth:`parts` with each file's size and modification time."""
        infos = self.fs.get_file_info(pafs.FileSelector(str(self._task_dir(task)), allow_not_found=True))
        return sorted((i for i in infos if i.type == pafs.FileType.File and i.base_name.startswith("part-")
                       and i.base_name.endswith(".parquet")), key=lambda i: i.base_name)

    # ---- verified reading of one part
    def _open(self, path: PurePath) -> pq.ParquetFile:
        """``path`` as a ParquetFile whose bytes match the checksum in its name (legacy: unverified)."""
        m = PART_RE.match(path.name)
        try:
            info = self.fs.get_file_info(str(path))
            key = (type(self.fs).__name__, str(path))
            stamp = (info.size, info.mtime_ns)
            if m is None or _VERIFIED.get(key) == stamp:
                return pq.ParquetFile(self.fs.open_input_file(str(path)))
            with self.fs.open_input_stream(str(path)) as fh:
                data = fh.readall()
            digest = _sha256(data)
            if digest != m["digest"]:
                raise CorruptPartError(path, f"its bytes hash to {digest[:12]}…, its name records "
                                             f"{m['digest'][:12]}… (changed since it was written)", self.uri)
            _VERIFIED[key] = stamp
            return pq.ParquetFile(pa.BufferReader(data))
        except (CorruptPartError, FileNotFoundError):
            raise
        except (OSError, pa.ArrowException, ValueError) as e:
            raise CorruptPartError(path, f"cannot be read as Parquet ({type(e).__name__}: {e})", self.uri) from None

    def _read_part(self, path: PurePath, want: list[str] | None) -> pa.Table:
        pf = self._open(path)
        try:
            cols = None if want is None else [c for c in want if c in pf.schema_arrow.names]
            return pf.read(columns=cols)
        except (OSError, pa.ArrowException, ValueError) as e:
            raise CorruptPartError(path, f"cannot be read as Parquet ({type(e).__name__}: {e})", self.uri) from None

    def _tables(self, task: str, want: list[str] | None, on_bad: OnBad,
                cache: dict[str, tuple[tuple[int, int], pa.Table]] | None = None) -> list[pa.Table]:
        """Every readable part of ``task`` (columns ``want``). ``cache`` keeps this task's small checksummed
        parts' tables (for one fixed ``want``) by path with the file's size and mtime: a part whose file changed
        is read and verified again; parts no longer listed (compacted, quarantined) are forgotten."""
        tables = []
        d = self._task_dir(task)
        infos = self._part_infos(task)
        if cache is not None:
            for gone in set(cache) - {str(d / i.base_name) for i in infos}:
                del cache[gone]
        for info in infos:
            p, stamp = d / info.base_name, (info.size, info.mtime_ns)
            if cache is not None and cache.get(str(p), (None,))[0] == stamp:
                tables.append(cache[str(p)][1])
                continue
            try:
                table = self._read_part(p, want)
                if cache is not None and PART_RE.match(p.name) and table.num_rows <= ID_CACHE_MAX_ROWS:
                    cache[str(p)] = (stamp, table)
                tables.append(table)
            except CorruptPartError as e:
                if on_bad != "skip":
                    raise
                warnings.warn(f"SKIPPED {e} Its records are missing from this read.", CorruptPartWarning,
                              stacklevel=3)
            except FileNotFoundError:  # compacted or quarantined since it was listed: its rows live on
                continue
        return tables

    def read_part(self, path: PurePath, columns_: list[str] | None = None) -> pd.DataFrame:
        """One verified part as a DataFrame (a sweep reads only the parts it has not seen yet)."""
        return self._read_part(path, columns_).to_pandas(types_mapper=_types_mapper)

    # ---- writing
    def append(self, df: pd.DataFrame, task: str) -> AppendResult:
        """Validate ``df`` as ``task`` records and store those not already present.

        Raises :class:`~perfcast.records.schema.SchemaError` (listing every problem) before anything is
        written, so a bad batch never touches stored data; :class:`StoreNotWritableError` if the part
        cannot be written (then nothing of the batch is stored).
        """
        offered = len(df)
        recs = validate(df, task)
        recs = recs.drop_duplicates("record_id", keep="first")
        if recs.empty:
            return AppendResult(task, offered, 0, None)
        with self.lock(task):
            known = self.record_ids(task)
            if len(known):
                new = pc.invert(pc.is_in(pa.array(recs["record_id"].to_numpy(dtype=object)), value_set=known))
                recs = recs[new.to_numpy(zero_copy_only=False)]
            if recs.empty:
                return AppendResult(task, offered, 0, None)
            path = self._write_part(recs, task)
        return AppendResult(task, offered, len(recs), path)

    def _write_part(self, recs: pd.DataFrame, task: str) -> PurePath:
        d = self._task_dir(task)
        self._make_dir(d)
        with warnings.catch_warnings():
            # pyarrow reads tz-aware columns through Series.values, which pandas 3.1 flags as deprecated
            warnings.filterwarnings("ignore", message=".*timezone information.*")
            table = pa.Table.from_pandas(recs.reset_index(drop=True), preserve_index=False)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        final = d / f"part-{stamp}-{_sha256(data)}.parquet"
        try:
            if self.local:
                _write_local_atomic(Path(final), data)
            else:  # object stores make a whole object visible at once
                with self.fs.open_output_stream(str(final)) as fh:
                    fh.write(data)
        except (OSError, pa.ArrowException) as e:
            raise self._not_writable(e) from e
        return final

    def compact(self, task: str) -> int:
        """Merge every part of ``task`` into one file (many small probe appends make many parts).

        The merged file is made visible before the old parts are removed; a reader in between sees
        duplicates, which :meth:`read` drops. A damaged part stops compaction (repair first).
        Returns the number of records kept.
        """
        with self.lock(task):
            old = self.parts(task)
            if len(old) <= 1:
                return len(self.read(task)) if old else 0
            df = self.read(task)
            self._write_part(df, task)
            for p in old:
                self.fs.delete_file(str(p))
            return len(df)

    # ---- checking and repair
    def check(self, tasks: tuple[str, ...] = TASKS) -> list[PartStatus]:
        """Every part of ``tasks``: checksum verified and fully decoded ("ok"), "legacy" or "bad"."""
        out = []
        for task in tasks:
            for p in self.parts(task):
                try:
                    self._read_part(p, None)
                    out.append(PartStatus(task, p, "ok" if PART_RE.match(p.name) else "legacy"))
                except CorruptPartError as e:
                    out.append(PartStatus(task, p, "bad", e.reason))
        return out

    def repair(self, tasks: tuple[str, ...] = TASKS) -> list[tuple[PartStatus, PurePath]]:
        """Move bad parts to ``<root>/quarantine/<task>/`` and seal readable legacy parts under their hash.

        Nothing is deleted: a quarantined part keeps its bytes for whoever wants to salvage it. Returns
        (part, where it went) for each part moved or renamed.
        """
        moved = []
        for task in tasks:
            with self.lock(task):
                for st in self.check((task,)):
                    if st.status == "bad":
                        qdir = self.root / QUARANTINE / task
                        self._make_dir(qdir)
                        dest = qdir / st.path.name
                        if self.fs.get_file_info(str(dest)).type != pafs.FileType.NotFound:
                            dest = qdir / f"{uuid.uuid4().hex[:8]}-{st.path.name}"
                    elif st.status == "legacy":
                        with self.fs.open_input_stream(str(st.path)) as fh:
                            digest = _sha256(fh.readall())
                        stamp = re.match(r"part-(\d{8}T\d{12})", st.path.name)
                        dest = st.path.parent / f"part-{stamp[1] if stamp else '00000000T000000000000'}-{digest}.parquet"
                    else:
                        continue
                    self.fs.move(str(st.path), str(dest))
                    moved.append((st, dest))
        return moved

    # ---- reading
    def record_ids(self, task: str, on_bad: OnBad = "raise") -> pa.Array:
        """Every stored ``record_id`` of ``task`` as an Arrow array (reads only that column)."""
        tables = self._tables(task, ["record_id"], on_bad, self._ids.setdefault(task, {}))
        chunks = [t.column("record_id") for t in tables]
        if not chunks:
            return pa.array([], type=pa.string())
        return pa.chunked_array([c.cast(pa.string()) for ch in chunks for c in ch.chunks], type=pa.string()).combine_chunks()

    def read(
        self, task: str, columns_: list[str] | None = None, filters: dict[str, object] | None = None,
        on_bad: OnBad = "raise",
    ) -> pd.DataFrame:
        """All records of ``task`` as one DataFrame, deduplicated by ``record_id``.

        ``columns_`` limits the columns read; ``filters`` keeps rows whose column equals the value (or is in
        the list of values), e.g. ``{"source": "neusight", "device_id": ["t4", "v100"]}``. A damaged part
        raises :class:`CorruptPartError` naming it, or with ``on_bad="skip"`` is left out with a
        :class:`CorruptPartWarning`.
        """
        want = None
        if columns_ is not None:
            want = list(dict.fromkeys(["record_id", *columns_, *(filters or {})]))
        tables = self._tables(task, want, on_bad)
        if not tables:
            from perfcast.records.schema import empty

            out = empty(task)
            return out[columns_] if columns_ else out
        table = pa.concat_tables(_unify(tables), promote_options="permissive")
        df = table.to_pandas(types_mapper=_types_mapper)
        for key, val in (filters or {}).items():
            vals = val if isinstance(val, (list, tuple, set)) else [val]
            df = df[df[key].isin(list(vals))]
        df = df.drop_duplicates("record_id").reset_index(drop=True)
        if columns_ is not None and "record_id" not in columns_:
            df = df.drop(columns="record_id")
        return df

    def counts(self, on_bad: OnBad = "raise") -> pd.DataFrame:
        """Records per (task, source, device_name), for ``perfcast data ls``."""
        frames = []
        for task in TASKS:
            df = self.read(task, columns_=["source", "device_name"], on_bad=on_bad)
            if df.empty:
                continue
            g = df.groupby(["source", "device_name"], dropna=False).size().reset_index(name="records")
            g.insert(0, "task", task)
            frames.append(g)
        if not frames:
            return pd.DataFrame(columns=["task", "source", "device_name", "records"])
        return pd.concat(frames, ignore_index=True)


def _write_local_atomic(final: Path, data: pa.Buffer) -> None:
    """Write ``data`` to a temporary file beside ``final``, fsync it, then rename it into place."""
    tmp = final.with_name(f".tmp-{final.name}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _unify(tables: list[pa.Table]) -> list[pa.Table]:
    """Give columns whose type differs between parts one common type, so parts written at different
    times (or by different importers) always read together: timestamps of any unit → UTC nanoseconds,
    mixed integers and floats → float64, anything else (an ``x_`` extra numeric in one file and text in
    another, say) → string."""
    types: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    target: dict[str, pa.DataType] = {}
    for name, ts in types.items():
        if len(ts) <= 1 or all(pa.types.is_string(x) or pa.types.is_large_string(x) for x in ts) \
                or all(pa.types.is_integer(x) for x in ts):
            continue
        if all(pa.types.is_timestamp(x) for x in ts):
            target[name] = pa.timestamp("ns", tz="UTC")
        elif all(pa.types.is_integer(x) or pa.types.is_floating(x) for x in ts):
            target[name] = pa.float64()
        else:
            target[name] = pa.string()
    if not target:
        return tables
    return [t.cast(pa.schema([pa.field(f.name, target[f.name]) if f.name in target else f for f in t.schema]))
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
