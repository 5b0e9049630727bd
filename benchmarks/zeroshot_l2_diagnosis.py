"""Where a GPU left out loses with the L2-resident base: its error by bytes within / beyond its L2, its median
log10(predicted / measured), and the same per member of the NVIDIA hybrid (ANALYSIS_zeroshot.md round 6).

Why a script of its own: round 4's L2 base made the H100 worse although its own base does not change; this tells a
region effect (near the GDDR boards' L2-resident rows) from a level shift of the whole GPU. Information on a test
GPU only, never a selection.

    python benchmarks/zeroshot_l2_diagnosis.py --device h100_sxm
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from zeroshot_nested import candidates, sample

from perfcast.models.registry import hybrid_estimator

#: the preset's members without and with the L2 base, and with the round-6 column
NAMES = ("ratios_mono", "ratios_mono_l2", "ratios_mono_l2_flag")


def bias(pred: np.ndarray, truth: np.ndarray) -> float:
    """Median log10(predicted / measured)."""
    return float(np.median(np.log10(pred / truth)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", required=True)
    ap.add_argument("--data-root", type=Path, default=Path("/work/shared/datasets"))
    ap.add_argument("--rows", type=int, default=4000, help="records per GPU")
    ap.add_argument("--trees", type=int, default=100)
    args = ap.parse_args(argv)
    pool = candidates(args.trees, "gemm")
    with tempfile.TemporaryDirectory(prefix="perfcast-l2diag-") as tmp:
        F, meta = sample(args.data_root, "gemm", args.rows, Path(tmp))
    test = (meta["device_id"] == args.device).to_numpy()
    truth, Ft = meta["y"][test].to_numpy(), F[test]
    fits = 10.0 ** Ft["log10_bytes"].to_numpy() <= Ft["l2_mb"].to_numpy() * 1e6
    for name in NAMES:
        model = hybrid_estimator("gemm", dict(pool[name])).fit(F[~test], meta["y"][~test].to_numpy())
        pred = model.predict(Ft)
        ape = np.abs(pred - truth) / truth
        print(f"{name}: MAPE within L2 {100 * ape[fits].mean():.1f}% (n={fits.sum()}), beyond "
              f"{100 * ape[~fits].mean():.1f}% (n={(~fits).sum()}); median log10(pred/truth) {bias(pred, truth):+.4f} "
              f"(within {bias(pred[fits], truth[fits]):+.4f}, beyond {bias(pred[~fits], truth[~fits]):+.4f})")
        nvidia = model.estimators_[model.vendors_.index("nvidia")]
        for i, member in enumerate(nvidia.estimators_):
            p = member.predict(Ft)
            print(f"  member {i} (L2 rate {member.l2_rate_:g}): median log10(pred/truth) {bias(p, truth):+.4f}, "
                  f"MAPE {100 * np.mean(np.abs(p - truth) / truth):.1f}%")


if __name__ == "__main__":
    main()
