"""Hardware columns for feature building: the spec sheet by device id first, the record's own values second.

Why this order: a model that learned from spec-sheet numbers can predict a device it never saw, given
only that device's sheet, but only if training rows describe their hardware with the same numbers. So
the sheet (``perfcast.records.hardware_specs``) always wins; a record's own hardware columns fill only
the fields the sheet lacks (a probed CPU, a GPU no sheet lists).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.records.hardware_specs import (
    SPEC_FIELDS,
    Catalog,
    catalog,
    get_spec,
    resolve_device_id,
    spec_table,
)
from perfcast.records.parsing import decimal
from perfcast.records.schema import COMMON
from perfcast.features.distinct import factorize, flagged
from perfcast.features.records import Records

#: the input column a user may use for ``device_id`` (as in ``{"device": "h100_sxm"}``)
DEVICE_ALIAS = "device"
#: hardware columns of the record schema (what a record may carry about its own machine)
RECORD_HARDWARE: tuple[str, ...] = tuple(
    c.name for c in COMMON if c.group == "hardware" and c.name not in ("hw_id", "device_id", "device_name")
)


class UnknownDeviceError(KeyError):
    """A device id no spec sheet lists, or a device lacking the numbers a feature needs."""

    def __str__(self) -> str:  # KeyError would repr() the message, quoting it
        return str(self.args[0])


def device_ids(X: pd.DataFrame) -> pd.Series:
    """Canonical ``device_id`` per row: the record's own, else resolved from ``device_name`` (NA if unknown).

    A ``device_id`` that is given but unknown is an error (a typo must not silently lose the spec sheet).
    """
    given = X["device_id"].astype("string") if "device_id" in X.columns else pd.Series(pd.NA, index=X.index,
                                                                                        dtype="string")
    known = set(spec_table().index)
    bad = sorted(set(given.dropna().unique()) - known)
    if bad:
        get_spec(bad[0])  # raises KeyError naming the closest known ids
    if "device_name" in X.columns and given.isna().any():
        names = X.loc[given.isna(), "device_name"].astype("string")
        resolved = {n: resolve_device_id(n) for n in names.dropna().unique()}
        given = given.fillna(names.map(resolved).astype("string"))
    return given


def hardware_frame(X: pd.DataFrame) -> pd.DataFrame:
    """Every spec field and record hardware column for each row of ``X`` (index kept).

    Spec-sheet values by device id win; the record's own value fills a field the sheet leaves blank. CPU
    rows additionally get roofline ceilings (probed when recorded, else estimated; see
    :func:`cpu_peaks`) wherever the peak or bandwidth is still unknown.
    """
    table = spec_table()
    ids = device_ids(X)
    spec = table.reindex(ids.to_numpy())
    spec.index = X.index
    own_cols = [c for c in dict.fromkeys([*table.columns, *RECORD_HARDWARE]) if c in X.columns]
    own = X[own_cols]
    hw = pd.DataFrame(index=X.index)
    for c in dict.fromkeys([*table.columns, *own_cols]):
        if c in spec.columns and c in own.columns:
            is_num = pd.api.types.is_numeric_dtype(spec[c])
            hw[c] = _like(spec[c], is_num).fillna(_like(own[c], is_num))
        else:
            hw[c] = spec[c] if c in spec.columns else own[c]
    hw["device_id"] = ids
    if "device_kind" in hw.columns:
        cpu = (hw["device_kind"] == "cpu").fillna(False).to_numpy(dtype=bool)
        if cpu.any():
            peaks = cpu_peaks(hw.loc[cpu])
            for col, src in (("peak_tflops_fp64", "peak_gflops_fp64"), ("peak_tflops_fp32", "peak_gflops_fp32")):
                hw.loc[cpu, col] = hw.loc[cpu, col].astype("float64").fillna(peaks[src] / 1e3)
            hw.loc[cpu, "mem_bw_gbs"] = hw.loc[cpu, "mem_bw_gbs"].astype("float64").fillna(peaks["mem_bw_gbs"])
    return hw


class RowHardware:
    """Each row's hardware fields as NumPy arrays: what the GPU-kernel features read, without a per-call frame.

    Why: resolving a spec-sheet row per record through :func:`hardware_frame` costs a pandas operation per
    field, which is most of the time of a one-row prediction. When the records carry no hardware columns of
    their own (a user's config, a served request) every field is the sheet's value, so rows are taken from
    per-catalog arrays built once (:func:`_sheet_arrays`); otherwise the merged :func:`hardware_frame` is read.
    Both give the values :func:`numeric` / ``astype("string")`` give on the merged frame.
    """

    def __init__(self, X: pd.DataFrame | Records):
        R = Records.of(X)
        numbers, texts, position = _sheet_arrays(R.catalog if R.catalog is not None else catalog())
        self._frame: pd.DataFrame | None = None
        self.columns, own = _field_names(numbers)
        if not own.isdisjoint(R):  # the records describe hardware of their own
            self._frame = hardware_frame(R.frame())
            self.ids = self._frame["device_id"].to_numpy(dtype=object, na_value=None)
            self.columns = frozenset(self._frame.columns)
            return
        self._numbers, self._texts = numbers, texts
        given = R.text("device_id")
        if len(given) == 1 and given[0] in position:  # a request for a device of the sheets: its row directly
            self._rows, self.ids = _one_row(position[given[0]]), given
            return
        codes, uniques = factorize(given)
        bad = sorted({str(u) for u in uniques if str(u) not in position})
        if bad:
            get_spec(bad[0])  # raises KeyError naming the closest known ids
        # -1 (no device, or an alias the sheet is not indexed by): the all-unknown last row, as a reindex gives
        where = np.asarray([position.get(str(u), -1) for u in uniques] + [-1], dtype=np.int64)
        self._rows = where[codes]
        self.ids = np.asarray([str(u) for u in uniques] + [None], dtype=object)[codes]

    def __contains__(self, column: str) -> bool:
        return column in self.columns

    def sheet_row(self) -> tuple[dict[str, np.ndarray], int] | None:
        """(the sheet's arrays, the row's position in them) of a single row read from the spec sheets, else None:
        what a single request's device-level terms can be remembered by."""
        if self._frame is not None or len(self.ids) != 1:
            return None
        return self._numbers, int(self._rows[0])

    def number(self, column: str) -> np.ndarray:
        """The field as float64 (NaN where unknown or absent), as :func:`numeric` reads it."""
        if column not in self.columns:
            return np.full(len(self.ids), np.nan)
        if self._frame is not None:
            return numeric(self._frame, column).to_numpy()
        return self._numbers[column][self._rows]

    def text(self, column: str) -> np.ndarray:
        """The field as text (None where unknown or absent)."""
        if column not in self.columns:
            return np.full(len(self.ids), None, dtype=object)
        if self._frame is not None:
            return self._frame[column].astype("string").to_numpy(dtype=object, na_value=None)
        return self._texts[column][self._rows]


def _field_names(numbers: dict[str, np.ndarray]) -> tuple[frozenset[str], frozenset[str]]:
    """The spec fields of :func:`_sheet_arrays`' ``numbers`` as a set, and the record columns that mean the
    records describe their own hardware (those fields, :data:`RECORD_HARDWARE`, ``device_name``): made once per
    sheet."""
    hit = _FIELDS.get(id(numbers))
    if hit is None or hit[0] is not numbers:
        if len(_FIELDS) >= 8:  # as many sheets as _sheet_arrays keeps
            _FIELDS.clear()
        fields = frozenset(numbers)
        hit = _FIELDS[id(numbers)] = (numbers, (fields, fields | frozenset(RECORD_HARDWARE) | {"device_name"}))
    return hit[1]


#: id of a sheet's ``numbers`` -> (them, (their field names, the columns of a record's own hardware))
_FIELDS: dict[int, tuple[dict[str, np.ndarray], tuple[frozenset[str], frozenset[str]]]] = {}


@lru_cache(maxsize=1024)
def _one_row(position: int) -> np.ndarray:
    """A single row's sheet position as the (1,) index array :meth:`RowHardware.number` reads with (read-only)."""
    out = np.asarray([position], dtype=np.int64)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=8)
def _sheet_arrays(cat: Catalog) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """Per spec field, every device's value as float64 and as text, plus one all-unknown row at the end;
    and each device id's row. ``cat`` (the current ``catalog()``, cached per file mtime) is the cache key:
    a changed spec file gives a new catalog and new arrays.

    Read from the catalog's entries with NumPy alone, so that a request imports no pandas (:mod:`perfcast.lazy`):
    the values :func:`hardware_frame` gives a record naming only its device, typed as
    :func:`~perfcast.records.hardware_specs.spec_table` types them (the CPU ceilings it adds need a record's own
    columns, which such a record lacks). Tests compare the two field by field."""
    ids = sorted(cat.specs)
    numbers: dict[str, np.ndarray] = {}
    texts: dict[str, np.ndarray] = {}
    for field, (kind, _doc) in SPEC_FIELDS.items():
        values = [cat.specs[d].get(field) for d in ids]
        if kind != "str":
            values = [None if v is None else int(v) if kind == "int" else float(v) for v in values]
        texts[field] = np.asarray([None if v is None else str(v) for v in values] + [None], dtype=object)
        numbers[field] = np.asarray([_number(v) for v in values] + [np.nan], dtype="float64")
    return numbers, texts, {d: i for i, d in enumerate(ids)}


def _number(value: Any) -> float:
    """A sheet value as a number, NaN when it is none or text that is not a plain decimal number (as
    ``pandas.to_numeric(errors="coerce")`` reads the sheet's text fields: compute_capability "9.0" is 9.0)."""
    if value is None:
        return np.nan
    if isinstance(value, str):
        number = decimal(value)
        return np.nan if number is None else number
    return float(value)


def _like(s: pd.Series, is_num: bool) -> pd.Series:
    """``s`` as float64 (numbers) or nullable string, so a sheet value and a record value can be merged."""
    return pd.to_numeric(s, errors="coerce").astype("float64") if is_num else s.astype("string")


def numeric(hw: pd.DataFrame, column: str) -> pd.Series:
    """``hw[column]`` as float64 (NaN where unknown or absent)."""
    if column not in hw.columns:
        return pd.Series(np.nan, index=hw.index, dtype="float64")
    return pd.to_numeric(hw[column], errors="coerce").astype("float64")


def require_known(hw: RowHardware, X: Records, missing: np.ndarray, what: str, where: str) -> None:
    """Raise :class:`UnknownDeviceError` naming the devices of rows where ``missing`` is true.

    ``what`` says which numbers were needed ("mem_bw_gbs", "peak_tflops for dtype bf16").
    """
    mask = np.asarray(missing, dtype=bool)
    if not flagged(mask):
        return
    label = pd.Series(hw.ids, index=X.index, dtype="string")
    if "device_name" in X:
        label = label.fillna(pd.Series(X.text("device_name"), index=X.index, dtype="string"))
    devices = sorted(label[mask].fillna("<no device_id or device_name>").unique())
    raise UnknownDeviceError(
        f"{where}: {int(mask.sum())} row(s) lack {what}: device(s) {devices[:10]} have no such value in the "
        f"hardware spec sheets (perfcast.records.hardware_specs) nor in the records' own columns. Add the "
        f"device to a spec file named by $PERFCAST_HW_SPECS, or give the column in the records."
    )


#: FP64 FLOPs per cycle per core by widest vector ISA (two FMA pipes): how CPU spec pages derive peaks
_CPU_FP64_FLOPS_PER_CYCLE: tuple[tuple[str, float], ...] = (("avx512f", 32.0), ("avx2", 16.0), ("avx", 8.0))
_CPU_DEFAULT_FLOPS_PER_CYCLE = 4.0  # SSE2: 2-wide FMA-less add + mul


def cpu_peaks(hw: pd.DataFrame) -> pd.DataFrame:
    """CPU roofline ceilings: ``peak_gflops_fp64``, ``peak_gflops_fp32`` and ``mem_bw_gbs`` per row.

    A probed record carries measured peaks (``peak_tflops_fp64``/``fp32``, ``mem_bw_gbs``); those win.
    Otherwise compute = cores x base clock x FLOPs/cycle of the widest ISA in ``isa_flags`` (32 for
    AVX-512, 16 for AVX2, 8 for AVX, else 4; FP32 twice that), and bandwidth = DIMMs x MT/s x 8 bytes
    (one DIMM per channel assumed: the published descriptions give DIMMs, not channels).
    """
    def col(name: str) -> pd.Series:
        if name in hw.columns:
            return pd.to_numeric(hw[name], errors="coerce").astype("float64")
        return pd.Series(np.nan, index=hw.index, dtype="float64")

    flags = hw["isa_flags"].astype("string").str.lower() if "isa_flags" in hw.columns else None
    per_cycle = pd.Series(_CPU_DEFAULT_FLOPS_PER_CYCLE, index=hw.index, dtype="float64")
    if flags is not None:
        for flag, rate in reversed(_CPU_FP64_FLOPS_PER_CYCLE):
            has = flags.str.contains(rf"\b{flag}\b", regex=True).fillna(False).astype(bool)
            per_cycle = per_cycle.mask(has, rate)
        per_cycle = per_cycle.where(flags.notna())
    est64 = col("cores") * col("clock_mhz") * per_cycle / 1e3
    est_bw = col("mem_dimms") * col("mem_mts") * 8 / 1e3
    return pd.DataFrame({
        "peak_gflops_fp64": (col("peak_tflops_fp64") * 1e3).fillna(est64),
        "peak_gflops_fp32": (col("peak_tflops_fp32") * 1e3).fillna(2 * est64),
        "mem_bw_gbs": col("mem_bw_gbs").fillna(est_bw),
    }, index=hw.index)
