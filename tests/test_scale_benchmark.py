"""The accuracy benchmark on a local Ray: protocols as Ray tasks give the rows of the in-process run."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from perfcast.experiments.registry import run
from perfcast.experiments.results import Result, RunConfig
from perfcast.perf_probe.fleet import LOCAL, connect

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[fleet]'")
pytestmark = pytest.mark.xdist_group("ray")  # one worker runs every local Ray cluster, one at a time
REPO = Path(__file__).resolve().parents[1]
#: a protocol that fits a model per fold (on a slice of the CUTLASS sweep, below) and one that reports a row it cannot score
PROTOCOLS = ["gpperf-unseen-shape", "ncpp-paper"]
#: every SHAPE_STRIDE-th (m, n, k) of the sweep is kept: a quarter of its rows, and of the unseen-shape protocol's folds
SHAPE_STRIDE = 4


def _accuracy_module():
    """benchmarks/accuracy.py (a script beside its siblings, not a package module)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import accuracy

    return accuracy


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with two worker CPUs for the module."""
    with connect(LOCAL, num_cpus=2):
        yield


def test_one_task_per_protocol_and_rows_back_in_the_asked_order():
    accuracy = _accuracy_module()
    names = ["a", "neusight-whole-model", "b", "neusight-ood"]
    groups = accuracy.plan(names, len(names))
    assert sorted(map(sorted, groups)) == [["a"], ["b"], ["neusight-ood", "neusight-whole-model"]]

    def row(protocol: str, device: str) -> Result:
        return Result(protocol, "runtime_ms", device, "mape", 0.1, "hybrid", 1, 0.0)

    done = [[row("b", "x")], [row("neusight-ood", "y"), row("neusight-whole-model", "z")], [row("a", "w")]]
    assert [(r.protocol, r.device) for r in accuracy.collect(names, done)] == [
        ("a", "w"), ("neusight-whole-model", "z"), ("b", "x"), ("neusight-ood", "y")]


@pytest.fixture()
def cutlass_slice(data_root: Path, tmp_path: Path) -> Path:
    """A data root whose gpperf-cutlass file holds every SHAPE_STRIDE-th shape of the real sweep, all of its rows
    (file order kept), beside the real perfcastdb-sample: the unseen-shape protocol fits what it fits on the whole
    sweep, in fewer folds."""
    (tmp_path / "perfcastdb-sample").symlink_to(data_root / "perfcastdb-sample")
    (source,) = (data_root / "gpperf-cutlass").glob("cutlass_*.csv.gz")
    sweep = pd.read_csv(source)
    shape = sweep.groupby(["m", "n", "k"]).ngroup()
    (tmp_path / "gpperf-cutlass").mkdir()
    sweep[shape % SHAPE_STRIDE == 0].to_csv(tmp_path / "gpperf-cutlass" / source.name, index=False)
    return tmp_path


@pytest.mark.slow
def test_ray_benchmark_rows_equal_the_in_process_rows(cutlass_slice: Path):
    accuracy = _accuracy_module()
    cfg = RunConfig(cutlass_slice)
    here = run(PROTOCOLS, cfg)
    on_ray = accuracy.run_ray(PROTOCOLS, cfg, LOCAL, 2)
    assert [r.protocol for r in here] == [r.protocol for r in on_ray]
    assert [r.protocol for r in here] == PROTOCOLS and here[0].n > 0 and here[0].ours > 0  # one row each, one scored
    # every field of every row but the wall time, which is the one thing allowed to differ
    def timeless(rows: list) -> list[dict]:
        return [{k: v for k, v in r.as_json().items() if k != "wall_s"} for r in rows]

    assert timeless(on_ray) == timeless(here)
