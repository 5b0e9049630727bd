"""Time of one probe-sized append (one record, one new part) as a store fills: what a long sweep pays per
measurement for validation, dedupe against the stored ids, and the atomic write.

    python benchmarks/store_append.py [--appends 600] [--every 100]

Prints a table: for each block of ``--every`` appends, the median and the 90th percentile of one append's wall
time and the parts already in the store. Run it with ``PYTHONPATH`` set to each tree to compare two versions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pandas as pd

from perfcast.records.schema import hardware_ids
from perfcast.records.store import RecordStore


def record(i: int) -> pd.DataFrame:
    """One GEMM record as a probe stores it (a distinct shape per ``i``)."""
    df = pd.DataFrame({"source": ["probe"], "device_name": ["bench cpu"], "device_kind": ["cpu"], "op": ["matmul"],
                       "m": [i + 1], "n": [64], "k": [64], "batch": [1], "dtype": ["float32"],
                       "runtime_ms": [0.01 * (i + 1)], "runtime_cv": [0.05], "n_repeats": [20]})
    df["hw_id"] = hardware_ids(df)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--appends", type=int, default=600)
    ap.add_argument("--every", type=int, default=100)
    args = ap.parse_args()
    frames = [record(i) for i in range(args.appends)]
    with tempfile.TemporaryDirectory() as root:
        store = RecordStore(root)
        times = []
        for df in frames:
            t0 = time.perf_counter()
            assert store.append(df, "gemm").written == 1
            times.append(time.perf_counter() - t0)
        assert len(store.read("gemm")) == args.appends
    print("| appends | parts before | median ms | p90 ms |\n|---|---|---|---|")
    for lo in range(0, args.appends, args.every):
        block = sorted(times[lo:lo + args.every])
        p90 = block[min(len(block) - 1, int(0.9 * len(block)))]
        print(f"| {lo + 1}-{lo + len(block)} | {lo}-{lo + len(block) - 1} | {1e3 * statistics.median(block):.1f} "
              f"| {1e3 * p90:.1f} |")
    print(f"\ntotal {sum(times):.1f} s for {args.appends} appends")


if __name__ == "__main__":
    main()
