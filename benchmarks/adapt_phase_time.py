"""Adaptation time of the aiconfigurator-adapt preset's ``krige`` and ``krige_phase`` settings on attention
(benchmarks/ANALYSIS_adapt.md round 10), and what each chose.

    nice -n 10 python benchmarks/adapt_phase_time.py h100_sxm,b60

Each GPU is left out as in the protocol (the same base model, donors' table and plan); for K = 128 and 512 the
plan's rows per phase, then per setting the median wall time of 3 in-memory adaptations on the K rows (the base's
features and predictions computed once beforehand, as the protocol does), the correction chosen, and for
``krige_phase`` each phase's own and pooled cross-validated mean APE.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import donor_table
from perfcast.experiments.baselines import CONFIG_KEYS, nearest_devices
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.perf_probe.plan import adaptation_plan
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal

SETTINGS = ("krige", "krige_phase")
REPEATS = 3


def main(devices: list[str]) -> None:
    choice = choose("aiconfigurator-adapt")
    settings = choice.options["settings"]
    config = choice.config.model_copy(update={"task": "attention", "intervals": IntervalsConfig(
        **choice.options.get("attention_intervals", {}))})
    with workspace(Path(__file__).resolve().parents[2] / "shared" / "datasets") as ws:
        records = ws.records("aiconfigurator", "attention")
        for dev in devices:
            train, test = unseen_hardware_split(records, test_devices=[dev])
            fit_rows, fit_params, _ = budget_rows(choice.name, choice.params, train, choice.train_rows, 0)
            base = fit_conformal(config, fit_rows, fit_params, seed=0)
            test = test.reset_index(drop=True)
            parts = AdaptedModel(base).parts(test)
            table = donor_table(base, train, test, nearest_devices(dev, sorted(train["device_id"].unique())),
                                CONFIG_KEYS["attention"], "attention", False)
            for k in (128, 512):
                picked = test.index.isin(adaptation_plan(test.drop(columns=["runtime_ms"]), "attention", k))
                print(dev, k, "rows per phase:", test.loc[picked, "phase"].value_counts().to_dict(), flush=True)
                for name in SETTINGS:
                    chosen, times = settings[name], []
                    for _ in range(REPEATS):
                        model = AdaptedModel(base, donors=table, mixes=tuple(chosen.get("mixes", ())),
                                             shape_donors=bool(chosen.get("shape_donors", False)),
                                             smooth=bool(chosen.get("smooth", False)), krige=chosen.get("krige"),
                                             per_phase=chosen.get("per_phase"))
                        start = time.perf_counter()
                        model.fit(test[picked], parts=tuple(p[picked] for p in parts))
                        times.append(time.perf_counter() - start)
                    found = model.adaptation_
                    phases = {key: round(v, 4) for key, v in found.cv_error.items() if key.endswith(("alone", "pooled"))}
                    print(f"  {name}: {statistics.median(times):.1f} s  {found.describe()}  {phases}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","))
