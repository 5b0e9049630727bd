"""A small data root laid out like ../shared/datasets with GPUs, test rows and years the shared copy lacks.

Why: the accuracy standard says a protocol must run unchanged on a bigger root (issue 17: the graders' root adds
aiconfigurator tables of H200 and B200, NeuSight test rows of H100 and L4, SPEC CPU2017 results of 2025 and NCPP's
test_data.csv). This script writes such a root, sliced to a few hundred rows per table so that every protocol runs
on it in seconds, for tests/test_bigger_root.py and for anyone checking a change by hand:

    python benchmarks/bigger_root.py /tmp/bigger
    python benchmarks/accuracy.py --data-root /tmp/bigger --protocol aiconfigurator-unseen-gpu-gemm --out /tmp/r.md
    python benchmarks/accuracy.py --data-root /tmp/bigger --protocol spec-cpu2017-future --cutoff 2025 --out /tmp/s.md

What it writes (every extra row is a real row of the shared copy, relabelled; the relabelled ones are SYNTHETIC:
their latencies and scores are not measurements of the device or year they name, so a score on them is a smoke
check of the code path, never an accuracy figure):

* ``aiconfigurator/``: the real GPUs asked (default :data:`AIC_GPUS`), each table cut to the configurations (the
  same ones on every GPU, so family siblings stay aligned) whose hash falls in a 1-in-``stride`` share, plus the
  tables of :data:`SYNTHETIC_GPUS`: ``h200_sxm`` from the H100's rows and ``b200_sxm`` from the GB200's, latencies
  times a factor, ``device`` renamed to the name the spec sheet knows. ``systems/`` is copied whole.
* ``neusight/``: every training file cut to ``neusight_rows`` rows; the test files keep that many rows of each GPU
  and add :data:`SYNTHETIC_NEUSIGHT` copies of the A100-80GB's for H100 and L4 (NeuSight's device names, latencies
  times a factor). ``device_configs/`` and ``label/`` are linked.
* ``spec-cpu2017/``: ``spec_rows`` results per publication year, and :data:`SPEC_FUTURE` copies of the latest year's
  results re-dated to 2025 (one processor renamed to a model the data never had), so ``--cutoff 2025`` has a test
  year with a never-seen processor.
* ``perfcastdb-sample/``: NCPP's layout with a ``test_data.csv`` (the last ``ncpp_test_rows`` training rows moved
  there, as tests/test_presets.py does).
* every other dataset folder: a symbolic link to the shared copy.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "datasets"

#: real aiconfigurator GPUs kept (sliced): two Blackwell siblings, the Hopper and Ada ones, the B300
AIC_GPUS: tuple[str, ...] = ("h100_sxm", "gb200", "gb300", "b300_sxm", "l40s")


@dataclass(frozen=True)
class Relabel:
    """A synthetic device: ``source``'s rows renamed ``target`` (``device`` string ``name``), latency x ``factor``."""

    source: str
    target: str
    name: str
    factor: float


#: H200 = H100 compute with 1.4x the bandwidth (latency x 0.85); B200 = GB200 at slightly lower clocks (x 1.05)
SYNTHETIC_GPUS: tuple[Relabel, ...] = (Relabel("h100_sxm", "h200_sxm", "NVIDIA H200", 0.85),
                                       Relabel("gb200", "b200_sxm", "NVIDIA B200", 1.05))
#: NeuSight test GPUs made from the A100-80GB's test rows (H100 ~2.5x its FP32 rate, L4 ~1.5x slower on these shapes)
SYNTHETIC_NEUSIGHT: tuple[Relabel, ...] = (
    Relabel("NVIDIA A100 80GB PCIe", "h100_sxm", "NVIDIA H100 80GB HBM3", 0.4),
    Relabel("NVIDIA A100 80GB PCIe", "l4", "NVIDIA L4", 1.5))
#: SPEC CPU2017: results re-dated to this year, and the processor renamed so one is never seen in training
SPEC_FUTURE_YEAR = 2025
SPEC_FUTURE: tuple[str, str] = ("Intel Xeon Platinum 8592+", "Intel Xeon 6787P")
#: aiconfigurator's raw columns naming a configuration (the latency, device and provenance columns excluded)
AIC_CONFIG = {"gemm_perf.parquet": ["gemm_dtype", "m", "n", "k"],
              "context_attention_perf.parquet": ["batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim",
                                                 "window_size", "beam_width", "attn_dtype", "kv_cache_dtype", "step"]}
AIC_CONFIG["generation_attention_perf.parquet"] = AIC_CONFIG["context_attention_perf.parquet"]
SLICED = ("aiconfigurator", "neusight", "spec-cpu2017", "perfcastdb-sample")


def configuration_share(raw: pd.DataFrame, columns: Sequence[str], stride: int) -> np.ndarray:
    """Rows whose configuration hashes into a 1-in-``stride`` share: the same configurations on every GPU."""
    hashed = pd.util.hash_pandas_object(raw[list(columns)].astype(str), index=False).to_numpy()
    return hashed % np.uint64(stride) == 0


def write_aiconfigurator(source: Path, dest: Path, stride: int, gpus: Sequence[str] = AIC_GPUS) -> None:
    """The sliced real ``gpus``, the synthetic ones made from them, and the spec sheets."""
    shutil.copytree(source / "systems", dest / "systems")
    made = {r.source: r for r in SYNTHETIC_GPUS}
    for gpu in gpus:
        for path in sorted((source / gpu).glob("*/*/*/*_perf.parquet")):
            raw = pq.read_table(path).to_pandas()
            raw = raw[configuration_share(raw, AIC_CONFIG[path.name], stride)].reset_index(drop=True)
            outs = [(gpu, raw)]
            if gpu in made:
                r = made[gpu]
                outs.append((r.target, raw.assign(device=r.name, latency=raw["latency"] * r.factor)))
            for name, table in outs:
                target = dest / name / path.relative_to(source / gpu)
                target.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_pandas(table, preserve_index=False), target)


def write_neusight(source: Path, dest: Path, rows: int, seed: int) -> None:
    """Training files cut to ``rows`` each; the test files' A100-80GB rows cut likewise plus their H100/L4 copies."""
    data = Path("data") / "dataset"
    for link in (Path("label"), Path("data") / "device_configs"):
        (dest / link).parent.mkdir(parents=True, exist_ok=True)
        (dest / link).symlink_to(source / link)
    for path in sorted((source / data / "train" / "collect").glob("*/*/*.csv.gz")):
        if path.parts[-3] not in ("bmm", "linear"):
            continue
        raw = pd.read_csv(path)
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        raw.sample(min(rows, len(raw)), random_state=seed).to_csv(target, index=False)
    for op in ("bmm", "linear"):
        raw = pd.read_csv(source / data / "test" / f"{op}.csv.gz")
        kept = []
        for dev, group in raw.groupby("Device", sort=True):
            group = group.sample(min(rows, len(group)), random_state=seed)
            kept.append(group)
            kept += [group.assign(Device=r.name, Latency=group["Latency"] * r.factor)
                     for r in SYNTHETIC_NEUSIGHT if r.source == dev]
        target = dest / data / "test" / f"{op}.csv.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(kept, ignore_index=True).to_csv(target, index=False)


def write_spec(source: Path, dest: Path, rows: int, seed: int) -> None:
    """``rows`` results per publication year, and the latest year's results again re-dated to 2025, one processor
    renamed (:data:`SPEC_FUTURE`)."""
    path = source / "cpu2017-results.csv.gz"
    raw = pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    published = raw[next(c for c in raw.columns if c.strip() == "Published")]
    year = published.str.strip().str[-4:]
    cut = pd.concat([g.sample(min(rows, len(g)), random_state=seed) for _, g in raw.groupby(year, sort=True)])
    latest = year.max()
    processor = raw[next(c for c in raw.columns if c.strip() == "Processor")].str.strip()
    renamed = (year == latest) & (processor == SPEC_FUTURE[0])
    if not renamed.any():
        raise ValueError(f"spec-cpu2017: no {SPEC_FUTURE[0]!r} result published in {latest} to make the never-seen "
                         f"processor from; change SPEC_FUTURE")
    others = raw[(year == latest) & ~renamed]
    future = pd.concat([raw[renamed], others.sample(min(rows, len(others)), random_state=seed + 1)])
    for col in raw.columns:
        if col.strip() in ("Published", "Test Date", "Updated"):
            future[col] = future[col].str.strip().str[:-4] + str(SPEC_FUTURE_YEAR)
        elif col.strip() in ("Processor", "System"):
            future[col] = future[col].str.replace(SPEC_FUTURE[0], SPEC_FUTURE[1], regex=False)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "SOURCE.txt", dest / "SOURCE.txt")
    pd.concat([cut, future]).to_csv(dest / path.name, index=False, encoding="utf-8")


def write_ncpp(source: Path, dest: Path, test_rows: int) -> None:
    """NCPP's own layout: the last ``test_rows`` training rows moved to ``test_data.csv``."""
    shutil.copytree(source, dest)
    lines = (source / "train_data.csv").read_text().splitlines(keepends=True)
    (dest / "train_data.csv").write_text("".join(lines[:-test_rows]))
    (dest / "test_data.csv").write_text("".join(lines[:1] + lines[-test_rows:]))


def build(dest: Path, source: Path = DEFAULT_SOURCE, stride: int = 400, gpus: Sequence[str] = AIC_GPUS,
          neusight_rows: int = 300, spec_rows: int = 150, ncpp_test_rows: int = 30, seed: int = 0) -> Path:
    """Write the bigger root into ``dest`` (which must not exist or be empty) and return it; ``gpus``: the real
    aiconfigurator GPUs kept (a synthetic one is made when its source is among them)."""
    if not source.is_dir():
        raise FileNotFoundError(f"shared datasets not found at {source}; pass --source, the shared/datasets copy")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; give a new directory for the bigger root")
    aic = source / "aiconfigurator"
    for gpu in gpus:  # checked before anything is written, so a bad name leaves no half-built root
        if not (aic / gpu).is_dir():
            raise FileNotFoundError(f"aiconfigurator: no GPU folder {aic / gpu}; known: "
                                    f"{', '.join(sorted(p.name for p in aic.iterdir() if p.name != 'systems'))}")
    dest.mkdir(parents=True, exist_ok=True)
    write_aiconfigurator(source / "aiconfigurator", dest / "aiconfigurator", stride, gpus)
    write_neusight(source / "neusight", dest / "neusight", neusight_rows, seed)
    write_spec(source / "spec-cpu2017", dest / "spec-cpu2017", spec_rows, seed)
    write_ncpp(source / "perfcastdb-sample", dest / "perfcastdb-sample", ncpp_test_rows)
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and p.name not in SLICED):
        (dest / folder.name).symlink_to(folder)
    shutil.copy(source / "README.md", dest / "README.md")
    return dest


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="new directory to write the root into")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help=f"shared datasets (default: {DEFAULT_SOURCE})")
    parser.add_argument("--stride", type=int, default=400,
                        help="aiconfigurator: keep the configurations of a 1-in-STRIDE hash share (default 400)")
    parser.add_argument("--gpu", action="append",
                        help=f"aiconfigurator: a real GPU to keep (repeatable; default: {', '.join(AIC_GPUS)})")
    args = parser.parse_args(argv)
    try:
        root = build(args.dest, args.source, stride=args.stride, gpus=args.gpu or AIC_GPUS)
    except (FileNotFoundError, FileExistsError, ValueError) as err:  # what was wrong and what to pass instead
        print(f"bigger_root: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(root)
    return root


if __name__ == "__main__":
    main()
