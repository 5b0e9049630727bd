"""Sibling transfer: a base model's prediction corrected by what it got wrong on the most similar devices.

Why: GPUs of one family (B200 / GB200 / B300 / GB300, H100 / H200) run the same kernels, so where a base
model misjudges a configuration on one sibling (a kernel the library handles badly, a tile that fits
poorly) it misjudges it on the others too. Copying a sibling's measured latency captures that but ignores
the spec differences the base model knows about (bandwidth, FP4 rate, power); a base model alone knows the
specs but not the kernel's quirks. Here the prediction for a device is the base prediction times the
similarity-weighted geometric mean of the base's measured error (measured / predicted) for the same
configuration on the training devices, with weights that vanish for devices unlike it. A device with no
close sibling, or a configuration no sibling measured, gets the base prediction unchanged.

Devices and configurations are recognised from the feature frame: a configuration is the values of the
task's shape and dtype feature columns, a device the values of its hardware columns (so two devices with
identical spec sheets are one device to this model, which is also all it could tell apart).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import column_positions
from perfcast.features.estimator_base import Regressor, check_fitted, clone
from perfcast.models.estimators.hybrid import kernel_kinds, kind_columns, kind_name
from perfcast.models.estimators.rows import predict_rows

#: the device descriptors compared (log-scaled except compute capability) and their weights in the distance
DISTANCE_WEIGHTS: dict[str, float] = {"mem_bw_gbs": 1.0, "peak_tflops": 1.0, "tdp_w": 0.5, "compute_capability": 2.0}
#: distance contribution of a descriptor known on one side only (no TDP on the sheet; no compute capability:
#: another vendor); two devices that both lack a compute capability are not told apart by it
UNKNOWN_PENALTY = 3.0


def row_keys(X: pd.DataFrame, columns: list[str], at: np.ndarray | None = None) -> np.ndarray:
    """One 64-bit hash per row of ``X[columns]`` (NaN-safe), naming a configuration or a device: pandas'
    ``hash_pandas_object(X[columns], index=False)``, with every column hashed in one call on the float64
    matrix instead of through a sub-frame (a one-row request paid more for the frame than for the hash).
    ``at``: the columns' positions in ``X``, when known."""
    return hash_rows(X.to_numpy(dtype="float64")[:, X.columns.get_indexer(columns) if at is None else at])


def hash_rows(values: np.ndarray) -> np.ndarray:
    """:func:`row_keys` of a (rows, columns) float64 matrix."""
    rows, cols = values.shape
    if rows == 1 and cols:
        row = np.ascontiguousarray(values[0], dtype="float64")
        kernels = sys.modules.get(KERNELS)  # loaded once the process walks its forests with them
        if kernels is not None:
            return np.asarray([kernels.row_hash(row.view(np.uint64))], dtype=np.uint64)
        bits = row.view(np.uint64).tolist()
        hashes = [_HASHED.get(u) for u in bits]  # a request's values are mostly known ones
        if None in hashes:
            hashes = [_hash_new(x, u) if h is None else h for x, u, h in zip(row.tolist(), bits, hashes, strict=True)]
        return np.asarray([combine_one(hashes)], dtype=np.uint64)
    from pandas.core.util.hashing import combine_hash_arrays  # pandas only for many rows (perfcast.lazy)

    hashed = pd.util.hash_array(np.ascontiguousarray(values.T).ravel()).reshape(cols, rows)
    return combine_hash_arrays(iter(hashed), cols, rows)


_MASK = (1 << 64) - 1
_NAN_BITS = int(np.array(np.nan).view(np.uint64))
_NEGATIVE_ZERO_BITS = 1 << 63


def hash_one(x: float, bits: int) -> int:
    """pandas' ``hash_array`` of one float64 ``x`` whose bit pattern is ``bits``, in Python integers (NaN and
    -0.0 canonicalised as pandas does; its mixing steps modulo 2**64): a request hashes a handful of values,
    where NumPy's fixed cost per call is most of the time. A test compares the two."""
    v = _NAN_BITS if x != x else 0 if bits == _NEGATIVE_ZERO_BITS else bits
    v ^= v >> 30
    v = (v * 0xBF58476D1CE4E5B9) & _MASK
    v ^= v >> 27
    v = (v * 0x94D049BB133111EB) & _MASK
    return v ^ (v >> 31)


#: float64 bit pattern -> :func:`hash_one` of it: a configuration's columns are mostly a few recurring values
#: (flags, byte counts, powers of two), so a request's key is mostly dictionary reads
_HASHED: dict[int, int] = {}


def _hash_new(x: float, bits: int) -> int:
    """:func:`hash_one`, remembered in :data:`_HASHED` (bounded)."""
    if len(_HASHED) >= 65536:
        _HASHED.clear()
    h = _HASHED[bits] = hash_one(x, bits)
    return h


def combine_one(hashes: list[int]) -> int:
    """pandas' ``combine_hash_arrays`` of one row's column hashes, in Python integers: pandas steps through the
    columns with NumPy scalars, whose overflow checks cost a request ~80 µs; the arithmetic (CPython's tuple
    hash, modulo 2**64) is the same, and a test compares the two."""
    out = 0x345678
    for h, mult in zip(hashes, _multipliers(len(hashes)), strict=True):
        out = ((out ^ h) * mult) & _MASK
    return (out + 97531) & _MASK


@lru_cache(maxsize=16)
def _multipliers(n: int) -> tuple[int, ...]:
    """The multiplier :func:`combine_one` applies to each of ``n`` column hashes (a function of ``n`` only)."""
    out, mult = [], 1000003
    for i in range(n):
        out.append(mult)
        mult += 82520 + 2 * (n - i)
    return tuple(out)


#: the module of the Numba kernels (imported by the forests' walker once a process has walked enough rows)
KERNELS = "perfcast.models.persistence.kernels"
#: requests of at most this many rows look their residuals up device by device (see SiblingTransfer._residuals_at)
FEW_KEYS = 16


def _correction_one(weights: list[float], residuals: list[float]) -> float:
    """:meth:`SiblingTransfer.correction_rows` of one configuration from its ``residuals`` on the training devices
    (NaN where not measured) and the row's device ``weights``, in Python floats: the same products,
    left-to-right sums and quotient in IEEE double arithmetic as the array path, so the same bits, without ~20
    NumPy calls per request."""
    num = den = None
    for r, w in zip(residuals, weights, strict=True):
        wr, ww = (w * r, w) if math.isfinite(r) else (0.0, 0.0)
        num, den = (wr, ww) if num is None else (num + wr, den + ww)
    if num is None:  # no training device (a device without measurements adds 0.0 to both sums)
        return 0.0
    return (num / max(den, 1e-300) if den > 0 else 0.0) * min(den, 1.0)


class SiblingTransfer(Regressor):
    """``estimator``'s prediction times the similarity-weighted residual of sibling devices on the same config.

    ``config_columns`` / ``device_columns`` name the feature columns that identify a configuration and a
    device. ``scale`` is the distance at which a device's weight falls to 1/e; the distance is the
    weighted L1 distance of log bandwidth, log peak rate of the row's dtype, log TDP and compute capability
    (:data:`DISTANCE_WEIGHTS`). ``max_rows``: fit the base estimator on at most this many rows (drawn
    evenly per device with ``random_state``) while every training row still enters the residual table,
    which keeps fitting fast on big tables without losing any measured sibling. ``target`` is passed on
    to an estimator that takes one (the hybrid's baseline depends on it).
    """

    #: the fitted base model, saved in the sub-folder "base" (see perfcast.models.persistence.state)
    state_children: ClassVar[dict[str, str]] = {"estimator_": "base"}

    def __init__(self, estimator: Any, config_columns: list[str], device_columns: list[str],
                 scale: float = 0.8, max_rows: int | None = None, random_state: int = 0,
                 target: str = "runtime_ms"):
        self.estimator = estimator
        self.target = target
        self.config_columns = config_columns
        self.device_columns = device_columns
        self.scale = scale
        self.max_rows = max_rows
        self.random_state = random_state

    def _check_columns(self, names: Sequence[str]) -> None:
        need = [*self.config_columns, *self.device_columns, *DISTANCE_WEIGHTS]
        absent = sorted(set(need) - set(names))
        if absent:
            raise ValueError(f"sibling transfer: the features lack column(s) {absent}; it needs a GPU-kernel "
                             f"feature frame (gemm or attention)")

    def _descriptors(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """(rows, 4) log bandwidth, log peak, log TDP, compute capability of feature rows ``A`` (columns ``names``)."""
        d = A[:, column_positions(names, tuple(DISTANCE_WEIGHTS))]
        d[:, :3] = np.log(d[:, :3])
        return d

    def _sample(self, devices: np.ndarray) -> np.ndarray:
        """Row positions for the base fit: all, or ``max_rows`` spread evenly over the devices."""
        n = len(devices)
        if self.max_rows is None or n <= self.max_rows:
            return np.arange(n)
        if self.max_rows < 1:
            raise ValueError(f"sibling transfer: max_rows must be a positive row count, got {self.max_rows}")
        order = np.random.default_rng(self.random_state).permutation(n)
        per_device = pd.Series(devices[order]).groupby(devices[order]).cumcount().to_numpy()
        quota = max(1, self.max_rows // len(np.unique(devices)))
        return np.sort(order[per_device < quota])

    def fit(self, X: pd.DataFrame, y: Any) -> SiblingTransfer:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"sibling transfer reads named feature columns; got {type(X).__name__}")
        self._check_columns(X.columns)
        y = np.asarray(y, dtype="float64").ravel()
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if not (y > 0).all():
            raise ValueError("sibling transfer learns log residuals: every target must be > 0")
        for memo in ("_weight_memo", "_kind_names", "_checked", "_state"):
            self.__dict__.pop(memo, None)
        devices = row_keys(X, self.device_columns)
        rows = self._sample(devices)
        base = clone(self.estimator)
        if "target" in base.get_params(deep=False):
            base.set_params(target=self.target)
        self.estimator_ = base.fit(X.iloc[rows], y[rows])
        residual = np.log(y) - np.log(self.estimator_.predict(X))
        table = pd.DataFrame({"device": devices, "config": row_keys(X, self.config_columns), "r": residual})
        table = table.groupby(["device", "config"], sort=False)["r"].mean()
        self.devices_ = list(pd.unique(devices))
        self.residuals_ = {d: table.xs(d, level="device") for d in self.devices_}
        # a device's descriptor differs per dtype only in its peak: keep one per (device, kernel kind)
        desc = pd.DataFrame(self._descriptors(X.to_numpy(dtype="float64"), tuple(X.columns)),
                            columns=list(DISTANCE_WEIGHTS))
        desc["device"], desc["kind"] = devices, kernel_kinds(X).to_numpy()
        self.descriptors_ = desc.drop_duplicates(["device", "kind"]).set_index(["device", "kind"])
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def distances(self, X: pd.DataFrame) -> np.ndarray:
        """(rows, devices) distance of each row's device to each training device running the row's dtype."""
        return self.distance_rows(X.to_numpy(dtype="float64"), tuple(X.columns))

    def distance_rows(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`distances` of feature rows ``A`` whose columns are ``names``. The training devices' descriptors
        are looked up once per distinct kernel kind of the rows (a handful), not per row: a request then costs
        array arithmetic instead of a pandas reindex per device."""
        own = self._descriptors(A, names)
        uniq, inverse = self._kinds(A, names)
        return self._distances(own, uniq, inverse)

    def _distances(self, own: np.ndarray, uniq: np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """(rows, devices) distances from the rows' descriptors ``own`` and kernel kinds (``uniq[inverse]``)."""
        table = self._descriptor_table()
        empty = np.full(len(DISTANCE_WEIGHTS), np.nan)
        other = np.asarray([[table.get((int(dev), str(kind)), empty) for dev in self.devices_] for kind in uniq])
        other = other.reshape(len(uniq), len(self.devices_), len(DISTANCE_WEIGHTS))[inverse.ravel()]
        weights = np.asarray(list(DISTANCE_WEIGHTS.values()))
        diff = np.abs(own[:, None, :] - other).reshape(-1, len(weights))  # (rows x devices, descriptors)
        both_without = (np.isnan(own[:, None, 3]) & np.isnan(other[:, :, 3])).ravel()
        diff[:, 3] = np.where(both_without, 0.0, np.nan_to_num(diff[:, 3], nan=UNKNOWN_PENALTY))
        known = np.isfinite(other[:, :, :2]).all(axis=2)
        dist = np.nan_to_num(diff[:, :3], nan=UNKNOWN_PENALTY) @ weights[:3] + weights[3] * diff[:, 3]
        # a device that never ran this dtype is no sibling for it
        return np.where(known, dist.reshape(known.shape), np.inf)

    def _kinds(self, A: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The distinct kernel kinds of the rows (:func:`kernel_kinds`) and each row's position among them; a
        kind-column bit pattern is named once and remembered."""
        kinds = kind_columns(names)
        flags = A[:, column_positions(names, kinds)] > 0.5  # kernel_kinds' fillna(0) > 0.5: NaN compares false
        codes = flags.astype(np.int64) @ (np.int64(1) << np.arange(len(kinds), dtype=np.int64))
        known = self.__dict__.setdefault("_kind_names", {})
        if len(codes) == 1:  # a request: no sort
            uniq, inverse = codes, np.zeros(1, dtype=np.intp)
        else:
            uniq, inverse = np.unique(codes, return_inverse=True)
        for code in (int(c) for c in uniq if (kinds, int(c)) not in known):
            known[kinds, code] = kind_name(kinds, code)
        return np.asarray([known[kinds, int(c)] for c in uniq]), inverse.ravel()

    def _descriptor_table(self) -> dict[tuple[int, str], np.ndarray]:
        """(device, kind) -> descriptor row of :attr:`descriptors_` (of the saved arrays while a loaded model has not
        built it), made once per table."""
        current = self.__dict__.get("descriptors_")
        memo = self.__dict__.get("_table")
        if memo is None or memo[0] is not current:
            if current is None:
                state = self._state
                pairs = zip(state["descriptor_devices"].tolist(), state["descriptor_kinds"].tolist(), strict=True)
                values = state["descriptors"]
            else:
                pairs, values = current.index, current.to_numpy(dtype="float64")
            memo = self._table = (current, {(int(d), str(k)): values[i] for i, (d, k) in enumerate(pairs)})
        return memo[1]

    def _device_tables(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each training device's (configuration keys, residuals) of :attr:`residuals_` (of the saved arrays while a
        loaded model has not built it), made once per table."""
        current = self.__dict__.get("residuals_")
        memo = self.__dict__.get("_tables")
        if memo is None or memo[0] is not current:
            if current is None:
                state = self._state
                bounds = np.concatenate([[0], np.cumsum(state["sizes"])])
                tables = [(state["configs"][a:b], state["residuals"][a:b])
                          for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            else:
                tables = [(s.index.to_numpy(dtype=np.uint64), s.to_numpy(dtype="float64"))
                          for s in (current[d] for d in self.devices_)]
            memo = self._tables = (current, tables)
        return memo[1]

    def __getattr__(self, name: str) -> Any:
        """A loaded model's pandas tables (:attr:`residuals_`, :attr:`descriptors_`), built from the saved arrays
        when first read: a prediction reads the arrays alone (:mod:`perfcast.lazy`)."""
        state = self.__dict__.get("_state")
        if state is None or name not in ("residuals_", "descriptors_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        self.residuals_ = {d: pd.Series(residuals, index=pd.Index(keys))
                           for d, (keys, residuals) in zip(self.devices_, self._device_tables(), strict=True)}
        index = pd.MultiIndex.from_arrays([state["descriptor_devices"], state["descriptor_kinds"].astype(object)],
                                          names=["device", "kind"])
        self.descriptors_ = pd.DataFrame(state["descriptors"], index=index, columns=list(DISTANCE_WEIGHTS))
        return self.__dict__[name]

    def _residual_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Every configuration a training device measured (sorted keys) and its (configurations, devices)
        residuals, NaN where that device did not measure it: one binary search per row finds a row's
        residual on every device. Built once from :attr:`residuals_`."""
        per_device = self._device_tables()
        if getattr(self, "_matrix", None) is None or self._matrix[0] is not per_device:
            # each key's row comes with the sort (one pass, not a binary search per key: a fresh process pays this)
            keys, row = np.unique(np.concatenate([k for k, _ in per_device] or [np.empty(0, dtype=np.uint64)]),
                                  return_inverse=True)
            table = np.full((len(keys), len(per_device)), np.nan)
            start = np.cumsum([0] + [len(k) for k, _ in per_device])
            for j, (_, v) in enumerate(per_device):
                table[row.ravel()[start[j]:start[j + 1]], j] = v
            self._matrix = (per_device, keys, table)
        return self._matrix[1], self._matrix[2]

    def _residuals_at(self, keys: np.ndarray) -> np.ndarray | None:
        """(rows, devices) residual of each configuration key on each training device, NaN where that device did
        not measure it; None when no device measured anything. A few keys are looked up device by device when
        every device's keys are stored sorted (bundles saved since the tables are written sorted): that skips
        building :meth:`_residual_matrix`, which a fresh process would otherwise pay for on its first request."""
        runs = self._sorted_runs() if len(keys) <= FEW_KEYS else None
        if runs is not None:
            if not any(len(k) for k, _ in runs):
                return None
            r = np.full((len(keys), len(runs)), np.nan)
            for j, (k, v) in enumerate(runs):
                if len(k):
                    at = np.minimum(np.searchsorted(k, keys), len(k) - 1)
                    r[:, j] = np.where(k[at] == keys, v[at], np.nan)
            return r
        configs, table = self._residual_matrix()
        if not len(configs):
            return None
        at = np.minimum(np.searchsorted(configs, keys), len(configs) - 1)
        return np.where((configs[at] == keys)[:, None], table[at], np.nan)

    def _residual_row(self, key: np.uint64, runs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """One configuration's residual on each training device (NaN where not measured), from the sorted
        ``runs``: with the Numba kernels once the process has loaded them for its forests (see
        :mod:`perfcast.models.persistence.small_walk`), else one ``searchsorted`` per device."""
        kernels = sys.modules.get(KERNELS)
        if kernels is None:
            return [float(v[i]) if (i := int(k.searchsorted(key))) < len(k) and k[i] == key else math.nan
                    for k, v in runs]
        flat = self.__dict__.get("_flat_runs")
        if flat is None or flat[0] is not runs:
            bounds = np.cumsum([0] + [len(k) for k, _ in runs]).astype(np.int64)
            keys = np.concatenate([k for k, _ in runs] or [np.empty(0, dtype=np.uint64)]).astype(np.uint64)
            values = np.concatenate([v for _, v in runs] or [np.empty(0)]).astype("float64")
            flat = self._flat_runs = (runs, keys, values, bounds)
        out = np.empty(len(runs))
        kernels.sorted_runs_at(flat[1], flat[2], flat[3], key, out)
        return out.tolist()

    def _sorted_runs(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Each device's (keys, residuals) when every device's keys are strictly increasing (so unique), else
        None; checked once per :attr:`residuals_`."""
        runs = self._device_tables()
        memo = self.__dict__.get("_runs")
        if memo is None or memo[0] is not runs:
            ok = all(bool((k[1:] > k[:-1]).all()) for k, _ in runs)
            memo = self._runs = (runs, runs if ok else None)
        return memo[1]

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted sibling tables as JSON-able parameters and plain arrays (no pickle: a model bundle
        saves them with ``np.savez`` and rebuilds the correction with :meth:`from_state`)."""
        check_fitted(self, "residuals_")
        tables = [self.residuals_[d].sort_index(kind="stable") for d in self.devices_]  # sorted: see _residuals_at
        desc = self.descriptors_.reset_index()
        arrays = {
            "devices": np.asarray(self.devices_, dtype=np.uint64),
            "sizes": np.asarray([len(t) for t in tables], dtype=np.int64),
            "configs": np.concatenate([t.index.to_numpy(dtype=np.uint64) for t in tables]),
            "residuals": np.concatenate([t.to_numpy(dtype="float64") for t in tables]),
            "descriptor_devices": desc["device"].to_numpy(dtype=np.uint64),
            "descriptor_kinds": desc["kind"].to_numpy(dtype=str),
            "descriptors": desc[list(DISTANCE_WEIGHTS)].to_numpy(dtype="float64"),
        }
        params = {"config_columns": list(self.config_columns), "device_columns": list(self.device_columns),
                  "scale": float(self.scale)}
        return params, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> SiblingTransfer:
        """A transfer whose :meth:`correction` works (it has no base estimator: the caller predicts that)."""
        model = cls(None, params["config_columns"], params["device_columns"], scale=params["scale"])
        devices = [int(d) for d in arrays["devices"]]
        model.devices_ = devices
        model._state = arrays  # residuals_ and descriptors_ are built from it when first read (__getattr__)
        return model

    def correction(self, X: pd.DataFrame, distances: np.ndarray | None = None) -> np.ndarray:
        """The log-factor each row's base prediction is multiplied by (0 where no sibling measured the config);
        ``distances``: :meth:`distances` of ``X`` when the caller has them already."""
        return self.correction_rows(X.to_numpy(dtype="float64"), tuple(X.columns), distances)

    def correction_rows(self, A: np.ndarray, names: tuple[str, ...], distances: np.ndarray | None = None
                        ) -> np.ndarray:
        """:meth:`correction` of feature rows ``A`` whose columns are ``names``."""
        check_fitted(self, "devices_")  # (not residuals_: reading it would build a loaded model's pandas tables)
        checked = self.__dict__.get("_checked")
        if checked is None or checked[0] is not names:  # the columns checked and located once per layout
            self._check_columns(names)
            checked = self._checked = (names, column_positions(names, tuple(self.config_columns)),
                                       column_positions(names, tuple(DISTANCE_WEIGHTS) + kind_columns(names)))
        keys = hash_rows(A[:, checked[1]])
        if distances is None and len(A) == 1:
            weight = self._device_weight(A, names, checked[2])
        else:
            weight = np.exp(-(self.distance_rows(A, names) if distances is None else distances) / self.scale)
        runs = self._sorted_runs() if len(A) == 1 else None
        if runs is not None:
            return np.asarray([_correction_one(weight[0].tolist(), self._residual_row(keys[0], runs))])
        r = self._residuals_at(keys)  # (rows, devices)
        if r is None:
            return np.zeros(len(A))
        seen = np.isfinite(r)
        # summed device by device in training order (cumsum adds left to right)
        num = np.where(seen, weight * r, 0.0).cumsum(axis=1)[:, -1]  # r is finite where seen
        den = np.where(seen, weight, 0.0).cumsum(axis=1)[:, -1]
        # trust the siblings' mean residual in proportion to how much sibling weight stands behind it
        return np.where(den > 0, num / np.maximum(den, 1e-300), 0.0) * np.minimum(den, 1.0)

    def _device_weight(self, A: np.ndarray, names: tuple[str, ...], at: np.ndarray) -> np.ndarray:
        """The sibling weights of a single row: a function of its device's descriptors and its kernel kind only
        (:meth:`distance_rows`; their positions ``at``), so remembered per such pair (read-only)."""
        memo = self.__dict__.setdefault("_weight_memo", {})
        key = (A[0, at].tobytes(), self.scale)
        hit = memo.get(key)
        if hit is None:
            if len(memo) >= 4096:
                memo.clear()
            hit = memo[key] = np.exp(-self.distance_rows(A, names) / self.scale)
            hit.setflags(write=False)
        return hit

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_rows(X.to_numpy(dtype="float64"), tuple(X.columns))

    def predict_rows(self, A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """:meth:`predict` of feature rows ``A`` whose columns are ``names`` (:mod:`.rows`)."""
        check_fitted(self, "estimator_")
        return predict_rows(self.estimator_, A, names) * np.exp(self.correction_rows(A, names))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
