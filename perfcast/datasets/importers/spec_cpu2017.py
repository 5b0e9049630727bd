"""SPEC CPU2017 published results → ``cpu_bench`` records (one per result and base/peak variant).

The source is spec.org's CSV export of every published result: one row per (system, suite) with base and
peak scores and prose hardware descriptions. Layout decisions:

- one record per result with ``variant="base"`` (score = Base Result) and, when the result has a peak run
  (Peak Result > 0; 0 means "no peak run"), one with ``variant="peak"``. Rows whose Base Result is 0
  (withdrawn or redacted results, 70 in the shared copy) carry no score and are skipped;
- ``benchmark`` is the suite (CINT2017rate, CFP2017rate, CINT2017, CFP2017); the score is for the whole
  suite, so ``subtest`` repeats the suite name (PerfCastDB's convention for suite totals; the schema
  rejects an empty subtest); ``score_unit`` is "SPEC" (a ratio to the reference machine);
- caches and memory are parsed with :mod:`perfcast.records.parsing`: ``l3_mb`` is the total over all
  chips ("per chip" × # Chips, "per core" × # Cores, "per N cores" × # Cores / N), ``l2_kb`` is per core;
  ``mem_mts`` is the speed the memory ran at ("running at 2400"), the DIMM rating otherwise
  (``x_mem_rated_mts`` keeps the rating);
- zeros in the numeric hardware columns mean "not disclosed" and become missing;
- ``n_threads`` stays missing: the export has no copies/threads count (it is only in each disclosure);
- ``collected_at`` is the Test Date, dropped where it is after Published (two typos, e.g. "Jan-2098");
- ``x_suspect`` marks scores that do not measure the machine they describe: the four results of SPEC's
  reference machine (a Sun Fire V490 with UltraSPARC-IV+, cpu2017-20161026-00001..00004), whose score is
  1.00 *by definition* (every ratio is reference time / its own time) whatever the suite; the rate ones
  ran one copy on 8 cores. Kept, because they are published results, but a model should not train on them
  (filter ``x_suspect = false``): an 8-core rate result of 1.0 would teach it that cores do nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from perfcast.datasets.importers.base import (
    DatasetLayoutError,
    Importer,
    register,
    require,
)
from perfcast.records.parsing import (
    cache_total_kb,
    parse_cache,
    parse_l1,
    parse_memory,
    parse_processor,
)
from perfcast.records.schema import hardware_ids

SOURCE = "spec_cpu2017"
#: SPEC CPU2017's reference machine: its own results score exactly 1 by definition (see ``x_suspect``)
REFERENCE_SYSTEM = "Sun Fire V490"
REFERENCE_SCORE = 1.0
REQUIRED = (
    "Benchmark", "Hardware Vendor", "System", "Peak Result", "Base Result", "Energy Peak Result",
    "Energy Base Result", "# Cores", "# Chips", "# Enabled Threads Per Core", "Processor", "Processor MHz",
    "1st Level Cache", "2nd Level Cache", "3rd Level Cache", "Memory", "Operating System", "Compiler",
    "HW Avail", "SW Avail", "Test Date", "Published", "Parallel", "Base Pointer Size", "Peak Pointer Size",
    "Disclosure",
)
#: columns copied as-is into ``x_`` extras
EXTRAS = {
    "Hardware Vendor": "x_system_vendor",
    "CPU(s) Orderable": "x_cpus_orderable",
    "Other Cache": "x_other_cache",
    "Storage": "x_storage",
    "File System": "x_file_system",
    "License": "x_license",
    "Tested By": "x_tested_by",
    "Test Sponsor": "x_test_sponsor",
    "1st Level Cache": "x_l1_cache_desc",
    "2nd Level Cache": "x_l2_cache_desc",
    "3rd Level Cache": "x_l3_cache_desc",
    "Memory": "x_memory_desc",
}


def _month(s: pd.Series) -> pd.Series:
    """Month dates ("Jun-2024" → 2024-06-01 UTC): SPEC publishes dates at month resolution."""
    return pd.to_datetime(s, format="%b-%Y", errors="coerce", utc=True)


def _positive(s: pd.Series) -> pd.Series:
    """Numbers with SPEC's 0 ("not disclosed"/"not run") as missing."""
    v = pd.to_numeric(s, errors="coerce")
    return v.where(v > 0)


def parse_results(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per published result with every hardware and provenance column parsed (no variants yet).

    ``raw`` is the export as :meth:`SpecCpu2017.load` reads it: text columns, names and values stripped.
    """
    chips, cores = _positive(raw["# Chips"]), _positive(raw["# Cores"])
    l2 = cache_total_kb(parse_cache(raw["2nd Level Cache"]), chips, cores) / cores
    l3 = cache_total_kb(parse_cache(raw["3rd Level Cache"]), chips, cores) / 1024
    published = _month(raw["Published"])
    tested = _month(raw["Test Date"])
    cols = pd.DataFrame(
        {
            "benchmark": raw["Benchmark"],
            "subtest": raw["Benchmark"],
            "device_name": raw["Processor"],
            "device_kind": "cpu",
            "sockets": chips.astype("Int64"),
            "cores": cores.astype("Int64"),
            "threads": (cores * _positive(raw["# Enabled Threads Per Core"])).astype("Int64"),
            "clock_mhz": _positive(raw["Processor MHz"]).astype("float64"),
            "l2_kb": l2,
            "l3_mb": l3,
            "os": raw["Operating System"],
            "system": raw["System"],
            "compiler": raw["Compiler"],
            "published_at": published,
            "collected_at": tested.where(~(tested > published)),
            "x_hw_avail": _month(raw["HW Avail"]),
            "x_sw_avail": _month(raw["SW Avail"]),
            "x_parallel": raw["Parallel"].map({"Yes": True, "No": False}).astype("boolean"),
            "x_result_id": raw["Disclosure"].str.extract(r"(cpu2017-\d{8}-\d+)")[0],
        },
        index=raw.index,
    )
    extras = pd.DataFrame({new: raw[old] for old, new in EXTRAS.items() if old in raw}, index=raw.index)
    parsed = [parse_l1(raw["1st Level Cache"]), parse_memory(raw["Memory"]), parse_processor(raw["Processor"])]
    out = pd.concat([cols, *parsed, extras], axis=1)
    out["hw_id"] = hardware_ids(out)
    return out


def variants(raw: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Base and peak records from the raw scores and :func:`parse_results` output (same index)."""
    frames = []
    for variant in ("base", "peak"):
        tag = variant.title()
        score = _positive(raw[f"{tag} Result"]).astype("float64")
        keep = score.notna()
        rec = results[keep].assign(
            variant=variant,
            score=score[keep],
            score_unit="SPEC",
            x_energy_score=_positive(raw.loc[keep, f"Energy {tag} Result"]).astype("float64"),
            x_pointer_size=raw.loc[keep, f"{tag} Pointer Size"],
        )
        reference = (rec["system"] == REFERENCE_SYSTEM) & (rec["score"] == REFERENCE_SCORE)
        rec["x_suspect"] = reference.fillna(False).astype(bool)
        frames.append(rec)
    return pd.concat(frames, ignore_index=True)


@register("spec-cpu2017")
class SpecCpu2017(Importer):
    """spec.org's SPEC CPU2017 results export (``cpu2017-results*.csv[.gz]``)."""

    description = "SPEC CPU2017 published results: base/peak suite scores with parsed caches and memory"

    def units(self, root: Path) -> list[Path]:
        what = "cpu2017-results*.csv[.gz] export"
        return require(root.glob("cpu2017-results*.csv*"), root, what, self.name)

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        # all text: numbers are parsed explicitly (0 = not disclosed), ids and dates stay as published
        raw = pd.read_csv(unit, encoding="utf-8-sig", dtype="string")
        # the export pads names and values with tabs/spaces ("# Chips ", "...PC5-5200B-R)  ")
        raw.columns = raw.columns.str.strip()
        raw = raw.apply(lambda col: col.str.strip())
        missing = [c for c in REQUIRED if c not in raw.columns]
        if missing:
            raise DatasetLayoutError(
                f"{self.name}: {unit} lacks column(s) {missing}; expected spec.org's CPU2017 CSV export"
            )
        raw = raw[_positive(raw["Base Result"]).notna()].reset_index(drop=True)
        recs = variants(raw, parse_results(raw))
        recs["source"] = SOURCE
        recs["source_file"] = unit.relative_to(root).as_posix()
        return {"cpu_bench": recs}
