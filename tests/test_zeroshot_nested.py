"""benchmarks/zeroshot_nested.py on three real aiconfigurator GPUs: nested scores for two candidates, the choice, the tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GPUS = ("a100_sxm", "h100_sxm", "l40s")


def _nested_module():
    """benchmarks/zeroshot_nested.py (a script beside its siblings, not a package module)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import zeroshot_nested

    return zeroshot_nested


@pytest.fixture(scope="module")
def result(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("root")
    (root / "aiconfigurator").mkdir()
    for name in (*GPUS, "systems", "SOURCE.txt"):
        (root / "aiconfigurator" / name).symlink_to(data_root / "aiconfigurator" / name)
    out = root / "nested.json"
    _nested_module().main(["--task", "gemm", "--data-root", str(root), "--rows", "300", "--trees", "10",
                           "--only", "vendor", "ratios_mono", "--out", str(out)])
    return json.loads(out.read_text())


def test_every_gpu_gets_inner_and_outer_scores_and_its_own_choice(result: dict):
    for name in ("vendor", "ratios_mono"):
        for fold in ("outer", "inner"):
            scores = [s["all"] for s in result[name][fold].values()]
            assert sorted(result[name][fold]) == sorted(GPUS) and all(0 < s < 5 for s in scores)
    # the choice of each held-out GPU is the candidate with the lower inner score: its own score never enters it
    for dev, pick in result["nested_choice"].items():
        other = "vendor" if pick == "ratios_mono" else "ratios_mono"
        assert result[pick]["inner"][dev]["all"] <= result[other]["inner"][dev]["all"]
    inner_means = {n: np.mean([result[n]["inner"][d]["all"] for d in GPUS]) for n in ("vendor", "ratios_mono")}
    assert result["preset_choice"] == min(inner_means, key=inner_means.get)


def test_render_shows_every_gpu_and_the_nested_test_score(result: dict):
    table = _nested_module().render(result)
    for dev in GPUS:
        pick = result["nested_choice"][dev]
        assert f"| {dev} |" in table and f"{pick} ({100 * result[pick]['outer'][dev]['all']:.1f}) |" in table
    assert "| **mean** |" in table
