"""The baselines a practitioner would use instead of perfcast, each scored on the same rows as perfcast:

* ``roofline``: the spec sheet alone (perfcast's analytical model);
* ``copy-sibling``: the measured latency of the same configuration on the nearest GPU of the same family
  (same vendor, family name and compute-capability major, from the spec sheet: GB200, GB300 and B300
  are one family; A100 and L40S are not, although both are sm_8x);
* ``nearest GPU``: the same, from the GPU closest by spec-sheet distance whatever its family;
* ``grid interpolation``: for an unseen shape on a known GPU, log-linear interpolation between the
  measured neighbours on aiconfigurator's (m, n, k) grid;
* ``family mean``: the mean SPEC score of the same processor family (and benchmark) in training;
* ``workload mean``: the mean PerfCastDB score of the same (workload, sub-test) in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from perfcast.features import feature_transformer
from perfcast.models.estimators.roofline import baseline
from perfcast.records.hardware_specs import get_spec, spec_table

#: spec-sheet fields of the nearest-GPU distance (those known for every device compared are used)
DISTANCE_FIELDS: tuple[str, ...] = (
    "mem_bw_gbs", "peak_tflops_bf16", "peak_tflops_fp32", "tdp_w", "mem_gb", "sm_count", "l2_mb",
)
#: the columns that make two aiconfigurator rows "the same configuration" on different GPUs
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k", "dtype"),
    "attention": ("phase", "batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "window", "beam_width",
                  "dtype", "kv_dtype"),
}
PHASE_LABEL = {"prefill": "context", "decode": "generation"}
SIBLING_NOTE = ("copy-sibling: the nearest GPU of the same family (vendor, family, compute-capability major); "
                "siblings share an architecture and nearly the same spec sheet, so their measurements are the "
                "baseline to beat")

ROOFLINE, SIBLING, NEAREST, GRID, FAMILY_MEAN, WORKLOAD_MEAN = (
    "roofline", "copy-sibling", "nearest GPU", "grid interpolation", "family mean", "workload mean")



def roofline(test: pd.DataFrame, task: str, target: str = "runtime_ms") -> np.ndarray:
    """What the spec sheet alone predicts for each row (perfcast's analytical roofline model)."""
    return np.asarray(baseline(feature_transformer(task).fit(test).transform(test), target), dtype="float64")


def _spec_rows(device_ids: Sequence[str]) -> pd.DataFrame:
    """The spec-table rows of ``device_ids`` (a KeyError naming the closest known ids for an unknown one)."""
    table = spec_table()
    for dev in device_ids:
        if dev not in table.index:
            get_spec(dev)  # raises the catalogue's KeyError, or resolves an alias
            raise KeyError(f"{dev!r} is an alias, not a canonical device id (see hardware_specs.resolve_device_id)")
    return table.loc[list(device_ids)]


def device_family(device_ids: Sequence[str]) -> pd.Series:
    """Family key of each device from its spec sheet: vendor, first word of the family name and the
    compute-capability major (so Blackwell datacenter sm_100/sm_103 parts are one family, the sm_120 RTX PRO
    another, and Ampere A100 and Ada L40S differ although both are sm_8x)."""
    spec = _spec_rows(device_ids)
    major = spec["compute_capability"].astype("string").str.split(".").str[0].fillna("-")
    word = spec["family"].astype("string").str.split().str[0].fillna(pd.Series(spec.index, index=spec.index))
    return spec["vendor"].astype("string").fillna("-") + "|" + word + "|" + major


def spec_distances(target: str, candidates: Sequence[str]) -> pd.Series:
    """Euclidean distance from ``target`` to each candidate over z-scored log spec fields (those of
    :data:`DISTANCE_FIELDS` known for all of them), smallest first."""
    devices = [target, *candidates]
    spec = _spec_rows(devices)[list(DISTANCE_FIELDS)].astype("float64")
    spec = np.log(spec.dropna(axis=1))
    if spec.shape[1] == 0:
        raise ValueError(f"no spec field of {DISTANCE_FIELDS} is known for all of {devices}")
    spread = spec.std(ddof=0).replace(0.0, 1.0)
    z = (spec - spec.mean()) / spread
    dist = np.sqrt(((z.loc[list(candidates)] - z.loc[target]) ** 2).sum(axis=1))
    return dist.sort_values(kind="stable")


def nearest_devices(target: str, candidates: Sequence[str]) -> list[str]:
    """Candidates ordered by spec-sheet distance to ``target``, nearest first."""
    return list(spec_distances(target, [c for c in candidates if c != target]).index)


def sibling_devices(target: str, candidates: Sequence[str]) -> list[str]:
    """Candidates of ``target``'s family (:func:`device_family`), in :func:`nearest_devices` order; empty when
    it has none."""
    others = [c for c in candidates if c != target]
    if not others:
        return []
    fam = device_family([target, *others])
    return [c for c in nearest_devices(target, others) if fam[c] == fam[target]]


def copy_from_devices(train: pd.DataFrame, test: pd.DataFrame, donors: Sequence[str], keys: Sequence[str],
                      target: str = "runtime_ms") -> np.ndarray:
    """Each test row's ``target`` as measured for the same configuration (``keys``) on the first donor device
    that measured it (a donor's repeats are averaged); NaN where no donor did."""
    keys = list(keys)
    out = np.full(len(test), np.nan)
    query = test[keys].reset_index(drop=True)
    for dev in donors:  # a handful of devices, each one vectorised merge
        rows = train[(train["device_id"] == dev).fillna(False).to_numpy()]
        table = rows.groupby(keys, dropna=False, observed=True)[target].mean().rename("_donor").reset_index()
        got = query.merge(table, on=keys, how="left", validate="many_to_one")["_donor"].to_numpy(dtype="float64")
        out = np.where(np.isnan(out), got, out)
    return out


def grid_interpolate(train: pd.DataFrame, test: pd.DataFrame, by: Sequence[str], axes: Sequence[str] = ("m", "n", "k"),
                     target: str = "runtime_ms") -> tuple[np.ndarray, np.ndarray]:
    """Log-linear interpolation of ``target`` on a measured grid, and which rows were bracketed.

    Within each group ``by`` (device, dtype), for each axis the test point is placed on the line of training
    points sharing its other coordinates and ``log target`` is interpolated linearly in ``log axis`` between
    the nearest measured neighbours below and above; the estimate is the mean over the axes that bracket
    the point (so it is exact on a measured point). A point no axis brackets takes the mean of its nearest
    one-sided neighbours (extrapolation by copying); the second array is False for those rows.
    """
    by, axes = list(by), list(axes)
    measured = train[train[target].notna().to_numpy()]
    grid = (np.log(measured[target].astype("float64")).groupby([measured[c] for c in by + axes], dropna=False)
            .mean().rename("y").reset_index())
    query = test[by + axes].reset_index(drop=True)
    query["qid"] = np.arange(len(query))
    inside, outside = [], []
    for axis in axes:
        line = by + [c for c in axes if c != axis]
        both = pd.concat([grid.assign(qid=-1), query.assign(y=np.nan)], ignore_index=True)
        both["x"] = np.log(both[axis].astype("float64"))
        both["is_query"] = both["qid"] >= 0
        both = both.sort_values([*line, "x", "is_query"], kind="stable").reset_index(drop=True)
        groups = [both[c] for c in line]
        known_x = both["x"].where(~both["is_query"])
        prev_x = known_x.groupby(groups, dropna=False).ffill()
        prev_y = both["y"].groupby(groups, dropna=False).ffill()
        next_x = known_x.groupby(groups, dropna=False).bfill()
        next_y = both["y"].groupby(groups, dropna=False).bfill()
        q = both["is_query"].to_numpy()
        x, px, py, nx, ny = (s.to_numpy(dtype="float64")[q] for s in (both["x"], prev_x, prev_y, next_x, next_y))
        with np.errstate(invalid="ignore", divide="ignore"):
            between = py + (ny - py) * (x - px) / (nx - px)
        est = np.where(px == x, py, np.where(np.isfinite(px) & np.isfinite(nx), between, np.nan))
        one_sided = np.where(np.isnan(px) | (np.isfinite(nx) & (nx - x < x - px)), ny, py)
        order = both.loc[q, "qid"].to_numpy()
        inside.append(pd.Series(est, index=order).sort_index().to_numpy())
        outside.append(pd.Series(one_sided, index=order).sort_index().to_numpy())
    inside_m, outside_m = np.vstack(inside), np.vstack(outside)
    bracketed = np.isfinite(inside_m).any(axis=0)
    return np.exp(np.where(bracketed, _finite_mean(inside_m), _finite_mean(outside_m))), bracketed


def _finite_mean(a: np.ndarray) -> np.ndarray:
    """Column means over the finite entries (NaN for a column with none)."""
    ok = np.isfinite(a)
    count = ok.sum(axis=0)
    total = np.where(ok, a, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def group_mean(train: pd.DataFrame, test: pd.DataFrame, keys: Sequence[str], target: str,
               fallback: Sequence[str] | None = None) -> tuple[np.ndarray, int]:
    """Each test row's mean training ``target`` over rows sharing ``keys``; where no training row does, the
    mean over ``fallback`` keys (if given). Returns the values (NaN where neither exists) and how many rows
    used the fallback."""
    def lookup(cols: Sequence[str]) -> np.ndarray:
        cols = list(cols)
        table = train.groupby(cols, dropna=False, observed=True)[target].mean().rename("_mean").reset_index()
        merged = test[cols].reset_index(drop=True).merge(table, on=cols, how="left", validate="many_to_one")
        return merged["_mean"].to_numpy(dtype="float64")

    values = lookup(keys)
    if fallback is None:
        return values, 0
    missing = np.isnan(values)
    return np.where(missing, lookup(fallback), values), int(missing.sum())
