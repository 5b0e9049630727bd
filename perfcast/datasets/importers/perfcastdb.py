"""PerfCastDB sample (NCPP) → ``cpu_bench`` records, one per (run, sub-test) row of ``*_data.csv``.

Each row is one sub-test result (RESULT.Value) of one iteration of a workload (SPECrate2017 int/fp,
STREAM, HPCG, Intel MLC bandwidth/latency) on a Sapphire Rapids server, with ~70 hardware, BIOS and OS
columns. Layout decisions:

- ``benchmark`` = RESULT.WorkloadName, ``subtest`` = RESULT.TestName, ``variant`` = RESULT.WorkloadPreset,
  ``repeat`` = RESULT.IterationIndex, ``x_split`` = the file's prefix (``train_data.csv`` → "train");
- ``score_unit`` comes from the unit the sub-test names ("... (MB/s)", "... (ns)", "Score(GFLOPS)" →
  GFLOP/s); SPECrate sub-tests are ratios ("SPECrate"). MLC latencies are lower-is-better nanoseconds,
  stored as positive scores with unit "ns";
- caches: the sample gives lscpu-style KiB per instance: L1d/L1i/L2 per core (2048 KiB = Sapphire
  Rapids' 2 MiB L2 per core) and L3 per socket (107520 KiB = 105 MiB, the 8487C's per-socket L3), so
  ``l3_mb`` = L3 × sockets. Frequencies are GHz (1.9) and become MHz. ``tdp_w`` is per socket;
- ISA flags ("AVX:Yes ...") → ``isa_flags`` (lower-case "Yes" flags) and ``x_isa_<flag>`` booleans;
  accelerators ("QAT:2 DSA:8") → ``x_acc_<name>`` counts; prefetchers ("DCU HW  DCU IP") →
  ``x_prefetch_<name>`` booleans (listed = enabled);
- every other column (BIOS knobs, kubernetes ids, microcode, DIMM part numbers...) is kept, as published
  text, in an ``x_`` column named by :func:`~perfcast.records.parsing.snake_case` of the original name
  (text so that a column has one type across files: BIOS knobs are empty in most rows).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from perfcast.datasets.importers.base import (
    DatasetLayoutError,
    Importer,
    register,
    require,
)
from perfcast.records.parsing import (
    key_values,
    parse_memory,
    parse_processor,
    size_kb,
    snake_case,
)
from perfcast.records.schema import hardware_ids

SOURCE = "perfcastdb"
#: source columns this importer turns into schema columns; every other column is kept as an x_ extra
COLUMNS = {
    "workload": "RESULT.WorkloadName",
    "test": "RESULT.TestName",
    "value": "RESULT.Value",
    "preset": "RESULT.WorkloadPreset",
    "iteration": "RESULT.IterationIndex",
    "model": "SVR.CPU.CPU Model",
    "sockets": "SVR.CPU.Socket(s)",
    "cores_per_socket": "SVR.CPU.Core(s) per Socket",
    "cpus": "SVR.CPU.CPU(s)",
    "numa": "SVR.CPU.NUMA Node(s)",
    "base_ghz": "SVR.CPU.Base Frequency",
    "max_ghz": "SVR.CPU.Maximum Frequency",
    "allcore_ghz": "SVR.CPU.All-core Maximum Frequency",
    "l1d": "SVR.CPU.L1d Cache",
    "l1i": "SVR.CPU.L1i Cache",
    "l2": "SVR.CPU.L2 Cache",
    "l3": "SVR.CPU.L3 Cache",
    "isa": "SVR.ISA",
    "accelerators": "SVR.Accelerators",
    "prefetchers": "SVR.CPU.Prefetchers",
    "tdp": "SVR.Power.TDP",
    "os": "SVR.System.OS",
    "product": "SVR.System.Product Name",
    "memory": "SVR.Memory.Installed",
}
NUMERIC = ("value", "iteration", "sockets", "cores_per_socket", "cpus", "numa", "base_ghz", "max_ghz",
           "allcore_ghz", "tdp")
#: read (threads fallback) but also kept as an extra
THREADS_PER_CORE = "SVR.CPU.Thread(s) per Core"
#: units named in sub-test names, as the schema writes them
UNITS = {"GFLOPS": "GFLOP/s"}


def score_units(workload: pd.Series, test: pd.Series) -> pd.Series:
    """Unit of each sub-test's value: the trailing "(unit)" of its name, else "SPECrate" for SPECrate."""
    unit = test.str.extract(r"\(([^()]+)\)\s*$")[0].replace(UNITS)
    spec = workload.str.match(r"^SPECrate").fillna(False).astype(bool)
    return unit.mask(unit.isna() & spec, "SPECrate")


def _flags(wide: pd.DataFrame, prefix: str, values: pd.Series) -> pd.DataFrame:
    """``x_<prefix>_<key>`` columns from a wide key table, keeping NA where the source cell was empty."""
    out = wide.set_axis([f"x_{prefix}_{snake_case(str(c))}" for c in wide.columns], axis=1)
    return out.where(values.notna(), pd.NA)


def _isa_flags(isa_yes: pd.DataFrame) -> pd.Series:
    """Space-separated lower-case names of the flags marked Yes ("avx avx2 amx-bf16"); NA if none."""
    yes = isa_yes.stack()
    yes = yes[yes.fillna(False).astype(bool)]
    names = pd.Series(yes.index.get_level_values(1).str.lower(), index=yes.index.get_level_values(0))
    return names.groupby(level=0).agg(" ".join).reindex(isa_yes.index).astype("string")


def parse_rows(raw: pd.DataFrame) -> pd.DataFrame:
    """Records (without source/file/split) from a PerfCastDB frame holding every :data:`COLUMNS` column."""
    col = {k: raw[v] for k, v in COLUMNS.items()}
    num = {k: pd.to_numeric(col[k], errors="coerce") for k in NUMERIC}
    cores = num["cores_per_socket"] * num["sockets"]
    threads = num["cpus"].fillna(cores * pd.to_numeric(raw[THREADS_PER_CORE], errors="coerce"))
    isa = key_values(col["isa"])
    isa_yes = isa.eq("Yes").where(isa.notna()).astype("boolean")
    accelerators = key_values(col["accelerators"]).apply(pd.to_numeric, errors="coerce").astype("Int64")
    prefetch = col["prefetchers"].str.replace(r"\s{2,}", "|", regex=True).str.get_dummies("|").astype("boolean")
    rec = pd.DataFrame(
        {
            "benchmark": col["workload"],
            "subtest": col["test"],
            "variant": col["preset"],
            "repeat": num["iteration"].astype("Int64"),
            "score": num["value"],
            "score_unit": score_units(col["workload"], col["test"]),
            "compiler": col["preset"].str.extract(r"^\s*((?:gcc|icc|icx|clang|aocc)[\w.]*)", flags=re.I)[0],
            "device_name": col["model"],
            "device_kind": "cpu",
            "sockets": num["sockets"].astype("Int64"),
            "cores": cores.astype("Int64"),
            "threads": threads.astype("Int64"),
            "numa_nodes": num["numa"].astype("Int64"),
            "clock_mhz": num["base_ghz"] * 1000,
            "max_clock_mhz": num["max_ghz"] * 1000,
            "x_allcore_max_clock_mhz": num["allcore_ghz"] * 1000,
            "l1d_kb": size_kb(col["l1d"]),
            "l1i_kb": size_kb(col["l1i"]),
            "l2_kb": size_kb(col["l2"]),
            "l3_mb": size_kb(col["l3"]) / 1024 * num["sockets"],
            "tdp_w": num["tdp"].astype("float64"),
            "isa_flags": _isa_flags(isa_yes),
            "os": col["os"],
            "system": col["product"],
        },
        index=raw.index,
    )
    mapped = set(COLUMNS.values())
    extras = {f"x_{snake_case(c)}": raw[c] for c in raw.columns if c not in mapped}
    parts = [
        rec,
        parse_memory(col["memory"]),
        parse_processor(col["model"]),
        _flags(isa_yes, "isa", col["isa"]),
        _flags(accelerators, "acc", col["accelerators"]),
        _flags(prefetch, "prefetch", col["prefetchers"]),
        pd.DataFrame(extras, index=raw.index),
    ]
    out = pd.concat(parts, axis=1)
    out["hw_id"] = hardware_ids(out)
    return out


@register("perfcastdb-sample")
class PerfCastDB(Importer):
    """NCPP's public PerfCastDB sample: ``*_data.csv`` files (train, test) with per-sub-test scores."""

    description = "PerfCastDB sample (NCPP): SPECrate/STREAM/HPCG/MLC sub-test scores, ~70 hardware columns"

    def units(self, root: Path) -> list[Path]:
        what = "*_data.csv files (train_data.csv, test_data.csv)"
        return require(root.glob("*_data.csv"), root, what, self.name)

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        # text throughout: the mapped columns are parsed explicitly and the passthrough extras keep one
        # type per column whatever a file holds (an all-empty BIOS column must not turn numeric)
        raw = pd.read_csv(unit, dtype="string")
        missing = [c for c in (*COLUMNS.values(), THREADS_PER_CORE) if c not in raw.columns]
        if missing:
            raise DatasetLayoutError(
                f"{self.name}: {unit} lacks column(s) {missing}; expected NCPP's PerfCastDB sample layout"
            )
        recs = parse_rows(raw)
        no_unit = recs.loc[recs["score_unit"].isna(), ["benchmark", "subtest"]].drop_duplicates()
        if len(no_unit):
            raise DatasetLayoutError(
                f"{self.name}: {unit}: no unit for sub-test(s) {no_unit.to_records(index=False).tolist()}; "
                "name the unit in the test name ('... (MB/s)') or add the workload to score_units"
            )
        recs["x_split"] = unit.name.removesuffix("_data.csv")
        recs["source"] = SOURCE
        recs["source_file"] = unit.relative_to(root).as_posix()
        return {"cpu_bench": recs}
