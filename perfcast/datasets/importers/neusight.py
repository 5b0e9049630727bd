"""NeuSight (ASPLOS'25) GEMM-like operator latencies: ``bmm`` and ``linear`` on six NVIDIA GPUs.

What is imported (task ``gemm``), from a copy of NeuSight's ``scripts/asplos/`` folder:

* ``data/dataset/train/collect/{bmm,linear}/<torch>/<GPU>.csv.gz`` (one file per GPU, ``x_split="train"``)
* ``data/dataset/test/{bmm,linear}.csv.gz`` (every test GPU in one file, ``x_split="test"``)

Not imported, on purpose: elementwise/layernorm/softmax/conv files (not GEMMs), ``label/`` whole-model
traces (whole runs, not kernel records: :mod:`perfcast.datasets.importers.neusight_traces` reads them),
``dims/`` (shape lists without measurements) and ``device_configs/`` (spec sheets:
:mod:`perfcast.records.hardware_specs` owns them). AMD rows
(``dataset_amd/``) are not in the shared copy and use another column layout (``Grid xyz``, no versions),
so no unit matches them; supporting them needs a real file to test against.

Shape convention. NeuSight writes ``B, M, N, K`` for an (M x N) @ (N x K) product: **N is the
reduction dimension**. Evidence in the data: on every row whose cuBLAS kernel names its tile
(``*_sgemm_<TM>x<TN>_*``), ``Grid x == ceil(K / TM)`` and ``Grid y == ceil(M / TN)``, i.e. the output is
M x K. ``linear`` rows are ``input (B, M, N) @ weight.T (N, K)``, which cuBLAS runs as one GEMM of
(B*M) x K x N. Records use the usual GEMM naming (output m x n, reduction k), so::

    bmm:    batch=B, m=M,   n=K, k=N
    linear: batch=1, m=B*M, n=K, k=N      (B is 1 on every linear row of the dataset)

and ``2 * batch * m * n * k`` is the FLOP count for both ops. ``layout`` is the cuBLAS (column-major)
transposition taken from the kernel name (``_tn`` for linear, ``_nn`` for bmm), not PyTorch's view.

Units: ``Latency`` is milliseconds (SOURCE.txt: "operator latencies in ms, measured with the profiler";
e.g. a 1024x2560x2560 linear takes 1.11 ms on a V100, 12 TFLOP/s of its 14 TFLOP/s FP32 peak). Every
kernel is FP32 without TF32 (dataset README), hence ``dtype="float32"``.

"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from perfcast.datasets.importers.base import (
    DatasetLayoutError,
    Importer,
    register,
    require,
)
from perfcast.datasets.importers.common import (
    gpu_hardware,
    parse_kernel_names,
    read_checked_csv,
)

# ---------------------------------------------------------------------------------------- NeuSight
OPS: tuple[str, ...] = ("bmm", "linear")
#: (split, op) -> glob, relative to the dataset root; units are discovered, never listed by hand
UNIT_GLOBS: dict[tuple[str, str], str] = {
    **{("train", op): f"data/dataset/train/collect/{op}/*/*.csv.gz" for op in OPS},
    **{("test", op): f"data/dataset/test/{op}.csv.gz" for op in OPS},
}
RAW_COLUMNS: tuple[str, ...] = (
    "OPName", "Latency", "Device", "Torch Version", "CUDNN Version", "Kernel Name", "Warps per SM",
    "Blocks per SM", "Grid x", "Grid y", "Grid z", "Block x", "Block y", "Block z", "CUDA Version",
    "Kernels", "B", "M", "N", "K",
)
#: launch configuration kept as dataset-specific extras
_LAUNCH = {
    "Warps per SM": "x_warps_per_sm", "Blocks per SM": "x_blocks_per_sm",
    "Grid x": "x_grid_x", "Grid y": "x_grid_y", "Grid z": "x_grid_z",
    "Block x": "x_block_x", "Block y": "x_block_y", "Block z": "x_block_z",
}


def _software(raw: pd.DataFrame) -> pd.Series:
    """``software`` JSON per row from the version columns ('p2.1.0', 8902, 'cu121' -> torch 2.1.0, ...)."""
    versions = pd.DataFrame({
        "torch": raw["Torch Version"].astype("string").str.removeprefix("p"),
        "cudnn": raw["CUDNN Version"].astype("string"),
        "cuda": raw["CUDA Version"].astype("string").str.replace(r"^cu(\d+)(\d)$", r"\1.\2", regex=True),
    })
    # a file holds one or two version combinations: build each JSON once, then index by combination
    codes = versions.groupby(list(versions.columns), dropna=False, sort=False).ngroup().to_numpy()
    texts = [json.dumps({k: v for k, v in row.items() if pd.notna(v)})
             for row in versions.drop_duplicates().to_dict("records")]
    return pd.Series(np.asarray(texts, dtype=object)[codes], index=raw.index, dtype="string")


@register("neusight")
class NeuSightImporter(Importer):
    """bmm and linear latencies (train: P4, P100, V100, T4, A100-40GB; test: those + A100-80GB)."""

    description = "NeuSight (ASPLOS'25) bmm/linear latencies with cuBLAS kernels, 6 NVIDIA GPUs"

    def units(self, root: Path) -> list[Path]:
        found = [p for pattern in UNIT_GLOBS.values() for p in root.glob(pattern)]
        expected = " or ".join(UNIT_GLOBS.values())
        return require(found, root, f"bmm/linear files ({expected})", self.name)

    def _classify(self, root: Path, unit: Path) -> tuple[str, str, str]:
        rel = PurePosixPath(unit.relative_to(root).as_posix())
        for (split, op), pattern in UNIT_GLOBS.items():
            if rel.match(pattern):
                return split, op, str(rel)
        raise DatasetLayoutError(f"{self.name}: {unit} is not one of {list(UNIT_GLOBS.values())} under {root}")

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        split, op, rel = self._classify(root, unit)
        raw = read_checked_csv(unit, RAW_COLUMNS, self.name)
        wrong = raw.index[raw["OPName"] != op]
        if len(wrong):
            raise DatasetLayoutError(
                f"{self.name}: {unit} should hold only {op!r} rows (its path says so), but data row {wrong[0]} "
                f"has OPName={raw.at[wrong[0], 'OPName']!r} ({len(wrong)} such rows)"
            )
        is_linear = op == "linear"
        kernels = raw["Kernels"].astype("string").str.lstrip(";").replace("", pd.NA)
        recs = pd.DataFrame({
            "source": self.name,
            "source_file": rel,
            "op": op,
            "batch": 1 if is_linear else raw["B"],
            "m": raw["M"] * raw["B"] if is_linear else raw["M"],
            "n": raw["K"],
            "k": raw["N"],
            "dtype": "float32",
            "backend": "cublas",
            "kernel": raw["Kernel Name"],
            "runtime_ms": raw["Latency"],
            "power_source": "none",
            "software": _software(raw),
            "x_split": split,
            "x_kernels": kernels,
            "x_n_kernels": kernels.str.count(";").add(1).astype("Int64"),
        }, index=raw.index)
        recs = recs.join(raw[list(_LAUNCH)].rename(columns=_LAUNCH))
        recs = recs.join(parse_kernel_names(raw["Kernel Name"]))
        recs = recs.join(gpu_hardware(raw["Device"]))
        return {"gemm": recs}
