"""Every CPU model of perfcast side by side on the two public CPU datasets, with the simple baselines.

Why a separate table: benchmarks/accuracy.py scores each protocol's *default* model against the
published anchors; this one answers "which model family should I use" on the same splits: the forests,
gradient boosting, the NCPP-style group-attention network, each plain and on score / baseline
(perfcast.models.estimators.normalize), beside the per-(workload, sub-test) mean and, on SPEC, the processor-family mean.

* spec-cpu2017, ``future``: train on base results published before ``--cutoff`` (default 2024), test on the
  rest; mean APE over all test rows and over the rows of processors no training row had.
* perfcastdb-sample, held-out repeats: ``random`` 20 % splits over ``--seeds`` seeds, pooled (the public
  sample has one hardware configuration per workload, so this is the split a model can be judged on; see
  configs/perfcastdb_group_attention.toml).

    python benchmarks/cpu_models.py [--data-root DIR] [--out benchmarks/CPU_MODELS.md] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval import metrics
from perfcast.experiments.baselines import group_mean
from perfcast.experiments.presets import preset
from perfcast.experiments.results import workspace
from perfcast.eval.protocols import future_split, random_split
from perfcast.models import make_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "datasets"
DEFAULT_OUT = REPO / "benchmarks" / "CPU_MODELS.md"
#: the network's optimisation settings for tables of tens of thousands of rows (configs/spec_cpu2017_group_attention.toml)
NET = {"batch_size": 1024, "max_epochs": 12, "patience": 4, "d_model": 16, "n_threads": 2}
SPEC_NORM = {k: v for k, v in preset("spec-cpu2017-future").model.params.items() if k != "base"}
#: the same normaliser around the network (the seed bag and the monotone constraints are the default's trees')
SPEC_LAW = {k: v for k, v in SPEC_NORM.items() if k in ("group_by", "scale_by")}
PCDB_NORM = {k: v for k, v in preset("ncpp-paper").model.params.items() if k != "base"}
#: (label, registry name, params) per dataset
MODELS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "spec-cpu2017": [
        ("rf", "rf", {}),
        ("lightgbm", "lightgbm", {}),
        ("group_attention", "group_attention", NET),
        ("normalized lightgbm (default)", "normalized", {"base": "lightgbm", **SPEC_NORM}),
        ("normalized group_attention", "normalized", {"base": "group_attention", **SPEC_LAW, **NET}),
    ],
    "perfcastdb-sample": [
        ("rf", "rf", {}),
        ("lightgbm", "lightgbm", {"min_child_samples": 5}),
        ("group_attention", "group_attention", {}),
        ("normalized rf", "normalized", {"base": "rf", **PCDB_NORM}),
        ("normalized group_attention (default)", "normalized", {"base": "group_attention", **PCDB_NORM}),
    ],
}
WORKLOAD_MEAN, FAMILY_MEAN = "per-(workload, sub-test) mean", "processor-family mean"


def fit_predict(name: str, params: dict[str, Any], train: pd.DataFrame, test: pd.DataFrame, seed: int) -> np.ndarray:
    params = {**params, "random_state": seed} if name in ("group_attention", "rf", "lightgbm") else params
    model = make_model(name, "cpu_bench", ["score"], params).fit(train, train[["score"]])
    return np.asarray(model.predict(test), dtype="float64").ravel()


def spec_rows(ws: Any, cutoff: int) -> list[dict[str, Any]]:
    """One table row per model (and baseline): mean APE on all test rows and on never-seen processors."""
    records = ws.records("spec-cpu2017", "cpu_bench")
    base = records[(records["variant"] == "base").fillna(False).to_numpy()
                   & ~records["x_suspect"].fillna(False).astype(bool).to_numpy()]
    train, test = future_split(base, cutoff=f"{cutoff}-01-01")
    unseen = ~test["device_name"].isin(set(train["device_name"])).to_numpy()
    y = test["score"].to_numpy(dtype="float64")
    preds = {WORKLOAD_MEAN: (group_mean(train, test, ["benchmark", "subtest"], "score", fallback=["benchmark"])[0], 0.0),
             FAMILY_MEAN: (group_mean(train, test, ["benchmark", "family"], "score", fallback=["benchmark"])[0], 0.0)}
    for label, name, params in MODELS["spec-cpu2017"]:
        start = time.perf_counter()
        preds[label] = (fit_predict(name, params, train, test, 0), time.perf_counter() - start)
        print(f"  spec-cpu2017 {label}: {metrics.mape(y, preds[label][0]):.1%} ({preds[label][1]:.0f} s)", flush=True)
    where = f"future, cutoff {cutoff}: {len(train):,} train / {len(test):,} test rows ({int(unseen.sum()):,} never-seen)"
    return [{"dataset": "spec-cpu2017", "split": where, "model": label, "mean APE": metrics.mape(y, p),
             "mean APE (never-seen processors)": metrics.mape(y[unseen], p[unseen]), "median APE": metrics.median_ape(y, p),
             "fit + predict s": wall} for label, (p, wall) in preds.items()]


def perfcastdb_rows(ws: Any, seeds: int) -> list[dict[str, Any]]:
    """One table row per model (and the workload mean): held-out repeats, every seed's test rows pooled."""
    records = ws.records("perfcastdb-sample", "cpu_bench")
    truth: list[np.ndarray] = []
    preds: dict[str, list[np.ndarray]] = {WORKLOAD_MEAN: []}
    walls: dict[str, float] = {WORKLOAD_MEAN: 0.0}
    for seed in range(seeds):
        train, test = random_split(records, seed=seed)
        truth.append(test["score"].to_numpy(dtype="float64"))
        preds[WORKLOAD_MEAN].append(group_mean(train, test, ["benchmark", "subtest"], "score", fallback=["benchmark"])[0])
        for label, name, params in MODELS["perfcastdb-sample"]:
            start = time.perf_counter()
            preds.setdefault(label, []).append(fit_predict(name, params, train, test, seed))
            walls[label] = walls.get(label, 0.0) + time.perf_counter() - start
        print(f"  perfcastdb seed {seed} done", flush=True)
    y = np.concatenate(truth)
    where = f"held-out repeats: random 20 % x {seeds} seeds, {len(y):,} predictions pooled"
    return [{"dataset": "perfcastdb-sample", "split": where, "model": label, "mean APE": metrics.mape(y, np.concatenate(p)),
             "mean APE (never-seen processors)": np.nan, "median APE": metrics.median_ape(y, np.concatenate(p)),
             "fit + predict s": walls[label]} for label, p in preds.items()]


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as Markdown, percentages to one decimal, the best model per dataset in bold."""
    df = pd.DataFrame(rows)
    best = df.groupby("dataset")["mean APE"].transform("min") == df["mean APE"]
    out = ["| dataset | split | model | mean APE | never-seen processors | median APE | fit + predict |", "|---|---|---|---|---|---|---|"]
    for (_, r), top in zip(df.iterrows(), best, strict=True):
        cell = f"**{r['mean APE']:.1%}**" if top else f"{r['mean APE']:.1%}"
        unseen = "" if np.isnan(r["mean APE (never-seen processors)"]) else f"{r['mean APE (never-seen processors)']:.1%}"
        out.append(f"| {r['dataset']} | {r['split']} | {r['model']} | {cell} | {unseen} | {r['median APE']:.1%} "
                   f"| {r['fit + predict s']:.0f} s |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cutoff", type=int, default=2024, help="SPEC future split year (default 2024)")
    parser.add_argument("--seeds", type=int, default=3, help="perfcastdb random splits pooled (default 3)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with workspace(args.data_root) as ws:
        rows = spec_rows(ws, args.cutoff) + perfcastdb_rows(ws, args.seeds)
    text = table(rows)
    print(text)
    header = (f"# CPU models side by side\n\nWritten by `python benchmarks/cpu_models.py` ({time.perf_counter() - start:.0f} s "
              f"on this machine). Mean APE of the score; bold: best per dataset. Baselines need no fitting.\n\n")
    args.out.write_text(header + text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
