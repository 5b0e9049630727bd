"""Step 1 of ``perfcast quickstart``: the built-in models predict well-known GEMM and attention kernels on
several GPUs, with 90% intervals, beside their measured accuracy on GPUs they never trained on (rows shipped
with them). Kept apart from the probing and adaptation steps (:mod:`perfcast.workflows.quickstart`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

#: GEMMs shown with the built-in model: a square benchmark GEMM and an LLM's prefill and decode projections
SHOW_GEMMS: list[tuple[str, dict[str, Any]]] = [
    ("4096³ GEMM", {"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16"}),
    ("Llama-3-8B MLP up, prefill 8k tokens", {"m": 8192, "n": 14336, "k": 4096, "dtype": "bf16"}),
    ("Llama-3-8B MLP up, decode 16 tokens", {"m": 16, "n": 14336, "k": 4096, "dtype": "bf16"}),
]
SHOW_ATTENTION: list[tuple[str, dict[str, Any]]] = [
    ("Llama-3-8B attention, prefill 4k", {"phase": "prefill", "batch": 1, "heads": 32, "kv_heads": 8, "seq_q": 4096,
                                          "seq_kv": 4096, "head_dim": 128, "dtype": "bf16", "kv_dtype": "bf16"}),
    ("Llama-3-8B attention, decode 64x4k", {"phase": "decode", "batch": 64, "heads": 32, "kv_heads": 8, "seq_q": 1,
                                            "seq_kv": 4096, "head_dim": 128, "dtype": "bf16", "kv_dtype": "bf16"}),
]
#: trained GPUs and two known only by their spec sheets
SHOW_DEVICES: tuple[str, ...] = ("a100_sxm", "h100_sxm", "l40s", "h200_sxm", "b200_sxm")

def showcase() -> Any:
    """The built-in models' predictions of :data:`SHOW_GEMMS` and :data:`SHOW_ATTENTION` on :data:`SHOW_DEVICES`."""
    import pandas as pd

    from perfcast.builtin import trained_devices
    from perfcast.predictor import Predictor

    frames = []
    for task, kernels in (("gemm", SHOW_GEMMS), ("attention", SHOW_ATTENTION)):
        predictor = Predictor.builtin(task)
        trained = set(trained_devices(task))
        rows = [{**cfg, "device": dev} for _, cfg in kernels for dev in SHOW_DEVICES]
        out = predictor.predict(pd.DataFrame(rows))
        frames.append(pd.DataFrame({
            "kernel": [name for name, _ in kernels for _ in SHOW_DEVICES],
            "gpu": [r["device"] + ("" if r["device"] in trained else " (sheet only)") for r in rows],
            "runtime_ms": out["runtime_ms"], "lo": out["runtime_ms_lo"], "hi": out["runtime_ms_hi"],
            "in_distribution": out["in_distribution"]}))
    return pd.concat(frames, ignore_index=True)


def print_builtin(console: Console) -> None:
    """Step 1: the built-in models' answers, and how they scored on GPUs they never saw."""
    from perfcast.builtin import accuracy_rows
    from perfcast.experiments.builtin_models import N_ESTIMATORS

    table = Table(title="built-in models (no training): runtime with its 90% interval")
    for col in ("kernel", "GPU", "runtime", "90% interval", "in distribution"):
        table.add_column(col, justify="right" if col in ("runtime", "90% interval") else "left")
    for row in showcase().itertuples(index=False):
        table.add_row(row.kernel, row.gpu, ms_text(row.runtime_ms), f"{ms_text(row.lo)} – {ms_text(row.hi)}",
                      "yes" if row.in_distribution else "no")
    console.print(table)
    rows = [r for r in accuracy_rows() if r["n_estimators"] == N_ESTIMATORS]
    if not rows:
        console.print("[yellow]no leave-one-GPU-out accuracy is shipped with these models")
        return
    acc = Table(title="their accuracy on GPUs they never trained on (each left out of training in turn)")
    for col in ("task", "GPU left out", "data", "mean APE", "median APE", "90% coverage", "rows"):
        acc.add_column(col, justify="left" if col in ("task", "GPU left out", "data") else "right")
    for r in rows:
        acc.add_row(r["task"], r["device"], r["source"], f"{r['mape']:.1%}", f"{r['median_ape']:.1%}",
                    f"{r['coverage']:.0%}", f"{r['n']:,}")
    console.print(acc)


def ms_text(value: float) -> str:
    return f"{value:.3g} ms" if value >= 0.01 else f"{value * 1000:.3g} µs"
