"""Machine fingerprint: this machine's, a fake two-socket sysfs tree, and GPU properties from a fake torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import psutil
import pytest
import torch

from perfcast.records.schema import hardware_ids, validate
from perfcast.perf_probe.hardware import (
    cpu_family,
    cpu_fingerprint,
    fingerprint_table,
    gpu_fingerprint,
    gpu_fingerprints,
    software_versions,
)

GEMM_ROW = {"op": "matmul", "m": 8, "n": 8, "k": 8, "batch": 1, "dtype": "float32", "runtime_ms": 0.01,
            "source": "probe"}


def test_this_cpu_fingerprint_is_stable_and_plausible():
    a, b = cpu_fingerprint(), cpu_fingerprint()
    assert a == b and len(a["hw_id"]) == 16
    assert a["device_kind"] == "cpu" and a["device_name"]
    assert a["threads"] == len(os.sched_getaffinity(0)) or a["threads"] == os.cpu_count()
    assert a["cores"] == psutil.cpu_count(logical=False)
    assert a["sockets"] >= 1 and a["numa_nodes"] >= 1
    assert a["mem_gb"] == pytest.approx(psutil.virtual_memory().total / 2**30, abs=0.1)
    assert a["os"].startswith(os.uname().sysname)
    for col in ("l1d_kb", "l2_kb"):
        assert 8 <= a[col] <= 8192, (col, a[col])
    if Path("/proc/cpuinfo").read_text().count(" avx2 "):
        assert "avx2" in a["isa_flags"].split()


def test_fingerprint_validates_and_its_id_survives_the_store_dtypes():
    fp = cpu_fingerprint()
    rec = validate(pd.DataFrame([{**GEMM_ROW, **fp}]), "gemm")
    assert rec.loc[0, "hw_id"] == fp["hw_id"]
    # recomputed from the stored (canonical-dtype) columns, the id is the same: probed and imported
    # records of one machine meet on hw_id
    assert hardware_ids(rec.drop(columns="hw_id")).iloc[0] == fp["hw_id"]


def _fake_tree(root: Path, mhz: str = "2500.000") -> tuple[Path, Path, Path]:
    """2 sockets x 2 cores x 2 threads; L1/L2 per core, L3 16 MiB per socket; 2 NUMA nodes."""
    proc, cpu, node = root / "proc", root / "cpu", root / "node"
    proc.mkdir(parents=True)
    flags = "fpu sse sse2 ssse3 avx avx2 fma avx512f avx512_bf16 amx_tile smep ibrs hypervisor"
    blocks = []
    for c in range(8):
        pkg, core = c // 4, (c % 4) // 2
        blocks.append(f"processor\t: {c}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
                      f"model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz\ncpu MHz\t\t: {mhz}\n"
                      f"physical id\t: {pkg}\ncore id\t\t: {core}\nflags\t\t: {flags}\n")
        topo = cpu / f"cpu{c}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{pkg}\n")
        (topo / "core_id").write_text(f"{core}\n")
        sib = f"{c - c % 2}-{c - c % 2 + 1}"
        sock = f"{4 * pkg}-{4 * pkg + 3}"
        for i, (lvl, typ, size, shared) in enumerate(
                [("1", "Data", "32K", sib), ("1", "Instruction", "32K", sib), ("2", "Unified", "1024K", sib),
                 ("3", "Unified", "16384K", sock)]):
            d = cpu / f"cpu{c}" / "cache" / f"index{i}"
            d.mkdir(parents=True)
            for f, v in (("level", lvl), ("type", typ), ("size", size), ("shared_cpu_list", shared)):
                (d / f).write_text(v + "\n")
    (proc / "cpuinfo").write_text("\n".join(blocks))
    (cpu / "online").write_text("0-7\n")
    freq = cpu / "cpu0" / "cpufreq"
    freq.mkdir()
    (freq / "base_frequency").write_text("2500000\n")
    (freq / "cpuinfo_max_freq").write_text("3900000\n")
    (freq / "scaling_cur_freq").write_text("1200000\n")
    for n in (0, 1):
        (node / f"node{n}").mkdir(parents=True)
    return proc, cpu, node


def test_fake_two_socket_tree(tmp_path):
    fp = cpu_fingerprint(*_fake_tree(tmp_path))
    assert fp["device_name"] == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"
    assert (fp["vendor"], fp["family"]) == ("Intel", "Xeon Gold")
    assert (fp["sockets"], fp["cores"], fp["threads"], fp["numa_nodes"]) == (2, 4, 8, 2)
    assert (fp["clock_mhz"], fp["max_clock_mhz"]) == (2500.0, 3900.0)
    assert (fp["l1d_kb"], fp["l1i_kb"], fp["l2_kb"], fp["l3_mb"]) == (32.0, 32.0, 1024.0, 32.0)
    isa = fp["isa_flags"].split()
    assert {"avx2", "avx512f", "avx512_bf16", "amx_tile", "fma"} <= set(isa)
    assert not {"smep", "ibrs", "hypervisor", "fpu"} & set(isa)  # not ISA: mitigations, quirks


def test_volatile_values_do_not_change_hw_id(tmp_path):
    a = cpu_fingerprint(*_fake_tree(tmp_path / "a", mhz="2500.000"))
    b = cpu_fingerprint(*_fake_tree(tmp_path / "b", mhz="3712.448"))  # current clock differs
    assert a["hw_id"] == b["hw_id"]
    c_tree = _fake_tree(tmp_path / "c")
    (c_tree[1] / "cpu0" / "cpufreq" / "cpuinfo_max_freq").write_text("4200000\n")  # a different SKU
    assert cpu_fingerprint(*c_tree)["hw_id"] != a["hw_id"]


def test_clock_from_model_name_without_cpufreq(tmp_path):
    proc, cpu, node = _fake_tree(tmp_path)
    for f in (cpu / "cpu0" / "cpufreq").iterdir():
        f.unlink()
    fp = cpu_fingerprint(proc, cpu, node)
    assert fp["clock_mhz"] == 2500.0 and "max_clock_mhz" not in fp  # unknown is absent, not 0


@pytest.mark.parametrize("name, family", [
    ("Intel(R) Xeon(R) Platinum 8480+", "Xeon Platinum"),
    ("AMD EPYC 9654 96-Core Processor", "EPYC"),
    ("Intel(R) Core(TM) i9-13900K", "Core i9"),
    ("AMD Ryzen Threadripper PRO 5995WX 64-Cores", "Ryzen Threadripper"),
    ("Intel(R) Xeon(R) Processor @ 2.30GHz", "Xeon"),
    ("Some Unknown Chip", None),
])
def test_cpu_family(name, family):
    assert cpu_family(name) == family


def test_gpu_fingerprint_from_device_properties():
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, multi_processor_count=132,
                            total_memory=85_031_714_816, L2_cache_size=52_428_800)
    fp = gpu_fingerprint(props, {"max_clock_mhz": 1980.0, "mem_bw_gbs": 3352.3})
    assert fp["device_id"] == "h100_sxm" and fp["family"] == "Hopper" and fp["compute_capability"] == "9.0"
    assert fp["sm_count"] == 132 and fp["mem_gb"] == 79.2 and fp["l2_mb"] == 50.0
    assert fp["mem_bw_gbs"] == 3352.3  # observed beats the spec sheet
    assert fp["peak_tflops_bf16"] > 100 and fp["tdp_w"] > 0  # spec-sheet peaks joined by device_id
    rec = validate(pd.DataFrame([{**GEMM_ROW, **fp}]), "gemm")
    assert rec.loc[0, "hw_id"] == fp["hw_id"] == gpu_fingerprint(props, {"max_clock_mhz": 1980.0,
                                                                         "mem_bw_gbs": 3352.3})["hw_id"]


def test_unknown_gpu_keeps_observed_columns_only():
    props = SimpleNamespace(name="NVIDIA Prototype X", major=12, minor=0, multi_processor_count=10,
                            total_memory=8 * 2**30, L2_cache_size=0)
    fp = gpu_fingerprint(props)
    assert "device_id" not in fp and "peak_tflops_fp16" not in fp and "l2_mb" not in fp
    assert fp["family"] == "Blackwell" and fp["mem_gb"] == 8.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU case; this machine has CUDA")
def test_no_gpu_means_no_gpu_rows():
    assert gpu_fingerprints() == []
    assert len(fingerprint_table()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_real_gpu_fingerprints():
    gpus = gpu_fingerprints()
    assert len(gpus) == torch.cuda.device_count()
    assert all(g["device_kind"] == "gpu" and g["sm_count"] > 0 for g in gpus)


def test_fingerprint_table_and_software():
    table = fingerprint_table()
    assert table.loc[0, "device_kind"] == "cpu" and table["hw_id"].notna().all()
    sw = software_versions()
    assert sw["torch"] == torch.__version__ and sw["python"].count(".") == 2
    assert any(p["user_api"] == "blas" for p in sw["threadpools"]) or sw["torch_blas"]
    json.dumps(sw)  # serialisable as the record's software column
