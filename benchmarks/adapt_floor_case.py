"""The attention latency floor on a small real case: does the floor's slope hurt the kernels above the K rows' range?

    python benchmarks/adapt_floor_case.py [--data-root ../shared/datasets] [--json out.json]

The lead's case of round 11e (benchmarks/ANALYSIS_adapt.md, rounds 11e and 12a): a base hybrid (60 trees) trained
on 400 A100 and 400 B300 generation-attention rows, saved as a bundle, adapted (``adapt_loaded``, no donors) to 32
B60 generation rows, judged on the 1,500 sampled B60 rows: "big" the 500 of largest base prediction, "rest" every
row not measured (as the lead counted them; the measured rows among the big ones are counted too). Two ways to pick
the 32 rows: ``plan`` (``adaptation_plan`` over the 1,500 rows: they span the sizes) and ``small`` (drawn from the
rows of base below 0.05 ms: every one at the B60's floor). Three adaptations each: no floor, the floor whose slope is
always fitted (round 11e: ``MIN_SLOPE_ROWS = 0``) and the floor as the package fits it. Everything is seeded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.estimators import adapt_correction
from perfcast.models.persistence.adapted import adapt_loaded
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.perf_probe.plan import adaptation_plan

TRAIN_GPUS = ("a100_sxm", "b300_sxm")
TARGET_GPU = "b60"
BUDGET = 32
#: the ``small`` rows: base prediction below this (ms), where the B60's decode kernels sit at its floor
SMALL_MS = 0.05
BIG = 500


def build_case(data_root: Path, out: Path) -> tuple[Predictor, pd.DataFrame, np.ndarray]:
    """The base (saved under ``out`` and loaded back), the 1,500 B60 rows and the base's predictions of them."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "generation" in u.name
             and any(f"/{d}/" in u.as_posix() for d in (*TRAIN_GPUS, TARGET_GPU))]
    df = pd.concat([imp.load(root, u)["attention"] for u in units], ignore_index=True)
    train = df[df["device_id"] != TARGET_GPU].groupby("device_id").sample(n=400, random_state=0)
    train = train.reset_index(drop=True)
    target = df[df["device_id"] == TARGET_GPU].sample(n=1500, random_state=0).reset_index(drop=True)
    base = ConformalRegressor(make_model("hybrid", "attention", ["runtime_ms"], {"n_estimators": 60}),
                              n_splits=2).fit(train, train[["runtime_ms"]])
    loaded = Predictor.load(save_model(base, "attention", train, out, {"model": "hybrid"}))
    return loaded, target, loaded.predict(target)["runtime_ms"].to_numpy()


def picks(target: pd.DataFrame, guess: np.ndarray) -> dict[str, np.ndarray]:
    """Positions of the 32 measured rows, per way of picking them."""
    plan = adaptation_plan(target.drop(columns=["runtime_ms"]), "attention", BUDGET)
    small = np.random.default_rng(0).choice(np.flatnonzero(guess < SMALL_MS), BUDGET, replace=False)
    return {"plan": np.flatnonzero(target.index.isin(plan)), "small": small}


@contextmanager
def slope_always_fitted() -> Iterator[None]:
    """The round 11e floor: its slope fitted from any rows (no :data:`MIN_SLOPE_ROWS` condition)."""
    kept = adapt_correction.MIN_SLOPE_ROWS
    adapt_correction.MIN_SLOPE_ROWS = 0
    try:
        yield
    finally:
        adapt_correction.MIN_SLOPE_ROWS = kept


def mean_ape(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(pred / y - 1)))


def errors(loaded: Predictor, target: pd.DataFrame, guess: np.ndarray, pick: np.ndarray,
           floors: dict[str, float]) -> dict[str, object]:
    """Mean APE on the big and the rest rows of the base adapted to the rows ``pick`` with ``floors``, and the
    floors and levels it found."""
    model, found = adapt_loaded(loaded.model, loaded._records(target.iloc[pick]), floors=floors)
    pred = Predictor(model).predict(target)["runtime_ms"].to_numpy()
    y = target["runtime_ms"].to_numpy()
    big, rest = np.argsort(guess)[-BIG:], np.setdiff1d(np.arange(len(y)), pick)
    return {"big": mean_ape(pred[big], y[big]), "rest": mean_ape(pred[rest], y[rest]),
            "floors": dict(found.correction.floors),
            "levels": {k: v for k, v in found.correction.levels.items() if k in found.correction.floors},
            "mode": found.correction.mode}


def run(data_root: Path) -> dict[str, dict[str, dict[str, object]]]:
    """Per way of picking the rows: no floor, the round 11e floor and the package's floor."""
    with tempfile.TemporaryDirectory() as tmp:
        loaded, target, guess = build_case(data_root, Path(tmp) / "base")
        out = {}
        for name, pick in picks(target, guess).items():
            out[name] = {"no floor": errors(loaded, target, guess, pick, {})}
            with slope_always_fitted():
                out[name]["slope always fitted"] = errors(loaded, target, guess, pick, {"attention": 0.5})
            out[name]["floor"] = errors(loaded, target, guess, pick, {"attention": 0.5})
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    found = run(args.data_root)
    for name, rows in found.items():
        for variant, e in rows.items():
            print(f"{name:6s} {variant:20s} big {e['big']:7.2%} rest {e['rest']:7.2%} mode {e['mode']:6s} "
                  f"floors {e['floors']} log a {e['levels']}")
    plan, small = found["plan"], found["small"]
    print("criterion (1): plan big", plan["floor"]["big"] <= plan["no floor"]["big"] + 0.01,
          "plan rest", plan["floor"]["rest"] <= plan["no floor"]["rest"] + 0.01,
          "small big >= 30% better than without floor (the level alone)",
          small["floor"]["big"] <= 0.7 * small["no floor"]["big"])
    if args.json:
        args.json.write_text(json.dumps(found, indent=1) + "\n")


if __name__ == "__main__":
    main()
