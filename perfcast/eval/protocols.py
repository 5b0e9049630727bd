"""Anchor protocols: splits that reproduce a paper's evaluation exactly, so our numbers sit beside theirs.

Why exact: a number is only comparable to a paper's if it is measured on the same test rows with the same
preprocessing. Each function takes the records of one imported dataset and returns (train, test) record
frames; which model is fitted on them is the caller's business. See the datasets README, "Anchor
protocols", for the published numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from sklearn.model_selection import train_test_split

from perfcast.datasets.hardware_specs import resolve_device_id

# ------------------------------------------------------------------------------------------- gpperf-paper
GPPERF_ROWS = 16_128
GPPERF_POWER_ROWS = 2_595
#: the paper's features, as record columns (the derived three are added by the split)
GPPERF_FEATURES: tuple[str, ...] = (
    "m", "n", "k", "x_block_m", "x_block_n", "x_block_k", "x_arithmetic_intensity", "x_bytes", "x_flops",
)
GPPERF_TARGETS: tuple[str, ...] = ("runtime_ms", "power_w")


def gpperf_paper_split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GPPerf's split of the CUTLASS sweep: (train, test) with 2,076 and 519 rows.

    All 16,128 gpperf-cutlass records in file order (``x_record``); the paper's features (m, n, k,
    block_m/n/k, arithmetic intensity 2mnk / bytes, bytes 4(mk+kn+mn), flops 2mnk; the derived three
    added as ``x_arithmetic_intensity``, ``x_bytes``, ``x_flops``) and both targets clipped to their
    [1%, 99%] quantiles over all rows; rows without power dropped; ``train_test_split(test_size=0.2,
    random_state=42)``. Targets in the returned frames are the clipped ones the paper scores against.
    """
    need = ["x_record", "m", "n", "k", "x_block_m", "x_block_n", "x_block_k", *GPPERF_TARGETS]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise ValueError(f"gpperf-paper needs gpperf-cutlass records (importer 'gpperf-cutlass'); "
                         f"these lack column(s) {absent}")
    if len(df) != GPPERF_ROWS:
        raise ValueError(f"gpperf-paper clips over all {GPPERF_ROWS} rows of the sweep; got {len(df)} "
                         f"(import the whole gpperf-cutlass dataset, and only it)")
    d = df.sort_values("x_record", kind="stable").reset_index(drop=True)
    m, n, k = (d[c].astype("float64") for c in ("m", "n", "k"))
    d["x_flops"] = 2 * m * n * k
    d["x_bytes"] = 4 * (m * k + k * n + m * n)
    d["x_arithmetic_intensity"] = d["x_flops"] / d["x_bytes"]
    for c in (*GPPERF_FEATURES, *GPPERF_TARGETS):
        v = d[c].astype("float64")
        lo, hi = v.quantile([0.01, 0.99])
        d[c] = v.clip(lo, hi)
    d = d[d["power_w"].notna()].reset_index(drop=True)
    if len(d) != GPPERF_POWER_ROWS:
        raise ValueError(f"gpperf-paper expects {GPPERF_POWER_ROWS} rows with power; got {len(d)} "
                         f"(is this an unmodified copy of the dataset?)")
    train, test = train_test_split(d, test_size=0.2, random_state=42)
    return train, test


# ------------------------------------------------------------------------------------------- neusight-ood
#: columns that describe the kernel a *run* chose (cuBLAS picks per device): unknown before running on
#: an unseen GPU, so the protocol blanks them on both sides
NEUSIGHT_OBSERVED: tuple[str, ...] = (
    "kernel", "tile_m", "tile_n", "tile_k", "stages", "x_kernels", "x_n_kernels", "x_warps_per_sm",
    "x_blocks_per_sm", "x_grid_x", "x_grid_y", "x_grid_z", "x_block_x", "x_block_y", "x_block_z",
)
#: cuBLAS (column-major) transposition of each op as PyTorch issues it: what a user knows without running
NEUSIGHT_LAYOUT: dict[str, str] = {"bmm": "nn", "linear": "tn"}


def _device_ids(names: Iterable[str]) -> list[str]:
    ids = []
    for name in names:
        dev = resolve_device_id(name)
        if dev is None:
            raise ValueError(f"unknown device {name!r} (no hardware spec sheet matches it)")
        ids.append(dev)
    return ids


def neusight_ood_split(df: pd.DataFrame, test_devices: Iterable[str] | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NeuSight's out-of-distribution GPU split: train on the ``train/collect`` bmm/linear files (P4, P100,
    V100, T4, A100-40GB), test on ``test/{bmm,linear}`` rows of GPUs never trained on.

    ``test_devices`` (ids or names) default to every test GPU absent from training (the A100 80GB PCIe).
    Kernel-choice columns (:data:`NEUSIGHT_OBSERVED`) are blanked and ``layout`` set from the op, so the
    model sees only what is known before running: op, shape, dtype and the device's spec sheet.
    """
    need = ["x_split", "op", "device_id", "runtime_ms"]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise ValueError(f"neusight-ood needs neusight records (importer 'neusight'); these lack {absent}")
    d = df[df["op"].isin(list(NEUSIGHT_LAYOUT))].copy()
    d = d.assign(**{c: pd.NA for c in NEUSIGHT_OBSERVED if c in d.columns})
    d["layout"] = d["op"].map(NEUSIGHT_LAYOUT).astype("string")
    train = d[d["x_split"] == "train"]
    trained = set(train["device_id"].dropna())
    test = d[d["x_split"] == "test"]
    if test_devices is None:
        wanted = sorted(set(test["device_id"].dropna()) - trained)
    else:
        wanted = _device_ids(test_devices)
        seen = sorted(set(wanted) & trained)
        if seen:
            raise ValueError(f"test device(s) {seen} are in the training split: not an out-of-distribution test")
    test = test[test["device_id"].isin(wanted)]
    if train.empty or test.empty:
        raise ValueError(f"neusight-ood: empty split (train {len(train)} rows, test {len(test)} rows for "
                         f"devices {wanted}); import the whole neusight dataset")
    return train.reset_index(drop=True), test.reset_index(drop=True)


PROTOCOLS = {"gpperf-paper": gpperf_paper_split, "neusight-ood": neusight_ood_split}


# ==================================================================================== general protocols
# Added by the training developer (perfcast.training needs them for datasets without an anchor protocol).
# Both are seeded: ``perfcast train`` passes the config's ``seed`` to any split function taking ``seed``.

def random_split(df: pd.DataFrame, seed: int = 0, test_size: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """I.i.d. rows: what most papers report. Optimistic: repeats and near-twins of a test row are trained on."""
    if not 0 < test_size < 1:
        raise ValueError(f"random: test_size must be a fraction in (0, 1), got {test_size}")
    train, test = train_test_split(df, test_size=test_size, random_state=seed)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def unseen_hardware_split(df: pd.DataFrame, seed: int = 0, test_devices: Iterable[str] | None = None,
                          n_test_devices: int = 1, by: str = "device_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whole devices held out: a model is judged on hardware it knows only by its description.

    ``test_devices`` name the held-out devices; otherwise ``n_test_devices`` are drawn with ``seed`` from
    the devices present. ``by`` is the column that names a device: ``device_id`` (spec-sheet id; names are
    resolved to ids) or, for CPUs without spec sheets, ``device_name`` (the processor model).
    """
    if by not in df.columns:
        raise ValueError(f"unseen-hardware needs a {by} column (records from an importer or probe)")
    missing = int(df[by].isna().sum())
    if missing:
        raise ValueError(f"unseen-hardware: {missing} row(s) have no {by}, so their device cannot be held "
                         f"out; filter them out (data.filters) or group by another column (option 'by')")
    names = df[by].astype(str)
    present = sorted(names.unique())
    if test_devices is not None:
        wanted = [d if d in present or by != "device_id" else (resolve_device_id(d) or d) for d in test_devices]
        absent = sorted(set(wanted) - set(present))
        if absent:
            raise ValueError(f"unseen-hardware: test device(s) {absent} have no rows; present: {', '.join(present)}")
    else:
        if not 1 <= n_test_devices < len(present):
            raise ValueError(f"unseen-hardware: cannot hold out {n_test_devices} of {len(present)} device(s) "
                             f"and still train on one")
        wanted = sorted(pd.Series(present).sample(n_test_devices, random_state=seed).tolist())
    held = names.isin(wanted)
    if held.all():
        raise ValueError(f"unseen-hardware: holding out {wanted} leaves no device to train on")
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


def future_split(df: pd.DataFrame, cutoff: str, date_column: str = "published_at"
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on records dated before ``cutoff``, test on the rest: predicting hardware not yet released."""
    if date_column not in df.columns:
        raise ValueError(f"future needs a {date_column} column")
    dates = pd.to_datetime(df[date_column], utc=True)
    undated = int(dates.isna().sum())
    if undated:
        raise ValueError(f"future: {undated} row(s) have no {date_column}; filter them out first")
    before = (dates < pd.Timestamp(cutoff, tz="UTC")).to_numpy()
    if before.all() or not before.any():
        raise ValueError(f"future: cutoff {cutoff} puts every row on one side ({date_column} spans "
                         f"{dates.min():%Y-%m-%d} .. {dates.max():%Y-%m-%d})")
    return df[before].reset_index(drop=True), df[~before].reset_index(drop=True)


PROTOCOLS.update({"random": random_split, "unseen-hardware": unseen_hardware_split, "future": future_split})
