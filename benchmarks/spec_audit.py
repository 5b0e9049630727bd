"""Spec-sheet audit: each GPU's best achieved compute and bandwidth over its spec-sheet peaks, beside its peers.

Why: a zero-shot (spec sheet only) prediction for a GPU is the model's learned efficiency times that GPU's
peaks. A peak that is wrong (a sparse figure where the others are dense, a boost clock the board does not hold,
an fp8 figure under bf16) shifts every prediction for the GPU by the same factor, and no model can undo it.
Such an error shows as a GPU whose best achieved fraction of peak is far from its peers' for the same dtype,
or above 1 (the device beat its own sheet). The audit only *flags*; a value is changed in
perfcast/records/data/hardware_specs.yaml only from a public datasheet cited there, never fitted to these rates.

Per (dataset, task, GPU, dtype): the 99th percentile of achieved TFLOP/s over the rows the roofline calls
compute-bound, and of achieved GB/s over the memory-bound rows moving more than ``--min-mb`` (so an operand
set that fits the L2 cannot pass for DRAM bandwidth), each over the peak the features use for that dtype.

    python benchmarks/spec_audit.py --out benchmarks/SPEC_AUDIT.md
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from perfcast.experiments.results import Workspace
from perfcast.features import feature_transformer

#: (dataset, task) pairs audited: every GPU kernel table of the shared data
TABLES = (("aiconfigurator", "gemm"), ("aiconfigurator", "attention"), ("neusight", "gemm"))
#: a GPU's ratio this far from its peers' median (factor) is flagged
FLAG_FACTOR = 1.35


def achieved(records: pd.DataFrame, task: str, min_mb: float, rows: int) -> pd.DataFrame:
    """One row per (GPU, dtype, phase): best achieved compute / bandwidth fractions of the spec peaks."""
    records = records[records["runtime_ms"] > 0]
    records = records.sample(frac=1.0, random_state=0).groupby(["device_id", "dtype"]).head(rows)
    F = feature_transformer(task).fit(records).transform(records)
    sec = records["runtime_ms"].to_numpy(dtype=float) / 1e3
    frame = pd.DataFrame({
        "device_id": records["device_id"].astype(str).to_numpy(),
        "dtype": records["dtype"].astype(str).to_numpy(),
        "phase": np.where(F["is_decode"].to_numpy() > 0.5, "generation", "context") if "is_decode" in F else "",
        "tflops": 10 ** F["log10_flops"].to_numpy() / sec / 1e12,
        "gbs": 10 ** F["log10_bytes"].to_numpy() / sec / 1e9,
        "mb": 10 ** F["log10_bytes"].to_numpy() / 2 ** 20,
        "compute_bound": F["compute_memory_balance"].to_numpy() > 0,
        "peak": F["peak_tflops"].to_numpy(), "bw": F["mem_bw_gbs"].to_numpy(), "l2": F["l2_mb"].to_numpy(),
    })
    out = []
    for (dev, dt, ph), g in frame.groupby(["device_id", "dtype", "phase"]):
        comp, mem = g[g["compute_bound"]], g[~g["compute_bound"] & (g["mb"] > min_mb)]
        best_tf = float(np.quantile(comp["tflops"], 0.99)) if len(comp) >= 20 else np.nan
        best_bw = float(np.quantile(mem["gbs"], 0.99)) if len(mem) >= 20 else np.nan
        out.append({"device_id": dev, "dtype": dt, "phase": ph, "rows": len(g),
                    "peak_tflops": g["peak"].iloc[0], "best_tflops": best_tf,
                    "compute_frac": best_tf / g["peak"].iloc[0], "mem_bw_gbs": g["bw"].iloc[0],
                    "best_gbs": best_bw, "bw_frac": best_bw / g["bw"].iloc[0], "l2_mb": g["l2"].iloc[0],
                    "compute_rows": len(comp), "memory_rows": len(mem)})
    return pd.DataFrame(out)


def flag(table: pd.DataFrame) -> pd.DataFrame:
    """Each fraction over its peers' median (same dataset, task, dtype, phase); flags far or impossible ones."""
    table = table.copy()
    keys = ["dataset", "task", "dtype", "phase"]
    for frac in ("compute_frac", "bw_frac"):
        med = table.groupby(keys)[frac].transform("median")
        table[f"{frac}_vs_peers"] = table[frac] / med
    notes = []
    for _, r in table.iterrows():
        note = []
        for frac, what in (("compute_frac", "compute"), ("bw_frac", "bandwidth")):
            v, rel = r[frac], r[f"{frac}_vs_peers"]
            if v > 1.0:
                note.append(f"{what} above the sheet's peak")
            if rel > FLAG_FACTOR or rel < 1 / FLAG_FACTOR:
                note.append(f"{what} {rel:.2f}x peers")
        if np.isnan(r["l2_mb"]):
            note.append("no L2 on the sheet")
        notes.append("; ".join(note))
    table["flags"] = notes
    return table


def markdown(table: pd.DataFrame) -> str:
    """The audit as a Markdown table per (dataset, task)."""
    lines = []
    for (ds, task), g in table.groupby(["dataset", "task"], sort=False):
        lines += [f"### {ds} {task}", "",
                  "| GPU | dtype | phase | peak TFLOP/s | best TFLOP/s | frac | vs peers | GB/s sheet | best GB/s | "
                  "frac | vs peers | L2 MB | flags |", "|" + "---|" * 13]
        for _, r in g.sort_values(["dtype", "phase", "device_id"]).iterrows():
            lines.append(
                f"| {r['device_id']} | {r['dtype']} | {r['phase'] or '-'} | {r['peak_tflops']:.1f} | "
                f"{r['best_tflops']:.1f} | {r['compute_frac']:.2f} | {r['compute_frac_vs_peers']:.2f} | "
                f"{r['mem_bw_gbs']:.0f} | {r['best_gbs']:.0f} | {r['bw_frac']:.2f} | {r['bw_frac_vs_peers']:.2f} | "
                f"{r['l2_mb']:.0f} | {r['flags']} |")
        lines.append("")
    return "\n".join(lines).replace("| nan |", "| - |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", type=Path, default=Path("/work/shared/datasets"))
    ap.add_argument("--rows", type=int, default=20000, help="records per GPU and dtype (sampled)")
    ap.add_argument("--min-mb", type=float, default=256.0, help="memory-bound rows must move more than this")
    ap.add_argument("--out", type=Path, required=True, help="Markdown table")
    ap.add_argument("--csv", type=Path, help="the same rows as CSV")
    args = ap.parse_args(argv)
    parts = []
    with tempfile.TemporaryDirectory(prefix="perfcast-audit-") as tmp:
        ws = Workspace(args.data_root, Path(tmp))
        for ds, task in TABLES:
            if (args.data_root / ds).is_dir():
                parts.append(achieved(ws.records(ds, task), task, args.min_mb, args.rows).assign(dataset=ds,
                                                                                                 task=task))
    table = flag(pd.concat(parts, ignore_index=True))
    args.out.write_text(markdown(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(markdown(table))


if __name__ == "__main__":
    main()
