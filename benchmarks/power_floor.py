"""How noisy the aiconfigurator-power readings are, and what their collection order explains.

    python benchmarks/power_floor.py [--data-root ../shared/datasets] [--skip-order]

Reads the GB200 tables as shipped (no perfcast model) and prints, per table:

* stale readings: the share of rows whose watts are exactly those of another configuration at most 8 rows away,
  and the share whose timed loop (from the latency and the collector's loop-sizing rules: 1 s, 0.3 s under
  0.1 ms, at most 3,000 iterations) lasts under 100 ms, the NVML sampling period;
* GEMM twins: m and m + 1 with the same n, k, dtype and kernel and runtimes within 5 %: the mean APE of
  predicting one reading by the other, and the noise floor a perfect model would still score under
  log-normal reading noise (σ from the twins' median |log ratio|);
* collection order (GEMM; skipped with ``--skip-order``): whether file order follows the collector's loops, and
  the held-out-shape mean APE of a LightGBM on the shape and latency, with features from the cases collected
  before each row (out-of-fold predicted power, measured runtime) and two oracles with measured neighbours.
Figures and their reading: benchmarks/ANALYSIS_power.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

TABLES = {
    "trtllm gemm": "gb200/gemm/trtllm/1.3.0rc17/gemm_perf.parquet",
    "vllm gemm": "gb200/gemm/vllm/0.22.0/gemm_perf.parquet",
    "trtllm context": "gb200/attention/trtllm/1.3.0rc17/context_attention_perf.parquet",
    "trtllm generation": "gb200/attention/trtllm/1.3.0rc17/generation_attention_perf.parquet",
    "vllm context": "gb200/attention/vllm/0.22.0/context_attention_perf.parquet",
    "vllm generation": "gb200/attention/vllm/0.22.0/generation_attention_perf.parquet",
}
NEAR = 8  # rows either side searched for an identical reading


def stale(d: pd.DataFrame) -> tuple[float, float]:
    """(share of rows sharing their exact watts with a row <= NEAR away, share timed for under 100 ms)."""
    pw = d["power"].to_numpy()
    dup = np.zeros(len(d), dtype=bool)
    for lag in range(1, NEAR + 1):
        same = pw[lag:] == pw[:-lag]
        dup[lag:] |= same
        dup[:-lag] |= same
    t = d["latency"].to_numpy() / 1e3  # seconds per call
    runs = np.minimum(np.maximum(6, (np.where(t < 1e-4, 0.3, 1.0) / t).astype(int) + 1), 3000)
    return float(dup.mean()), float((runs * t < 0.1).mean())


def twins(d: pd.DataFrame) -> tuple[int, float, float, float]:
    """(pairs, mean APE of one twin by the other, median |log ratio|, floor mean APE of a perfect model)."""
    keys = ["gemm_dtype", "n", "k", "kernel_source"]
    t = d.assign(m1=d["m"] + 1).merge(d, left_on=[*keys, "m1"], right_on=[*keys, "m"], suffixes=("", "_t"))
    t = t[np.abs(np.log(t["latency"] / t["latency_t"])) < 0.05]
    r = np.log(t["power"] / t["power_t"]).to_numpy()
    sigma = float(np.median(np.abs(r))) / (0.6745 * np.sqrt(2))
    z = np.random.default_rng(0).standard_normal(200_000)
    return len(t), float(np.mean(np.abs(np.exp(-r) - 1))), float(np.median(np.abs(r))), float(
        np.mean(np.abs(np.exp(sigma * z) - 1)))


def order(d: pd.DataFrame, label: str) -> None:
    """File order vs the collector's loops, and what the cases collected before a row explain."""
    import lightgbm as lgb
    from scipy.stats import kendalltau
    from sklearn.model_selection import GroupKFold, GroupShuffleSplit

    d = d.reset_index(drop=True)
    blocks = d.groupby(["n", "k", "gemm_dtype"], sort=False)
    tau = np.nanmedian([kendalltau(-b["m"].to_numpy(), b.index.to_numpy())[0] for _, b in blocks if len(b) > 5])
    print(f"  {label}: median Kendall tau of file position vs descending m within (n, k, dtype): {tau:.2f}")
    X = pd.DataFrame({"lm": np.log(d["m"]), "ln": np.log(d["n"]), "lk": np.log(d["k"]),
                      "dt": d["gemm_dtype"].astype("category").cat.codes, "lt": np.log(d["latency"]),
                      "ks": d["kernel_source"].astype("category").cat.codes})
    y = np.log(d["power"].to_numpy())
    groups = (d["m"].astype(str) + "_" + d["n"].astype(str) + "_" + d["k"].astype(str)).to_numpy()
    tr, te = next(GroupShuffleSplit(1, test_size=0.2, random_state=0).split(X, y, groups))
    params = {"n_estimators": 400, "num_leaves": 63, "learning_rate": 0.05, "verbose": -1, "n_jobs": 1}
    oof = np.empty(len(d))
    for a, b in GroupKFold(3).split(tr, groups=groups[tr]):
        oof[tr[b]] = lgb.LGBMRegressor(**params).fit(X.iloc[tr[a]], y[tr[a]]).predict(X.iloc[tr[b]])
    oof[te] = lgb.LGBMRegressor(**params).fit(X.iloc[tr], y[tr]).predict(X.iloc[te])

    def ape(pred: np.ndarray) -> float:
        return float(np.mean(np.abs(np.exp(pred[te] - y[te]) - 1)))

    pred, lat = pd.Series(oof), pd.Series(np.log(d["latency"].to_numpy()))
    before = X.assign(**{f"pp{k}": pred.shift(k) for k in (1, 2, 3, 4, 8)}, pp_mean4=pred.shift(1).rolling(4).mean())
    with_rt = before.assign(**{f"pl{k}": lat.shift(k) for k in (1, 2, 3, 4, 8)})
    seen = pd.Series(np.where(np.isin(np.arange(len(d)), tr), y, np.nan))
    oracle = with_rt.assign(prev=seen.shift(1).ffill().to_numpy(), next=seen.shift(-1).bfill().to_numpy())
    residual = pd.Series(np.where(np.isin(np.arange(len(d)), tr), y - oof, np.nan))
    near = residual.rolling(9, center=True, min_periods=1).mean().fillna(0).to_numpy()
    rows = {"shape and latency": ape(oof)}
    for name, Z in (("+ predicted power of the 1-8 cases before", before), ("+ their measured runtimes", with_rt),
                    ("+ measured watts of the nearest training rows (oracle)", oracle)):
        rows[name] = ape(lgb.LGBMRegressor(**params).fit(Z.iloc[tr], y[tr]).predict(Z))
    rows["+ mean measured residual of training rows within 4 (oracle)"] = ape(oof + near)
    for name, v in rows.items():
        print(f"  {label}: {name}: held-out-shape mean APE {v:.2%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    ap.add_argument("--skip-order", action="store_true", help="skip the collection-order models (minutes)")
    args = ap.parse_args()
    root = args.data_root / "aiconfigurator-power"
    for label, rel in TABLES.items():
        d = pd.read_parquet(root / rel)
        dup, short = stale(d)
        print(f"{label}: {len(d):,} rows; identical watts to a row <= {NEAR} away: {dup:.1%}; "
              f"timed < 100 ms: {short:.1%}")
        if "gemm" in label:
            n, twin, med, floor = twins(d)
            print(f"  twins: {n:,} pairs, one by the other {twin:.2%} mean APE, median |log ratio| {med:.3f}, "
                  f"a perfect model's floor {floor:.2%}")
            if not args.skip_order:
                order(d, label)


if __name__ == "__main__":
    main()
