"""NeuSight (ASPLOS'25) GEMM-like operator latencies: ``bmm`` and ``linear`` on six NVIDIA GPUs.

What is imported (task ``gemm``), from a copy of NeuSight's ``scripts/asplos/`` folder:

* ``data/dataset/train/collect/{bmm,linear}/<torch>/<GPU>.csv.gz`` (one file per GPU, ``x_split="train"``)
* ``data/dataset/test/{bmm,linear}.csv.gz`` (every test GPU in one file, ``x_split="test"``)

Not imported, on purpose: elementwise/layernorm/softmax/conv files (not GEMMs), ``label/`` whole-model
traces (used later for end-to-end checks), ``dims/`` (shape lists without measurements) and
``device_configs/`` (spec sheets: :mod:`perfcast.datasets.hardware_specs` owns them). AMD rows
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

The module also holds the helpers the other GPU importers share: :func:`parse_kernel_names` (tile,
stages and layout from cuBLAS / CUTLASS / xmma kernel names), :func:`gpu_hardware` (spec-sheet columns and
``hw_id`` per device name) and :func:`read_checked_csv` (a file with missing columns is a layout error).
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from perfcast.datasets.hardware_specs import resolve_device_id, spec_table
from perfcast.datasets.importers.base import DatasetLayoutError, Importer, register, require
from perfcast.datasets.schema import COMMON, hardware_ids

# ---------------------------------------------------------------------------------------- shared helpers
#: kernel-name grammars, most specific first; each names the fields it can fill
_KERNEL_PATTERNS: tuple[str, ...] = (
    # CUTLASS: cutlass_simt_sgemm_128x128_8x2_nn_align1, cutlass_tensorop_s1688gemm_256x128_32x3_tn_align4
    r"gemm_(?P<tile_m>\d+)x(?P<tile_n>\d+)_(?P<tile_k>\d+)x(?P<stages>\d+)_[nt]{2}(?:_|$)",
    # cuBLAS xmma / cuBLASLt: sm80_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize128x128x8_stage3_warpsize...
    r"tilesize(?P<tile_m>\d+)x(?P<tile_n>\d+)x(?P<tile_k>\d+)(?:_stage(?P<stages>\d+))?",
    # legacy cuBLAS: ampere_sgemm_128x64_nn, volta_sgemm_32x32_sliced1x4_tn, sgemm_128x128x8_NT_vec
    r"sgemm_(?P<tile_m>\d+)x(?P<tile_n>\d+)(?:x(?P<tile_k>\d+))?(?:_|$)",
)
#: the A/B transposition suffix: _nn, _nt, _tn, _tt (any case), followed by '_' or the end of the name
_LAYOUT_PATTERN = r"_(?P<layout>[nt]{2})(?:_|$)"
KERNEL_FIELDS: tuple[str, ...] = ("tile_m", "tile_n", "tile_k", "stages", "layout")


def parse_kernel_names(names: pd.Series) -> pd.DataFrame:
    """Tile shape, pipeline stages and layout encoded in GEMM kernel names (null where not encoded).

    Why: the kernel the library picked says how the GEMM was tiled, which drives wave quantisation and
    hence runtime. Vectorised (``str.extract``); returns columns :data:`KERNEL_FIELDS`, index of ``names``.
    """
    # a table holds thousands of rows but a few dozen kernels: parse each distinct name once
    codes, uniques = pd.factorize(names.astype("string"), use_na_sentinel=True)
    s = pd.Series(uniques, dtype="string")
    out = pd.DataFrame(index=s.index, columns=["tile_m", "tile_n", "tile_k", "stages"], dtype="Int64")
    for pattern in _KERNEL_PATTERNS:
        found = s.str.extract(pattern, flags=re.IGNORECASE)
        found = found.reindex(columns=out.columns).apply(pd.to_numeric).astype("Int64")
        out = out.combine_first(found)
    out["layout"] = s.str.extract(_LAYOUT_PATTERN, flags=re.IGNORECASE)["layout"].str.lower()
    res = out.reindex(codes)  # code -1 (a missing name) is no label of ``out``: an all-null row
    res.index = names.index
    return res[list(KERNEL_FIELDS)]


#: schema hardware columns a spec sheet may fill (the source's own device name is kept as reported)
_SPEC_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in COMMON if c.group == "hardware" and c.name not in ("hw_id", "device_id", "device_name")
)


def gpu_hardware(device_names: pd.Series) -> pd.DataFrame:
    """Hardware columns for each row's GPU: device_name (as reported), device_id, spec columns, hw_id.

    Why: records must carry the numbers that describe their hardware so models can reach unseen GPUs.
    Resolved once per distinct name (spec lookups are per device, not per row); a name the spec sheets
    do not know keeps ``device_id`` and the spec columns null and is still a ``gpu``.
    """
    names = pd.Series(device_names.astype("string").unique(), name="device_name").dropna()
    hw = pd.DataFrame({"device_name": names})
    hw["device_id"] = pd.Series([resolve_device_id(n) for n in names], dtype="string")
    table = spec_table()
    cols = [c for c in _SPEC_COLUMNS if c in table.columns]
    specs = table[cols].reindex(hw["device_id"].to_numpy())
    specs.index = hw.index
    hw = pd.concat([hw, specs], axis=1)
    hw["device_kind"] = hw["device_kind"].fillna("gpu")
    hw["hw_id"] = hardware_ids(hw)
    rows = pd.DataFrame({"device_name": device_names.astype("string")})
    merged = rows.merge(hw, on="device_name", how="left", validate="many_to_one")
    merged.index = device_names.index
    return merged


def read_checked_csv(path: Path, required: tuple[str, ...], dataset: str) -> pd.DataFrame:
    """Read one CSV; a file lacking any of ``required`` is a DatasetLayoutError naming file and columns."""
    df = pd.read_csv(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetLayoutError(
            f"{dataset}: {path} lacks column(s) {missing} (it has {list(df.columns)}); "
            f"is this an unmodified file of the {dataset} dataset?"
        )
    return df


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
