"""The aiconfigurator-adapt protocol at some of its preset's budgets only (benchmarks/ANALYSIS_adapt.md, round 15b).

    PYTHONPATH=. python benchmarks/adapt_budgets.py 0 --protocol aiconfigurator-adapt --part gemm --jobs 1 ...

The first argument: the budgets K to run (comma-separated, each one of the preset's ``budgets``); the rest go to
benchmarks/accuracy.py unchanged. Why: a K's rows depend only on that K (its plan, its test rows drawn with the run's
seed from the rest of the GPU, its choices made among the other GPUs at the same K), so the K = 0 rows of a run at
budget 0 alone are the full run's K = 0 rows (only the wall column, which includes the donor table's build over every
K's rows, is shorter); the full run costs 18 min (GEMM) and 34 min (attention) on a shared 2-core machine, K = 0
alone a fraction of it. Run with ``--jobs 1`` (the patch applies in this process).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any


def run(budgets: list[int], argv: list[str]) -> None:
    """benchmarks/accuracy.py ``argv`` with the aiconfigurator-adapt preset's ``budgets`` replaced by ``budgets``."""
    from perfcast.experiments import adapt_bench

    choose = adapt_bench.choose

    def restricted(protocol: str, override: str | None = None) -> Any:
        choice = choose(protocol, override)
        unknown = sorted(set(budgets) - set(choice.options["budgets"]))
        if unknown:
            raise SystemExit(f"adapt_budgets: {unknown} not among {protocol}'s budgets {choice.options['budgets']}")
        return dataclasses.replace(choice, options={**choice.options, "budgets": budgets})

    adapt_bench.choose = restricted
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import accuracy

    accuracy.main(argv)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    run([int(k) for k in sys.argv[1].split(",")], sys.argv[2:])
