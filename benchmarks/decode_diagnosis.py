"""Where does the aiconfigurator-adapt attention base model miss generation (decode) kernels? K = 0, training data only.

    nice -n 10 python benchmarks/decode_diagnosis.py [--data-root ../shared/datasets] [--devices h100_sxm l40s]
        [--params JSON] [--out /tmp/decode_diagnosis.json]

Why: after adaptation, generation attention stays at 9-15% mean APE on H100, RTX PRO 6000, B60 and L40S, and a model
fitted on 512 of the GPU's own rows is no better (benchmarks/ADAPT_CEILING.md): the base's inputs lack something. Per
left-out GPU, the protocol's base model (``perfcast.experiments.adapt_bench``: the aiconfigurator-adapt preset's model
for attention, fitted on its ``train_rows`` rows drawn with the seed from the other GPUs) predicts a seeded sample of
the GPU's rows; its decode rows' log residual log(predicted / measured) is tabulated by what a decode kernel's speed
physically depends on: thread blocks (batch x KV heads) per SM, KV length, KV dtype, head size, GQA ratio, and the
KV-cache bytes over the L2 size. ``--params`` merges into every hybrid member (e.g.
'{"n_estimators": 200}').
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.features import feature_transformer
from perfcast.training.train import fit_model, model_input

PROTOCOL = "aiconfigurator-adapt"
#: grouping -> bin edges of the decode rows' tables (KV dtype: its values; two pairs of them are also crossed)
BINS: dict[str, list[float]] = {
    "ctas_per_sm": [0.0, 0.25, 1.0, 4.0, 16.0, np.inf],
    "seq_kv": [0.0, 256.0, 4096.0, 32768.0, np.inf],
    "head_dim": [0.0, 64.0, 128.0, 256.0, np.inf],
    "gqa_ratio": [0.0, 1.0, 4.0, 8.0, np.inf],
    "kv_over_l2": [0.0, 0.25, 1.0, 4.0, 64.0, np.inf],
}


def attention_config(params: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any], int, dict[str, Any]]:
    """(config, params, train_rows, options) of the protocol's attention base; ``params`` merged into every member."""
    choice = choose(PROTOCOL)
    config = choice.config.model_copy(update={"task": "attention"})
    merged = dict(choice.params)
    if params:
        merged["variants"] = [{**v, **params} for v in merged.get("variants") or [{}]]
    return config, merged, int(choice.train_rows or 8000), choice.options


def fit_base(train: pd.DataFrame, seed: int, params: dict[str, Any] | None = None) -> Any:
    """The protocol's attention base model (point predictions) fitted on ``train_rows`` of ``train``."""
    config, merged, limit, _ = attention_config(params)
    rows, fit_params, _ = budget_rows(config.model.name, merged, train, limit, seed)
    return fit_model(config, rows, fit_params, seed=seed)


def test_sample(test: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` of a GPU's rows, drawn with ``seed`` (the protocol's test-set size)."""
    return test if len(test) <= n else test.sample(n, random_state=seed)


def decode_table(model: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """Per decode row of ``rows``: the grouping quantities, log(predicted / measured) and the absolute % error."""
    dec = rows[(rows["phase"] == "decode").to_numpy()]
    X = model_input(dec, "attention")
    F = feature_transformer("attention").fit_transform(X)
    pred = np.asarray(model.predict(X), dtype="float64").ravel()
    meas = dec["runtime_ms"].to_numpy(dtype="float64")
    return pd.DataFrame({
        "ctas_per_sm": 2.0 ** F["log2_ctas"].to_numpy() / F["sm_count"].to_numpy(),
        "seq_kv": dec["seq_kv"].to_numpy(dtype="float64"),
        "kv_dtype": dec["kv_dtype"].astype(str).to_numpy(),
        "head_dim": dec["head_dim"].to_numpy(dtype="float64"),
        "gqa_ratio": (dec["heads"] / dec["kv_heads"]).to_numpy(dtype="float64"),
        "kv_over_l2": 10.0 ** F["log10_kv_bytes"].to_numpy() / (F["l2_mb"].to_numpy() * 2.0 ** 20),
        "log_resid": np.log(pred / meas),
        "ape": np.abs(pred - meas) / meas * 100.0,
    }, index=dec.index)


def summarize(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows, mean APE and mean/median log residual per bin of every grouping (and overall)."""
    out = [{"by": "all", "bin": "all", "rows": len(table), "mape": table["ape"].mean(),
            "mean_log": table["log_resid"].mean(), "median_log": table["log_resid"].median()}]
    for by in ("ctas_per_sm", "seq_kv", "kv_dtype", "head_dim", "gqa_ratio", "kv_over_l2"):
        key = table[by] if by == "kv_dtype" else pd.cut(table[by], BINS[by], right=True)
        for label, g in table.groupby(key, observed=True):
            out.append({"by": by, "bin": str(label), "rows": len(g), "mape": g["ape"].mean(),
                        "mean_log": g["log_resid"].mean(), "median_log": g["log_resid"].median()})
    crossed = {"ctas_per_sm x seq_kv": ("ctas_per_sm", "seq_kv"), "kv_over_l2 x kv_dtype": ("kv_over_l2", "kv_dtype")}
    for by, pair in crossed.items():
        keys = [table[c] if c == "kv_dtype" else pd.cut(table[c], BINS[c], right=True) for c in pair]
        for label, g in table.groupby(keys, observed=True):
            out.append({"by": by, "bin": " ".join(str(v) for v in label), "rows": len(g), "mape": g["ape"].mean(),
                        "mean_log": g["log_resid"].mean(), "median_log": g["log_resid"].median()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--devices", nargs="*", default=None)
    parser.add_argument("--params", type=json.loads, default=None, help="JSON merged into every hybrid member")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the per-GPU tables as JSON")
    args = parser.parse_args()
    found: dict[str, list[dict[str, Any]]] = {}
    with workspace(args.data_root.resolve()) as ws:
        records = ws.records("aiconfigurator", "attention")
        _, _, _, options = attention_config()
        for dev in args.devices or sorted(records["device_id"].dropna().unique()):
            train, test = unseen_hardware_split(records, test_devices=[dev])
            model = fit_base(train, args.seed, args.params)
            found[dev] = summarize(decode_table(model, test_sample(test, int(options["test_rows"]), args.seed)))
            frame = pd.DataFrame(found[dev])
            print(f"\n== {dev} (decode rows of a {options['test_rows']:,}-row sample; log residual = log(pred/meas))")
            print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(found, indent=1, default=float), encoding="utf-8")


if __name__ == "__main__":
    main()
