"""A small scheduler: assign a queue of GEMM jobs to the device the Predictor says finishes each first.

Greedy earliest-finish-time list scheduling, the textbook heuristic: for each job (longest first), every
device's finish time is when it becomes free plus the predicted runtime there; the job goes to the device
with the earliest finish. Intervals make it risk-aware: with ``--risk upper`` the scheduler plans on each
prediction's upper bound (a 90% interval by default), so a device whose prediction is uncertain — a GPU
far from what the model was trained on — must win by more than its uncertainty.

    python examples/scheduler.py MODEL --devices h100_sxm,l40s,a100_sxm [--jobs jobs.csv] [--risk upper]
                                 [--objective time|energy|edp]

``--objective`` says what each placement minimises: ``time`` the job's finish time (the default), ``energy`` its
predicted energy (the board power x runtime of a model trained on ``runtime_ms`` and ``power_w``; finish time
breaks ties), ``edp`` the energy-delay product, energy x finish time (a fast device that wastes power can still
win if it saves enough waiting).

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
    energy_j: float = float("nan")
    energy_lo_j: float = float("nan")
    energy_hi_j: float = float("nan")


#: what a placement minimises, from the candidate's finish time (ms) and energy (J)
OBJECTIVES = {
    "time": lambda finish, energy: finish,
    "energy": lambda finish, energy: energy,
    "edp": lambda finish, energy: energy * finish,
}


def schedule(predictor: Predictor, jobs: pd.DataFrame, devices: list[str], risk: str = "point",
             objective: str = "time") -> list[Assignment]:
    """List-scheduling of ``jobs`` (one row each, with a ``job`` name) on ``devices``, each job placed where
    ``objective`` (see :data:`OBJECTIVES`) is smallest given the queue at that time.

    One vectorised prediction covers every (job, device) pair; ``risk`` is "point" (plan on the
    prediction) or "upper" (plan on the interval's upper bounds).
    """
    if risk not in ("point", "upper"):
        raise ValueError(f"risk must be 'point' or 'upper', got {risk!r}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if not devices:
        raise ValueError("give at least one device")
    pairs = jobs.merge(pd.DataFrame({"device": devices}), how="cross")
    pred = predictor.predict(pairs.drop(columns="job"))
    has_energy = "energy_j" in pred.columns
    if objective != "time" and not has_energy:
        raise ValueError(f"objective {objective!r} needs energy: this model predicts {', '.join(predictor.targets)}; "
                         f"train one on runtime_ms and power_w (e.g. configs/aiconfigurator_power_unseen_shape.toml)")
    nan = pd.Series(float("nan"), index=pred.index)
    pairs = pairs.assign(runtime_ms=pred["runtime_ms"].to_numpy(), lo=pred["runtime_ms_lo"].to_numpy(),
                         hi=pred["runtime_ms_hi"].to_numpy(), ok=pred["in_distribution"].to_numpy(),
                         **{c: pred.get(c, nan).to_numpy() for c in ("energy_j", "energy_j_lo", "energy_j_hi")})
    cost = "hi" if risk == "upper" else "runtime_ms"
    energy = "energy_j_hi" if risk == "upper" else "energy_j"
    rule = OBJECTIVES[objective]
    # longest (on its best device) first: the classic LPT order, which keeps the makespan tight
    order = pairs.groupby("job")[cost].min().sort_values(ascending=False).index
    free = dict.fromkeys(devices, 0.0)
    plan: list[Assignment] = []
    for job in order:
        rows = pairs[pairs["job"] == job]
        finish = rows["device"].map(free) + rows[cost]
        # lexicographic: the objective, then the finish time (what "energy" ties are broken by)
        best = rows.loc[min(rows.index, key=lambda i: (rule(finish[i], rows.at[i, energy]), finish[i]))]
        start = free[best["device"]]
        free[best["device"]] = start + float(best[cost])
        plan.append(Assignment(str(job), str(best["device"]), start, free[best["device"]], float(best["runtime_ms"]),
                               float(best["lo"]), float(best["hi"]), bool(best["ok"]), float(best["energy_j"]),
                               float(best["energy_j_lo"]), float(best["energy_j_hi"])))
    return plan


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="models:/NAME/VERSION, runs:/ID/model or a model directory")
    ap.add_argument("--devices", required=True, help="comma-separated device ids, e.g. h100_sxm,l40s")
    ap.add_argument("--jobs", help="CSV with a 'job' column and the model's config columns (m, n, k, dtype, ...)")
    ap.add_argument("--risk", choices=("point", "upper"), default="point")
    ap.add_argument("--objective", choices=tuple(OBJECTIVES), default="time",
                    help="what each placement minimises: finish time, energy, or energy x finish time")
    args = ap.parse_args(argv)
    jobs = pd.read_csv(args.jobs) if args.jobs else DEFAULT_JOBS
    plan = schedule(Predictor.load(args.model), jobs, [d.strip() for d in args.devices.split(",") if d.strip()],
                    args.risk, args.objective)
    table = pd.DataFrame([a.__dict__ for a in plan]).dropna(axis=1, how="all")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    energy = f"; energy {table['energy_j'].sum():.3f} J" if "energy_j" in table else ""
    print(f"\nmakespan {table['finish_ms'].max():.3f} ms over {table['device'].nunique()} device(s){energy}; "
          f"{(~table['in_distribution']).sum()} assignment(s) outside the training distribution")


if __name__ == "__main__":
    main()
