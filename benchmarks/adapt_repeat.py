"""One left-out GPU, one part and one K of the aiconfigurator-adapt protocol, every (setting, interval variant)'s
numbers written out, to compare runs of it bit for bit (benchmarks/ANALYSIS_adapt.md, session 24).

    PYTHONPATH=. nice -n 10 python benchmarks/adapt_repeat.py run rtx_pro_6000_server gemm 512 /tmp/a.json
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python benchmarks/adapt_repeat.py run ... /tmp/b.json
    python benchmarks/adapt_repeat.py compare /tmp/a.json /tmp/b.json

Why: the protocol's choices are made over every GPU (a full part takes 20-45 min on 2 shared cores), but its plan
(KMeans), base model (LightGBM) and adaptation for one GPU and K take about a minute, and every row the protocol can
report for that GPU and K is among these (with their thread pools, from threadpoolctl, beside them).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import threadpoolctl

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import adapt_device, choose
from perfcast.experiments.baselines import CONFIG_KEYS
from perfcast.experiments.presets import budget_rows
from perfcast.experiments.results import workspace
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"
PROTOCOL = "aiconfigurator-adapt"


def rows(device: str, task: str, k: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every (part label, K, setting, interval variant) row of ``device`` left out at budget ``k``, wall time
    dropped (the one field allowed to differ), as the protocol computes them before its choices."""
    choice = choose(PROTOCOL, None)
    options = {**choice.options, "budgets": [k]}
    intervals = (choice.config.intervals if task == choice.config.task
                 else IntervalsConfig(**options.get(f"{task}_intervals", {})))
    config = choice.config.model_copy(update={"task": task, "intervals": intervals})
    with workspace(DATA_ROOT) as ws:
        records = ws.records("aiconfigurator", task)
        if device not in set(records["device_id"]):
            raise SystemExit(f"adapt_repeat: no {task} rows of {device!r}; "
                             f"GPUs: {sorted(records['device_id'].unique())}")
        train, test = unseen_hardware_split(records, test_devices=[device])
        fit_rows, fit_params, _ = budget_rows(choice.name, choice.params, train, choice.train_rows, seed)
        base = fit_conformal(config, fit_rows, fit_params, seed=seed)
        found = adapt_device(PROTOCOL, task, base, train, test, pd.Series("", index=test.index), CONFIG_KEYS[task],
                             choice.name, 0.0, seed, options)
    return {f"{label}|{kk}|{key!r}": {f: v for f, v in r.as_json().items() if f != "wall_s"}
            for (label, kk), by_key in found.items() for key, r in by_key.items()}


def compare(a: Path, b: Path) -> int:
    """How many rows of two ``run`` files differ in any field (printing the first few)."""
    ra, rb = (json.loads(p.read_text(encoding="utf-8"))["rows"] for p in (a, b))
    if ra.keys() != rb.keys():
        raise SystemExit(f"adapt_repeat: {a} and {b} hold different rows (another GPU, part or K?)")
    differ = [key for key in ra if ra[key] != rb[key]]
    for key in differ[:5]:
        print(f"{key}: mean APE {ra[key]['value']!r} vs {rb[key]['value']!r}")
    print(f"{len(ra) - len(differ)} of {len(ra)} rows identical")
    return len(differ)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "run":
        start = time.perf_counter()
        out = {"threads": threadpoolctl.threadpool_info(), "rows": rows(sys.argv[2], sys.argv[3], int(sys.argv[4]))}
        Path(sys.argv[5]).write_text(json.dumps(out, indent=0, default=str), encoding="utf-8")
        print(f"{len(out['rows'])} rows in {time.perf_counter() - start:.0f} s")
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(1 if compare(Path(sys.argv[2]), Path(sys.argv[3])) else 0)
    else:
        raise SystemExit(__doc__)
