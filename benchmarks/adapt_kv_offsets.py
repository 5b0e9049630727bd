"""Do adapted models keep an offset between fp8-KV and bf16-KV decode kernels? (ANALYSIS_adapt.md, round 13b)

    nice -n 5 python benchmarks/adapt_kv_offsets.py [--data-root ../shared/datasets] [--devices h100_sxm,l40s]

Why: the adaptation's per-kind level and latency floor pool both KV dtypes (the kernel kind is the query dtype and
the phase), while at K = 0 the base misses them in opposite directions. Per left-out GPU, as the aiconfigurator-adapt
protocol does (its attention base, donors and plan; the preset's ``krige_phase`` setting), the base (K = 0) and the
adaptation on K planned rows predict 20,000 (seed 0) of the GPU's unrevealed rows; the decode rows' log residual
log(predicted / measured) is summarised per KV dtype, beside how many of the K rows had that KV dtype.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import CONFIG_KEYS, donor_table
from perfcast.experiments.baselines import nearest_devices
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.perf_probe.plan import adaptation_plan
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal

BUDGETS = (0, 128, 512)


def left_out(records: pd.DataFrame, dev: str) -> tuple[Any, pd.DataFrame, Any]:
    """(the protocol's attention base fitted without ``dev``, ``dev``'s rows, their donors' table), as the
    aiconfigurator-adapt protocol builds them."""
    choice = choose("aiconfigurator-adapt")
    config = choice.config.model_copy(update={"task": "attention", "intervals": IntervalsConfig(
        **choice.options.get("attention_intervals", {}))})
    train, test = unseen_hardware_split(records, test_devices=[dev])
    rows, fit_params, _ = budget_rows(choice.name, choice.params, train, choice.train_rows, 0)
    base = fit_conformal(config, rows, fit_params, seed=0)
    test = test.reset_index(drop=True)
    donors = nearest_devices(dev, sorted(train["device_id"].dropna().unique()))
    return base, test, donor_table(base, train, test, donors, CONFIG_KEYS["attention"], "attention", False)


def planned(test: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(the plan's ``k`` rows as a mask, the positions of 20,000 (seed 0) of the other rows)."""
    picked = test.index.isin(adaptation_plan(test.drop(columns=["runtime_ms"]), "attention", k)) if k \
        else np.zeros(len(test), dtype=bool)
    rest = np.random.default_rng(0).choice(np.flatnonzero(~picked), min(20_000, int((~picked).sum())), replace=False)
    return picked, rest


def adapter(base: Any, table: Any) -> AdaptedModel:
    """The preset's ``krige_phase`` setting (with its attention floor), not yet fitted."""
    options = choose("aiconfigurator-adapt").options
    setting = options["settings"]["krige_phase"]
    return AdaptedModel(base, seed=0, donors=table, mixes=tuple(setting["mixes"]), shape_donors=True, smooth=True,
                        krige=setting["krige"], per_phase=setting["per_phase"], floor=options.get("attention_floor"))


def adapted_runs(data_root: Path, devices: list[str], budgets: tuple[int, ...]
                 ) -> Iterator[tuple[str, int, pd.DataFrame, np.ndarray, np.ndarray, Any]]:
    """Per left-out GPU and K: (GPU, K, its rows, the plan's mask, the positions of 20,000 other rows, the model:
    the base at K = 0, else the ``krige_phase`` adaptation on the plan's rows)."""
    with workspace(data_root.resolve()) as ws:
        records = ws.records("aiconfigurator", "attention")
        for dev in devices:
            base, test, table = left_out(records, dev)
            for k in budgets:
                picked, rest = planned(test, k)
                yield dev, k, test, picked, rest, adapter(base, table).fit(test[picked]) if k else base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--devices", default="h100_sxm,l40s,rtx_pro_6000_server")
    args = parser.parse_args()
    for dev, k, test, picked, rest, model in adapted_runs(args.data_root, args.devices.split(","), BUDGETS):
        held = test.loc[rest]
        r = np.log(np.asarray(model.predict(held), dtype="float64").ravel() / held["runtime_ms"].to_numpy())
        decode = (held["phase"] == "decode").to_numpy()
        kv = held["kv_dtype"].astype(str).to_numpy()[decode]
        frame = pd.DataFrame({"kv_dtype": kv, "log_resid": r[decode]})
        out = frame.groupby("kv_dtype")["log_resid"].agg(
            rows="size", mean="mean", median="median", mape=lambda v: float(np.mean(np.abs(np.expm1(-v)))))
        out["K rows"] = test.loc[picked & (test["phase"] == "decode").to_numpy(), "kv_dtype"].astype(
            str).value_counts()
        print(f"\n== {dev}, K = {k}: decode mean APE {np.mean(np.abs(np.expm1(-r[decode]))):.4f}")
        print(out.to_string(float_format=lambda v: f"{v:.3f}"), flush=True)

if __name__ == "__main__":
    main()
