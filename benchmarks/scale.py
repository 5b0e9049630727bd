"""What perfcast's scale-out paths measure on this machine: the tables of benchmarks/SCALE.md.

Three measurements, each printed as a Markdown table (and all of them as JSON with --json):

* accuracy benchmark: wall time of the same protocols in one process, in a process pool and as Ray tasks
  on a local Ray, and whether every row (all but the wall time) is identical;
* tuning: trials per minute of one Optuna study on PostgreSQL with 1 and with 2 worker processes (from the
  trials' own start and end times), and the database transactions each trial cost;
* probing: the CPU probe's quick plan run directly and through a local Ray into two stores: records, duplicates,
  part files and bytes per record (what a fleet's store grows by).

    python benchmarks/scale.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres
    python benchmarks/scale.py --only tune --trials 12        # one section

The PostgreSQL server is any one the user may create databases on (``$PERFCAST_TEST_PG_URL`` by default,
the server .ci/run starts); each tuning run gets a fresh database on it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "datasets"
#: accuracy protocols measured: about two minutes in one process on 2 quiet cores (GPPerf, SPEC)
PROTOCOLS = ["gpperf-paper", "gpperf-unseen-shape", "spec-cpu2017-future"]
SECTIONS = ("accuracy", "tune", "probe")


def tune_config(data_root: Path) -> dict[str, Any]:
    """A real tuning job of a few seconds a trial: a random forest on the GPPerf tiled-SGEMM table."""
    space = {"max_depth": {"type": "int", "low": 2, "high": 16},
             "max_features": {"type": "float", "low": 0.2, "high": 1.0},
             "min_samples_leaf": {"type": "int", "low": 1, "high": 8}}
    return {"name": "scale-tune", "task": "gemm", "targets": ["runtime_ms", "power_w"], "seed": 11,
            "data": {"imports": [{"dataset": "gpperf-ada-matmul", "path": str(data_root / "gpperf-ada-matmul")}]},
            "model": {"name": "rf", "params": {"n_estimators": 200}},
            "tracking": {"registered_model_name": "scale-tune"}, "tune": {"prune_at": [], "space": space}}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--pg-url", default=os.environ.get("PERFCAST_TEST_PG_URL"),
                        help="PostgreSQL server URL (default: $PERFCAST_TEST_PG_URL)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="section to run (repeatable; default all)")
    parser.add_argument("--protocol", action="append", help=f"accuracy protocols (default: {', '.join(PROTOCOLS)})")
    parser.add_argument("--trials", type=int, default=8, help="trials per tuning run (default 8)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement as JSON")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ accuracy
def _accuracy_module() -> Any:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import accuracy

    return accuracy


def measure_accuracy(data_root: Path, protocols: Sequence[str]) -> dict[str, Any]:
    """The same protocols in one process, in a 2-process pool and as tasks on a 2-CPU local Ray."""
    from perfcast.experiments.registry import run
    from perfcast.experiments.results import RunConfig
    from perfcast.perf_probe.fleet import LOCAL

    accuracy = _accuracy_module()
    cfg = RunConfig(data_root.resolve())
    out: dict[str, Any] = {"protocols": list(protocols)}
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, call in (("in-process", lambda: run(protocols, cfg)),
                       ("process pool, 2 workers", lambda: accuracy.run_parallel(protocols, cfg, 2)),
                       ("local Ray, 2 CPUs", lambda: accuracy.run_ray(protocols, cfg, LOCAL, 2))):
        t0 = time.perf_counter()
        rows[name] = [r.as_json() for r in call()]
        out[name] = {"wall_s": time.perf_counter() - t0, "rows": len(rows[name])}
    base = rows["in-process"]
    for name in rows:
        out[name]["identical_rows"] = rows[name] == base
    return out


# ---------------------------------------------------------------------------------------------------- tune
def _database(server: str, name: str) -> str:
    engine = create_engine(make_url(server), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def _commits(url: str) -> int:
    """Transactions committed in the database of ``url`` so far (pg_stat_database)."""
    engine = create_engine(make_url(url))
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").scalar()
    engine.dispose()
    return int(n)


class PeakConnections:
    """Samples the connections open to one database while a block runs (pg_stat_activity, every 0.5 s)."""

    def __init__(self, url: str):
        self.engine = create_engine(make_url(url))
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.wait(0.5):
                n = conn.exec_driver_sql("SELECT count(*) - 1 FROM pg_stat_activity "
                                         "WHERE datname = current_database()").scalar()
                conn.rollback()  # a fresh snapshot each time
                self.peak = max(self.peak, int(n))

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()


def measure_tune(data_root: Path, server: str, trials: int, workdir: Path) -> dict[str, Any]:
    """Trials per minute of one PostgreSQL study with 1 and 2 workers, and transactions per trial."""
    from perfcast.training.config import parse_config
    from perfcast.training.tune import OPTUNA_SCHEMA, in_schema, tune

    cfg = parse_config(tune_config(data_root))
    out: dict[str, Any] = {"trials": trials}
    cwd = os.getcwd()
    os.chdir(workdir)  # a database tracking URI keeps artifacts in ./mlruns
    try:
        for workers in (1, 2):
            url = _database(server, f"perfcast_scale_tune_{workers}")
            before = _commits(url)
            t0 = time.perf_counter()
            with PeakConnections(url) as conns:
                res = tune(cfg, trials, tracking_uri=url, workers=workers)
            wall = time.perf_counter() - t0
            commits = _commits(url) - before
            study = optuna.load_study(study_name=cfg.study_name, storage=in_schema(url, OPTUNA_SCHEMA))
            done = [t for t in study.trials if t.datetime_complete is not None]
            span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
            numbers = [t.number for t in study.trials]
            out[f"{workers} worker(s)"] = {
                "trials": len(study.trials), "complete": res.n_complete, "span_s": span,
                "trials_per_min": 60 * len(done) / span, "command_wall_s": wall,
                "distinct_trial_numbers": len(set(numbers)) == len(numbers),
                "distinct_params": len({tuple(sorted(t.params.items())) for t in study.trials}),
                "db_commits": commits, "db_commits_per_trial": commits / len(study.trials),
                "peak_connections": conns.peak,
                "best_val_mape": res.best_value}
    finally:
        os.chdir(cwd)
    return out


# --------------------------------------------------------------------------------------------------- probe
def _footprint(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*.parquet")]
    return len(files), sum(p.stat().st_size for p in files)


def _best_of(call: Callable[[], object], n: int = 3) -> float:
    """The fastest of ``n`` timed calls (the first pays for caches and imports)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_probe(workdir: Path) -> dict[str, Any]:
    """The CPU probe's quick plan directly and through a local Ray: records, duplicates, store footprint."""
    from perfcast.records.store import RecordStore
    from perfcast.perf_probe.cpu_kernels import CpuProbe
    from perfcast.perf_probe.fleet import LOCAL, run_fleet
    from perfcast.perf_probe.sweep import run_sweep

    kw = {"max_time_s": 0.5}
    out: dict[str, Any] = {"plan": "cpu --quick", "configurations": len(CpuProbe(**kw).space(quick=True))}
    keys = ["hw_id", "params_json", "subtest"]
    for name in ("direct", "local Ray"):
        path = workdir / name.replace(" ", "_")
        t0 = time.perf_counter()
        if name == "direct":
            res = run_sweep(CpuProbe(**kw), RecordStore(path), quick=True, progress=False)
            failed = len(res.failed)
        else:
            (job,) = run_fleet(LOCAL, path, [("cpu", kw)], quick=True)
            failed = len(job.sweeps[0].failed) if job.error is None else -1
        wall = time.perf_counter() - t0
        r0 = time.perf_counter()
        df = RecordStore(path).read("cpu_bench")  # what every sweep's resume check reads first
        read_s = time.perf_counter() - r0
        ids_s = _best_of(lambda: RecordStore(path).record_ids("cpu_bench"))  # every append reads it under the lock
        files, nbytes = _footprint(path)
        RecordStore(path).compact("cpu_bench")  # one part instead of one per configuration
        compact_ids_s = _best_of(lambda: RecordStore(path).record_ids("cpu_bench"))
        compact_bytes = _footprint(path)[1]
        out[name] = {"wall_s": wall, "records": len(df), "configurations": int(df["params_json"].nunique()),
                     "duplicates": int(df.duplicated(keys).sum()), "failed": failed, "part_files": files,
                     "bytes": nbytes, "bytes_per_record": nbytes / max(1, len(df)), "read_s": read_s,
                     "record_ids_s": ids_s, "compacted_bytes_per_record": compact_bytes / max(1, len(df)),
                     "compacted_record_ids_s": compact_ids_s}
    return out


# -------------------------------------------------------------------------------------------------- output
def markdown(results: dict[str, Any]) -> str:
    """The measured tables of SCALE.md."""
    lines: list[str] = []
    if "accuracy" in results:
        acc = results["accuracy"]
        lines += [f"Accuracy benchmark, protocols {', '.join(acc['protocols'])} (load average before: "
                  f"{acc['load_before']:.1f}):", "",
                  "| run | wall time | rows | identical rows |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['wall_s']:.0f} s | {v['rows']} | {'yes' if v['identical_rows'] else 'NO'} |"
                  for k, v in acc.items() if isinstance(v, dict)]
        lines.append("")
    if "tune" in results:
        lines += [f"Tuning, {results['tune']['trials']} trials of one study on PostgreSQL (load average before: "
                  f"{results['tune']['load_before']:.1f}):", "",
                  "| workers | trials | trials/min | trial-phase span | whole command | distinct trial numbers | "
                  "distinct parameter sets | DB commits/trial | peak DB connections |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['trials']} | {v['trials_per_min']:.1f} | {v['span_s']:.0f} s | "
                  f"{v['command_wall_s']:.0f} s | {'yes' if v['distinct_trial_numbers'] else 'NO'} | "
                  f"{v['distinct_params']} | {v['db_commits_per_trial']:.0f} | {v['peak_connections']} |"
                  for k, v in results["tune"].items() if isinstance(v, dict)]
        lines.append("")
    if "probe" in results:
        pr = results["probe"]
        lines += [f"Probe, plan `{pr['plan']}` ({pr['configurations']} configurations; load average before: "
                  f"{pr['load_before']:.1f}):", "",
                  "| run | wall time | configurations | records | duplicates | failed | part files | bytes/record | "
                  "store read | record ids read (each append) | compacted: bytes/record, record ids read |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['wall_s']:.0f} s | {v['configurations']} | {v['records']} | {v['duplicates']} | "
                  f"{v['failed']} | {v['part_files']} | {v['bytes_per_record']:.0f} | {1e3 * v['read_s']:.0f} ms | "
                  f"{1e3 * v['record_ids_s']:.0f} ms | {v['compacted_bytes_per_record']:.0f}, "
                  f"{1e3 * v['compacted_record_ids_s']:.0f} ms |"
                  for k, v in pr.items() if isinstance(v, dict)]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sections = args.only or list(SECTIONS)
    if "tune" in sections and not args.pg_url:
        raise SystemExit("the tuning section needs a PostgreSQL server: pass --pg-url or set PERFCAST_TEST_PG_URL")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="perfcast-scale-") as tmp:
        for section in sections:
            load = os.getloadavg()[0]  # other work on the machine: the wall times mean little without it
            if section == "accuracy":
                results[section] = measure_accuracy(args.data_root, args.protocol or PROTOCOLS)
            elif section == "tune":
                results[section] = measure_tune(args.data_root, args.pg_url, args.trials, Path(tmp))
            else:
                results[section] = measure_probe(Path(tmp))
            results[section]["load_before"] = load
    print(markdown(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
