"""How long adapting a model to a new GPU takes, and whether the adapted model predicts as fast as its base.

    python benchmarks/adapt_speed.py [--data-root ../shared/datasets] [--repeats 5] [--task gemm|attention]

A base hybrid is trained on real aiconfigurator rows of four GPUs (GEMM, or context and generation attention) and
saved as a bundle; the probe plan picks 512 configurations of the target (never trained on: the L40S for GEMM, the
B60 for attention, whose decode kernels sit at a latency floor and make the guard run twice); then, each a median
over ``--repeats`` runs:

* adaptation: ``Predictor.adapt`` on the 512 rows (features, base predictions, the cross-validated choice of
  correction, the final fit and the conformal recalibration), without donors and with the four training GPUs'
  measurements of the target's configurations as donors (their table, the donor candidates and the mix);
* the same with ``setting="accurate"`` (the benchmark preset's choice: the ``smooth`` shape term and the kriging of
  its residuals, and for attention each phase's own adaptation and the latency floor);
* the benchmark preset's ``smooth`` and ``krige`` settings (GEMM; configs/aiconfigurator_adapt.toml; the in-memory
  adaptation with the donors' table, the ``smooth`` shape term and, for ``krige``, the kriging of its residuals);
* prediction: one ``predict(dict)`` and a batch of 10,000 rows, by the base bundle and the adapted bundle
  loaded from disk.

``--compare SETTING[,SETTING]`` times only those settings (with the donors) and prints, beside each median, the sum
of the log predictions (value and bounds) over 3,000 unrevealed rows of the target: run it from two code trees in
turn (``PYTHONPATH=TREE``) to compare their speed on the same load and check that they predict the same.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.models.estimators.donor_mix import DonorTable
from perfcast.models.persistence.adapted import save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.perf_probe.plan import adaptation_plan

TRAIN_GPUS = ("a100_sxm", "h100_sxm", "b300_sxm", "rtx_pro_6000_server")
#: per task: the GPU adapted to, the configuration keys a donor must share, one request
TARGETS = {
    "gemm": ("l40s", ["m", "n", "k", "dtype"], {"m": 4096, "n": 4096, "k": 4096, "dtype": "bfloat16"}),
    "attention": ("b60", ["phase", "batch", "seq_q", "seq_kv", "heads", "kv_heads", "head_dim", "window", "dtype",
                           "kv_dtype"],
                  {"phase": "decode", "batch": 64, "heads": 32, "kv_heads": 8, "seq_q": 1, "seq_kv": 4096,
                   "head_dim": 128, "dtype": "bfloat16"}),
}
BUDGET = 512


def median_s(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--task", choices=sorted(TARGETS), default="gemm")
    parser.add_argument("--compare", help="comma-separated settings (fast, accurate): their times and checksums only")
    args = parser.parse_args()
    task, (gpu, keys, request) = args.task, TARGETS[args.task]

    imp, root = get_importer("aiconfigurator"), args.data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if f"/{task}/" in u.as_posix()
             and any(f"{d}/" in u.as_posix() for d in (*TRAIN_GPUS, gpu))]
    df = pd.concat([imp.load(root, u)[task] for u in units], ignore_index=True)
    train = df[df["device_id"].isin(TRAIN_GPUS)].groupby("device_id").sample(n=3000, random_state=0)
    target = df[df["device_id"] == gpu].reset_index(drop=True)
    revealed = target.loc[adaptation_plan(target.drop(columns=["runtime_ms"]), task, BUDGET)]
    batch = target.sample(min(10_000, len(target)), random_state=1)
    donors = df[df["device_id"].isin(TRAIN_GPUS)].merge(target[keys].drop_duplicates(), on=keys)
    one = {**request, "device": gpu}

    with tempfile.TemporaryDirectory() as tmp:
        base_model = ConformalRegressor(make_model("hybrid", task, ["runtime_ms"], {"n_estimators": 200}), n_splits=3)
        base_model.fit(train, train[["runtime_ms"]])
        base_dir = save_model(base_model, task, train, Path(tmp) / "base")
        base = Predictor.load(base_dir)
        if args.compare:
            unrevealed = target.drop(index=revealed.index).sample(3000, random_state=2)
            for setting in args.compare.split(","):
                adapted = base.adapt(revealed, donors=donors, setting=setting)
                pred = adapted.predict(unrevealed).select_dtypes("number").to_numpy(dtype="float64")
                took = median_s(lambda s=setting: base.adapt(revealed, donors=donors, setting=s), args.repeats)
                print(f"{task} {setting}: {took:.2f} s (median of {args.repeats}); checksum "
                      f"{float(np.nansum(np.log(pred)))!r}", flush=True)
            return
        adapt_s = median_s(lambda: base.adapt(revealed), args.repeats)
        donor_s = median_s(lambda: base.adapt(revealed, donors=donors), args.repeats)
        accurate_s = median_s(lambda: base.adapt(revealed, donors=donors, setting="accurate"), args.repeats)
        preset = {}
        if task == "gemm":
            named = donors["device_id"].to_numpy()
            table = DonorTable.build(list(TRAIN_GPUS), base_model.estimator_[0].transform(donors),
                                     donors["runtime_ms"].to_numpy(), task, device_of=named)
            preset = {name: median_s(lambda k=k: AdaptedModel(base_model, donors=table, mixes=("latency",),
                                                              shape_donors=True, smooth=True, krige=k).fit(revealed),
                                     args.repeats) for name, k in (("smooth", None), ("krige", -1.0))}
        adapted = base.adapt(revealed, donors=donors)
        adapted_dir = save_adapted(adapted.model, Path(tmp) / "adapted")
        loaded = {"base": base, "adapted": Predictor.load(adapted_dir)}
        settings = "".join(f", {name} {s:.2f} s" for name, s in preset.items())
        print(f"{task} adaptation on {len(revealed)} planned {gpu} rows (correction: "
              f"{adapted.metadata['adaptation']['mode']}): {adapt_s:.2f} s without donors, {donor_s:.2f} s with "
              f"{len(donors):,} donor rows, setting accurate {accurate_s:.2f} s (with the donors)"
              f"{'; the preset' + chr(39) + 's settings' + settings if preset else ''}; median of {args.repeats}")
        print(f"\n| model | predict(dict) | batch of {len(batch):,} rows | rows/s |")
        print("|---|---|---|---|")
        for name, p in loaded.items():
            single = median_s(lambda p=p: p.predict(one), 20 * args.repeats)
            many = median_s(lambda p=p: p.predict(batch), args.repeats)
            print(f"| {name} | {1e3 * single:.2f} ms | {1e3 * many:.0f} ms | {len(batch) / many:,.0f} |")


if __name__ == "__main__":
    main()
