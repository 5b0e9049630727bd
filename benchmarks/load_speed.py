"""How long a fresh process takes to load a perfcast model, and to answer its first configuration (issue 18).

A fresh ``python -c "from perfcast import Predictor; Predictor.load(DIR)"`` is what ``perfcast predict`` and
every serving worker pay on start. For each bundle kind (the built-in GEMM and attention models, by path and
by ``Predictor.builtin``; the built-in GEMM adapted to the L40S on 128 planned real measurements; a hybrid of
LightGBM's defaults trained on 5,000 real bf16 GEMMs) this runs ``--runs`` fresh processes of each of

* ``load``: import perfcast and load the bundle;
* ``load + 1``: the same, then predict one real configuration of the bundle's task;

and the README's ``perfcast predict --set m=4096 ... --set device=h100_sxm`` as the console script runs it (the
issue's "later call": every process after a discarded first one, so caches and bytecode exist), and reports
medians of their wall time and CPU time (user + sys of the child: on a shared 2-core machine the wall time mostly
measures the other processes). Floors for scale: ``python -c pass`` and
``import numpy, pandas``. With ``--base DIR`` (a checkout of another commit, e.g. the branch's base) every
process is also run with ``PYTHONPATH=DIR``, alternating with this checkout, and each ``load + 1`` process
prints its prediction, which must be the same in both (repr of the result dict). Results:
benchmarks/PREDICT_SPEED.md, load section.

    python benchmarks/load_speed.py [--runs 7] [--base /path/to/base/checkout] [--only TEXT]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perfcast.builtin import bundle_path
from perfcast.models import make_model
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from predict_speed import DEFAULT_DATA_ROOT, adapted_bundle, gemm_records, requests

HERE = Path(__file__).resolve().parents[1]


def run(code: str, pythonpath: Path) -> tuple[float, float, str]:
    """(wall s, CPU s user + sys, stdout) of one fresh ``python -c code`` run in ``pythonpath`` (``-c`` puts the
    working directory first on the path) with it also on ``PYTHONPATH``.

    ``PYTHONDONTWRITEBYTECODE`` is dropped: an installed package runs from cached bytecode (pip compiles it at
    install, an editable checkout on first import), which is the case a user's later call is; some development
    machines set the variable."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(pythonpath)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env,
                         cwd=pythonpath)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, out.stdout


#: the README's one-line prediction, as the ``perfcast`` console script runs it
README_PREDICT = ["predict", "--set", "m=4096", "--set", "n=4096", "--set", "k=4096", "--set", "dtype=bf16",
                  "--set", "device=h100_sxm"]
#: what the ``perfcast`` console script does (pip's entry-point shim), with ``argv``
CLI = """import sys
sys.argv = ["perfcast", *{argv!r}]
from perfcast.cli import app
app()"""

#: a fresh process's CPU time (``time.process_time``) after each step of loading the built-in GEMM model and
#: predicting one configuration (pandas is imported by whichever step needs it: none, since perfcast.lazy)
PHASES = """import time
marks = [time.process_time()]
import numpy
marks.append(time.process_time())
from perfcast import Predictor
Predictor.load
marks.append(time.process_time())
p = Predictor.builtin("gemm")
marks.append(time.process_time())
p.predict({config!r})
marks.append(time.process_time())
print(" ".join(str(b - a) for a, b in zip(marks, marks[1:])))"""
PHASE_NAMES = ("import numpy", "import perfcast.predictor (the rest)", "Predictor.builtin('gemm')",
               "first predict(dict)")


def phases(runs: int, trees: dict[str, Path], config: dict) -> list[dict[str, object]]:
    """Median CPU seconds of each of :data:`PHASE_NAMES` in ``runs`` fresh processes per checkout."""
    got = {key: [[float(v) for v in run(PHASES.format(config=config), path)[2].split()] for _ in range(runs)]
           for key, path in trees.items()}
    return [{"measure": f"CPU in process: {name}", **{f"{key} CPU s": statistics.median(r[i] for r in got[key])
                                                     for key in trees}} for i, name in enumerate(PHASE_NAMES)]


def cases(data_root: Path, tmp: Path) -> dict[str, tuple[str, str]]:
    """Bundle kind -> (the load statement, the task), bundles built under ``tmp``."""
    records = gemm_records(data_root, 5000, seed=0)
    hybrid = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {})).fit(records, records[["runtime_ms"]])
    default = save_model(hybrid, "gemm", records, tmp / "default")
    adapted = adapted_bundle(data_root, tmp / "adapted")
    return {"built-in gemm (builtin())": ("p = Predictor.builtin('gemm')", "gemm"),
            "built-in gemm (load(dir))": (f"p = Predictor.load({str(bundle_path('gemm'))!r})", "gemm"),
            "built-in attention (builtin())": ("p = Predictor.builtin('attention')", "attention"),
            "adapted l40s (load(dir))": (f"p = Predictor.load({str(adapted)!r})", "gemm"),
            "default hybrid, 5,000 rows (load(dir))": (f"p = Predictor.load({str(default)!r})", "gemm")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="fresh processes per measure (medians)")
    ap.add_argument("--base", type=Path, help="a checkout of another commit to measure alternately")
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    ap.add_argument("--only", help="measure only the processes whose name contains this text (the floors always)")
    args = ap.parse_args()
    trees = {"new": HERE} | ({"base": args.base.resolve()} if args.base else {})
    with tempfile.TemporaryDirectory() as tmp:
        measures = {"python -c pass": "pass", "import numpy, pandas": "import numpy, pandas"}
        first = {task: requests(args.data_root, task, 1, seed=1)[0] for task in ("gemm", "attention")}
        for name, (load, task) in cases(args.data_root, Path(tmp)).items():
            measures[f"{name}: load"] = f"from perfcast import Predictor\n{load}"
            measures[f"{name}: load + 1"] = (f"from perfcast import Predictor\n{load}\n"
                                             f"print(repr(p.predict({first[task]!r})))")
        measures["`perfcast predict` (README line, built-in gemm)"] = CLI.format(argv=README_PREDICT)
        rows = []
        floors = {"python -c pass", "import numpy, pandas"}
        measures = {name: code for name, code in measures.items()
                    if not args.only or name in floors or args.only in name}
        for name, code in measures.items():
            for path in trees.values():  # a later call, not the first: bytecode and caches written
                run(code, path)
            got: dict[str, list[tuple[float, float, str]]] = {k: [] for k in trees}
            for _ in range(args.runs):
                for key, path in trees.items():
                    got[key].append(run(code, path))
            outs = {key: {o for _, _, o in r} for key, r in got.items()}
            if len(set().union(*outs.values())) != 1:
                raise SystemExit(f"{name}: the predictions differ between runs or checkouts: {outs}")
            row = {"measure": name}
            for key, r in got.items():
                row[f"{key} wall s"] = statistics.median(w for w, _, _ in r)
                row[f"{key} CPU s"] = statistics.median(c for _, c, _ in r)
            rows.append(row)
            print(row, flush=True)
    steps = phases(args.runs, trees, requests(args.data_root, "gemm", 1, seed=1)[0])
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"\nmedians of {args.runs} fresh processes each; load average {load} at the end\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(row["measure"] if k == "measure" else f"{row[k]:.2f}" for k in keys) + " |")
    print("\n| step | " + " | ".join(f"{key} CPU s" for key in trees) + " |\n|---|" + "---|" * len(trees))
    for row in steps:
        print(f"| {row['measure']} | " + " | ".join(f"{row[f'{key} CPU s']:.3f}" for key in trees) + " |")


if __name__ == "__main__":
    main()
