"""Shared hardware-text parsers: known answers on strings copied from the real datasets, coverage over
every distinct description the datasets publish, and generated memory strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfcast.records.parsing import (
    cache_total_kb,
    clean_processor_name,
    key_values,
    parse_cache,
    parse_l1,
    parse_memory,
    parse_processor,
    size_kb,
    snake_case,
)

SPEC_TEXT = ("1st Level Cache", "2nd Level Cache", "3rd Level Cache", "Memory", "Processor")


@pytest.fixture(scope="module")
def spec_text(data_root: Path) -> dict[str, pd.Series]:
    """Distinct non-redacted values of SPEC CPU2017's free-text hardware columns."""
    raw = pd.read_csv(
        data_root / "spec-cpu2017" / "cpu2017-results.csv.gz", encoding="utf-8-sig", dtype="string",
        usecols=lambda c: c.strip() in SPEC_TEXT,
    )
    raw.columns = raw.columns.str.strip()
    return {c: pd.Series(raw[c].str.strip().unique()).pipe(lambda s: s[s != "redacted"]) for c in SPEC_TEXT}


def test_l1_split_on_every_spec_format(spec_text: dict[str, pd.Series]) -> None:
    values = spec_text["1st Level Cache"]
    parsed = parse_l1(values)
    assert parsed.notna().all().all(), values[parsed.isna().any(axis=1)].tolist()
    one = parse_l1(pd.Series(["32 KB I + 48 KB D on chip per core", "96 KB I + 64 KB D on chip per core"]))
    assert one.to_numpy().tolist() == [[32.0, 48.0], [96.0, 64.0]]


@pytest.mark.parametrize(
    ("text", "chips", "cores", "total_mb"),
    [
        ("64 MB I+D on chip per chip, 32 MB shared / 6 cores", 1, 12, 64),  # AMD EPYC 4464P
        ("112.5 MB I+D on chip per chip", 2, 120, 225),  # Xeon 8490H, summed over chips
        ("384 MB I+D on chip per chip, 32 MB shared / 8 cores", 2, 192, 768),  # EPYC 9654 2P
        ("8 MB I+D on chip per core", 4, 40, 320),  # POWER8: per core × all cores
        ("32 MB I+D on chip per 8 cores", 1, 8, 32),  # Ryzen 7 5800X
        ("64 MB I+D on chip per die (128 MB per chip)", 1, 128, 128),  # Yitian 710
        ("120 MB I+D on chip per chip shared NUCA / 15 cores", 8, 120, 960),  # POWER10
        ("32 MB I+D off chip per chip", 4, 8, 128),  # UltraSPARC-IV+
    ],
)
def test_cache_total_by_scope(text: str, chips: int, cores: int, total_mb: float) -> None:
    parsed = parse_cache(pd.Series([text]))
    total = cache_total_kb(parsed, pd.Series([chips]), pd.Series([cores])) / 1024
    assert total.iloc[0] == pytest.approx(total_mb)


def test_cache_parses_every_spec_l2_and_l3(spec_text: dict[str, pd.Series]) -> None:
    l3 = spec_text["3rd Level Cache"]
    assert parse_cache(l3)["kb"].notna().all(), l3[parse_cache(l3)["kb"].isna()].tolist()
    l2 = spec_text["2nd Level Cache"]
    # SPARC M7's L2 is two separate I and D caches: there is no unified size to report
    assert l2[parse_cache(l2)["kb"].isna()].tolist() == [
        "2 MB I on chip per chip (256 KB / 4 cores); 4 MB D on chip per chip (256 KB / 2 cores)"
    ]


def test_unparseable_cache_is_missing_not_guessed() -> None:
    parsed = parse_cache(pd.Series(["redacted", None, "lots of cache"]))
    assert parsed["kb"].isna().all()


@pytest.mark.parametrize(
    ("text", "gb", "dimms", "gen", "mts", "rated", "hbm"),
    [
        ("64 GB (2 x 32 GB 2Rx8 PC5-5200B-R)", 64, 2, 5, 5200, 5200, None),
        ("384 GB (12 x 32 GB 2Rx4 PC4-2666V-R, running at 2400)", 384, 12, 4, 2400, 2666, None),
        ("768 GB (24 x 32 GB 2Rx4 PC4-2933Y-R, configured at 2934)", 768, 24, 4, 2934, 2933, None),
        ("4 TB (128 x 32 GB 2Rx4 PC4 - 2400T, running at 1600)", 4096, 128, 4, 1600, 2400, None),
        ("128 GB (8 x 16 GB 2Rx4 PC3-12800R-11, ECC, running at 1333)", 128, 8, 3, 1333, 1600, None),
        ("512 MB (8 x 64 GB 2Rx4 PC4-3200AA-R)", 512, 8, 4, 3200, 3200, None),  # MB/GB typo
        ("1536 GB (23 x 64 GB 2Rx4 PC5-4800B-R + 1 x 64 GB 2Rx4 PC5-5600B-R, running at 4800)",
         1536, 24, 5, 4800, 4800, None),
        ("1152 GB (16 x 64 GB 2Rx4 PC5-4800B-R + 2 x 64 GB HBM)", 1152, 16, 5, 4800, 4800, 128),
        ("1024GB (16x64GB DDR5 4800 MT/s [4800 MT/s])", 1024, 16, 5, 4800, 4800, None),  # PerfCastDB
        ("1024GB (16x64GB DDR5 4800 MT/s [4400 MT/s]); 128GB (8x16GB HBM2 3200 MT/s [3200 MT/s])",
         1152, 16, 5, 4400, 4800, 128),
    ],
)
def test_memory_known_answers(
    text: str, gb: float, dimms: int, gen: int, mts: float, rated: float, hbm: float | None
) -> None:
    m = parse_memory(pd.Series([text])).iloc[0]
    assert (m["mem_gb"], m["mem_dimms"], m["mem_ddr_gen"]) == (gb, dimms, gen)
    assert (m["mem_mts"], m["x_mem_rated_mts"]) == (mts, rated)
    assert (pd.isna(m["x_hbm_gb"]) if hbm is None else m["x_hbm_gb"] == hbm)


def test_memory_coverage_over_distinct_spec_strings(spec_text: dict[str, pd.Series]) -> None:
    values = spec_text["Memory"]
    m = parse_memory(values)
    assert m["mem_gb"].notna().all()
    unparsed_speed = set(values[m["mem_mts"].isna()])
    # left unparsed on purpose: HBM-only systems, 1990s SDRAM with no speed, MRDIMM "PC5-88/56B"
    assert len(unparsed_speed) <= 3, unparsed_speed
    assert all("HBM" in v or "SDRAM" in v or "/56B" in v for v in unparsed_speed)


@given(
    n=st.integers(1, 256),
    size=st.sampled_from([8, 16, 32, 64, 96, 128]),
    gen=st.sampled_from([3, 4, 5]),
    rated=st.integers(1000, 8800),  # module speeds have 4 digits (DDR3-1066 .. DDR5-8800)
    ran=st.one_of(st.none(), st.integers(1333, 8800)),
)
def test_memory_generated_spec_strings(n: int, size: int, gen: int, rated: int, ran: int | None) -> None:
    speed = "" if ran is None else f", running at {ran}"
    label = rated * 8 if gen == 3 else rated  # PC3 module names give MB/s, PC4/PC5 give MT/s
    text = f"{n * size} GB ({n} x {size} GB 2Rx4 PC{gen}-{label}AA-R{speed})"
    m = parse_memory(pd.Series([text])).iloc[0]
    assert (m["mem_gb"], m["mem_dimms"], m["mem_ddr_gen"]) == (n * size, n, gen)
    assert m["x_mem_rated_mts"] == rated
    assert m["mem_mts"] == (rated if ran is None else ran)


def test_parsers_keep_index_and_missing_rows() -> None:
    s = pd.Series([None, "64 GB (2 x 32 GB 2Rx8 PC5-5200B-R)", None, "64 GB (2 x 32 GB 2Rx8 PC5-5200B-R)"],
                  index=[10, 20, 30, 40])
    m = parse_memory(s)
    assert list(m.index) == [10, 20, 30, 40]
    assert m["mem_gb"].isna().tolist() == [True, False, True, False]


@pytest.mark.parametrize(
    ("name", "vendor", "family", "model", "gen"),
    [
        ("AMD EPYC 4464P", "AMD", "EPYC", "4464P", 4),
        ("AMD EPYC 72F3", "AMD", "EPYC", "72F3", 3),
        ("EPYC 7742", "AMD", "EPYC", "7742", 2),  # SPECpower omits the vendor
        ("Intel Xeon Platinum 8480+", "Intel", "Xeon Platinum", "8480+", 4),
        ("Intel Xeon platinum 8468", "Intel", "Xeon Platinum", "8468", 4),
        ("Intel(R) Xeon(R) Platinum 8487C", "Intel", "Xeon Platinum", "8487C", 4),  # PerfCastDB
        ("Intel (R) Xeon (R) CPU Max 9460", "Intel", "Xeon Max", "9460", 4),
        ("Intel Xeon 6980P", "Intel", "Xeon 6", "6980P", 6),
        ("Intel Xeon E5-2699A v4", "Intel", "Xeon E5", "2699A v4", 4),
        ("Intel Xeon E5-2670", "Intel", "Xeon E5", "2670", 1),
        ("Intel E3-1260L v5", "Intel", "Xeon E3", "1260L v5", 5),
        ("Intel Xeon w9-3495X", "Intel", "Xeon W", "3495X", None),
        ("Intel Core i9-9900K", "Intel", "Core i9", "9900K", 9),
        ("Intel Xeon X5570, 2.933 GHz", "Intel", "Xeon", "X5570", None),
        ("AMD Opteron(r) Processor 8376 HE", "AMD", "Opteron", "8376HE", None),
        ("2.6 GHz AMD Opteron 2435", "AMD", "Opteron", "2435", None),
        ("AMD Ryzen Threadripper PRO 3995WX", "AMD", "Ryzen Threadripper", "3995WX", 3),
        ("Ampere Altra Max M128-30", "Ampere", "Altra Max", "M128-30", None),
        ("Power10", "IBM", "POWER", "POWER10", 10),
        ("Intel X3350", "Intel", None, None, None),  # no family word: vendor only
    ],
)
def test_processor_known_names(
    name: str, vendor: str, family: str | None, model: str | None, gen: int | None
) -> None:
    p = parse_processor(pd.Series([name])).iloc[0]
    assert p["vendor"] == vendor
    for col, want in (("family", family), ("x_cpu_model", model), ("x_cpu_generation", gen)):
        assert (pd.isna(p[col]) if want is None else p[col] == want), (col, p[col])


def test_every_spec_processor_gets_vendor_and_family(spec_text: dict[str, pd.Series]) -> None:
    p = parse_processor(spec_text["Processor"])
    assert p["vendor"].notna().all() and p["family"].notna().all()
    assert p["x_cpu_model"].notna().all()


def test_clean_processor_name_drops_marks_and_clocks() -> None:
    got = clean_processor_name(pd.Series(["Intel(R) Xeon(R) CPU E5472", "Intel Xeon X5570, 2.933 GHz"]))
    assert got.tolist() == ["Intel Xeon E5472", "Intel Xeon X5570"]


def test_size_kb_reads_numbers_and_units() -> None:
    got = size_kb(pd.Series([48, "2048", "105 MiB", "1.25 MB", None, "abc"]))
    np.testing.assert_allclose(got.to_numpy(dtype=float), [48, 2048, 107520, 1280, np.nan, np.nan])
    assert size_kb(pd.Series(["2"]), default_unit="M").iloc[0] == 2048


def test_key_values_wide_table() -> None:
    kv = key_values(pd.Series(["AVX:Yes AMX-BF16:No", None, "QAT:2 DSA:8"]))
    assert kv.loc[0, "AVX"] == "Yes" and kv.loc[0, "AMX-BF16"] == "No" and kv.loc[2, "QAT"] == "2"
    assert kv.loc[1].isna().all() and pd.isna(kv.loc[0, "QAT"])


def test_snake_case() -> None:
    assert snake_case("SVR.CPU.Core(s) per Socket") == "svr_cpu_cores_per_socket"
    assert snake_case("BIOS.Total Memory Encryption Multi-Tenant(TME-MT)") == (
        "bios_total_memory_encryption_multi_tenant_tme_mt"
    )
