"""SPECpower_ssj2008 result list → ``cpu_bench`` records with wall power.

Each published result measures server-side Java throughput and wall power at graduated load levels; the
shared copy keeps the 100% level and active idle. Record layout (two records per result):

- ``subtest="100%"``: ``score`` = ssj_ops @ 100% (``score_unit`` "ssj_ops"), ``power_w`` = average watts
  @ 100%;
- ``subtest="active_idle"``: ``power_w`` = average watts at active idle, ``score`` missing (no work is done);

both with ``benchmark="ssj2008"``, ``power_source="analyzer"`` (SPEC requires an accepted power analyzer)
and the result's overall ssj_ops/watt as ``x_ssj_ops_per_watt``. "NC" (non-compliant) cells are missing;
a record with neither score nor power is dropped. Hardware counts (chips → ``sockets``, cores, threads,
memory) are totals over all ``x_nodes`` nodes of multi-node results, as published.
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
from perfcast.records.parsing import DataFileError, parse_processor, snake_case
from perfcast.records.schema import hardware_ids

SOURCE = "specpower_ssj2008"
OPS, WATTS, IDLE, OVERALL = (
    "ssj_ops @ 100%", "avg. watts @ 100%", "avg. watts @ active idle", "Result (Overall ssj_ops/watt)"
)
REQUIRED = (
    "Hardware Vendor Test Sponsor", "System Enclosure (if applicable)", "Date Submitted", "Nodes",
    "JVM Vendor", "CPU Description", "MHz", "Chips", "Cores", "Total Threads", "Total Memory (GB)",
    OPS, WATTS, IDLE, OVERALL,
)
#: one-hot microarchitecture flags the cloud-carbon-coefficients repo added
UARCH = ("Sandy Bridge", "Ivy Bridge", "Haswell", "Broadwell", "Skylake", "Cascade Lake", "Coffee Lake")


def number(s: pd.Series) -> pd.Series:
    """Published numbers with thousands separators ("6,652,024", "322 278"); "NC" and blanks → NaN."""
    v = pd.to_numeric(s.astype("string").str.replace(r"[,\s]", "", regex=True), errors="coerce")
    return v.where(v > 0).astype("float64")


def results(raw: pd.DataFrame) -> pd.DataFrame:
    """Hardware and provenance columns, one row per published result."""
    out = pd.DataFrame(
        {
            "benchmark": "ssj2008",
            "device_name": raw["CPU Description"].str.strip(),
            "device_kind": "cpu",
            "clock_mhz": number(raw["MHz"]),
            "sockets": number(raw["Chips"]).astype("Int64"),
            "cores": number(raw["Cores"]).astype("Int64"),
            "threads": number(raw["Total Threads"]).astype("Int64"),
            "mem_gb": number(raw["Total Memory (GB)"]),
            "system": raw["System Enclosure (if applicable)"].str.strip(),
            "published_at": pd.to_datetime(raw["Date Submitted"], format="%b %d, %Y", errors="coerce",
                                           utc=True),
            "power_source": "analyzer",
            "x_nodes": number(raw["Nodes"]).astype("Int64"),
            "x_system_vendor": raw["Hardware Vendor Test Sponsor"].str.strip(),
            "x_jvm_vendor": raw["JVM Vendor"].str.strip(),
            "x_ssj_ops_per_watt": number(raw[OVERALL]),
        },
        index=raw.index,
    )
    truth = {"TRUE": True, "FALSE": False}
    flags = {c: raw[c].str.strip().str.upper() for c in UARCH if c in raw}
    for c, v in flags.items():  # a flag cut short ("FA") is damage, not a missing value
        bad = v.notna() & ~v.isin(list(truth)).fillna(False)
        if bad.any():
            i = bad.idxmax()
            raise DataFileError(f"row {i}: {c}={raw.at[i, c]!r}, expected TRUE, FALSE or empty "
                                f"({int(bad.sum())} such value(s)); is the file cut off or edited?")
    uarch = pd.DataFrame({f"x_uarch_{snake_case(c)}": v.map(truth).astype("boolean") for c, v in flags.items()},
                         index=raw.index)
    out = pd.concat([out, parse_processor(raw["CPU Description"]), uarch], axis=1)
    out["hw_id"] = hardware_ids(out)
    return out


def records(raw: pd.DataFrame) -> pd.DataFrame:
    """The 100% and active-idle records of every result (see the module docstring)."""
    base = results(raw)
    full = base.assign(subtest="100%", score=number(raw[OPS]), score_unit="ssj_ops",
                       power_w=number(raw[WATTS]))
    idle = base.assign(subtest="active_idle", power_w=number(raw[IDLE]))
    out = pd.concat([full, idle], ignore_index=True)
    return out[out["score"].notna() | out["power_w"].notna()].reset_index(drop=True)


@register("specpower-ssj2008")
class SpecPower(Importer):
    """The SPECpower_ssj2008 result list (``SPECpower*.csv``), as kept by cloud-carbon-coefficients."""

    description = "SPECpower_ssj2008: server throughput and wall power at 100% load and active idle"
    #: the published list has no final newline: its last row is checked for width and for flags cut short
    #: ("FA"); only a cut right after its last comma (an empty last flag) would pass unseen
    final_newline = False

    def units(self, root: Path) -> list[Path]:
        return require(root.glob("SPECpower*.csv"), root, "SPECpower*.csv result list", self.name)

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        raw = pd.read_csv(unit, dtype="string")
        raw.columns = raw.columns.str.strip()
        missing = [c for c in REQUIRED if c not in raw.columns]
        if missing:
            raise DatasetLayoutError(
                f"{self.name}: {unit} lacks column(s) {missing}; expected the SPECpower_ssj2008 result list"
            )
        recs = records(raw)
        recs["source"] = SOURCE
        recs["source_file"] = unit.relative_to(root).as_posix()
        return {"cpu_bench": recs}
