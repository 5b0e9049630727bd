"""UCI "Computer Hardware" (Ein-Dor & Feldmesser 1987) → ``cpu_bench`` records, one per machine.

``machine.data`` has no header; the column names come from the attribute list in ``machine.names``. Each
record: ``benchmark="prp"`` with ``score`` = published relative performance (``score_unit`` "PRP"),
``x_erp`` = the paper's linear-regression estimate, ``device_name`` = "vendor model", ``clock_mhz`` =
1000 / cycle time (ns), ``mem_gb`` = maximum main memory (MMAX KiB / 1024²) with both bounds kept as
``x_mmin_kb`` / ``x_mmax_kb``, ``x_cache_kb`` and the channel range ``x_chmin`` / ``x_chmax``.
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
from perfcast.records.parsing import snake_case
from perfcast.records.schema import hardware_ids

SOURCE = "uci_computer_hardware"
EXPECTED = ("vendor_name", "model_name", "myct", "mmin", "mmax", "cach", "chmin", "chmax", "prp", "erp")


def attribute_names(names_file: Path) -> list[str]:
    """Snake-case attribute names from the "Attribute Information" list of a UCI ``.names`` file."""
    text = names_file.read_text(errors="replace")
    section = re.search(r"Attribute Information:(.*?)(?:\n\s*\d+\.\s+Missing Attribute|\Z)", text, flags=re.S)
    if section is None:
        raise DatasetLayoutError(f"{names_file} has no 'Attribute Information:' section to name the columns")
    return [snake_case(n) for n in re.findall(r"^\s*\d+\.\s+([^:\n]+):", section.group(1), flags=re.M)]


def records(raw: pd.DataFrame) -> pd.DataFrame:
    """Records from ``machine.data`` with :data:`EXPECTED` column names."""
    num = raw[list(EXPECTED[2:])].apply(pd.to_numeric, errors="coerce").astype("float64")
    out = pd.DataFrame(
        {
            "benchmark": "prp",
            "subtest": "prp",
            "score": num["prp"].where(num["prp"] > 0),
            "score_unit": "PRP",
            "x_erp": num["erp"],
            "device_name": raw["vendor_name"].str.strip() + " " + raw["model_name"].str.strip(),
            "device_kind": "cpu",
            "vendor": raw["vendor_name"].str.strip(),
            "clock_mhz": 1000.0 / num["myct"].where(num["myct"] > 0),
            "mem_gb": num["mmax"].where(num["mmax"] > 0) / 1024**2,
            "x_myct_ns": num["myct"].astype("Int64"),
            "x_mmin_kb": num["mmin"].astype("Int64"),
            "x_mmax_kb": num["mmax"].astype("Int64"),
            "x_cache_kb": num["cach"].astype("Int64"),
            "x_chmin": num["chmin"].astype("Int64"),
            "x_chmax": num["chmax"].astype("Int64"),
        },
        index=raw.index,
    )
    out["hw_id"] = hardware_ids(out)
    return out


@register("uci-computer-hardware")
class UciComputerHardware(Importer):
    """UCI Computer Hardware: ``machine.data`` named by ``machine.names``."""

    description = "UCI Computer Hardware (1987): relative CPU performance (PRP) of 209 machines"

    def units(self, root: Path) -> list[Path]:
        return require(root.glob("machine.data"), root, "machine.data", self.name)

    def load(self, root: Path, unit: Path) -> dict[str, pd.DataFrame]:
        names_file = unit.with_name("machine.names")
        if not names_file.is_file():
            raise DatasetLayoutError(
                f"{self.name}: {names_file} is missing; it names the columns of {unit.name}"
            )
        names = attribute_names(names_file)
        if tuple(names) != EXPECTED:
            raise DatasetLayoutError(
                f"{self.name}: {names_file} lists attributes {names}, expected {list(EXPECTED)}"
            )
        raw = pd.read_csv(unit, header=None, names=names, dtype="string", skipinitialspace=True)
        recs = records(raw)
        recs["source"] = SOURCE
        recs["source_file"] = unit.relative_to(root).as_posix()
        return {"cpu_bench": recs}
