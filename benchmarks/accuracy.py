"""Accuracy of perfcast on the anchor protocols, printed beside the papers' published numbers.

Each protocol imports its dataset through the perfcast importer into a temporary record store, splits it
exactly as the paper did (perfcast.eval.protocols), fits one registered model on the training rows and
scores the test rows. Output: a Markdown table (protocol, target, metric, anchor, ours, n, wall time).

    python benchmarks/accuracy.py                          # every protocol, default model (hybrid)
    python benchmarks/accuracy.py --protocol neusight-ood --model extra_trees
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.datasets.importers import get_importer
from perfcast.datasets.store import RecordStore
from perfcast.eval import metrics
from perfcast.eval.protocols import gpperf_paper_split, neusight_ood_split
from perfcast.models import MODELS, make_model

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@dataclass(frozen=True)
class Anchor:
    """One published number: which target (and row subset), which metric, its value and source."""

    target: str
    metric: str
    value: float
    source: str
    subset: str | None = None  # an ``op`` value when the paper reports per operator

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "r2"


METRIC_LABEL = {"mape": "mean APE", "median_ape": "median APE", "r2": "R²"}


@dataclass(frozen=True)
class Protocol:
    dataset: str
    split: Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]
    targets: tuple[str, ...]
    anchors: tuple[Anchor, ...]


GPPERF = "GPPerf (RF)"
NEUSIGHT = "NeuSight (ASPLOS'25)"
PROTOCOLS: dict[str, Protocol] = {
    "gpperf-paper": Protocol(
        "gpperf-cutlass", gpperf_paper_split, ("runtime_ms", "power_w"),
        (Anchor("runtime_ms", "mape", 0.1557, GPPERF), Anchor("runtime_ms", "r2", 0.98, GPPERF),
         Anchor("power_w", "median_ape", 0.0542, GPPERF), Anchor("power_w", "r2", 0.78, GPPERF)),
    ),
    "neusight-ood": Protocol(
        "neusight", neusight_ood_split, ("runtime_ms",),
        (Anchor("runtime_ms", "mape", 0.138, NEUSIGHT, subset="bmm"),
         Anchor("runtime_ms", "mape", 0.139, NEUSIGHT, subset="linear")),
    ),
}


def import_records(dataset: str, data_root: Path, task: str = "gemm") -> pd.DataFrame:
    """Every ``task`` record of ``dataset``, imported from ``data_root/<dataset>`` into a throw-away store."""
    path = data_root / dataset
    if not path.is_dir():
        raise SystemExit(f"dataset folder {path} not found; pass --data-root (the shared datasets directory)")
    with tempfile.TemporaryDirectory(prefix="perfcast-bench-") as tmp:
        store = RecordStore(tmp)
        get_importer(dataset).run(path, store)
        return store.read(task)


def _fmt(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "r2" else f"{100 * value:.2f}%"


def evaluate(name: str, data_root: Path, model: str) -> list[dict[str, str]]:
    """Fit ``model`` on the protocol's training split and score each anchor on its test rows."""
    proto = PROTOCOLS[name]
    records = import_records(proto.dataset, data_root)
    train, test = proto.split(records)
    start = time.perf_counter()
    targets = list(proto.targets)
    pipe = make_model(model, "gemm", targets).fit(train, train[targets])
    pred = np.asarray(pipe.predict(test)).reshape(len(test), len(targets))
    wall = time.perf_counter() - start
    rows = []
    for a in proto.anchors:
        keep = np.ones(len(test), dtype=bool) if a.subset is None else (test["op"] == a.subset).to_numpy()
        truth = test.loc[keep, a.target]
        ours = metrics.METRICS[a.metric](truth, pred[keep, targets.index(a.target)])
        better = ours > a.value if a.higher_is_better else ours < a.value
        rows.append({
            "protocol": name,
            "target": a.target + (f" ({a.subset})" if a.subset else ""),
            "metric": METRIC_LABEL[a.metric],
            "anchor": f"{_fmt(a.metric, a.value)} {a.source}",
            "ours": f"{_fmt(a.metric, ours)} ({model})",
            "better": "yes" if better else "no",
            "n": str(int(truth.notna().sum())),
            "wall time": f"{wall:.1f} s (fit+predict, {len(train)} train rows)",
        })
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    """Rows as a GitHub-flavoured Markdown table."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help=f"shared datasets directory (default: {DEFAULT_DATA_ROOT})")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), action="append",
                        help="protocol to run (repeatable; default: all)")
    parser.add_argument("--model", choices=sorted(MODELS), default="hybrid",
                        help="registered model to fit (default: hybrid)")
    args = parser.parse_args(argv)
    rows = [r for name in (args.protocol or list(PROTOCOLS)) for r in evaluate(name, args.data_root, args.model)]
    print(markdown(rows))


if __name__ == "__main__":
    main()
