"""Batch throughput of a saved GEMM bundle, part by part, in wall and CPU time (issue 18's batch target).

Loads a bundle (default: the default hybrid, ``make_model("hybrid")`` with LightGBM's defaults, trained on
20,000 aiconfigurator bf16 GEMMs with calibrated intervals and saved to a temporary folder, as
benchmarks/predict_speed.py does; ``--bundle gemm`` / ``attention`` for the built-in ones, or a path), predicts a
batch of real configurations (``--batch`` rows of the same data, seed 2) and reports, per thread count:

* the whole ``Predictor.predict(DataFrame)`` (features, trees, intervals, OOD check) in configurations per second;
* the batch feature computation (``features.transform``) in µs per row;
* the trees (+ head) alone on the batch's features (``predict_features``), per second and in ns per tree and row;

each as the median of ``--repeat`` runs, wall time and CPU time of this process (``time.process_time``; the
machine is shared, so CPU time is the comparable figure: it counts the threads' work, not the waiting). Then
every LightGBM forest of the bundle is walked by :mod:`perfcast.models.persistence.compiled` and by LightGBM's
``Booster.predict`` on the batch's feature rows and compared bit for bit. Results: benchmarks/PREDICT_SPEED_BATCH.md.

    python benchmarks/batch_speed.py [--bundle PATH|gemm|attention] [--batch 100000] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_speed import DEFAULT_DATA_ROOT, forest_agreement, gemm_records  # noqa: E402 - as predict_speed.py

from perfcast.builtin import bundle_path  # noqa: E402
from perfcast.datasets.importers import get_importer  # noqa: E402
from perfcast.models import make_model  # noqa: E402
from perfcast.models.persistence.bundle import save_model  # noqa: E402
from perfcast.models.uncertainty.intervals import ConformalRegressor  # noqa: E402
from perfcast.predictor import Predictor  # noqa: E402


def median(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) of ``fn()`` over ``repeat`` runs after a warm-up
    (medians: on a shared machine the best run is luck, the median what a user gets)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def attention_batch(root: Path, rows: int) -> pd.DataFrame:
    imp, data = get_importer("aiconfigurator"), root / "aiconfigurator"
    units = [u for u in imp.units(data) if "/attention/" in u.as_posix()]
    df = pd.concat([imp.load(data, u)["attention"] for u in units], ignore_index=True)
    columns = ["phase", "batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "dtype", "kv_dtype", "device_id"]
    return df[columns].sample(rows, random_state=2, replace=len(df) < rows).reset_index(drop=True)


def trees_of(bundle: Path) -> list[Path]:
    return sorted(bundle.rglob("lightgbm.txt"))


def default_bundle(root: Path, rows: int, folder: Path) -> Path:
    """The default hybrid (``make_model("hybrid")``, calibrated intervals) trained on ``rows`` aiconfigurator bf16
    GEMMs (seed 0) and saved in ``folder``, as benchmarks/predict_speed.py measures it."""
    records = gemm_records(root, rows, seed=0)
    model = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {})).fit(records, records[["runtime_ms"]])
    return save_model(model, "gemm", records, folder / "model")


def gemm_batch(root: Path, rows: int) -> pd.DataFrame:
    """The measured batch: ``rows`` real configurations (seed 2), the columns a caller passes."""
    return gemm_records(root, rows, seed=2)[["m", "n", "k", "dtype", "device_id"]]


def run(bundle: Path, batch: pd.DataFrame, threads: list[int], repeat: int) -> None:
    n_trees = sum(int(p.read_text().count("\nTree=")) for p in trees_of(bundle))
    print(f"bundle {bundle} ({n_trees} trees in {len(trees_of(bundle))} forests), batch of {len(batch):,}")
    print("| threads | whole predict /s (wall) | whole /s (CPU) | features µs/row (CPU) | trees /s (wall) "
          "| trees /s (CPU) | trees ns per tree-row (CPU) | compiled = Booster.predict |")
    print("|---|---|---|---|---|---|---|---|")
    for t in threads:
        p = Predictor.load(bundle, threads=t)
        records = p._records(batch)
        F = p.model.features.transform(records)
        whole = median(lambda p=p: p.predict(batch), repeat)
        feats = median(lambda p=p, r=records: p.model.features.transform(r), repeat)
        trees = median(lambda p=p, F=F: p.model.predict_features(F), repeat)
        n = len(batch)
        forests, differ, _ = forest_agreement(bundle, F, t)
        print(f"| {t} | {n / whole[0]:,.0f} | {n / whole[1]:,.0f} | {feats[1] / n * 1e6:.2f} | {n / trees[0]:,.0f} "
              f"| {n / trees[1]:,.0f} | {trees[1] / n / n_trees * 1e9:.2f} | {forests - differ} of {forests} |")


def arguments(doc: str, bundles: str) -> argparse.ArgumentParser:
    """The options both batch benchmarks take (this script and walk_variants.py)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--bundle", default=None, help=f"a bundle folder or {bundles} (default: train the default hybrid)")
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=20_000, help="training rows when no bundle is given")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    return ap


def on_bundle(args: argparse.Namespace, measure: Callable[[Path], None]) -> None:
    """``measure(bundle)`` for ``--bundle`` (a folder or a built-in's name; else the default hybrid trained here),
    between the machine's load averages."""
    with open("/proc/loadavg") as f:
        print("load average before:", " ".join(f.read().split()[:3]))
    if args.bundle is None:
        with tempfile.TemporaryDirectory() as tmp:
            measure(default_bundle(args.data_root, args.rows, Path(tmp)))
    else:
        measure(bundle_path(args.bundle) if args.bundle in ("gemm", "attention") else Path(args.bundle))
    with open("/proc/loadavg") as f:
        print("load average after:", " ".join(f.read().split()[:3]))


def main() -> None:
    ap = arguments(__doc__, "'gemm' or 'attention'")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    batch = (attention_batch if args.bundle == "attention" else gemm_batch)(args.data_root, args.batch)
    on_bundle(args, lambda bundle: run(bundle, batch, args.threads, args.repeat))


if __name__ == "__main__":
    main()
