"""A small scheduler: assign a queue of GEMM jobs to the device the Predictor says finishes each first.

Greedy earliest-finish-time list scheduling, the textbook heuristic: for each job (longest first), every
device's finish time is when it becomes free plus the predicted runtime there; the job goes to the device
with the earliest finish. Intervals make it risk-aware: with ``--risk upper`` the scheduler plans on each
prediction's upper bound (a 90% interval by default), so a device whose prediction is uncertain — a GPU
far from what the model was trained on — must win by more than its uncertainty.

    python examples/scheduler.py MODEL --devices h100_sxm,l40s,a100_sxm [--jobs jobs.csv] [--risk upper]

MODEL is anything ``Predictor.load`` takes (``models:/NAME/VERSION``, ``runs:/ID/model``, a directory).
Without ``--jobs`` a built-in queue of transformer-layer GEMMs is used.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pandas as pd

from perfcast import Predictor

#: a default queue: the GEMMs of a few transformer layers (tokens x hidden x hidden and MLP shapes)
DEFAULT_JOBS = pd.DataFrame(
    [{"job": f"{name}-{tokens}", "m": tokens, "n": n, "k": k, "dtype": "bfloat16"}
     for tokens in (512, 2048, 8192)
     for name, n, k in (("qkv", 12288, 4096), ("proj", 4096, 4096), ("up", 14336, 4096), ("down", 4096, 14336))]
)


@dataclass(frozen=True)
class Assignment:
    job: str
    device: str
    start_ms: float
    finish_ms: float
    runtime_ms: float
    runtime_lo_ms: float
    runtime_hi_ms: float
    in_distribution: bool


def schedule(predictor: Predictor, jobs: pd.DataFrame, devices: list[str], risk: str = "point") -> list[Assignment]:
    """Earliest-finish-time assignment of ``jobs`` (one row each, with a ``job`` name) to ``devices``.

    One vectorised prediction covers every (job, device) pair; ``risk`` is "point" (plan on the
    prediction) or "upper" (plan on the interval's upper bound).
    """
    if risk not in ("point", "upper"):
        raise ValueError(f"risk must be 'point' or 'upper', got {risk!r}")
    if not devices:
        raise ValueError("give at least one device")
    pairs = jobs.merge(pd.DataFrame({"device": devices}), how="cross")
    pred = predictor.predict(pairs.drop(columns="job"))
    pairs = pairs.assign(runtime_ms=pred["runtime_ms"].to_numpy(), lo=pred["runtime_ms_lo"].to_numpy(),
                         hi=pred["runtime_ms_hi"].to_numpy(), ok=pred["in_distribution"].to_numpy())
    cost = "hi" if risk == "upper" else "runtime_ms"
    # longest (on its best device) first: the classic LPT order, which keeps the makespan tight
    order = pairs.groupby("job")[cost].min().sort_values(ascending=False).index
    free = dict.fromkeys(devices, 0.0)
    plan: list[Assignment] = []
    for job in order:
        rows = pairs[pairs["job"] == job]
        finish = rows["device"].map(free) + rows[cost]
        best = rows.loc[finish.idxmin()]
        start = free[best["device"]]
        free[best["device"]] = start + float(best[cost])
        plan.append(Assignment(str(job), str(best["device"]), start, free[best["device"]], float(best["runtime_ms"]),
                               float(best["lo"]), float(best["hi"]), bool(best["ok"])))
    return plan


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="models:/NAME/VERSION, runs:/ID/model or a model directory")
    ap.add_argument("--devices", required=True, help="comma-separated device ids, e.g. h100_sxm,l40s")
    ap.add_argument("--jobs", help="CSV with a 'job' column and the model's config columns (m, n, k, dtype, ...)")
    ap.add_argument("--risk", choices=("point", "upper"), default="point")
    args = ap.parse_args(argv)
    jobs = pd.read_csv(args.jobs) if args.jobs else DEFAULT_JOBS
    plan = schedule(Predictor.load(args.model), jobs, [d.strip() for d in args.devices.split(",") if d.strip()],
                    args.risk)
    table = pd.DataFrame([a.__dict__ for a in plan])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nmakespan {table['finish_ms'].max():.3f} ms over {table['device'].nunique()} device(s); "
          f"{(~table['in_distribution']).sum()} assignment(s) outside the training distribution")


if __name__ == "__main__":
    main()
