"""Out-of-distribution flags: is a record like the ones the model was trained on, and if not, why?

Why: a tree model extrapolates flat and even the hybrid's learned efficiency was only ever fitted inside
the training ranges, so a prediction for m = 65536 when training stopped at 16384, an FP4 GEMM when training
saw none, or a GPU with twice the bandwidth of any trained one deserves a warning the caller can act on.
The checks are deliberately simple and explainable (ranges and seen values), so every flag comes with a
sentence a user understands.

A device the model never saw is *not* out of distribution by itself: predicting hardware known only from
its spec sheet is the point of the project, and the interval calibration (grouped by device) already
prices it in. It is flagged when its spec numbers leave the box spanned by the training devices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.records.hardware_specs import resolve_device_id
from perfcast.records.schema import columns
from perfcast.features.base import column_positions, text_map
from perfcast.features.distinct import flagged
from perfcast.features.records import Records
from perfcast.features.roofline import STAND_INS, canonical_dtypes

#: config columns that are choices, not sizes: a value never seen in training is out of distribution
CATEGORICAL: tuple[str, ...] = ("dtype", "kv_dtype", "op", "phase", "layout", "benchmark", "subtest", "variant")
#: the columns whose unseen values are predicted as a seen stand-in (:data:`~perfcast.features.roofline.STAND_INS`)
DTYPE_COLUMNS: tuple[str, ...] = ("dtype", "kv_dtype")
#: numeric config columns that are not sizes (no range to leave)
NOT_SIZES: frozenset[str] = frozenset({"alpha", "beta"})
#: feature columns describing the device, per task (a device outside their training box is flagged)
HARDWARE: dict[str, tuple[str, ...]] = {
    "gemm": ("sm_count", "clock_mhz", "max_clock_mhz", "mem_bw_gbs", "mem_gb", "l2_mb", "peak_tflops",
             "peak_tflops_fp32", "tdp_w", "compute_capability"),
    "cpu_bench": ("sockets", "cores", "threads", "clock_mhz", "max_clock_mhz", "l3_mb", "mem_gb", "mem_mts",
                  "mem_channel_bw_gbs"),
}
HARDWARE["attention"] = HARDWARE["gemm"]
#: relative slack of the hardware and work boxes: a number given in float32 (a YAML sheet, a float32 frame)
#: differs from the float64 training value by up to 6e-8 of it (1e-7 of the work, from its log10), and must
#: not leave the box it spans
HULL_RTOL = 1e-6
#: feature columns of the total work, in log10 (flagged as their linear quantity)
WORK: tuple[str, ...] = ("log10_flops", "log10_bytes")


def _labels(text: np.ndarray, column: str) -> np.ndarray:
    """Comparable category labels of an object array of text (None where missing): canonical dtype names,
    lower-case stripped text otherwise; computed once per distinct value."""
    if column in ("dtype", "kv_dtype"):
        return canonical_dtypes(text, column)
    return text_map(text, lambda v: v.strip().lower())


def _appender(reasons: np.ndarray) -> Callable[[np.ndarray, Callable[[np.ndarray], Any]], None]:
    """``add(mask, message)``: append ``message(mask)`` (one text, or one per masked row) to the masked rows of
    ``reasons`` ('; '-joined); ``message`` is called only when some row is masked."""
    def add(mask: np.ndarray, message: Callable[[np.ndarray], Any]) -> None:
        if not flagged(mask):
            return
        msg, cur = message(mask), reasons[mask]
        reasons[mask] = np.where(cur == "", msg, cur + "; " + msg)

    return add


def _fmt(values: np.ndarray) -> np.ndarray:
    return np.char.mod("%g", values.astype("float64")).astype(object)


def device_ids(records: pd.DataFrame) -> list[str]:
    """The devices ``records`` measured: their ``device_id``, else the id their ``device_name`` resolves to (a probed
    machine's records carry only its name, which the spec sheet measured from its probes lists as an alias)."""
    ids = set(records["device_id"].dropna().astype(str)) if "device_id" in records.columns else set()
    if "device_name" in records.columns:
        named = records["device_name"] if "device_id" not in records.columns else \
            records["device_name"][records["device_id"].isna()]
        ids |= {i for i in map(resolve_device_id, named.dropna().astype(str).unique()) if i is not None}
    return sorted(ids)


class DomainGuard:
    """Training ranges and seen values of one task's records; :meth:`check` says which records leave them.

    ``fit(records, features)`` takes the training records and their feature frame (the pipeline's
    ``features`` step output, which resolves every device's spec sheet); ``check`` takes the same pair for
    new records. State is plain JSON (:meth:`to_json` / :meth:`from_json`).
    """

    def __init__(self, task: str):
        self.task = task
        self.sizes: dict[str, tuple[float, float]] = {}
        self.categories: dict[str, list[str]] = {}
        self.hardware: dict[str, tuple[float, float]] = {}
        #: hardware columns every training row had a value for (a device lacking one is flagged)
        self.complete: list[str] = []
        self.devices: list[str] = []
        #: the training-only guard's state when this one was widened by an adaptation's rows (:meth:`extended`)
        self.base: dict[str, Any] | None = None
        #: (feature column names, hardware columns among them, their positions, the spec columns as (position, name)):
        #: found once per layout (a bundle's transformer returns the same one every call)
        self._positions: tuple[tuple[str, ...], list[str], np.ndarray, list[tuple[int, str]]] | None = None

    # ------------------------------------------------------------------------------------------ fit
    def fit(self, records: pd.DataFrame, features: pd.DataFrame) -> DomainGuard:
        for memo in ("_spec_memo", "_unseen_memo", "_one_positions"):  # remembered for the previous fit's ranges
            self.__dict__.pop(memo, None)
        self._positions = None
        schema = columns(self.task)
        numeric = [c for c, col in schema.items()
                   if col.group == "config" and col.kind in ("int", "float") and c not in NOT_SIZES]
        self.sizes = {}
        for c in (c for c in numeric if c in records.columns):
            v = pd.to_numeric(records[c], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
            if np.isfinite(v).any():
                self.sizes[c] = (float(np.nanmin(v)), float(np.nanmax(v)))
        R = Records.of(records)
        self.categories = {c: sorted({v for v in _labels(R.text(c), c) if v is not None})
                           for c in CATEGORICAL if c in R and not R.missing(c).all()}
        self.hardware = {}
        for c in (c for c in (*HARDWARE[self.task], *WORK) if c in features.columns):
            v = features[c].to_numpy(dtype="float64", na_value=np.nan)
            if np.isfinite(v).any():
                self.hardware[c] = (float(np.nanmin(v)), float(np.nanmax(v)))
        self.complete = [c for c in self.hardware if c not in WORK and features[c].notna().all()]
        self.devices = device_ids(records)
        return self

    def extended(self, records: pd.DataFrame, features: pd.DataFrame) -> DomainGuard:
        """A guard for the model adapted on ``records`` (one device's measured rows, ``features`` their feature
        frame): their device becomes a known one and their sizes, labels and work join the ranges, since the
        adapted model was fitted on them. The spec box other devices are judged by stays the training devices'.
        Widening an adapted model's guard starts from its training-only guard, as re-adapting starts from the base."""
        out = DomainGuard.from_json(self.base or self.to_json())
        out.base = out.to_json()
        more = DomainGuard(self.task).fit(records, features)
        for ranges, added in ((out.sizes, more.sizes),
                              (out.hardware, {c: v for c, v in more.hardware.items() if c in WORK})):
            for c, (lo, hi) in added.items():
                old = ranges.get(c, (lo, hi))
                ranges[c] = (min(old[0], lo), max(old[1], hi))
        for c, seen in more.categories.items():
            out.categories[c] = sorted({*out.categories.get(c, []), *seen})
        out.devices = sorted({*out.devices, *more.devices})
        return out

    # ---------------------------------------------------------------------------------------- check
    def check(self, records: pd.DataFrame | Records, features: pd.DataFrame | np.ndarray,
              names: tuple[str, ...] | None = None) -> tuple[np.ndarray, list[str]]:
        """(in_distribution per row, reason per row: '' when in distribution, else '; '-joined sentences);
        ``features`` is the records' feature frame, or their feature rows whose columns are ``names``."""
        records = Records.of(records)
        n = len(records)
        if n == 1 and names is not None and self._clear_one(records, features, names):
            return np.array([True]), [""]
        reasons = np.full(n, "", dtype=object)
        add = _appender(reasons)
        given = set(records.columns)
        sizes = [(c, lo, hi) for c, (lo, hi) in self.sizes.items() if c in given]
        if sizes:  # every size against its range at once; messages only for the columns that leave it
            V = np.column_stack([records.number(c) for c, _, _ in sizes])
            above, below = V > [hi for _, _, hi in sizes], V < [lo for _, lo, _ in sizes]
            for j in np.flatnonzero(above.any(axis=0) | below.any(axis=0)):
                c, lo, hi = sizes[j]
                v = V[:, j]
                add(above[:, j], lambda m, c=c, v=v, hi=hi: f"{c}=" + _fmt(v[m]) + f" above training max {hi:g}")
                add(below[:, j], lambda m, c=c, v=v, lo=lo: f"{c}=" + _fmt(v[m]) + f" below training min {lo:g}")
        for c, seen in self.categories.items():
            if c not in given:
                continue
            text = records.text(c)
            unseen = self._unseen(c, text)
            add(unseen == True, lambda m, c=c, seen=seen, text=text:  # noqa: E712 - None (missing) is not unseen
                f"{c} '" + text[m] + f"' never seen in training (seen: {', '.join(seen)})")
            if c in DTYPE_COLUMNS and (unseen == True).any():  # noqa: E712
                stand = self._stand_ins(c, text, unseen)
                add(stand != None, lambda m, stand=stand: "predicted as " + stand[m]  # noqa: E711
                    + " (the same width, run at the same rate)")
        if names is None:
            names, A = tuple(features.columns), features.to_numpy(dtype="float64", na_value=np.nan)
        else:
            A = features
        cols, where, spec = self._layout(names)
        if spec:
            self._add_spec(records, A, spec, add)
        for j, c in ((j, c) for j, c in zip(where, cols, strict=True) if c in WORK):
            lo, hi = self.hardware[c]
            name, v, lo, hi = c.removeprefix("log10_"), 10.0 ** A[:, j], 10.0 ** lo, 10.0 ** hi
            add(v > hi * (1 + HULL_RTOL), lambda m, name=name, v=v, hi=hi: f"{name} " + _fmt(v[m])
                + f" above training max {hi:.3g}")
            add(v < lo * (1 - HULL_RTOL), lambda m, name=name, v=v, lo=lo: f"{name} " + _fmt(v[m])
                + f" below training min {lo:.3g}")
        return reasons == "", [str(r) for r in reasons]

    def _layout(self, names: tuple[str, ...]) -> tuple[list[str], np.ndarray, list[tuple[int, str]]]:
        """The hardware and work columns among the feature columns ``names``, their positions, and the spec
        columns' (position, name) pairs (found once per layout)."""
        if self._positions is None or (self._positions[0] is not names and self._positions[0] != names):
            cols = [c for c in self.hardware if c in names]  # the spec columns, then WORK (see fit)
            where = column_positions(names, tuple(cols))
            self._positions = (names, cols, where, [(j, c) for j, c in zip(where, cols, strict=True) if c not in WORK])
        return self._positions[1:]

    def _clear_one(self, records: Records, A: np.ndarray, names: tuple[str, ...]) -> bool:
        """Whether :meth:`check` finds no reason for a single row (feature row ``A``, columns ``names``): the same
        comparisons, made in Python floats and read from the per-value memos. False (something to report, or a
        device not yet looked at) sends the row through :meth:`check`'s general path, which words the reasons;
        a request that is in distribution, the usual one, skips ~40 NumPy calls on one-element arrays."""
        for c, (lo, hi) in self.sizes.items():
            if c in records:
                v = records.number(c)[0]
                if v > hi or v < lo:  # NaN compares false, as in check
                    return False
        for c in self.categories:
            if c in records and self._unseen(c, records.text(c))[0] == True:  # noqa: E712 - None: missing
                return False
        spec_at, work_at, work_box = self._one_layout(names)
        if spec_at is not None:
            key = (A[0, spec_at].tobytes(), records.text("device_id")[0],
                   records.text("device_name")[0] if "device_name" in records else None)  # (absent: None)
            if self.__dict__.get("_spec_memo", {}).get(key) != "":
                return False
        # the work in linear units by the ufunc check's general path applies, against the same bounds
        return all(lo <= v <= hi for v, (lo, hi) in zip((10.0 ** A[0, work_at]).tolist(), work_box, strict=True))

    def _one_layout(self, names: tuple[str, ...]) -> tuple[np.ndarray | None, np.ndarray, list[tuple[float, float]]]:
        """For :meth:`_clear_one`: the spec columns' positions (None without any), the work columns' positions
        and their (lowest, highest) value not flagged (found once per layout)."""
        memo = self.__dict__.get("_one_positions")
        if memo is None or memo[0] is not names:
            cols, where, spec = self._layout(names)
            work = [(j, c) for j, c in zip(where, cols, strict=True) if c in WORK]
            box = [(10.0 ** self.hardware[c][0] * (1 - HULL_RTOL), 10.0 ** self.hardware[c][1] * (1 + HULL_RTOL))
                   for _, c in work]
            memo = self._one_positions = (names, np.asarray([j for j, _ in spec], dtype=np.intp) if spec else None,
                                          np.asarray([j for j, _ in work], dtype=np.intp), box)
        return memo[1:]

    def _add_spec(self, records: Records, A: np.ndarray, spec: list[tuple[int, str]],
                  add: Callable[[np.ndarray, Callable[[np.ndarray], Any]], None]) -> None:
        """Add the reasons of devices whose spec leaves the training box. A single row's are a function of its
        device (its spec numbers, id and name) only, so they are remembered per device."""
        if len(A) != 1:
            found = self._spec_reasons(records, A, spec)
            add(found != "", lambda m: found[m])
            return
        memo = self.__dict__.setdefault("_spec_memo", {})
        key = (A[0, [j for j, _ in spec]].tobytes(), records.text("device_id")[0], records.text("device_name")[0])
        found = memo.get(key)
        if found is None:
            if len(memo) >= 4096:
                memo.clear()
            found = memo[key] = str(self._spec_reasons(records, A, spec)[0])
        if found:
            add(np.ones(1, dtype=bool), lambda m: found)

    def _spec_reasons(self, records: Records, A: np.ndarray, spec: list[tuple[int, str]]) -> np.ndarray:
        """Per row, the '; '-joined reasons its device's spec numbers (columns ``spec``: position, name) give."""
        reasons = np.full(len(A), "", dtype=object)
        add = _appender(reasons)
        # a training device is inside the box by definition: a per-dtype number of it (peak_tflops of a dtype never
        # trained on) outside the box is the dtype's doing, and the dtype check says so
        foreign = self._foreign(records.text("device_id"))
        for j, c in spec:
            lo, hi = self.hardware[c]
            v = A[:, j]
            where = lambda m, c=c, v=v: (  # noqa: E731 - device labels are made only for flagged rows
                "device " + self._device_labels(records)[m] + " spec outside the training hull: " + c + " " + _fmt(v[m]))
            add(foreign & (v > hi + HULL_RTOL * abs(hi)), lambda m, where=where, hi=hi: where(m) + f" > max {hi:g}")
            add(foreign & (v < lo - HULL_RTOL * abs(lo)), lambda m, where=where, lo=lo: where(m) + f" < min {lo:g}")
            if c in self.complete:
                add(foreign & np.isnan(v), lambda m, c=c: "device " + self._device_labels(records)[m]
                    + f" has no {c} (every training device had one)")
        return reasons

    def stand_in(self, records: pd.DataFrame | Records) -> Records:
        """``records`` with each dtype the model never saw replaced by its stand-in where the model saw that one
        (fp16 as bf16, :data:`~perfcast.features.roofline.STAND_INS`), for the features to predict; :meth:`check`
        still flags such a row and names its stand-in."""
        R = Records.of(records)
        for c in DTYPE_COLUMNS:
            if c in self.categories and c in R:
                text = R.text(c)
                unseen = self._unseen(c, text)
                if not (unseen[0] is True if len(unseen) == 1 else (unseen == True).any()):  # noqa: E712
                    continue  # every dtype seen (a request's one value tested without an array operation)
                stand = self._stand_ins(c, text, unseen)
                if (stand != None).any():  # noqa: E711 - an object array: None where the row keeps its dtype
                    R = R.with_column(c, np.where(stand != None, stand, text))  # noqa: E711
        return R

    def _stand_ins(self, column: str, text: np.ndarray, unseen: np.ndarray) -> np.ndarray:
        """Per row, the seen stand-in of an unseen dtype (None where the row is seen, missing or has none)."""
        seen = frozenset(self.categories[column])
        labels = _labels(text, column)
        return np.array([STAND_INS.get(v) if u is True and STAND_INS.get(v) in seen else None
                         for v, u in zip(labels, unseen, strict=True)], dtype=object)

    def _unseen(self, column: str, text: np.ndarray) -> np.ndarray:
        """Per row, whether its ``column`` label was never seen in training (None where missing); a request's one
        value is remembered per column and text."""
        if len(text) == 1 and isinstance(text[0], str):
            memo = self.__dict__.setdefault("_unseen_memo", {})
            hit = memo.get(key := (column, text[0]))
            if hit is None:
                if len(memo) >= 4096:
                    memo.clear()
                hit = memo[key] = self._unseen_labels(column, text)
            return hit
        return self._unseen_labels(column, text)

    def _unseen_labels(self, column: str, text: np.ndarray) -> np.ndarray:
        seen = frozenset(self.categories[column])
        return text_map(_labels(text, column), lambda v: v not in seen)

    def _foreign(self, ids: np.ndarray) -> np.ndarray:
        """Where ``ids`` are not training devices (a request's one id tested by a set lookup, not ``np.isin``)."""
        if len(ids) == 1:
            return np.asarray([ids[0] not in frozenset(self.devices)])
        return ~np.isin(ids, self.devices)

    @staticmethod
    def _device_labels(records: Records) -> np.ndarray:
        """Each row's device as quoted text: its id, else its name, else ``<unnamed>``."""
        label = np.full(len(records), "<unnamed>", dtype=object)
        for c in ("device_name", "device_id"):
            text = records.text(c)
            label = np.where(pd.isna(text), label, text)
        return "'" + label + "'"

    # ------------------------------------------------------------------------------------ save/load
    def to_json(self) -> dict[str, Any]:
        doc = {"task": self.task, "sizes": self.sizes, "categories": self.categories,
               "hardware": self.hardware, "complete": self.complete, "devices": self.devices}
        return doc if self.base is None else {**doc, "base": self.base}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DomainGuard:
        guard = cls(str(doc["task"]))
        guard.sizes = {c: (float(a), float(b)) for c, (a, b) in doc["sizes"].items()}
        guard.categories = {c: list(v) for c, v in doc["categories"].items()}
        guard.hardware = {c: (float(a), float(b)) for c, (a, b) in doc["hardware"].items()}
        guard.complete = list(doc["complete"])
        guard.devices = list(doc["devices"])
        guard.base = dict(doc["base"]) if doc.get("base") is not None else None
        return guard
