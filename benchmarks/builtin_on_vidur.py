"""The built-in GEMM model on another tool's measurements: Vidur's fp16 LLM-layer GEMMs (A100, H100, A40).

Why: the built-in model was trained on aiconfigurator's and NeuSight's tables. Vidur profiled the four GEMMs of
real LLM layers (QKV, O, MLP up and down; 1 to 8-way tensor parallel) with PyTorch in fp16, a dtype neither
training set has. The A100 and H100 are training GPUs of the built-in model (other framework, other shapes); the
A40 is a GPU it never saw. Each GPU's rows are scored as the user would ask for them (dtype fp16, predicted as its
bf16 stand-in, :data:`perfcast.features.roofline.STAND_INS`) and, for comparison, with fp16's own features (what
the model answered before the stand-in).

Then the built-in model is adapted to the A40 (``--adapt``) on K of its records drawn at random, and scored on
every other A40 record: the adaptation flow of ``perfcast adapt`` on a GPU measured by another tool.

    python benchmarks/builtin_on_vidur.py [--data-root ../shared/datasets] [--rows-per-gpu N] [--adapt a40]

prints Markdown tables; the figures and their reading are in benchmarks/BUILTIN_VIDUR.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore

SMALL_M = 512  # token counts below this are decode-like GEMMs (launch and bandwidth bound)


def vidur_gemms(data_root: Path, rows_per_gpu: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Vidur's GEMM records read through the importer (a temporary store), ``rows_per_gpu`` drawn per GPU."""
    with tempfile.TemporaryDirectory(prefix="perfcast-vidur-") as tmp:
        store = RecordStore(Path(tmp) / "store")
        get_importer("vidur").run(data_root / "vidur", store)
        records = store.read("gemm")
    if rows_per_gpu:
        records = pd.concat([g.sample(min(len(g), rows_per_gpu), random_state=seed)
                             for _, g in records.groupby("device_id", observed=True)], ignore_index=True)
    return records


def score(records: pd.DataFrame, predictor: Predictor | None = None) -> pd.DataFrame:
    """One row per GPU: mean and median APE and 90% coverage as asked (fp16, its stand-in), and the mean APE with
    fp16's own features; the decode-like (m < :data:`SMALL_M`) and larger GEMMs' mean APE apart."""
    predictor = predictor or Predictor.builtin("gemm")
    asked = pd.DataFrame({"m": records["m"].astype(int), "n": records["n"].astype(int), "k": records["k"].astype(int),
                          "dtype": "fp16", "device": records["device_id"].astype(str)})
    out = predictor.predict(asked)
    truth = records["runtime_ms"].to_numpy(dtype="float64")
    model = predictor.model
    own = model.predict_rows(model.features.transform_array(asked.rename(columns={"device": "device_id"})),
                             model.features.names_out())
    frame = pd.DataFrame({
        "device": asked["device"].to_numpy(),
        "ape": np.abs(out["runtime_ms"].to_numpy(dtype="float64") - truth) / truth,
        "own_ape": np.abs(np.asarray(own, dtype="float64").reshape(len(truth)) - truth) / truth,
        "covered": (out["runtime_ms_lo"].to_numpy(dtype="float64") <= truth)
                   & (truth <= out["runtime_ms_hi"].to_numpy(dtype="float64")),
        "small": records["m"].to_numpy(dtype="float64") < SMALL_M,
    })
    trained = set(model.metadata.get("data", {}).get("devices", []))
    rows: list[dict[str, Any]] = []
    for dev, g in frame.groupby("device", sort=True):
        rows.append({"device": dev, "trained_on": dev in trained, "rows": len(g), "mape": g["ape"].mean(),
                     "median_ape": g["ape"].median(), "coverage": g["covered"].mean(),
                     "mape_small_m": g.loc[g["small"], "ape"].mean(), "mape_large_m": g.loc[~g["small"], "ape"].mean(),
                     "mape_fp16_features": g["own_ape"].mean()})
    return pd.DataFrame(rows)


def adapted(records: pd.DataFrame, device: str, budgets: tuple[int, ...] = (32, 128, 512), seed: int = 0,
            predictor: Predictor | None = None) -> pd.DataFrame:
    """The built-in model adapted to ``device`` on K of its records drawn at random (``Predictor.adapt``, fp16
    as measured) and scored on every other record of it, beside the unadapted model on the same rows."""
    predictor = predictor or Predictor.builtin("gemm")
    mine = records[records["device_id"] == device].reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(mine))
    rows: list[dict[str, Any]] = []
    for k in budgets:
        fit, test = mine.iloc[order[:k]], mine.iloc[order[k:]]
        start = time.perf_counter()
        model = predictor.adapt(fit, seed=seed)
        wall = time.perf_counter() - start
        asked, truth = test[["m", "n", "k", "dtype", "device_id"]], test["runtime_ms"].to_numpy(dtype="float64")
        row: dict[str, Any] = {"device": device, "k": k, "test_rows": len(test), "adapt_s": wall}
        for name, p in (("base", predictor), ("adapted", model)):
            out = p.predict(asked)
            row[f"{name}_mape"] = float(np.mean(np.abs(out["runtime_ms"].to_numpy(dtype="float64") - truth) / truth))
            row[f"{name}_coverage"] = float(np.mean((out["runtime_ms_lo"].to_numpy(dtype="float64") <= truth)
                                                    & (truth <= out["runtime_ms_hi"].to_numpy(dtype="float64"))))
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The score table as the Markdown of benchmarks/BUILTIN_VIDUR.md."""
    lines = ["| GPU | in the built-in's training | rows | mean APE | median APE | 90% coverage | mean APE, m < "
             f"{SMALL_M} | mean APE, m >= {SMALL_M} | mean APE with fp16's own features |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.device} | {'yes' if r.trained_on else 'no'} | {r.rows:,} | {r.mape:.2%} | {r.median_ape:.2%} | "
              f"{r.coverage:.1%} | {r.mape_small_m:.2%} | {r.mape_large_m:.2%} | {r.mape_fp16_features:.2%} |"
              for r in table.itertuples()]
    return "\n".join(lines)


def adapted_markdown(table: pd.DataFrame) -> str:
    """The adaptation table as the Markdown of benchmarks/BUILTIN_VIDUR.md."""
    lines = ["| GPU | K (records adapted on) | rows scored | built-in: mean APE | 90% coverage | adapted: mean APE | "
             "90% coverage | adaptation time |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.device} | {r.k} | {r.test_rows:,} | {r.base_mape:.2%} | {r.base_coverage:.1%} | "
              f"{r.adapted_mape:.2%} | {r.adapted_coverage:.1%} | {r.adapt_s:.1f} s |" for r in table.itertuples()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--rows-per-gpu", type=int, default=None, help="draw this many records per GPU [all]")
    parser.add_argument("--adapt", default="a40", help="adapt to this GPU at K = 32, 128, 512 ('' for none)")
    args = parser.parse_args(argv)
    records = vidur_gemms(args.data_root, args.rows_per_gpu)
    print(markdown(score(records)))
    if args.adapt:
        print()
        print(adapted_markdown(adapted(records, args.adapt)))


if __name__ == "__main__":
    sys.exit(main())
