"""Vectorised parsers for the free-text hardware descriptions that public CPU datasets publish.

SPEC CPU2017, SPECpower and PerfCastDB describe caches, memory and processors as prose ("64 GB (2 x 32
GB 2Rx8 PC5-5200B-R)", "1024GB (16x64GB DDR5 4800 MT/s [4800 MT/s])", "Intel(R) Xeon(R) Platinum
8487C"). Every CPU importer needs the same numbers out of them, so the regexes live here once. All
functions take a pandas Series of strings and return aligned Series/DataFrames whose columns are already
named as record columns (schema names, or ``x_`` extras); a value that does not match is missing (NA),
never guessed, so callers can measure their parse coverage.

:func:`check_text_file` checks a dataset file is whole (complete gzip stream, UTF-8, last row complete)
before an importer reads any of it.
"""

from __future__ import annotations

import csv
import functools
import gzip
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from perfcast.lazy import pandas as pd

Parsed = TypeVar("Parsed", "pd.Series", "pd.DataFrame")

#: a plain decimal number in text: "4096", " 9.0", "-1.5e3"
_DECIMAL = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
#: a size such as "32 KB", "1.25 MB", "64GB", "105 MiB"
_SIZE = r"(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT])i?B"
_KB_PER_UNIT = {"K": 1.0, "M": 1024.0, "G": 1024.0**2, "T": 1024.0**3}


def decimal(text: str) -> float | None:
    """``text`` as a number when it is a plain decimal number, else None: how a command line's ``--set m=4096`` and
    a spec sheet's text fields carry numbers, read without pandas (what ``pandas.to_numeric`` reads of them)."""
    return float(text) if _DECIMAL.fullmatch(text) else None


def per_unique(func: Callable[[pd.Series], Parsed]) -> Callable[[pd.Series], Parsed]:
    """Run a parser once per distinct value and spread the result back over ``s``'s rows.

    Published tables repeat a few hundred descriptions over tens of thousands of rows, so regexes over
    the distinct values are ~100x cheaper than over every row.
    """

    @functools.wraps(func)
    def wrapper(s: pd.Series) -> Parsed:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        base = pd.Series(list(uniques) + [None], dtype=object)  # last slot answers NA rows (code -1)
        parsed = func(base)
        out = parsed.iloc[np.where(codes < 0, len(uniques), codes)]
        return out.set_axis(s.index, axis=0)

    return wrapper


def _text(s: pd.Series) -> pd.Series:
    """``s`` as nullable strings (numbers and NaN allowed in the input)."""
    return s.astype("string")


def _kb(num: pd.Series, unit: pd.Series) -> pd.Series:
    """Sizes in KiB from a number column and a K/M/G/T unit column (binary units, as vendors mean)."""
    scale = unit.str.upper().map(_KB_PER_UNIT).astype("float64")
    return pd.to_numeric(num, errors="coerce").astype("float64") * scale


def size_kb(s: pd.Series, default_unit: str = "K") -> pd.Series:
    """Sizes in KiB from values like ``48``, ``"2048"``, ``"105 MiB"``, ``"1.25 MB"``.

    Bare numbers are in ``default_unit`` (``"K"``, ``"M"``, ...): lscpu-style dumps give caches as plain
    KiB numbers in one release and as "105 MiB" in the next, and an importer must read both.
    """
    m = _text(s).str.strip().str.extract(r"^(?P<num>\d+(?:\.\d+)?)\s*(?:(?P<unit>[KMGT])i?B?)?$",
                                         flags=re.I)
    return _kb(m["num"], m["unit"].fillna(default_unit))


@per_unique
def parse_l1(s: pd.Series) -> pd.DataFrame:
    """Split L1 descriptions like "32 KB I + 48 KB D on chip per core" into ``l1i_kb`` and ``l1d_kb``."""
    m = _text(s).str.extract(
        r"(?P<i>\d+(?:\.\d+)?)\s*(?P<iu>[KM])B\s*I\s*\+\s*(?P<d>\d+(?:\.\d+)?)\s*(?P<du>[KM])B\s*D",
        flags=re.I,
    )
    return pd.DataFrame({"l1i_kb": _kb(m["i"], m["iu"]), "l1d_kb": _kb(m["d"], m["du"])}, index=s.index)


@per_unique
def parse_cache(s: pd.Series) -> pd.DataFrame:
    """Size and sharing scope of SPEC-style cache descriptions.

    Returns ``kb`` (size of one instance) and ``cores_per_instance``: 1 for "per core", N for "per N cores"
    or NaN for "per chip". The first "<size> ... per <scope>" wins, so "256 MB I+D on chip per chip, 32 MB
    shared / 8 cores" is 256 MB per chip (the trailing clause only says how the chip's L3 is sliced). "64 MB
    I+D on chip per die (128 MB per chip)" falls back to the explicit per-chip size. Split I/D caches
    ("2 MB I on chip per chip ...; 4 MB D ...") have no single size and stay missing.
    """
    t = _text(s)
    m = t.str.extract(
        rf"^\s*{_SIZE}[^,;(]*?\bper\s+(?:(?P<n>\d+)\s+)?(?P<scope>chip|cores?)\b", flags=re.I
    )
    chip = t.str.extract(rf"{_SIZE}\s+per\s+chip\b", flags=re.I)
    use_chip = m["num"].isna() & chip["num"].notna()
    split = t.str.contains(r"[KMGT]i?B\s+[ID]\s+(?:on|off)\b", flags=re.I).fillna(False).astype(bool)
    kb = _kb(m["num"], m["unit"]).where(~use_chip, _kb(chip["num"], chip["unit"])).mask(split)
    scope = m["scope"].str.lower().where(~use_chip, "chip")
    n = pd.to_numeric(m["n"], errors="coerce").astype("float64")
    by_core = scope.str.startswith("core").fillna(False).astype(bool)  # "per core" or "per N cores"
    cores_per_instance = pd.Series(np.nan, index=s.index, dtype="float64").mask(by_core, n.fillna(1.0))
    return pd.DataFrame({"kb": kb, "cores_per_instance": cores_per_instance}, index=s.index)


def cache_total_kb(parsed: pd.DataFrame, chips: pd.Series, cores: pd.Series) -> pd.Series:
    """Total KiB over the whole system from :func:`parse_cache` output and the chip/core counts.

    Per chip: size × chips. Per core: size × cores. Per N cores: size × cores / N.
    """
    chips = pd.to_numeric(chips, errors="coerce").astype("float64")
    cores = pd.to_numeric(cores, errors="coerce").astype("float64")
    cpi = parsed["cores_per_instance"]
    instances = (cores / cpi).where(cpi.notna(), chips)
    return parsed["kb"] * instances


@per_unique
def parse_memory(s: pd.Series) -> pd.DataFrame:
    """Numbers out of memory configurations (SPEC's and lscpu/dmidecode-style summaries).

    Handles "64 GB (2 x 32 GB 2Rx8 PC5-5200B-R)", "384 GB (12 x 32 GB 2Rx4 PC4-2666V-R, running at
    2400)", "1024GB (16x64GB DDR5 4800 MT/s [4800 MT/s]); 128GB (8x16GB HBM2 ...)". Columns:

    - ``mem_gb``: the stated total (GiB), summed over "; "-separated pools (DDR + HBM, as SPEC's single
      total and PerfCastDB's DIMM.Total count it); when it is off from DIMM count × size by exactly 1024
      (a "512 MB (8 x 64 GB ...)" unit typo) the DIMM product is used. Other disagreements between the
      total and the DIMM list are left as published (the total is what the submitter stated);
    - ``mem_dimms``: sum of every "N x SIZE" group except HBM stacks;
    - ``x_hbm_gb``: capacity of "N x SIZE HBM" groups (NaN if none);
    - ``mem_ddr_gen``: 4 for PC4/DDR4, 5 for PC5/DDR5, ...;
    - ``x_mem_rated_mts``: the module rating (PC5-5200B → 5200, DDR5-4800 → 4800; PC3-12800 and older
      module names give MB/s and are divided by 8);
    - ``mem_mts``: the speed the memory actually ran at ("running at 2400", "configured at", "[4800 MT/s]"),
      else the rating.
    """
    t = _text(s)
    totals = t.str.extractall(rf"(?:^|;)\s*{_SIZE}\s*\(", flags=re.I)
    total_gb = (_kb(totals["num"], totals["unit"]) / 1024**2).groupby(level=0).sum().reindex(s.index)

    groups = t.str.extractall(
        r"(?P<n>\d+)\s*x\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[MGT])i?B(?P<hbm>\s*HBM)?", flags=re.I
    )
    n = pd.to_numeric(groups["n"]).astype("float64")
    gb = n * _kb(groups["num"], groups["unit"]) / 1024**2
    is_hbm = groups["hbm"].notna()
    lvl = groups.index.get_level_values(0)
    dimms = n.where(~is_hbm).groupby(lvl).sum(min_count=1).reindex(s.index)
    dimm_gb = gb.where(~is_hbm).groupby(lvl).sum(min_count=1).reindex(s.index)
    hbm_gb = gb.where(is_hbm).groupby(lvl).sum(min_count=1).reindex(s.index)

    typo = np.isclose(total_gb * 1024, dimm_gb) & dimm_gb.notna()
    mem_gb = total_gb.where(~typo, dimm_gb)

    mod = t.str.extract(r"\b(?P<kind>PC|DDR)(?P<gen>\d)[A-Z]?\s*-?\s*(?P<rate>\d{4,5})(?!\d)",
                        flags=re.I)
    gen = pd.to_numeric(mod["gen"], errors="coerce").astype("float64")
    rate = pd.to_numeric(mod["rate"], errors="coerce").astype("float64")
    mb_per_s = (mod["kind"].str.upper() == "PC").fillna(False).astype(bool) & (gen <= 3)
    rated = rate.mask(mb_per_s, rate / 8)  # PC3-12800 names MB/s (8 bytes/transfer); PC4/PC5 name MT/s
    ran = t.str.extract(
        r"(?:(?:running|configured|operating|clocked)\s+at\s+(?P<a>\d{3,5})"
        r"|\[\s*(?P<b>\d{3,5})\s*MT/s\s*\])",
        flags=re.I,
    )
    running = pd.to_numeric(ran["a"].fillna(ran["b"]), errors="coerce").astype("float64")
    return pd.DataFrame(
        {
            "mem_gb": mem_gb,
            "mem_dimms": dimms.astype("Int64"),
            "mem_ddr_gen": gen.astype("Int64"),
            "mem_mts": running.fillna(rated),
            "x_mem_rated_mts": rated,
            "x_hbm_gb": hbm_gb,
        },
        index=s.index,
    )


# Processor names: (pattern on the cleaned name, vendor, family). A ``tier`` group is appended to the
# family ("Xeon" + "Gold"); ``model`` is the SKU. Every pattern has a group (a match is a non-NA group).
# First match wins, so specific patterns come first.
_PROCESSORS: tuple[tuple[str, str, str], ...] = (
    (r"\bXeon\s+(?P<tier>Platinum|Gold|Silver|Bronze|Max)\s+(?P<model>\d{4}\w*\+?)", "Intel", "Xeon"),
    (r"\bXeon\s+(?P<model>6\d{3}[EP])\b", "Intel", "Xeon 6"),
    (r"\bXeon\s+w\d-(?P<model>\d{4}\w*)", "Intel", "Xeon W"),
    (r"\b(?:Xeon|Intel)\s+(?P<tier>W|D|E|E3|E5|E7)-(?P<model>\d{4}\w*(?:\s+v\d)?)", "Intel", "Xeon"),
    (r"\bXeon\s+(?P<model>[A-Z]?\d{4}\w*)", "Intel", "Xeon"),
    (r"\b(Xeon)\b", "Intel", "Xeon"),
    (r"\bCore\s+(?P<tier>i\d)[\s-]+(?P<model>\d{3,5}\w*)", "Intel", "Core"),
    (r"\bPentium\s+(?:Gold\s+|D\s+)?(?P<model>[A-Z]?\d{3,4}\w*)", "Intel", "Pentium"),
    (r"\bCeleron\s+(?P<model>[A-Z]?\d{3,4}\w*)", "Intel", "Celeron"),
    (r"\bEPYC\s+(?P<model>\d\w{3}\w*)", "AMD", "EPYC"),
    (r"\bRyzen\s+Threadripper\s+(?:PRO\s+)?(?P<model>\d{4}\w*)", "AMD", "Ryzen Threadripper"),
    (r"\bRyzen\s+\d\s+(?P<model>\d{4}\w*)", "AMD", "Ryzen"),
    (r"\bOpteron\s+(?P<model>\d{4}(?:\s*(?:HE|EE|SE)\b)?\w*)", "AMD", "Opteron"),
    (r"\bAltra\s+Max\s+(?P<model>\S+)", "Ampere", "Altra Max"),
    (r"\bAltra\s+(?P<model>\S+)", "Ampere", "Altra"),
    (r"\bAmpereOne\s+(?P<model>\S+)", "Ampere", "AmpereOne"),
    (r"\bKunpeng\s+(?P<model>\d+(?:\s+\d+)?)", "Huawei", "Kunpeng"),
    (r"\b(?P<model>POWER\d+)\b", "IBM", "POWER"),
    (r"\bSPARC64\s+(?P<model>\w+)", "Fujitsu", "SPARC64"),
    (r"\bUltraSPARC-?(?P<model>\S+)", "Oracle", "UltraSPARC"),
    (r"\bSPARC\s+(?P<model>M\d+)", "Oracle", "SPARC M"),
    (r"\bYitian\s+(?P<model>\d+)", "Alibaba", "Yitian"),
    (r"\bZhuFengXin\s+(?P<model>\d+)", "ZXIC", "ZhuFengXin"),
)
_VENDOR_WORDS = {"intel": "Intel", "amd": "AMD", "ibm": "IBM", "ampere": "Ampere", "huawei": "Huawei"}


def clean_processor_name(s: pd.Series) -> pd.Series:
    """Drop trademark marks, "CPU"/"Processor" filler and clock speeds: "Intel(R) Xeon(R) CPU Max 9460" →
    "Intel Xeon Max 9460"."""
    t = _text(s)
    t = t.str.replace(r"\s*\((?:R|TM)\)", "", regex=True, flags=re.I)
    t = t.str.replace(r"\b(?:CPU|Processor)\b|,?\s*@?\s*\d+(?:\.\d+)?\s*GHz\b", " ", regex=True, flags=re.I)
    return t.str.replace(r"[\s,]+", " ", regex=True).str.strip()


@per_unique
def parse_processor(s: pd.Series) -> pd.DataFrame:
    """``vendor``, ``family``, ``x_cpu_model`` (the SKU) and ``x_cpu_generation`` from processor names.

    The generation is family-specific and only set where the SKU number encodes it cleanly: Xeon Scalable
    and Xeon Max (second digit: 8380 → 3), Xeon 6 (6), Xeon E3/E5/E7 ("v4" → 4, no suffix → 1), EPYC
    (fourth character: 7763 → 3, 9754 → 4), Core and Ryzen (leading thousands: 9900K → 9, 7950X → 7) and
    POWER (POWER9 → 9). Unknown names keep NA so a model never sees a made-up number.
    """
    clean = clean_processor_name(s)
    vendor = pd.Series(pd.NA, index=s.index, dtype="string")
    family = vendor.copy()
    model = vendor.copy()
    for pattern, ven, fam in _PROCESSORS:
        m = clean.str.extract(pattern, flags=re.I)
        hit = m.notna().any(axis=1) & family.isna()
        if not hit.any():
            continue
        fam_s = pd.Series(fam, index=s.index, dtype="string")
        if "tier" in m:
            fam_s = (fam_s + " " + _tier(m["tier"].astype("string"))).fillna(fam_s)
        vendor = vendor.mask(hit, ven)
        family = family.mask(hit, fam_s)
        if "model" in m:
            mod = m["model"].astype("string").str.upper()
            mod = mod.str.replace(r"\s+(?=(?:HE|EE|SE)\b)", "", regex=True)  # "8376 HE" → "8376HE"
            model = model.mask(hit, mod.str.replace(r"\s+V(\d)$", r" v\1", regex=True))
    first = clean.str.extract(r"^(\w+)", flags=re.I)[0].str.lower().map(_VENDOR_WORDS).astype("string")
    vendor = vendor.fillna(first)
    gen = _generation(family, model)
    return pd.DataFrame(
        {"vendor": vendor, "family": family, "x_cpu_model": model, "x_cpu_generation": gen}, index=s.index
    )


def _tier(t: pd.Series) -> pd.Series:
    """Family tiers as Intel writes them: "gold" → "Gold", "e5" → "E5", "I9" → "i9"."""
    low = t.str.lower()
    short = (t.str.len() <= 2).fillna(False).astype(bool)
    core = low.str.match(r"^i\d$").fillna(False).astype(bool)
    return t.str.title().mask(short, t.str.upper()).mask(core, low)


def _generation(family: pd.Series, model: pd.Series) -> pd.Series:
    """The family-specific generation number encoded in the SKU (see :func:`parse_processor`)."""
    fam = family.fillna("")
    digits = pd.to_numeric(model.str.extract(r"(\d+)")[0], errors="coerce")
    second = pd.to_numeric(model.str.slice(1, 2), errors="coerce")
    fourth = pd.to_numeric(model.str.slice(3, 4), errors="coerce")
    version = pd.to_numeric(model.str.extract(r"\sv(\d)$")[0], errors="coerce")
    thousands = (digits // 1000).where(digits // 1000 > 0)
    scalable = fam.isin(["Xeon Platinum", "Xeon Gold", "Xeon Silver", "Xeon Bronze", "Xeon Max"])
    gen = np.select(
        [
            scalable.to_numpy(),
            (fam == "Xeon 6").to_numpy(),
            fam.isin(["Xeon E3", "Xeon E5", "Xeon E7"]).to_numpy(),
            (fam == "EPYC").to_numpy(),
            fam.str.match(r"^(?:Core|Ryzen)").to_numpy(dtype=bool),
            (fam == "POWER").to_numpy(),
        ],
        [second, np.full(len(fam), 6.0), version.fillna(1.0), fourth, thousands, digits],
        default=np.nan,
    )
    return pd.Series(gen, index=family.index).astype("Int64")


@per_unique
def key_values(s: pd.Series) -> pd.DataFrame:
    """Wide table from "KEY:VALUE KEY:VALUE" lists ("AVX:Yes AVX2:No", "QAT:2 DSA:8"), one column per key.

    Values stay text (the caller knows whether they are Yes/No or counts); keys absent from a row are NA.
    """
    kv = _text(s).str.extractall(r"(?P<key>[\w.+-]+):\s*(?P<value>[^\s:]+)")
    if kv.empty:
        return pd.DataFrame(index=s.index)
    kv = kv.reset_index(level=1, drop=True).set_index("key", append=True)["value"]
    kv = kv[~kv.index.duplicated(keep="first")]
    return kv.unstack("key").reindex(s.index).rename_axis(columns=None)


def snake_case(name: str) -> str:
    """A column name as an identifier: "SVR.CPU.Core(s) per Socket" → "svr_cpu_cores_per_socket"."""
    name = re.sub(r"\(s\)", "s", name)
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


class DataFileError(ValueError):
    """A dataset file is damaged or is not the text it should be; the message names it and what to do."""


#: file endings :func:`check_text_file` applies to (other files, e.g. Parquet, are checked by their reader)
TEXT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".data", ".txt", ".txt.gz")


def check_text_file(path: Path, dataset: str, *, final_newline: bool = True) -> None:
    """Check a text table is whole before any of it is imported, or raise :class:`DataFileError`.

    Why: pandas reads a gzip cut mid-stream, a binary file or a file cut mid-row into a traceback or,
    worse, into rows with truncated values. Checked: the file is readable and non-empty, a ``.gz``
    decompresses to its end, the text is UTF-8 without NUL bytes, and it ends on a complete row: with a
    newline, or, for a source published without one (``final_newline=False``), with a last row as wide
    as the row before it (a cut there can then only have shortened the last field).
    """
    fix = f"replace it with an intact copy of the {dataset} dataset and import again"
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
    except EOFError:
        raise DataFileError(f"{dataset}: {path} is a gzip file cut off mid-stream; {fix}") from None
    except (OSError, zlib.error) as e:
        raise DataFileError(f"{dataset}: {path} cannot be read ({e}); {fix}") from None
    if not data.strip():
        raise DataFileError(f"{dataset}: {path} is empty{' once decompressed' if path.suffix == '.gz' else ''}; {fix}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFileError(f"{dataset}: {path} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); "
                            f"{fix}") from None
    if "\0" in text:
        raise DataFileError(f"{dataset}: {path} holds NUL bytes: a binary file, not a text table; {fix}")
    if text.endswith(("\n", "\r")):
        return
    rows = text.splitlines()[-2:]
    try:
        widths = {len(next(csv.reader([r]), [])) for r in rows}
    except csv.Error:
        widths = set()
    if final_newline or len(rows) < 2 or len(widths) != 1 or rows[-1].count('"') % 2:
        raise DataFileError(f"{dataset}: {path} ends mid-row (no final newline, last row ends {rows[-1][-40:]!r}): "
                            f"the file looks cut off; {fix}")
