"""Evaluation protocols: named, seeded ways to split records into (train, test) frames.

Two kinds. *Anchor* protocols (``gpperf-paper``, ``neusight-ood``, ``ncpp-paper``) reproduce a paper's split
exactly, because a number is only comparable to a paper's if it is measured on the same test rows with the
same preprocessing (the datasets README, "Anchor protocols", has the published numbers). *General*
protocols (``random``, ``unseen-shape``, ``unseen-hardware``, ``future``) say how far a model generalises:
to new rows, new configurations, new devices, new years.

Every split function is called alike, ``fn(records, seed=SEED, **options)``: the first parameter is the
record frame, then ``seed``, then the protocol's options as named parameters (the training config checks
option names against them). Protocols whose split is fixed (by a paper, a date, a device list) accept
``seed`` and say that it has no effect. Each returns (train, test) record frames; which model is fitted on
them is the caller's business. A protocol that made a choice the reader must know about (which shapes were
held out, that a fallback was used, that it is one fold of several) says so in ``frame.attrs``
(:data:`NOTE`, :data:`N_FOLDS`), which pandas carries through row selections.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, LeaveOneGroupOut, train_test_split

from perfcast.records.hardware_specs import resolve_device_id

#: ``frame.attrs`` key: what the reader of a result must know about how this split was made
NOTE = "perfcast.split_note"
#: ``frame.attrs`` key: the protocol is one fold of this many (option ``fold`` picks another)
N_FOLDS = "perfcast.n_folds"


def _annotate(train: pd.DataFrame, test: pd.DataFrame, note: str, n_folds: int = 1
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames, reindexed from 0, carrying the split's note and fold count in ``attrs``."""
    out = []
    for part in (train, test):
        part = part.reset_index(drop=True)
        part.attrs = {**part.attrs, NOTE: note, N_FOLDS: n_folds}
        out.append(part)
    return out[0], out[1]


# ------------------------------------------------------------------------------------------- gpperf-paper
GPPERF_ROWS = 16_128
GPPERF_POWER_ROWS = 2_595
#: the paper's features, as record columns (the derived three are added by the split)
GPPERF_FEATURES: tuple[str, ...] = (
    "m", "n", "k", "x_block_m", "x_block_n", "x_block_k", "x_arithmetic_intensity", "x_bytes", "x_flops",
)
GPPERF_TARGETS: tuple[str, ...] = ("runtime_ms", "power_w")


def gpperf_paper_split(df: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GPPerf's split of the CUTLASS sweep: (train, test) with 2,076 and 519 rows.

    ``seed`` has no effect: the paper fixed ``random_state=42``, and another seed would not be its split.

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


def neusight_ood_split(df: pd.DataFrame, seed: int = 0, test_devices: Iterable[str] | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NeuSight's out-of-distribution GPU split: train on the ``train/collect`` bmm/linear files (P4, P100,
    V100, T4, A100-40GB), test on ``test/{bmm,linear}`` rows of GPUs never trained on. ``seed`` has no
    effect (the split is the paper's files).

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


# ------------------------------------------------------------------------------------------- ncpp-paper
NCPP_SOURCE = "perfcastdb"


def ncpp_paper_split(df: pd.DataFrame, seed: int = 0, n_splits: int | None = None, fold: int = 0
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NCPP's PerfCastDB split: ``train_data.csv`` rows train, ``test_data.csv`` rows test.

    Only perfcastdb records take part. Where the data holds no ``x_split == "test"`` rows (the public
    sample ships only the training file), the split falls back to cross-validation by hardware
    configuration (``hw_id``) and says so in :data:`NOTE`: leave-one-configuration-out by default, or
    ``n_splits`` folds of configurations shuffled with ``seed``; ``fold`` picks the fold (:data:`N_FOLDS`
    says how many there are). ``seed`` has no effect on NCPP's own split or on leave-one-out.
    """
    need = ["source", "x_split", "hw_id"]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise ValueError(f"ncpp-paper needs perfcastdb records (importer 'perfcastdb-sample'); these lack {absent}")
    d = df[(df["source"] == NCPP_SOURCE).fillna(False)]
    if d.empty:
        raise ValueError(f"ncpp-paper needs perfcastdb records (importer 'perfcastdb-sample'); none of the "
                         f"{len(df)} rows have source {NCPP_SOURCE!r}")
    split = d["x_split"].astype("string")
    train, test = d[(split == "train").fillna(False)], d[(split == "test").fillna(False)]
    if len(train) and len(test):
        if fold or n_splits is not None:
            raise ValueError("ncpp-paper: options fold and n_splits apply only to the cross-validation fallback; "
                             "these records carry NCPP's own train/test split")
        return _annotate(train, test, "NCPP's own split: train_data.csv rows train, test_data.csv rows test")
    if d["hw_id"].isna().any():
        raise ValueError(f"ncpp-paper: {int(d['hw_id'].isna().sum())} perfcastdb row(s) have no hw_id to "
                         f"cross-validate by")
    groups = d["hw_id"].astype(str).to_numpy()
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError("ncpp-paper: the records hold one hardware configuration (hw_id) and no test split; "
                         "nothing to cross-validate")
    if n_splits is None:
        splitter, how, k = LeaveOneGroupOut(), "leave-one-configuration-out", n_groups
    elif 2 <= n_splits <= n_groups:
        splitter, how = GroupKFold(n_splits, shuffle=True, random_state=seed), f"{n_splits}-fold, seed {seed}"
        k = n_splits
    else:
        raise ValueError(f"ncpp-paper: n_splits must be between 2 and the {n_groups} hardware configurations, "
                         f"got {n_splits}")
    if not 0 <= fold < k:
        raise ValueError(f"ncpp-paper: fold must be in 0..{k - 1} ({k} folds), got {fold}")
    train_idx, test_idx = list(splitter.split(d, groups=groups))[fold]
    train, test = d.iloc[train_idx], d.iloc[test_idx]
    note = (f"no x_split == 'test' rows (the paper's test set is not in these records): cross-validated by "
            f"hardware configuration (hw_id), {how}; this is fold {fold + 1} of {k}, holding out "
            f"{test['hw_id'].nunique()} of {n_groups} configurations")
    if "benchmark" in d.columns:
        unseen = sorted(set(test["benchmark"].dropna()) - set(train["benchmark"].dropna()))
        if unseen:
            note += (f"; benchmark(s) {', '.join(map(str, unseen))} have no training row, so this fold also tests "
                     f"unseen workloads")
    return _annotate(train, test, note, n_folds=k)


PROTOCOLS = {"gpperf-paper": gpperf_paper_split, "neusight-ood": neusight_ood_split, "ncpp-paper": ncpp_paper_split}


# ==================================================================================== general protocols
def random_split(df: pd.DataFrame, seed: int = 0, test_size: float = 0.2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """I.i.d. rows: what most papers report. Optimistic: repeats and near-twins of a test row are trained on.

    ``test_size`` of the rows, drawn with ``seed``.
    """
    if not 0 < test_size < 1:
        raise ValueError(f"random: test_size must be a fraction in (0, 1), got {test_size}")
    train, test = train_test_split(df, test_size=test_size, random_state=seed)
    return train.reset_index(drop=True), test.reset_index(drop=True)


#: the configuration ("shape") columns of each task: rows sharing them differ only in run conditions, labels
#: or hardware, so unseen-shape keeps them on one side
SHAPE_KEYS: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k", "batch"),
    "attention": ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim"),
    "cpu_bench": ("benchmark", "subtest"),
}


def unseen_shape_split(df: pd.DataFrame, seed: int = 0, test_size: float = 0.2, keys: Sequence[str] | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whole configurations held out: no shape tuple is on both sides, so a model is judged on sizes it
    has not seen (a random row split would test on repeats, other layouts and other devices of a trained shape).

    ``keys`` are the columns of a shape (default: the task's :data:`SHAPE_KEYS`, the task read from the
    ``task`` column); ``test_size`` is the fraction of *shapes* held out, drawn with ``seed``
    (``GroupShuffleSplit``). A missing key value is a value of its own.
    """
    if not 0 < test_size < 1:
        raise ValueError(f"unseen-shape: test_size must be a fraction in (0, 1), got {test_size}")
    if keys is None:
        tasks = sorted(df["task"].dropna().unique()) if "task" in df.columns else []
        if len(tasks) != 1 or tasks[0] not in SHAPE_KEYS:
            raise ValueError(f"unseen-shape: cannot tell the shape columns of records of task(s) {tasks}; "
                             f"pass option keys (one task at a time; known: {', '.join(SHAPE_KEYS)})")
        keys = SHAPE_KEYS[tasks[0]]
    keys = list(keys)
    absent = [c for c in keys if c not in df.columns]
    if absent or not keys:
        raise ValueError(f"unseen-shape: shape column(s) {absent or keys} are not in the records")
    groups = df.groupby(keys, dropna=False, sort=True).ngroup().to_numpy()
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < 2:
        raise ValueError(f"unseen-shape: the records hold {n_groups} distinct shape(s) of {tuple(keys)}; "
                         f"holding one out needs at least two")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    train_idx, test_idx = next(splitter.split(df, groups=groups))
    n_test = len(np.unique(groups[test_idx]))
    return _annotate(df.iloc[train_idx], df.iloc[test_idx],
                     f"held out {n_test} of {n_groups} shapes ({', '.join(keys)}) with seed {seed}")


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
    how = "as asked" if test_devices is not None else f"drawn with seed {seed}"
    return _annotate(df[~held], df[held], f"held out {by} {', '.join(wanted)} ({how}) of {len(present)} devices")


def future_split(df: pd.DataFrame, seed: int = 0, cutoff: str | None = None, date_column: str = "published_at",
                 test_size: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on records dated before ``cutoff``, test on the rest: predicting hardware not yet released.

    Without ``cutoff``, the latest ``test_size`` (default 0.2) of the rows by date are tested: the cutoff
    is that date quantile, so rows sharing a date stay together. ``seed`` has no effect.
    """
    if cutoff is not None and test_size is not None:
        raise ValueError("future: give cutoff or test_size, not both")
    if date_column not in df.columns:
        raise ValueError(f"future needs a {date_column} column")
    dates = pd.to_datetime(df[date_column], utc=True)
    undated = int(dates.isna().sum())
    if undated:
        raise ValueError(f"future: {undated} row(s) have no {date_column}; filter them out first")
    if cutoff is None:
        fraction = 0.2 if test_size is None else test_size
        if not 0 < fraction < 1:
            raise ValueError(f"future: test_size must be a fraction in (0, 1), got {fraction}")
        when = dates.quantile(1 - fraction)
        how = f"latest {fraction:.0%} of rows by {date_column}"
    else:
        when, how = pd.Timestamp(cutoff, tz="UTC"), "given"
    before = (dates < when).to_numpy()
    if before.all() or not before.any():
        raise ValueError(f"future: cutoff {when:%Y-%m-%d} puts every row on one side ({date_column} spans "
                         f"{dates.min():%Y-%m-%d} .. {dates.max():%Y-%m-%d})")
    return _annotate(df[before], df[~before], f"trained before {when:%Y-%m-%d}, tested from then on ({how})")


PROTOCOLS.update({"random": random_split, "unseen-shape": unseen_shape_split,
                  "unseen-hardware": unseen_hardware_split, "future": future_split})
