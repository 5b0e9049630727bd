"""How fast a saved perfcast model loads and predicts, beside a plain scikit-learn forest on one row.

Trains the registered model (default: ``hybrid``) twice with calibrated intervals on aiconfigurator bf16 GEMM
latencies, with LightGBM's defaults and with the compact :data:`SERVING` preset, saves each as a bundle and
measures, with feature computation, intervals and OOD checks included:

* accuracy: mean APE on the GB200's rows of the same model trained without them (unseen hardware), so the
  speed of the serving preset is shown beside what it costs;
* load: ``Predictor.load(dir)`` in this process (median of 5), and a fresh ``python`` process importing perfcast
  and loading the model (what ``perfcast predict`` pays once): its wall time and its CPU time (user + sys of
  the child, which other processes on a shared machine inflate far less), medians of 3; and the same process predicting one
  config after loading (numba's cached kernels and the spec sheets are read on that first call);
* one config (after :func:`warm_up`: the steady state of a serving process): median latency of ``predict(dict)``
  over distinct real configurations, and its mean CPU time per call, with its parts on the path a request takes (feature rows of the request's
  :class:`~perfcast.features.records.Records` as an array, the heads' ``predict_rows``, intervals + OOD on those
  rows) timed on their own;
* batch: configurations per second of ``predict(DataFrame)`` on 100,000 rows, with 1 and 2 tree threads, and
  of the trees alone on the batch's feature frame (the floor of the batch rate);
* reference: ``RandomForestRegressor(100).predict`` on one row of GPPerf's nine features, the way the GPPerf
  paper's model is used. Compare ratios to it: the 2-core machine is shared, so absolute times move with load;
* the built-in GEMM and attention models (``Predictor.load`` of perfcast/builtin_models/<task>, sibling-transfer
  bundles; attention on real aiconfigurator attention configurations), and an adapted bundle (the built-in
  GEMM model adapted to the L40S on 128 planned real measurements, ``Predictor.adapt`` + ``save_adapted``),
  measured the same way;
* agreement: every LightGBM forest of each bundle walked by :mod:`perfcast.models.persistence.compiled` and by
  LightGBM's own ``Booster.predict`` on the batch's 100,000 feature rows, compared bit for bit.

Every time is also given as a multiple of the forest's one-row time (``x RF``; a rate as its time per config),
the ratio that survives a busy machine; a CPU time as a multiple of the forest's one-row CPU time (``x RF CPU``). Results: benchmarks/PREDICT_SPEED.md.

    python benchmarks/predict_speed.py [--model hybrid] [--rows 20000] [--batch 100000]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor

from perfcast.builtin import bundle_path
from perfcast.datasets.importers import get_importer
from perfcast.features.records import Records
from perfcast.models import make_model
from perfcast.models.persistence.adapted import adapt_loaded, save_adapted
from perfcast.models.persistence.bundle import save_model
from perfcast.models.persistence.compiled import compile_lightgbm
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.perf_probe.plan import adaptation_plan
from perfcast.predictor import Predictor

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
TARGETS = {"cold": "<= 1 s", "one": "<= 0.05 x RF", "batch": ">= 1,000,000 /s"}
#: the compact serving preset: a quarter as many trees of half as many leaves at twice the learning rate
#: (``make_model("hybrid", task, targets, SERVING)``); ~10x the batch rate for ~0.5 points of unseen-device APE
SERVING: dict[str, Any] = {"n_estimators": 150, "num_leaves": 31, "learning_rate": 0.1}
#: the device left out of training for the accuracy column (a GPU the other rows' devices do not include)
HELD_OUT = "gb200"
#: the request columns of each task's configurations
CONFIG_COLUMNS = {"gemm": ["m", "n", "k", "dtype", "device_id"],
                  "attention": ["phase", "batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "dtype",
                                "kv_dtype", "device_id"]}
#: the device the adapted bundle is adapted to, and how many planned measurements it is adapted on
ADAPT_DEVICE, ADAPT_ROWS = "l40s", 128
#: the adaptation setting configs/aiconfigurator_adapt.toml's benchmark chose at K = 128 and 512 (``krige``), and the
#: product's default (neither the smooth shape term nor the kriging offered)
KRIGED: dict[str, Any] = {"smooth": True, "krige": -1.0}
UNKRIGED: dict[str, Any] = {"smooth": False, "krige": None}


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


def attention_records(root: Path, rows: int, seed: int) -> pd.DataFrame:
    imp, data = get_importer("aiconfigurator"), root / "aiconfigurator"
    units = [u for u in imp.units(data) if "/attention/" in u.as_posix()]
    df = pd.concat([imp.load(data, u)["attention"] for u in units], ignore_index=True)
    return df.sample(rows, random_state=seed).reset_index(drop=True)


def requests(root: Path, task: str, rows: int, seed: int) -> list[dict[str, Any]]:
    """``rows`` real configurations of ``task`` as ``predict(dict)`` requests (missing fields left out)."""
    df = (gemm_records if task == "gemm" else attention_records)(root, rows, seed)[CONFIG_COLUMNS[task]]
    return [{k: v for k, v in c.items() if not pd.isna(v)} for c in df.to_dict("records")]


def adapted_bundle(root: Path, path: Path, rows: int = ADAPT_ROWS, **settings: Any) -> Path:
    """The built-in GEMM model adapted to :data:`ADAPT_DEVICE` on ``rows`` planned real measurements (``settings``:
    :func:`~perfcast.models.persistence.adapted.adapt_loaded`'s, e.g. ``smooth``, ``krige``; none: the product's
    defaults)."""
    df = gemm_records(root, 100_000, seed=3)
    device = df[df["device_id"] == ADAPT_DEVICE].reset_index(drop=True)
    picked = device.index.isin(adaptation_plan(device.drop(columns=["runtime_ms"]), "gemm", rows))
    base = Predictor.builtin("gemm")
    records = base._records(device[picked].reset_index(drop=True))
    return save_adapted(adapt_loaded(base.model, records, **settings)[0], path)


def fresh_process(code: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + sys) of a new ``python -c code`` (medians of 3 runs)."""
    walls, cpus = [], []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process, all its threads) of one call of ``fn``: on a shared machine the
    wall time measures the other processes too, the CPU time what the call costs."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def cpu_per_call(fn: Callable[[int], object], n: int) -> float:
    """Mean CPU seconds of ``fn(i)`` over ``n`` calls (after one warm-up call)."""
    fn(0)
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n


def warm_up(pred: Predictor, configs: list[dict[str, Any]]) -> None:
    """Serve ``configs`` once as a batch and once each before timing one config: a scheduler's process serves many
    requests, so what it pays per request is the steady state (the Numba kernels loaded, which a fresh process's
    first 256 rows walk without, and the per-device and per-dtype memos filled), not its first calls."""
    pred.predict(pd.DataFrame(configs))
    for config in configs:
        pred.predict(config)


def forest_agreement(bundle: Path, F: pd.DataFrame, threads: int = 2) -> tuple[int, int, int]:
    """(forests, forests whose compiled sums differ from LightGBM's ``Booster.predict`` in any bit, trees) over
    every LightGBM forest of ``bundle``, on the feature rows ``F`` (each forest reads the columns it was trained on)."""
    forests = differ = trees = 0
    for path in sorted(bundle.rglob("lightgbm.txt")):
        text = path.read_text()
        forest = compile_lightgbm(text, str(path))
        if forest is None:
            continue
        booster = lgb.Booster(model_str=text)
        X = F[booster.feature_name()].to_numpy(dtype="float64")
        forests += 1
        trees += len(forest.roots)
        differ += not np.array_equal(forest.predict(X, threads), booster.predict(X, num_threads=threads))
    return forests, differ, trees


def forest_one_row(root: Path) -> tuple[float, float]:
    """Median wall seconds, and mean CPU seconds, of a 100-tree forest predicting one row of GPPerf's features
    (m, n, k, blocks, AI, bytes, FLOPs) after fitting on the CUTLASS sweep, as the paper does."""
    imp, data = get_importer("gpperf-cutlass"), root / "gpperf-cutlass"
    df = imp.load(data, imp.units(data)[0])["gemm"]
    m, n, k = (df[c].astype(float) for c in ("m", "n", "k"))
    flops, nbytes = 2 * m * n * k, 4 * (m * k + k * n + m * n)
    X = np.column_stack([m, n, k, df["x_block_m"], df["x_block_n"], df["x_block_k"], flops / nbytes, nbytes, flops])
    forest = RandomForestRegressor(n_estimators=100, random_state=42).fit(X, df["runtime_ms"])
    rows = X[np.random.default_rng(0).integers(0, len(X), 200)]
    one = lambda i: forest.predict(rows[i % len(rows)][None, :])  # noqa: E731
    return median_seconds(one, 200), cpu_per_call(one, 200)


def unseen_device_ape(records: pd.DataFrame, model: str, params: dict[str, Any]) -> float:
    """Mean APE (%) of ``model`` trained without :data:`HELD_OUT` on that device's rows (unseen hardware)."""
    held = (records["device_id"] == HELD_OUT).to_numpy()
    train, test = records[~held], records[held]
    fitted = make_model(model, "gemm", ["runtime_ms"], params).fit(train, train[["runtime_ms"]])
    pred = np.asarray(fitted.predict(test), dtype="float64").ravel()
    return float(np.mean(np.abs(pred / test["runtime_ms"].to_numpy() - 1.0)) * 100)


def measure(args: argparse.Namespace, records: pd.DataFrame, params: dict[str, Any]) -> dict[str, float]:
    """Every measure of the table for ``args.model`` with ``params`` (times in seconds, rates per second)."""
    out: dict[str, float] = {"ape": unseen_device_ape(records, args.model, params)}
    start = time.perf_counter()
    model = ConformalRegressor(make_model(args.model, "gemm", ["runtime_ms"], params)).fit(
        records, records[["runtime_ms"]])
    out["fit"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        return out | speed(args, save_model(model, "gemm", records, Path(tmp) / "model"))


def speed(args: argparse.Namespace, path: Path, task: str = "gemm") -> dict[str, float]:
    """Load, one-config and batch measures of the ``task`` bundle at ``path``, and its forests' agreement."""
    out = {"load": median_seconds(lambda i: Predictor.load(path), 5)}
    load = f"from perfcast import Predictor; p = Predictor.load({str(path)!r})"
    out["cold"], out["cold_cpu"] = fresh_process(load)
    p1, p2 = Predictor.load(path, threads=1), Predictor.load(path, threads=2)

    configs = requests(args.data_root, task, 500, seed=1)
    out["first_cpu"] = fresh_process(f"{load}; p.predict({configs[0]!r})")[1]
    warm_up(p1, configs)
    out["one"] = median_seconds(lambda i: p1.predict(configs[i % len(configs)]), 300)
    out["one_cpu"] = cpu_per_call(lambda i: p1.predict(configs[i % len(configs)]), 300)
    served = [p1._one_row(c) for c in configs]  # a request's columns (and the catalog its device was found in)

    def request(i: int) -> Records:
        """Config ``i`` as predict(dict) hands it to the features (a predictor before h-onecall3 gives no catalog)."""
        row, _, *cat = served[i % len(served)]
        return Records(row, **({"catalog": cat[0]} if cat else {}))

    frames = [request(i) for i in range(len(served))]
    names = p1.model.features.names_out()
    feats = [p1.model.features.transform_array(f) for f in frames]  # the served path's feature rows
    out["features"] = median_seconds(lambda i: p1.model.features.transform_array(request(i)), 300)
    out["trees"] = median_seconds(lambda i: p1.model.predict_rows(feats[i % len(feats)], names), 300)
    cal = p1.model.calibration

    def rest(i: int) -> None:
        f, F = frames[i % len(frames)], feats[i % len(feats)]
        cal.bounds(np.ones((1, len(p1.targets))), cal.noise(f, 1), features=F, names=names)
        p1.model.domain.check(f, F, names)

    out["rest"] = median_seconds(rest, 300)
    batch = pd.DataFrame(requests(args.data_root, task, args.batch, seed=2))
    for threads, pred in ((1, p1), (2, p2)):
        pred.predict(batch.iloc[:1000])  # warm: the compiled walker's first call loads numba's cache
        walls, cpus = zip(*(timed(lambda: pred.predict(batch)) for _ in range(args.repeats)), strict=True)
        out[f"batch{threads}"] = len(batch) / statistics.median(walls)
        out[f"batch{threads}_cpu"] = len(batch) / statistics.median(cpus)
    batch_features = p1.model.features.transform(p1._records(batch))
    start = time.perf_counter()
    p1.model.predict_features(batch_features)
    out["trees_rate"] = len(batch) / (time.perf_counter() - start)
    out["forests"], out["differ"], out["n_trees"] = forest_agreement(path, batch_features)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="hybrid")
    ap.add_argument("--rows", type=int, default=20_000, help="training rows (aiconfigurator bf16 GEMMs)")
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    ap.add_argument("--repeats", type=int, default=1, help="batch predictions timed per bundle (their median)")
    ap.add_argument("--adapted", action="store_true",
                    help=f"only the built-in GEMM model (the base) and its adaptations on {ADAPT_ROWS} and 512 rows: "
                         f"with neither the smooth shape term nor the kriging ({UNKRIGED}), and with both "
                         f"({KRIGED}, configs/aiconfigurator_adapt.toml's krige setting)")
    args = ap.parse_args()

    records = gemm_records(args.data_root, args.rows, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.adapted:
            runs = {"built-in gemm (base)": speed(args, bundle_path("gemm"))}
            for k in (ADAPT_ROWS, 512):
                for name, settings in (("neither", UNKRIGED), ("smooth + kriged", KRIGED)):
                    runs[f"{ADAPT_DEVICE}, K={k}, {name}"] = speed(args, adapted_bundle(
                        args.data_root, Path(tmp) / f"{name[0]}{k}", k, **settings))
        else:
            runs = {"default": measure(args, records, {}), "serving": measure(args, records, SERVING),
                    "built-in gemm": speed(args, bundle_path("gemm")),
                    "built-in attention": speed(args, bundle_path("attention"), "attention"),
                    f"adapted ({ADAPT_DEVICE})": speed(args, adapted_bundle(args.data_root, Path(tmp) / "adapted"))}
    forest_s, forest_cpu = forest_one_row(args.data_root)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]

    def rf(seconds: float, anchor: float = forest_s) -> str:
        return f"{seconds / anchor:.3f} x RF"

    print(f"model: {args.model} (runtime_ms, 90% intervals) on {len(records)} aiconfigurator bf16 GEMMs; default "
          f"= LightGBM defaults, serving = {SERVING}; built-in = perfcast/builtin_models/<task>; adapted = built-in "
          f"gemm adapted to {ADAPT_DEVICE} on {ADAPT_ROWS} planned measurements; load average "
          f"{' '.join(load)}\n")
    rows = [
        ("mean APE on unseen " + HELD_OUT + " (trained without it)", "-",
         lambda r: f"{r['ape']:.2f} %" if "ape" in r else "-"),
        ("fit incl. calibration folds", "-", lambda r: f"{r['fit']:.1f} s" if "fit" in r else "-"),
        ("load, in process (median of 5)", "-", lambda r: f"{r['load']:.3f} s"),
        ("load, fresh process incl. imports (median of 3)", TARGETS["cold"], lambda r: f"{r['cold']:.2f} s"),
        ("  the same, CPU time user + sys", TARGETS["cold"], lambda r: f"{r['cold_cpu']:.2f} s"),
        ("  load and predict one config, CPU time user + sys", "-", lambda r: f"{r['first_cpu']:.2f} s"),
        ("one config, predict(dict) median (after warm-up)", TARGETS["one"], lambda r: f"{r['one'] * 1e3:.3f} ms ({rf(r['one'])})"),
        ("  the same, mean CPU time per call", TARGETS["one"],
         lambda r: f"{r['one_cpu'] * 1e3:.3f} ms ({rf(r['one_cpu'], forest_cpu)} CPU)"),
        ("  of which features (1 row)", "-", lambda r: f"{r['features'] * 1e3:.3f} ms ({rf(r['features'])})"),
        ("  of which trees (+ transfer)", "-", lambda r: f"{r['trees'] * 1e3:.3f} ms ({rf(r['trees'])})"),
        ("  of which intervals + OOD check", "-", lambda r: f"{r['rest'] * 1e3:.3f} ms ({rf(r['rest'])})"),
        (f"batch of {args.batch:,}, 1 tree thread (median of {args.repeats})", "-",
         lambda r: f"{r['batch1']:,.0f} /s ({rf(1 / r['batch1'])})"),
        ("  the same, CPU time of the process", "-", lambda r: f"{r['batch1_cpu']:,.0f} /s"),
        (f"batch of {args.batch:,}, 2 tree threads (median of {args.repeats})", TARGETS["batch"],
         lambda r: f"{r['batch2']:,.0f} /s ({rf(1 / r['batch2'])})"),
        ("  the same, CPU time of the process (all threads)", "-", lambda r: f"{r['batch2_cpu']:,.0f} /s"),
        ("  trees (+ transfer) alone on the batch's features, 1 thread", "-",
         lambda r: f"{r['trees_rate']:,.0f} /s ({rf(1 / r['trees_rate'])})"),
        ("  the same per tree and row (all trees of the bundle)", "-",
         lambda r: f"{1e9 / (r['trees_rate'] * r['n_trees']):.1f} ns ({int(r['n_trees'])} trees)"),
        (f"compiled = Booster.predict bit for bit on {args.batch:,} rows", "all forests",
         lambda r: f"{int(r['forests'] - r['differ'])} of {int(r['forests'])} forests"),
    ]
    print("| measure | target | " + " | ".join(runs) + " |\n|---|---|" + "---|" * len(runs))
    for name, target, cell in rows:
        print(f"| {name} | {target} | " + " | ".join(cell(r) for r in runs.values()) + " |")
    print(f"| sklearn RandomForest(100).predict, 1 row (GPPerf) = RF | - | {forest_s * 1e3:.2f} ms (CPU "
          f"{forest_cpu * 1e3:.2f} ms) |" + " |" * (len(runs) - 1))
    if args.adapted:  # each bundle's times over its base's (issue 13: "predicts as fast as its base")
        base = next(iter(runs.values()))
        for name, key, slower in (("one config median", "one", True), ("one config CPU", "one_cpu", True),
                                  ("batch, 1 thread", "batch1", False), ("batch, 2 threads", "batch2", False),
                                  ("batch CPU, 1 thread", "batch1_cpu", False),
                                  ("batch CPU, 2 threads", "batch2_cpu", False)):
            print(f"| time over the base's: {name} | - | " + " | ".join(
                f"{(r[key] / base[key] if slower else base[key] / r[key]):.2f}x" for r in runs.values()) + " |")


if __name__ == "__main__":
    main()
