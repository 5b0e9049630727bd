"""The measurement record schema: one place that says what a row of each task looks like.

Importers and probes produce records in this shape; everything downstream reads it. A record is one
measured (or published) observation in long form. Columns fall into groups (identity, hardware, config,
targets, quality, provenance); units are in the column names (``_ms``, ``_w``, ``_j``, ``_mb``, ``_gbs``).

Dataset-specific extras that have no place in the shared schema are kept, not dropped: any column whose
name starts with ``x_`` passes validation untouched (for example PerfCastDB's BIOS knobs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import numpy as np
from perfcast.lazy import pandas as pd

TASKS: tuple[str, ...] = ("gemm", "attention", "cpu_bench")
EXTRA_PREFIX = "x_"
#: targets that, when present, must be strictly positive: a missing measurement is NaN, never 0
TARGETS: tuple[str, ...] = ("runtime_ms", "power_w", "energy_j", "score")

Kind = Literal["str", "int", "float", "bool", "datetime"]
Check = Literal["positive", "nonnegative", "fraction", None]


@dataclass(frozen=True)
class Column:
    """One schema column: its name, logical dtype, unit, group and constraints."""

    name: str
    kind: Kind
    group: str
    unit: str = ""
    required: bool = False
    check: Check = None
    choices: tuple[str, ...] | None = None
    doc: str = ""


def _c(name: str, kind: Kind, group: str, unit: str = "", **kw: Any) -> Column:
    return Column(name, kind, group, unit, **kw)


COMMON: tuple[Column, ...] = (
    # identity
    _c("record_id", "str", "identity", required=True, doc="content hash of every other column"),
    _c("task", "str", "identity", required=True, choices=TASKS),
    _c("source", "str", "identity", required=True, doc="probe, aiconfigurator, neusight, spec_cpu2017, ..."),
    _c("source_file", "str", "identity", doc="file (relative to the dataset root) the row came from"),
    _c("collected_at", "datetime", "identity", doc="when the measurement was taken (UTC), if known"),
    _c("published_at", "datetime", "identity", doc="when the result was published, if known"),
    _c("repeat", "int", "identity", check="nonnegative", doc="index among repeats of the same config"),
    # hardware
    _c("hw_id", "str", "hardware", required=True, doc="stable hash of the hardware fingerprint"),
    _c("device_name", "str", "hardware", required=True, doc="name as reported by the source"),
    _c("device_id", "str", "hardware", doc="canonical spec-sheet id (hardware_specs), e.g. h100_sxm"),
    _c("device_kind", "str", "hardware", required=True, choices=("cpu", "gpu")),
    _c("vendor", "str", "hardware"),
    _c("family", "str", "hardware", doc="processor/GPU family, e.g. 'EPYC', 'Xeon Platinum', 'Hopper'"),
    _c("sm_count", "int", "hardware", check="positive"),
    _c("sockets", "int", "hardware", check="positive"),
    _c("cores", "int", "hardware", check="positive", doc="total physical cores"),
    _c("threads", "int", "hardware", check="positive", doc="total hardware threads"),
    _c("clock_mhz", "float", "hardware", "MHz", check="positive", doc="base clock"),
    _c("max_clock_mhz", "float", "hardware", "MHz", check="positive"),
    _c("mem_bw_gbs", "float", "hardware", "GB/s", check="positive"),
    _c("mem_gb", "float", "hardware", "GB", check="positive"),
    _c("l1d_kb", "float", "hardware", "KiB", check="positive", doc="L1 data cache per core"),
    _c("l1i_kb", "float", "hardware", "KiB", check="positive", doc="L1 instruction cache per core"),
    _c("l2_kb", "float", "hardware", "KiB", check="positive", doc="L2 per core (CPU)"),
    _c("l2_mb", "float", "hardware", "MiB", check="positive", doc="total L2 (GPU) "),
    _c("l3_mb", "float", "hardware", "MiB", check="positive", doc="total L3 over all chips"),
    _c("peak_tflops_fp64", "float", "hardware", "TFLOP/s", check="positive"),
    _c("peak_tflops_fp32", "float", "hardware", "TFLOP/s", check="positive"),
    _c("peak_tflops_tf32", "float", "hardware", "TFLOP/s", check="positive"),
    _c("peak_tflops_fp16", "float", "hardware", "TFLOP/s", check="positive"),
    _c("peak_tflops_bf16", "float", "hardware", "TFLOP/s", check="positive"),
    _c("peak_tflops_fp8", "float", "hardware", "TFLOP/s", check="positive"),
    _c("peak_tflops_int8", "float", "hardware", "TOP/s", check="positive"),
    _c("tdp_w", "float", "hardware", "W", check="positive"),
    _c("compute_capability", "str", "hardware", doc="CUDA sm version, e.g. '8.9'"),
    _c("isa_flags", "str", "hardware", doc="space-separated ISA features (avx2 avx512f amx ...)"),
    _c("numa_nodes", "int", "hardware", check="positive"),
    _c("mem_dimms", "int", "hardware", check="positive"),
    _c("mem_ddr_gen", "int", "hardware", check="positive", doc="4 for DDR4, 5 for DDR5"),
    _c("mem_mts", "float", "hardware", "MT/s", check="positive"),
    _c("os", "str", "hardware"),
    # targets
    _c("runtime_ms", "float", "targets", "ms", check="positive"),
    _c("power_w", "float", "targets", "W", check="positive"),
    _c("energy_j", "float", "targets", "J", check="positive"),
    _c("score", "float", "targets", check="positive", doc="benchmark score in score_unit"),
    _c("score_unit", "str", "targets", doc="GB/s, GFLOP/s, ns, SPECrate, ssj_ops, PRP, ..."),
    # quality
    _c("n_repeats", "int", "quality", check="positive"),
    _c("runtime_cv", "float", "quality", check="nonnegative"),
    _c("runtime_min_ms", "float", "quality", "ms", check="positive"),
    _c("power_source", "str", "quality", doc="rapl, nvml, nvidia-smi, analyzer, none"),
    _c("power_note", "str", "quality", doc="why power is missing, or how it was taken"),
    _c("power_limit_w", "float", "quality", "W", check="positive",
       doc="the board's power limit while the measurement ran (a condition of it, not a spec-sheet number)"),
    # provenance
    _c("probe_version", "str", "provenance"),
    _c("software", "str", "provenance", doc="JSON: torch/BLAS/CUDA/framework versions"),
    _c("params_json", "str", "provenance", doc="JSON of anything else that defines the measurement"),
)

GEMM: tuple[Column, ...] = (
    _c("op", "str", "config", required=True, doc="matmul, bmm, linear, sgemm, ..."),
    _c("m", "int", "config", required=True, check="positive"),
    _c("n", "int", "config", required=True, check="positive"),
    _c("k", "int", "config", required=True, check="positive"),
    _c("batch", "int", "config", required=True, check="positive"),
    _c("dtype", "str", "config", required=True),
    _c("layout", "str", "config", doc="nn/nt/tn/tt: transposition of A and B"),
    _c("backend", "str", "config", doc="torch, numpy, cutlass, cublas, trtllm, ..."),
    _c("kernel", "str", "config", doc="kernel name as reported, if known"),
    _c("tile_m", "int", "config", check="positive"),
    _c("tile_n", "int", "config", check="positive"),
    _c("tile_k", "int", "config", check="positive"),
    _c("stages", "int", "config", check="positive"),
    _c("alpha", "float", "config"),
    _c("beta", "float", "config"),
    _c("n_threads", "int", "config", check="positive", doc="CPU threads used by the kernel"),
)

ATTENTION: tuple[Column, ...] = (
    _c("phase", "str", "config", required=True, choices=("prefill", "decode")),
    _c("batch", "int", "config", required=True, check="positive"),
    _c("heads", "int", "config", required=True, check="positive"),
    _c("kv_heads", "int", "config", required=True, check="positive"),
    _c("seq_q", "int", "config", required=True, check="positive"),
    _c("seq_kv", "int", "config", required=True, check="positive"),
    _c("head_dim", "int", "config", required=True, check="positive"),
    _c("causal", "bool", "config"),
    _c("dtype", "str", "config", required=True),
    _c("kv_dtype", "str", "config"),
    _c("window", "int", "config", check="nonnegative", doc="sliding window (0 = none)"),
    _c("beam_width", "int", "config", check="positive"),
    _c("backend", "str", "config", doc="math, flash, efficient, cudnn, trtllm, vllm, ..."),
    _c("kernel", "str", "config"),
    _c("n_threads", "int", "config", check="positive"),
)

CPU_BENCH: tuple[Column, ...] = (
    _c("benchmark", "str", "config", required=True, doc="CINT2017rate, stream, ssj2008, prp, ..."),
    _c("subtest", "str", "config", required=True, doc="sub-test (the benchmark name again when it has none)"),
    _c("variant", "str", "config", doc="base/peak, single/all threads, ..."),
    _c("n_threads", "int", "config", check="positive", doc="threads or copies the run used"),
    _c("working_set_bytes", "float", "config", check="positive"),
    _c("compiler", "str", "config"),
    _c("system", "str", "config", doc="system/server model"),
)

SCHEMAS: dict[str, tuple[Column, ...]] = {
    "gemm": COMMON + GEMM,
    "attention": COMMON + ATTENTION,
    "cpu_bench": COMMON + CPU_BENCH,
}


def columns(task: str) -> dict[str, Column]:
    """The schema of ``task`` as a name → Column mapping (schema order)."""
    if task not in SCHEMAS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return {c.name: c for c in SCHEMAS[task]}


class SchemaError(ValueError):
    """Records failed validation; ``problems`` lists every one (row, column, value, rule)."""

    def __init__(self, task: str, problems: list[str], n_rows: int):
        self.task = task
        self.problems = problems
        head = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(
            f"{len(problems)} problem(s) in {n_rows} {task} record(s); nothing was stored:\n  {head}{more}"
        )


_PANDAS_DTYPE = {
    "str": "string",
    "int": "Int64",
    "float": "float64",
    "bool": "boolean",
    "datetime": "datetime64[ns, UTC]",
}


def _rows(mask: np.ndarray, index: pd.Index, limit: int = 20) -> list[Any]:
    mask = np.asarray(mask, dtype=bool)
    return list(index[mask][:limit]) if mask.any() else []


def _coerce(
    col: Column, s: pd.Series, problems: list[str]
) -> pd.Series:
    """Convert ``s`` to the column's dtype, recording values that cannot be converted."""
    if col.kind == "str":
        out = s.astype("string")
        return out
    if col.kind == "datetime":
        out = pd.to_datetime(s, errors="coerce", utc=True)
        bad = out.isna() & s.notna()
    elif col.kind == "bool":
        if s.dtype == bool or str(s.dtype) == "boolean":
            return s.astype("boolean")
        # True == 1 and False == 0 as dict keys, so the numeric spellings are covered too
        mapping = {True: True, False: False, "true": True, "false": False,
                   "True": True, "False": False, "1": True, "0": False}
        out = s.map(lambda v: mapping.get(v, pd.NA) if not pd.isna(v) else pd.NA).astype("boolean")
        bad = out.isna() & s.notna()
    else:
        # the masks in numpy, not pandas: a probe validates one record per measurement, where pandas'
        # per-operation overhead, not the rows, is the cost (so a column already numeric skips the parsing)
        numeric = pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)
        num = s if numeric else pd.to_numeric(s, errors="coerce")
        vals = num.to_numpy(dtype="float64", na_value=np.nan)
        absent = np.isnan(vals)
        bad = np.zeros(len(s), dtype=bool) if numeric else absent & s.notna().to_numpy(dtype=bool)
        inf = np.isinf(vals)
        if col.kind == "int":
            with np.errstate(invalid="ignore"):
                frac = ~absent & ~inf & (vals != np.round(vals))
            for i in _rows(frac | inf, s.index):
                problems.append(f"row {i}: {col.name}={_fmt(s.loc[i])}, must be an integer")
            # beyond int64 a value cannot be stored exactly (m=1e20 is a typo, not a matrix size)
            huge = ~absent & ~(frac | inf) & (np.abs(vals) >= 2.0**63)
            for i in _rows(huge, s.index):
                problems.append(f"row {i}: {col.name}={_fmt(s.loc[i])}, is out of range for a 64-bit integer")
            drop = frac | inf | huge
            out = (num.where(~drop) if drop.any() else num).astype("Int64")
        else:
            for i in _rows(inf, s.index):
                problems.append(f"row {i}: {col.name}={_fmt(s.loc[i])}, must be a finite number")
            out = num.astype("float64")
            out = out.where(~inf) if inf.any() else out
    for i in _rows(bad, s.index):
        problems.append(f"row {i}: {col.name}={_fmt(s.loc[i])}, cannot be read as {col.kind}")
    return out


def _fmt(v: Any) -> str:
    """A value as the user wrote it (``3.5``, ``'abc'``), not as numpy reprs it."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return repr(v)


def _check(col: Column, s: pd.Series, raw: pd.Series | None, problems: list[str]) -> None:
    numeric = col.kind in ("int", "float")
    v = s.to_numpy(dtype="float64", na_value=np.nan) if numeric else None
    present = ~np.isnan(v) if numeric else s.notna().to_numpy(dtype=bool)
    if col.required:
        # a value that was given but unreadable is already reported; only flag truly absent ones
        missing = ~present
        if raw is not None and missing.any():
            missing &= raw.isna().to_numpy(dtype=bool)
        if col.kind == "str":
            missing = missing | (present & (s.fillna("").str.len() == 0).to_numpy(dtype=bool))
        for i in _rows(missing, s.index):
            problems.append(f"row {i}: {col.name} is missing, it is required")
    if col.choices is not None:
        bad = present & ~s.isin(col.choices).fillna(False).to_numpy(dtype=bool)
        for i in _rows(bad, s.index):
            problems.append(f"row {i}: {col.name}={_fmt(s.loc[i])}, must be one of {list(col.choices)}")
    if col.check is None or not numeric:
        return
    with np.errstate(invalid="ignore"):
        if col.check == "positive":
            bad, rule = present & ~(v > 0), "a positive " + ("integer" if col.kind == "int" else "number")
        elif col.check == "nonnegative":
            bad, rule = present & ~(v >= 0), "a non-negative " + ("integer" if col.kind == "int" else "number")
        else:
            bad, rule = present & ~((v >= 0) & (v <= 1)), "a fraction in [0, 1]"
    if col.group == "targets":
        rule += " (a missing measurement is NaN, never 0)"
    for i in _rows(bad, s.index):
        problems.append(f"row {i}: {col.name}={_fmt(s.loc[i]).strip(chr(39))}, must be {rule}")


def validate(df: pd.DataFrame, task: str, *, with_record_id: bool = False) -> pd.DataFrame:
    """Check ``df`` against ``task``'s schema and return it with canonical dtypes and column order.

    Every problem is reported, each with its row label and column ("row 17: m=-4, must be a positive
    integer"), in one :class:`SchemaError`. Missing optional columns are added as nulls; ``record_id`` is
    computed when ``with_record_id`` (or when absent). Unknown columns are errors unless they start with
    ``x_``.
    """
    cols = columns(task)
    problems: list[str] = []
    unknown = [c for c in df.columns if c not in cols and not str(c).startswith(EXTRA_PREFIX)]
    if unknown:
        problems.append(
            f"unknown column(s) {unknown} for task {task!r}: rename to a schema column or prefix with "
            f"'{EXTRA_PREFIX}' to keep as a dataset-specific extra"
        )
    df = df.copy()
    if "task" not in df.columns:
        df["task"] = task
    compute_id = with_record_id or "record_id" not in df.columns
    if compute_id:
        df["record_id"] = "pending"
    out: dict[str, pd.Series] = {}
    for name, col in cols.items():
        if name in df.columns:
            out[name] = _coerce(col, df[name], problems)
        else:
            out[name] = pd.Series(pd.array([None] * len(df), dtype=_PANDAS_DTYPE[col.kind]), index=df.index)
    for name in df.columns:
        if str(name).startswith(EXTRA_PREFIX):
            s = df[name]
            out[name] = s.astype("string") if s.dtype == object else s
    res = pd.DataFrame(out, index=df.index)
    wrong_task = res["task"].notna() & (res["task"] != task)
    for i in _rows(wrong_task.to_numpy(dtype=bool), res.index):
        problems.append(f"row {i}: task={res.at[i, 'task']!r}, but this batch is for task {task!r}")
    for name, col in cols.items():
        _check(col, res[name], df[name] if name in df.columns else None, problems)
    if problems:
        problems.sort(key=lambda p: int(p.split(":")[0][4:]) if p.startswith("row ") else -1)
        raise SchemaError(task, problems, len(df))
    if compute_id:
        res["record_id"] = record_ids(res)
    return res.reset_index(drop=True)


def record_ids(df: pd.DataFrame) -> pd.Series:
    """Content hash of each row over every column except ``record_id`` (order-independent).

    Identical observations (the same file imported twice) get the same id; repeats differ by ``repeat``.
    """
    cols = sorted(c for c in df.columns if c != "record_id")
    h = pd.util.hash_pandas_object(df[cols], index=False, categorize=True)
    # salt with the column set so that adding an all-null column never collides across schemas
    salt = hashlib.sha1(",".join(cols).encode()).hexdigest()[:8]
    return pd.Series([f"{salt}{v:016x}" for v in h.to_numpy()], index=df.index, dtype="string")


def empty(task: str) -> pd.DataFrame:
    """A zero-row frame with ``task``'s columns and dtypes."""
    return pd.DataFrame({n: pd.Series(dtype=_PANDAS_DTYPE[c.kind]) for n, c in columns(task).items()})


def describe(task: str) -> Iterable[tuple[str, str, str, str, str]]:
    """(name, dtype, unit, group, doc) for every column: the schema as documentation."""
    for c in SCHEMAS[task]:
        yield c.name, c.kind, c.unit, c.group, c.doc


HW_ID_EXCLUDE = ("hw_id", "device_id", "os")


def hardware_ids(df: pd.DataFrame) -> pd.Series:
    """``hw_id`` for each row: a hash of the row's observed hardware columns (those present in ``df``).

    The same hardware described the same way gets the same id whether it was probed or imported. The
    canonical ``device_id`` is excluded because it is derived from the name, not observed, and ``os``
    because software does not change the device.
    """
    hw = [c.name for c in COMMON if c.group == "hardware" and c.name not in HW_ID_EXCLUDE and c.name in df]
    if not hw:
        raise ValueError("hardware_ids needs at least one hardware column (device_name, cores, ...)")
    uniq = df[hw].drop_duplicates().reset_index(drop=True)  # hardware repeats over many rows: hash once
    joined = pd.Series("", index=uniq.index, dtype="string")
    for name in hw:
        col = uniq[name]
        if col.dtype.kind == "f":  # 3.0 and 3 must hash alike whether the source wrote ints or floats
            col = col.map(lambda v: f"{v:g}" if pd.notna(v) else None)
        joined = joined + (f"|{name}=" + col.astype("string")).fillna("")
    uniq["hw_id"] = pd.array([hashlib.sha1(s.encode()).hexdigest()[:16] for s in joined], dtype="string")
    out = df[hw].merge(uniq, on=hw, how="left", sort=False)["hw_id"]
    out.index = df.index
    return out
