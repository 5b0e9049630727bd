"""Accuracy of perfcast on every benchmark protocol, beside the published numbers and honest baselines.

Each protocol (perfcast.experiments.registry, its settings from its preset in configs/) imports its dataset from --data-root through the perfcast importers,
trains on what its split trains on and scores everything else the directory holds. Prints one Markdown
table (protocol, target, device, metric, anchor, perfcast, baselines, 90% interval coverage, n, wall time,
notes) and writes it, with a header saying when, where, how and at which commit, to --out.

    python benchmarks/accuracy.py                                     # every protocol (about 30 min, 2 cores)
    python benchmarks/accuracy.py --protocol neusight-ood --protocol gpperf-paper --model extra_trees
    python benchmarks/accuracy.py --protocol spec-cpu2017-future --cutoff 2023
    python benchmarks/accuracy.py --ray local --jobs 2                 # every protocol a Ray task (or --ray HOST:PORT)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import threadpoolctl

from perfcast.experiments.registry import RUNNERS, UNSEEN_HARDWARE, run
from perfcast.experiments.results import ADAPT_COVERAGE_GOALS, COVERAGE_GOAL, Result, RunConfig, judge_coverage
from perfcast.models import model_names

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "datasets"
DEFAULT_OUT = REPO / "benchmarks" / "RESULTS.md"
#: the distributions whose versions decide the numbers (named as pip names them)
NUMERIC_LIBRARIES: tuple[str, ...] = ("numpy", "pandas", "scikit-learn", "lightgbm", "xgboost", "scipy", "torch",
                                      "pyarrow")
METRIC_LABEL = {"mape": "mean APE", "median_ape": "median APE", "p90_ape": "P90 APE", "r2": "R²"}


def year(text: str) -> int:
    """argparse type of --cutoff: a four-digit year."""
    if not re.fullmatch(r"\d{4}", text.strip()):
        raise argparse.ArgumentTypeError(f"--cutoff takes a year such as 2024, got {text!r}")
    return int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help=f"directory laid out like shared/datasets (default: {DEFAULT_DATA_ROOT})")
    parser.add_argument("--protocol", choices=list(RUNNERS), action="append",
                        help="protocol to run (repeatable; default: all, in the order listed)")
    parser.add_argument("--cutoff", type=year, default=None,
                        help="future protocol: train on results published before this year, test on the rest "
                             "(default: the latest year in the data)")
    parser.add_argument("--model", choices=model_names(), default=None,
                        help="model for every protocol (default: each protocol's tuned default, else hybrid "
                             "for GPU kernels and lightgbm for CPU benchmarks)")
    parser.add_argument("--part", choices=["gemm", "attention"], action="append", default=None,
                        help="aiconfigurator-adapt: run only this kernel family (repeatable; default: both)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"Markdown file to write (default: {DEFAULT_OUT})")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json",
                        help="also write every row as JSON (fractions; device 'mean' for summary rows)")
    parser.add_argument("--update", action="store_true",
                        help="with --json: keep the rows of every protocol not run now from the existing JSON file, "
                             "replace the others, and render --out from all of them")
    parser.add_argument("--rows", type=Path, action="append", metavar="RUN.json",
                        help="take the rows of an earlier run's --json file instead of running protocols (repeatable; "
                             "with --update they replace their protocols' rows in --json)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="protocols run in this many worker processes at once (default: one per core; the "
                             "models fit on one thread each)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run each protocol as a Ray task on the cluster at ADDRESS ('local': a Ray on this "
                             "machine with --jobs CPUs); --data-root must be reachable from every node")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------ parallel run
#: protocols that must run in one worker: the whole-model check reuses the neusight-ood model
TOGETHER: tuple[tuple[str, ...], ...] = (("neusight-ood", "neusight-whole-model"),)
#: rough relative cost of each protocol (fits x rows), to balance the workers; unknown ones count 1
COST: dict[str, float] = {"aiconfigurator-unseen-gpu-gemm": 10, "aiconfigurator-unseen-gpu-attention": 10,
                          "aiconfigurator-unseen-shape": 3, "spec-cpu2017-future": 2, "neusight-ood": 2,
                          "aiconfigurator-power": 4, "aiconfigurator-adapt": 5}


def plan(names: Sequence[str], jobs: int) -> list[list[str]]:
    """``names`` split into at most ``jobs`` lists of similar cost (longest first onto the lightest worker),
    keeping the :data:`TOGETHER` protocols in one list."""
    units: list[list[str]] = []
    for name in names:
        tied = next((t for t in TOGETHER if name in t), (name,))
        unit = next((u for u in units if set(u) & set(tied)), None)
        if unit is None:
            units.append([name])
        else:
            unit.append(name)
    workers: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(units))))]
    load = [0.0] * len(workers)
    for unit in sorted(units, key=lambda u: -sum(COST.get(n, 1.0) for n in u)):
        i = load.index(min(load))
        workers[i].extend(unit)
        load[i] += sum(COST.get(n, 1.0) for n in unit)
    return [w for w in workers if w]


def run_parallel(names: Sequence[str], cfg: RunConfig, jobs: int) -> list[Result]:
    """Every protocol's rows in the order of ``names``, the protocols run by :func:`plan`'s workers."""
    groups = plan(names, jobs)
    if len(groups) == 1:
        return run(names, cfg)
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
        return collect(names, list(pool.map(run, groups, [cfg] * len(groups))))


def run_ray(names: Sequence[str], cfg: RunConfig, address: str, jobs: int) -> list[Result]:
    """:func:`run_parallel` on a Ray cluster: one task per protocol (the :data:`TOGETHER` ones in one task), each
    holding one CPU; Ray places them on the cluster's nodes as CPUs free up."""
    from perfcast.perf_probe.fleet import connect

    with connect(address, num_cpus=jobs):
        import ray

        task = ray.remote(num_cpus=1, max_retries=1)(run)
        groups = plan(names, len(names))
        return collect(names, ray.get([task.options(name=f"accuracy {' + '.join(g)}").remote(g, cfg) for g in groups]))


def collect(names: Sequence[str], done: Sequence[Sequence[Result]]) -> list[Result]:
    """The rows of every worker's protocols in the order of ``names`` (a protocol not named keeps its place last)."""
    by_protocol: dict[str, list[Result]] = {}
    for rows in done:
        for r in rows:
            by_protocol.setdefault(r.protocol, []).append(r)
    return [r for name in names for r in by_protocol.pop(name, [])] + [r for rest in by_protocol.values() for r in rest]


# ----------------------------------------------------------------------------------------- formatting
def fmt(metric: str, value: float) -> str:
    """An APE or coverage as a percentage, R² as a number."""
    return f"{value:.3f}" if metric == "r2" else f"{100 * value:.2f}%"


def table(rows: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """The Markdown table of ``--json`` rows (:meth:`Result.as_json`) and its numbered notes (a row's notes are
    referenced as [1], [2], ...): the table and the JSON are the same rows."""
    head = ["protocol", "target", "device", "metric", "anchor", "perfcast", "baselines", "beats ref.", "goal",
            "90% coverage", "n", "wall", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    notes: list[str] = []
    for r in rows:
        refs = []
        for note in r["notes"]:
            if note not in notes:
                notes.append(note)
            refs.append(f"[{notes.index(note) + 1}]")
        metric, beats, met = r["metric"], r["beats_ref"], r["goal_met"]
        pending = r["protocol"] in UNSEEN_HARDWARE and r["value"] is not None
        cov = ("pending" if pending else "—") if r["coverage"] is None else coverage_cell(r)
        ours = "not scored: no test set" if r["value"] is None else f"**{fmt(metric, r['value'])}**"
        anchor = r["anchor"]
        cells = [
            r["protocol"], r["target"], r["label"], METRIC_LABEL.get(metric, metric),
            f"{fmt(metric, anchor['value'])} {anchor['source']}" if anchor else "—",
            f"{ours} ({r['model']})",
            " · ".join(f"{k} {fmt(metric, v)}" for k, v in r["baselines"].items()) or "—",
            "—" if beats is None else ("yes" if beats else "no"),
            "—" if r["goal"] is None else f"{r['goal']}: {'met' if met else 'missed' if met is False else 'not scored'}",
            cov, f"{r['n']:,}", f"{r['wall_s']:.0f} s", " ".join(refs),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines), notes


def coverage_cell(r: dict[str, Any]) -> str:
    """A row's coverage cell: coverage, half-width and verdict, the band when it is not the default one, and a
    summary's count of GPUs in their band (its verdict is per GPU, :func:`judge_coverage`)."""
    lo, hi = r.get("coverage_goal") or COVERAGE_GOAL
    band = "" if (lo, hi) == COVERAGE_GOAL else f" ({100 * lo:.0f}-{100 * hi:.0f}%)"
    pooled = ""
    if r.get("in_band"):
        pooled = f" pooled; in band on {r['in_band'][0]} of {r['in_band'][1]} GPUs:"
    return (f"{fmt('mape', r['coverage'])} (±{fmt('mape', r['width'] / 2)}){pooled} "
            f"{'met' if r['coverage_ok'] else 'missed'}{band}")


def selection(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What each protocol's preset settings were chosen on (one line per protocol, in table order)."""
    seen: dict[str, str] = {}
    for r in rows:
        seen.setdefault(r["protocol"], r["selected_on"])
    return [f"- {protocol}: {text}" for protocol, text in seen.items()]


def render(rows: Sequence[dict[str, Any]], head: str) -> str:
    """RESULTS.md: ``head``, the table, the settings' provenance and the notes, all from the ``--json`` rows."""
    body, notes = table(rows)
    return "\n".join([head, body, "", "Settings chosen on (each protocol's preset, `[benchmark] selected_on` in "
                       "configs/):", "", *selection(rows), "", "Notes:", "",
                       *[f"{i}. {n}" for i, n in enumerate(notes, 1)], ""])


def git_commit() -> str:
    """HEAD of the checkout the benchmark ran from, marked dirty when the tree has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" (with uncommitted changes)" if dirty else "")


def environment() -> str:
    """The library versions and the BLAS/OpenMP thread counts in effect in this process, one line: the same code
    scored other numbers on another machine (ANALYSIS_adapt.md, round 20a), so a table names what it ran on."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    def pool(p: dict[str, Any]) -> str:  # OpenBLAS picks its kernels by CPU: other kernels, other rounding
        kernels = f" ({p['architecture']} kernels)" if p.get("architecture") else ""
        return f"{p['user_api']} {p['prefix']} {p.get('version') or ''}".rstrip() + f"{kernels}: {p['num_threads']}"

    pools = dict.fromkeys(map(pool, threadpoolctl.threadpool_info()))
    return (f"- libraries: {', '.join(f'{n} {version(n)}' for n in NUMERIC_LIBRARIES)}; threads: "
            f"{', '.join(pools) or 'no BLAS/OpenMP pool loaded'}")


def merge(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` rows with every protocol that ``new`` has replaced by ``new``'s rows, in ``old``'s order (protocols
    ``old`` lacks come last): a partial re-run updates a full table without re-running the rest."""
    fresh: dict[str, list[dict[str, Any]]] = {}
    for r in new:
        fresh.setdefault(r["protocol"], []).append(r)
    out: list[dict[str, Any]] = []
    for r in old:
        if r["protocol"] not in fresh:
            out.append(r)
        elif not any(o["protocol"] == r["protocol"] for o in out):
            out.extend(fresh[r["protocol"]])
    return out + [r for p, rows in fresh.items() if not any(o["protocol"] == p for o in old) for r in rows]


def header(argv: Sequence[str], total_s: float, kept: Sequence[str] = (), sources: Sequence[Path] = ()) -> str:
    """When, where, how and at which commit the table was measured (``kept``: protocols whose rows come from an
    earlier run, for ``--update``; ``sources``: the ``--rows`` files measured by other runs)."""
    mem = psutil.virtual_memory().total / 2**30
    cpu = platform.processor() or platform.machine()
    command = "python benchmarks/accuracy.py " + shlex.join(argv)
    return "\n".join([
        "# perfcast accuracy benchmarks",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        (f"- machine: {platform.node()}, {cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, "
         f"{platform.system()} {platform.release()}, Python {platform.python_version()}"),
        environment(),
        f"- command: `{command.strip()}`",
        f"- git commit: {git_commit()}",
        f"- total wall time: {total_s / 60:.1f} min (dataset imports included; the wall column is fit + predict)",
        *([f"- rows kept from the earlier run in the --json file (--update; its command is in git history): "
           f"{', '.join(kept)}"] if kept else []),
        *([f"- rows measured by other runs, read from: {', '.join(map(str, sources))} (their commands and "
           "commits: the files' history and the benchmarks/*.md beside them)"] if sources else []),
        "",
        ("APE = |predicted − measured| / measured. Every number of a row is taken on the same test rows. "
         "'beats ref.' compares perfcast with the anchor, or without one with the best baseline. "
         "'goal': what the accuracy issue asks of the row, and whether perfcast reaches it. "
         "Coverage: share of test rows inside perfcast's 90% conformal interval (unseen-hardware protocols), "
         "with the interval's mean half-width relative to its centre, 'met' when it lands in "
         f"{COVERAGE_GOAL[0]:.0%}-{COVERAGE_GOAL[1]:.0%}; adaptation rows: the band the issue asks at their K, "
         "shown beside the verdict ("
         + ", ".join(f"K ≥ {k}: {lo:.0%}-{hi:.0%}" for k, (lo, hi) in ADAPT_COVERAGE_GOALS.items())
         + "). A mean over GPUs pools coverage over their rows but is 'met' only when every GPU is in its band."),
        "",
        ("Why each missed goal is missed, with the measurements behind it: [ANALYSIS.md](ANALYSIS.md). Every CPU "
         "model (forests, boosting, the group-attention net) beside the baselines: [CPU_MODELS.md](CPU_MODELS.md). "
         "Protocols run on their own: power ([RESULTS_power.md](RESULTS_power.md), `--protocol aiconfigurator-power`) "
         "and adaptation from K measurements ([RESULTS_adapt.md](RESULTS_adapt.md), `--protocol aiconfigurator-adapt "
         "--protocol neusight-adapt`)."),
        "",
    ])


#: what names one row of the table: a later ``--rows`` file's row of the same key replaces an earlier one's
ROW_KEY: tuple[str, ...] = ("protocol", "target", "device", "label", "metric")


def latest(docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of several ``--rows`` files, a later file's row replacing an earlier one's of the same :data:`ROW_KEY`
    in its place: a run of one part (``--part attention``) spliced over a full run's rows."""
    keyed: dict[tuple[Any, ...], dict[str, Any]] = {}
    for doc in docs:
        keyed[tuple(doc.get(k) for k in ROW_KEY)] = doc
    return list(keyed.values())


def main(argv: Sequence[str] | None = None) -> list[Result]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start = time.perf_counter()
    names, cfg = args.protocol or list(RUNNERS), RunConfig(args.data_root.resolve(), args.cutoff, args.model,
                                                         parts=tuple(args.part or ()))
    if args.rows:
        rows: list[Result] = []
        docs = latest([r for f in args.rows for r in json.loads(f.read_text(encoding="utf-8"))])
        names = list(dict.fromkeys(r["protocol"] for r in docs))
    else:
        rows = run_ray(names, cfg, args.ray, args.jobs) if args.ray else run_parallel(names, cfg, args.jobs)
        docs = [r.as_json() for r in rows]
    kept: list[str] = []
    if args.update:
        if args.json is None or not args.json.is_file():
            raise SystemExit(f"--update needs --json naming an existing rows file (got {args.json})")
        old = json.loads(args.json.read_text(encoding="utf-8"))
        kept = list(dict.fromkeys(r["protocol"] for r in old if r["protocol"] not in names))
        docs = merge(old, docs)
    docs = judge_coverage(docs)
    text = render(docs, header(argv, time.perf_counter() - start, kept, args.rows or ()))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(docs, indent=1, allow_nan=False, default=float), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
