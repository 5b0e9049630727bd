"""Which kriging candidate (length scale, ``kv_bytes`` factor, weight) the K rows' folds choose in round 15a's
settings (benchmarks/ANALYSIS_adapt.md, round 15a).

    PYTHONPATH=. nice -n 10 python benchmarks/krige_choices.py [--data-root ../shared/datasets]
        [--out benchmarks/krige_choices.json] [--settings 128=krige_phase_stack_kvw,512=krige_phase_kvw]

Why: the protocol's notes name the chosen kriging's length scale but not its factor (folded into its stored scale),
so whether a gain came from the KV dtype's coordinate or from the shorter length scale is not in the results. Per
left-out GPU, as the aiconfigurator-adapt protocol does (its attention base, donors and plan), the setting the new
grid chose for every GPU (``krige_phase_stack_kvw`` at K = 128, ``krige_phase_kvw`` at 512; ``--settings``: other
settings per K, e.g. round 15d's) is fitted on the K planned rows; the pooled guard's and each phase's own guard's
chosen candidate (least cross-validated mean APE, ties: the first offered, as
:func:`~perfcast.models.estimators.adapt_krige.choose_kriging` chooses) is listed, with whether that phase's own
adaptation was kept. A report: it chooses nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from perfcast.experiments.adapt_bench import adapter_of
from perfcast.experiments.presets import choose
from perfcast.experiments.results import workspace
from perfcast.models.estimators.adapt import PHASE_NAMES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapt_kv_offsets import left_out, planned  # noqa: E402  (sibling script)

SETTING = {128: "krige_phase_stack_kvw", 512: "krige_phase_kvw"}
DEVICES = ("a100_sxm", "b300_sxm", "b60", "gb200", "gb300", "h100_sxm", "l40s", "rtx_pro_6000_server")


def chosen(cv_error: dict[str, float]) -> str | None:
    """The kriging candidate a guard chose (its name in ``cv_error``; None: no kriging offered)."""
    names = [n for n in cv_error if n.startswith("krige ")]
    return min(names, key=lambda n: (round(cv_error[n], 12), names.index(n))) if names else None


def _settings(text: str) -> dict[int, str]:
    """``128=a,512=b`` -> {128: "a", 512: "b"}."""
    try:
        return {int(k): name for k, name in (pair.split("=") for pair in text.split(","))}
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--settings {text!r}: write K=setting pairs, e.g. "
                                         "128=krige_phase_stack_kvw,512=krige_phase_kvw") from err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "krige_choices.json")
    parser.add_argument("--settings", type=_settings, default=SETTING,
                        help="K=setting pairs, comma-separated (default: round 15a's choices)")
    args = parser.parse_args()
    options = choose("aiconfigurator-adapt").options
    out: dict[str, Any] = {}
    with workspace(args.data_root.resolve()) as ws:
        records = ws.records("aiconfigurator", "attention")
        for dev in DEVICES:
            base, test, table = left_out(records, dev)
            for k, setting in args.settings.items():
                picked, _ = planned(test, k)
                found = adapter_of(base, options["settings"][setting], options, "attention", 0, table).fit(
                    test[picked]).adaptation_
                row = {"setting": setting, "pooled": chosen(found.cv_error),
                       "phases kept": sorted(PHASE_NAMES.get(p, p) for p in found.phases)}
                for label, own in found.phases.items():
                    row[PHASE_NAMES.get(label, label)] = chosen(own.cv_error)
                out.setdefault(dev, {})[str(k)] = row
                print(dev, k, row, flush=True)
    args.out.write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
