"""Building and measuring the built-in models that :mod:`perfcast.builtin` ships and looks up.

The model is each task's unseen-GPU default (the preset of its unseen-GPU protocol in configs/: sibling
transfer over a spec-sheet and a work-only hybrid) with fewer trees, so the wheel stays small and loading
stays fast. A bundle records the perfcast major.minor it was built with and is refused by another; regenerate
it from a data root laid out like ``shared/datasets``::

    python -m perfcast.experiments.builtin_models build --data-root ../shared/datasets
    python -m perfcast.experiments.builtin_models path gemm   # the shipped bundle's directory
    python -m perfcast.experiments.builtin_models measure --data-root ../shared/datasets --devices h100_sxm,gb200 --trees 150,400
    python -m perfcast.experiments.builtin_models report       # the measured rows as a Markdown table
    python -m perfcast.experiments.builtin_models select --data-root ../shared/datasets --tasks gemm --out sel.json

``select`` chooses the base model by nested leave-one-training-GPU-out (:mod:`perfcast.experiments.builtin_selection`).
``measure`` leaves each named GPU out, fits the same model on the others and scores every row of the held-out
GPU; its rows are what ``perfcast quickstart`` shows as the built-in model's accuracy on unseen GPUs
(:data:`~perfcast.builtin.ACCURACY_FILE`) and what ``benchmarks/BUILTIN.md`` tabulates.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from perfcast.builtin import ACCURACY_FILE, BUILTIN_DIR, TASKS, bundle_path
from perfcast.experiments.builtin_selection import CANDIDATES

#: the accuracy benchmark's protocol whose default model each built-in model is
PROTOCOLS: dict[str, str] = {"gemm": "aiconfigurator-unseen-gpu-gemm", "attention": "aiconfigurator-unseen-gpu-attention"}
#: redistributable datasets each task is trained on (folder names under the data root)
SOURCES: dict[str, tuple[str, ...]] = {"gemm": ("aiconfigurator", "neusight"), "attention": ("aiconfigurator",)}
#: trees per member: fewer than the benchmark's 400 (the measured cost is in benchmarks/BUILTIN.md)
N_ESTIMATORS = 150
#: base-model setting per task (a :data:`~perfcast.experiments.builtin_selection.CANDIDATES` name), chosen by
#: ``select`` (nested leave-one-training-GPU-out; scores in benchmarks/BUILTIN.md); for attention, ``measure`` of
#: ``vendor`` against the preset's one-member choice (``vendor_single``) over the model's own 8 GPUs
BASE: dict[str, str] = {"gemm": "vendor_l2", "attention": "vendor"}
#: interval widths per task, plain or scaled by spec-sheet distance (the preset's ``[intervals] scale``):
#: attention's leave-one-GPU-out coverage over the model's own GPUs was nearer 90% plain (benchmarks/BUILTIN.md)
INTERVALS: dict[str, str] = {"gemm": "scaled", "attention": "plain"}
#: rows the base model is fitted on (every row still enters the sibling table): the benchmark's budget
MAX_ROWS = 30_000
#: conformity scores a shipped bundle keeps per target (see :func:`thin_calibration`)
CALIBRATION_SCORES = 20_001

Progress = Callable[[str], None]


def _preset(task: str) -> Any:
    """The task's unseen-GPU preset with the sibling transfer as its model: where the preset wraps it in the
    shrunk sibling copy (``sibling``), the built-in keeps the transfer, since that copy holds a table of every
    training row and refits the transfer per nested fold (too big for the wheel, too slow to rebuild)."""
    from perfcast.models.registry import SIBLING_KEYS
    from perfcast.training.config import ModelConfig, load_preset

    config = load_preset(PROTOCOLS[task])
    if config.model.name != "sibling":
        return config
    params = {k: v for k, v in config.model.params.items() if k not in SIBLING_KEYS}
    return config.model_copy(update={"model": ModelConfig(name="transfer", params=params)})


def _params(task: str, n_estimators: int, base: str | None = None) -> tuple[str, dict[str, Any]]:
    """The built-in's model name and parameters (:func:`_preset`) with its trees, rows and base setting."""
    preset = _preset(task).model
    return preset.name, {**preset.params, **CANDIDATES[base or BASE[task]], "n_estimators": n_estimators,
                         "max_rows": MAX_ROWS}


def load_records(data_root: Path, task: str, tmp: Path, progress: Progress) -> Any:
    """Every ``task`` record of the task's :data:`SOURCES` under ``data_root`` (imported into ``tmp``)."""
    import pandas as pd

    from perfcast.datasets.importers import get_importer
    from perfcast.records.store import RecordStore

    frames = []
    for dataset in SOURCES[task]:
        path = Path(data_root) / dataset
        if not path.is_dir():
            raise FileNotFoundError(f"dataset folder {path} not found: --data-root must be laid out like "
                                    f"shared/datasets (one folder per dataset)")
        store = RecordStore(tmp / dataset)
        if not store.parts(task):
            progress(f"importing {dataset}")
            get_importer(dataset).run(path, store)
        frames.append(store.read(task))
    records = pd.concat(frames, ignore_index=True)
    return records[records["runtime_ms"].gt(0) & records["device_id"].notna()].reset_index(drop=True)


def fit(task: str, records: Any, n_estimators: int = N_ESTIMATORS, base: str | None = None,
        intervals: str | None = None) -> Any:
    """The built-in model of ``task`` (a calibrated :class:`ConformalRegressor`) fitted on ``records``."""
    from perfcast.training.train import fit_conformal

    preset = _preset(task)
    scale = (intervals or INTERVALS[task]) == "scaled"
    preset = preset.model_copy(update={"intervals": preset.intervals.model_copy(update={"scale": scale})})
    return fit_conformal(preset, records, _params(task, n_estimators, base)[1])


def thin_calibration(model: Any, keep: int = CALIBRATION_SCORES) -> None:
    """Keep ``keep`` evenly spaced order statistics of each target's sorted conformity scores (in place).

    Why: the unseen-GPU calibration scores every training row (about a million), most of the bundle's size;
    evenly spaced order statistics move any interval quantile by less than 1/``keep`` in rank."""
    import numpy as np

    scores = model.calibration_.scores
    for target, s in scores.items():
        if len(s) > keep:
            scores[target] = s[np.linspace(0, len(s) - 1, keep).round().astype(np.int64)]


def build(data_root: Path, out: Path = BUILTIN_DIR, tasks: Sequence[str] = TASKS, n_estimators: int = N_ESTIMATORS,
          progress: Progress = print, base: str | None = None, workdir: Path | None = None,
          intervals: str | None = None) -> list[Path]:
    """Fit each task's built-in model on every row of its sources and save it as ``out/<task>`` (replaced);
    datasets are imported into ``workdir`` (kept) or a temporary directory."""
    from perfcast._version import __version__
    from perfcast.models.persistence.bundle import save_model
    from perfcast.training.train import model_input

    written = []
    with _workdir(workdir) as tmp:
        for task in tasks:
            records = load_records(data_root, task, Path(tmp), progress)
            progress(f"fitting the built-in {task} model on {len(records):,} rows")
            start = time.perf_counter()
            model = fit(task, records, n_estimators, base, intervals)
            thin_calibration(model)
            name, params = _params(task, n_estimators, base)
            metadata = {"name": f"builtin-{task}", "model": {"name": name, "params": params},
                        "protocol": {"name": PROTOCOLS[task]}, "perfcast": __version__, "base": base or BASE[task],
                        "data": {"sources": list(SOURCES[task]), "rows_train": len(records),
                                 "devices": sorted(records["device_id"].astype(str).unique())},
                        "fit_s": round(time.perf_counter() - start, 1)}
            target = Path(out) / task
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=f"bundle-{task}-", dir=tmp) as stage:  # a kept workdir is reusable
                staged = Path(stage) / "bundle"
                save_model(model, task, model_input(records, task), staged, metadata)
                old = target.with_name(f".{task}-old")
                shutil.rmtree(old, ignore_errors=True)
                if target.exists():
                    target.rename(old)
                shutil.copytree(staged, target)
                shutil.rmtree(old, ignore_errors=True)
            progress(f"wrote {target} ({sum(p.stat().st_size for p in target.rglob('*') if p.is_file()) / 1e6:.1f} MB)")
            written.append(target)
    return written


def leave_one_out(task: str, records: Any, device: str, n_estimators: int, base: str | None = None,
                  intervals: str | None = None) -> dict[str, Any]:
    """Fit on every GPU but ``device`` and score every row of ``device``: one accuracy row. Its
    ``level_oracle_mape`` is the score with the device's per-kernel-kind offset known (a diagnosis fitted on the
    test rows, see :func:`~perfcast.experiments.aiconfigurator.level_oracle`): the part of the error a better
    spec-sheet level could remove is the gap between the two."""
    import numpy as np

    from perfcast.eval import metrics
    from perfcast.experiments.aiconfigurator import CONFIG_KINDS, level_oracle
    from perfcast.training.train import predict_interval
    from perfcast.eval.protocols import unseen_hardware_split

    train, test = unseen_hardware_split(records, test_devices=[device])
    start = time.perf_counter()
    model = fit(task, train, n_estimators, base, intervals)
    pred, lo, hi = predict_interval(model, test, task)
    truth = test["runtime_ms"].to_numpy(dtype="float64")
    ape = np.abs(pred - truth) / truth
    kinds = test[list(CONFIG_KINDS[task])].astype(str).agg("/".join, axis=1)
    return {"task": task, "device": device, "source": str(test["source"].iloc[0]), "n_estimators": n_estimators,
            "base": base or BASE[task], "intervals": intervals or INTERVALS[task],
            "mape": float(ape.mean()), "median_ape": float(np.median(ape)),
            "level_oracle_mape": metrics.mape(truth, level_oracle(truth, pred, kinds)),
            "coverage": metrics.coverage(truth, lo, hi), "n": len(test), "wall_s": round(time.perf_counter() - start, 1)}


def measure(data_root: Path, task: str, devices: Sequence[str] | None, trees: Sequence[int],
            output: Path | None = None, progress: Progress = print, base: str | None = None,
            workdir: Path | None = None, rows_per_gpu: int | None = None,
            intervals: str | None = None) -> list[dict[str, Any]]:
    """Leave-one-GPU-out rows of ``task`` for each of ``devices`` (default: every GPU) and tree count, each
    merged into ``output`` as soon as it is measured (a long run stopped early keeps what it finished).
    ``rows_per_gpu`` draws that many records of every GPU (seeded) for training and test alike: every fit
    reads all the other GPUs' rows, so this bounds the cost of a row on a shared machine."""
    with _workdir(workdir) as tmp:
        records = load_records(data_root, task, Path(tmp), progress)
        if rows_per_gpu:
            import pandas as pd

            records = pd.concat([g.sample(min(len(g), rows_per_gpu), random_state=0)
                                 for _, g in records.groupby("device_id", observed=True)], ignore_index=True)
        names = list(devices) if devices else sorted(records["device_id"].astype(str).unique())
        rows = []
        for n in trees:
            for dev in names:
                progress(f"{task}: leaving {dev} out ({n} trees)")
                rows.append({**leave_one_out(task, records, dev, n, base, intervals), "rows_per_gpu": rows_per_gpu})
                progress(json.dumps(rows[-1]))
                if output is not None:
                    save_accuracy(rows[-1:], output)
    return rows


def save_accuracy(rows: Sequence[Mapping[str, Any]], path: Path = ACCURACY_FILE) -> Path:
    """Merge ``rows`` into the accuracy file (a row replaces the one with the same task, device and trees)."""
    key = ("task", "device", "n_estimators")
    old = json.loads(path.read_text(encoding="utf-8"))["rows"] if path.is_file() else []
    new = {tuple(r[k] for k in key): dict(r) for r in [*old, *rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"what": "leave-one-GPU-out accuracy of the built-in models (python -m perfcast.experiments.builtin_models measure)",
           "rows": sorted(new.values(), key=lambda r: (r["task"], r["n_estimators"], r["device"]))}
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def accuracy_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The accuracy rows as the Markdown table of ``benchmarks/BUILTIN.md``."""
    lines = ["| task | GPU left out | data | base | trees | mean APE | with its level known | median APE | 90% coverage "
             "| rows | fit + predict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['device']} | {r['source']} | {r.get('base', 'current')} | {r['n_estimators']} | "
              f"{r['mape']:.2%} | {format(r['level_oracle_mape'], '.2%') if 'level_oracle_mape' in r else '—'} | "
              f"{r['median_ape']:.2%} | {r['coverage']:.1%} | {r['n']:,} | {r['wall_s']:.0f} s |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m perfcast.experiments.builtin_models build|measure|select|report|path``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m perfcast.experiments.builtin_models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("path", help="print a built-in model's directory (for tools that take one)").add_argument(
        "task", choices=TASKS)
    r = sub.add_parser("report", help="print the measured accuracy rows as a Markdown table")
    r.add_argument("--input", type=Path, default=ACCURACY_FILE, help="an accuracy file `measure --output` wrote")
    b = sub.add_parser("build", help="fit the built-in models and write them into the package")
    m = sub.add_parser("measure", help="leave-one-GPU-out accuracy, saved beside the bundles")
    s = sub.add_parser("select", help="nested leave-one-training-GPU-out choice of the base model")
    for p in (b, m, s):
        p.add_argument("--data-root", type=Path, required=True, help="directory laid out like shared/datasets")
        p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
        p.add_argument("--workdir", type=Path, default=None, help="keep the imported records here [default: a temp dir]")
    b.add_argument("--out", type=Path, default=BUILTIN_DIR)
    b.add_argument("--trees", type=int, default=N_ESTIMATORS)
    m.add_argument("--devices", default="", help="comma-separated device ids to leave out [default: every GPU]")
    m.add_argument("--trees", default=str(N_ESTIMATORS), help="comma-separated tree counts to compare")
    m.add_argument("--output", type=Path, default=ACCURACY_FILE)
    m.add_argument("--rows-per-gpu", type=int, default=None, help="draw this many records per GPU [default: all]")
    for p in (b, m):
        p.add_argument("--base", choices=list(CANDIDATES), default=None,
                       help=f"base-model setting [default per task: {BASE}]")
        p.add_argument("--intervals", choices=["plain", "scaled"], default=None,
                       help=f"interval widths [default per task: {INTERVALS}]")
    s.add_argument("--rows", type=int, default=1000, help="records drawn per GPU")
    s.add_argument("--trees", type=int, default=100)
    s.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated candidate names")
    s.add_argument("--out", type=Path, required=True, help="JSON file for the scores")
    args = parser.parse_args(argv)
    if args.command == "path":
        print(bundle_path(args.task))
        return
    if args.command == "report":
        print(accuracy_markdown(json.loads(args.input.read_text(encoding="utf-8"))["rows"]))
        return
    tasks = [t for t in args.tasks.split(",") if t]
    with _workdir(args.workdir) as work:
        if args.command == "build":
            build(args.data_root, args.out, tasks, args.trees, base=args.base, workdir=work, intervals=args.intervals)
        elif args.command == "select":
            from perfcast.experiments import builtin_selection as sel

            for task in tasks:
                result = sel.select(task, load_records(args.data_root, task, work, print), args.rows, args.trees,
                                    [c for c in args.candidates.split(",") if c])
                sel.save(result, args.out.with_name(f"{args.out.stem}_{task}{args.out.suffix}")
                         if len(tasks) > 1 else args.out)
                print(sel.markdown(result))
        else:
            for task in tasks:
                measure(args.data_root, task, [d for d in args.devices.split(",") if d],
                        [int(t) for t in args.trees.split(",")], args.output, base=args.base, workdir=work,
                        rows_per_gpu=args.rows_per_gpu, intervals=args.intervals)


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    """``path`` (created) or a temporary directory removed afterwards: where datasets are imported."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="perfcast-builtin-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    main()
