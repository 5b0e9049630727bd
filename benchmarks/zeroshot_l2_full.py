"""benchmarks/accuracy.py with the L2-resident roofline base switched on in the presets of the protocols named,
the preset files untouched: what adopting it would measure on every row (information beside the nested
selection of benchmarks/zeroshot_nested.py, never a selection by itself; benchmarks/ANALYSIS_zeroshot.md round 4).

    python benchmarks/zeroshot_l2_full.py --protocol aiconfigurator-unseen-gpu-gemm --jobs 1 \
        --out benchmarks/RESULTS_zs_l2.md --json benchmarks/results_zs_l2.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from perfcast.experiments import presets
from perfcast.training.config import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402  (the benchmark script beside this one)

_preset = presets.preset


def with_l2(protocol: str) -> TrainConfig:
    """``protocol``'s preset with ``l2_resident = true`` added to its model's parameters."""
    config = _preset(protocol)
    params = {**config.model.params, "l2_resident": True}
    return config.model_copy(update={"model": config.model.model_copy(update={"params": params})})


if __name__ == "__main__":
    if "--jobs" not in sys.argv:  # the switch lives in this process: run the protocols here
        sys.argv += ["--jobs", "1"]
    presets.preset = with_l2
    accuracy.main()
