"""Helpers several importers share: GPU identity columns, kernel-name parsing, checked CSV reading."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from perfcast.records.hardware_specs import resolve_device_id, spec_table
from perfcast.datasets.importers.base import DatasetLayoutError
from perfcast.records.schema import hardware_ids


def gpu_hardware(device_names: pd.Series, fallback: str | None = None) -> pd.DataFrame:
    """device_name (as reported), device_id, device_kind, vendor and hw_id for each row's GPU.

    Why only these: a record holds what the source observed. Spec-sheet numbers (SMs, bandwidth, peaks)
    are joined by ``device_id`` when features are built (``hardware_specs.spec_columns``), so correcting a
    spec sheet never changes stored ``hw_id``/``record_id`` values and re-imports still dedupe. Resolved
    once per distinct name; ``fallback`` (e.g. the dataset's directory name) is tried when the name is
    unknown; a name neither resolves keeps ``device_id`` null and is still a ``gpu``.
    """
    names = pd.Series(device_names.astype("string").unique(), name="device_name").dropna()
    hw = pd.DataFrame({"device_name": names, "device_kind": "gpu"})
    hw["hw_id"] = hardware_ids(hw)
    ids = [resolve_device_id(n) or (resolve_device_id(fallback) if fallback else None) for n in names]
    hw["device_id"] = pd.Series(ids, dtype="string", index=hw.index)
    hw["vendor"] = spec_table()["vendor"].reindex(hw["device_id"].to_numpy()).to_numpy()
    rows = pd.DataFrame({"device_name": device_names.astype("string")})
    merged = rows.merge(hw, on="device_name", how="left", validate="many_to_one")
    merged.index = device_names.index
    return merged


def read_checked_csv(path: Path, required: tuple[str, ...], dataset: str, **read_kw: object) -> pd.DataFrame:
    """Read one CSV; a file lacking any of ``required`` is a DatasetLayoutError naming file and columns."""
    df = pd.read_csv(path, **read_kw)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetLayoutError(
            f"{dataset}: {path} lacks column(s) {missing} (it has {list(df.columns)}); "
            f"is this an unmodified file of the {dataset} dataset?"
        )
    return df


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
