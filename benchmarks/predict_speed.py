"""How fast a saved perfcast model loads and predicts, beside a plain scikit-learn forest on one row.

Trains the registered model (default: ``hybrid``, LightGBM defaults) with calibrated intervals on aiconfigurator
bf16 GEMM latencies, saves it as a bundle, then measures with feature computation, intervals and OOD checks
included:

* load: ``Predictor.load(dir)`` in this process (median of 5), and a fresh ``python`` process importing perfcast
  and loading the model (what ``perfcast predict`` pays once);
* one config: median latency of ``predict(dict)`` over distinct shapes, with its parts (features, trees,
  intervals + OOD) timed on their own;
* batch: configurations per second of ``predict(DataFrame)`` on 100,000 rows, with 1 and 2 tree threads;
* reference: ``RandomForestRegressor(100).predict`` on one row of GPPerf's nine features, the way the GPPerf
  paper's model is used.

    python benchmarks/predict_speed.py [--model hybrid] [--rows 20000] [--batch 100000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor

from perfcast.datasets.importers import get_importer
from perfcast.models import make_model
from perfcast.models.bundle import save_model
from perfcast.models.intervals import ConformalRegressor
from perfcast.predictor import Predictor

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TARGETS = {"load": "< 1 s", "one": "<= 1 ms", "batch": ">= 100,000 /s"}


def median_seconds(fn: Callable[[int], object], n: int) -> float:
    """Median wall time of ``fn(i)`` over ``n`` calls (after one warm-up call)."""
    fn(0)
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_records(root: Path, rows: int, seed: int) -> pd.DataFrame:
    imp, data = get_importer("aiconfigurator"), root / "aiconfigurator"
    units = [u for u in imp.units(data) if "/gemm/trtllm/" in u.as_posix()]
    df = pd.concat([imp.load(data, u)["gemm"] for u in units], ignore_index=True)
    return df[df["dtype"] == "bfloat16"].sample(rows, random_state=seed).reset_index(drop=True)


def forest_one_row(root: Path) -> float:
    """Median seconds of a 100-tree forest predicting one row of GPPerf's features (m, n, k, blocks, AI, bytes,
    FLOPs) after fitting on the CUTLASS sweep, as the paper does."""
    imp, data = get_importer("gpperf-cutlass"), root / "gpperf-cutlass"
    df = imp.load(data, imp.units(data)[0])["gemm"]
    m, n, k = (df[c].astype(float) for c in ("m", "n", "k"))
    flops, nbytes = 2 * m * n * k, 4 * (m * k + k * n + m * n)
    X = np.column_stack([m, n, k, df["x_block_m"], df["x_block_n"], df["x_block_k"], flops / nbytes, nbytes, flops])
    forest = RandomForestRegressor(n_estimators=100, random_state=42).fit(X, df["runtime_ms"])
    rows = X[np.random.default_rng(0).integers(0, len(X), 200)]
    return median_seconds(lambda i: forest.predict(rows[i % len(rows)][None, :]), 200)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="hybrid")
    ap.add_argument("--rows", type=int, default=20_000, help="training rows (aiconfigurator bf16 GEMMs)")
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    args = ap.parse_args()

    records = gemm_records(args.data_root, args.rows, seed=0)
    start = time.perf_counter()
    model = ConformalRegressor(make_model(args.model, "gemm", ["runtime_ms"])).fit(records, records[["runtime_ms"]])
    fit_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(model, "gemm", records, Path(tmp) / "model")
        load_s = median_seconds(lambda i: Predictor.load(path), 5)
        cold = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); from perfcast import "
                               f"Predictor; Predictor.load({str(path)!r}); print(time.perf_counter() - t)"],
                              check=True, capture_output=True, text=True)
        cold_s = float(cold.stdout.strip())
        p1, p2 = Predictor.load(path, threads=1), Predictor.load(path, threads=2)

    shapes = gemm_records(args.data_root, 500, seed=1)[["m", "n", "k", "dtype", "device_id"]]
    configs = shapes.to_dict("records")
    one_s = median_seconds(lambda i: p1.predict(configs[i % len(configs)]), 300)
    frames = [pd.DataFrame([c]) for c in configs]
    feats = [p1.model.features.transform(f) for f in frames]
    feat_s = median_seconds(lambda i: p1.model.features.transform(frames[i % len(frames)]), 300)
    tree_s = median_seconds(lambda i: p1.model.predict_features(feats[i % len(feats)]), 300)
    cal = p1.model.calibration

    def rest(i: int) -> None:
        f, F = frames[i % len(frames)], feats[i % len(feats)]
        cal.bounds(np.ones((1, 1)), cal.noise(f, 1))
        p1.model.domain.check(f, F)

    rest_s = median_seconds(rest, 300)
    batch = gemm_records(args.data_root, args.batch, seed=2)[["m", "n", "k", "dtype", "device_id"]]
    rates = {}
    for threads, pred in ((1, p1), (2, p2)):
        start = time.perf_counter()
        pred.predict(batch)
        rates[threads] = len(batch) / (time.perf_counter() - start)
    forest_s = forest_one_row(args.data_root)

    print(f"model: {args.model} (runtime_ms, 90% intervals), trained on {len(records)} aiconfigurator bf16 GEMMs "
          f"in {fit_s:.1f} s (calibration folds included)\n")
    print("| measure | target | measured |\n|---|---|---|")
    print(f"| load, in process (median of 5) | {TARGETS['load']} | {load_s:.3f} s |")
    print(f"| load, fresh process incl. imports | - | {cold_s:.2f} s |")
    print(f"| one config, predict(dict) median | {TARGETS['one']} | {one_s * 1e3:.2f} ms |")
    print(f"|   of which features (1 row) | - | {feat_s * 1e3:.2f} ms |")
    print(f"|   of which trees | - | {tree_s * 1e3:.3f} ms |")
    print(f"|   of which intervals + OOD check | - | {rest_s * 1e3:.2f} ms |")
    for threads, rate in rates.items():
        print(f"| batch of {len(batch):,}, {threads} tree thread(s) | {TARGETS['batch']} | {rate:,.0f} /s |")
    print(f"| sklearn RandomForest(100).predict, 1 row (GPPerf) | - | {forest_s * 1e3:.2f} ms |")


if __name__ == "__main__":
    main()
