"""Fingerprint of the running machine, in the record schema's hardware columns.

Every probed record carries these columns and an ``hw_id`` hashed from them (``schema.hardware_ids``), so
the same machine is recognised across runs and beside imported public data. Only static properties go in:
current clock, free memory or load would change the id from one run to the next. Sources are what
``lscpu`` reads — ``/proc/cpuinfo`` and ``/sys/devices/system/{cpu,node}`` (roots are parameters so tests
can lay out a fake tree) — plus psutil for memory and torch/NVML for GPUs.
"""

from __future__ import annotations

import json
import math
import platform
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from perfcast.records.schema import COMMON, hardware_ids

PROC = Path("/proc")
SYS_CPU = Path("/sys/devices/system/cpu")
SYS_NODE = Path("/sys/devices/system/node")

#: ISA features that matter for kernel speed (vector width, matrix units, crypto/bit ops); the rest of
#: /proc/cpuinfo's flags (mitigations, virtualisation quirks) change with microcode and kernel, not hardware
_ISA = re.compile(
    r"^(sse\S*|ssse3|avx\S*|fma4?|f16c|amx\S*|bmi\d|sha_ni|aes|vaes|gfni|vpclmulqdq|pclmulqdq|popcnt|adx|movbe"
    r"|asimd\S*|sve\S*|sme(?!p)\S*|fphp|bf16|i8mm|fp16|dotprod)$"
)
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon", "CentaurHauls": "Centaur"}
#: ARM "CPU implementer" codes (as lscpu names them)
_ARM_IMPLEMENTERS = {"0x41": "ARM", "0x42": "Broadcom", "0x43": "Cavium", "0x46": "Fujitsu", "0x48": "HiSilicon",
                     "0x4e": "NVIDIA", "0x50": "APM", "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere"}
_CPU_FAMILIES = (
    (re.compile(r"Xeon\s+(Platinum|Gold|Silver|Bronze|Max|W|E|D)\b"), "Xeon {0}"),
    (re.compile(r"Xeon"), "Xeon"),
    (re.compile(r"Core\s+(Ultra|i[3579])\b"), "Core {0}"),
    (re.compile(r"EPYC"), "EPYC"),
    (re.compile(r"Ryzen\s+Threadripper"), "Ryzen Threadripper"),
    (re.compile(r"Ryzen"), "Ryzen"),
    (re.compile(r"Opteron"), "Opteron"),
    (re.compile(r"Neoverse[- ](\w+)"), "Neoverse {0}"),
)
#: spec-sheet fields a GPU record takes from hardware_specs (peaks cannot be observed by a fingerprint)
_SPEC_COLUMNS = tuple(c.name for c in COMMON if c.group == "hardware" and c.name.startswith("peak_tflops_")) + (
    "clock_mhz", "mem_bw_gbs", "tdp_w")
#: CUDA compute capability major.minor -> architecture name
_GPU_ARCH = {"7.0": "Volta", "7.2": "Volta", "7.5": "Turing", "8.0": "Ampere", "8.6": "Ampere", "8.7": "Ampere",
             "8.9": "Ada", "9.0": "Hopper", "10.0": "Blackwell", "10.3": "Blackwell", "12.0": "Blackwell",
             "12.1": "Blackwell"}


# ---------------------------------------------------------------- CPU
def _cpuinfo(proc: Path) -> tuple[dict[str, str], int]:
    """The first processor block of /proc/cpuinfo as key -> value, and the number of blocks."""
    text = (proc / "cpuinfo").read_text()
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    first: dict[str, str] = {}
    for line in blocks[0].splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            first.setdefault(k.strip(), v.strip())
    # ARM kernels put the model-wide keys (Hardware, Model name) in a trailing block
    for line in blocks[-1].splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            first.setdefault(k.strip(), v.strip())
    return first, sum(1 for b in blocks if b.lstrip().startswith("processor"))


def _cpu_list(text: str) -> list[int]:
    """Kernel cpu-list syntax ("0-3,8,10-11") as a list of ints."""
    out: list[int] = []
    for part in text.strip().split(","):
        if part:
            a, _, b = part.partition("-")
            out.extend(range(int(a), int(b or a) + 1))
    return out


def _size_kb(text: str) -> float:
    """Cache size as sysfs writes it ("48K", "2048K", "1M") in KiB."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)", text.strip())
    if not m:
        raise ValueError(f"unreadable cache size {text!r} in sysfs")
    return int(m.group(1)) * {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024**2}[m.group(2)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _caches(sys_cpu: Path, cpus: list[int], core_of: dict[int, tuple[int, int]]) -> dict[str, float]:
    """l1d/l1i/l2 KiB per core (instance size / cores sharing it) and total l3 MiB over distinct instances."""
    per_core: dict[str, float] = {}
    l3_instances: dict[str, float] = {}
    for cpu in cpus:
        for idx in sorted((sys_cpu / f"cpu{cpu}" / "cache").glob("index*")):
            level, ctype, size = (_read(idx / f) for f in ("level", "type", "size"))
            if not (level and ctype and size):
                continue
            shared = _read(idx / "shared_cpu_list") or str(cpu)
            sharing_cores = len({core_of.get(c, (0, c)) for c in _cpu_list(shared)})
            if level == "3":
                l3_instances[shared] = _size_kb(size)
            elif cpu == cpus[0]:
                name = {("1", "Data"): "l1d_kb", ("1", "Instruction"): "l1i_kb", ("2", "Unified"): "l2_kb"}.get(
                    (level, ctype))
                if name:
                    per_core[name] = _size_kb(size) / sharing_cores
    if l3_instances:
        per_core["l3_mb"] = sum(l3_instances.values()) / 1024
    return per_core


def _clocks(sys_cpu: Path, model_name: str) -> tuple[float, float]:
    """(base MHz, max MHz): cpufreq's base_frequency/cpuinfo_max_freq, else the '@ 2.30GHz' in the name."""
    freq = sys_cpu / "cpu0" / "cpufreq"
    base = _read(freq / "base_frequency")
    mx = _read(freq / "cpuinfo_max_freq")
    base_mhz = int(base) / 1000 if base else math.nan
    if math.isnan(base_mhz):
        m = re.search(r"@\s*([\d.]+)\s*GHz", model_name)
        base_mhz = float(m.group(1)) * 1000 if m else math.nan
    return base_mhz, int(mx) / 1000 if mx else math.nan


def cpu_family(model_name: str) -> str | None:
    """Marketing family from a CPU model name ('Xeon Platinum', 'EPYC', 'Core i9'), None if unknown."""
    clean = re.sub(r"\((R|TM|tm|r)\)", " ", model_name)
    for pattern, fmt in _CPU_FAMILIES:
        m = pattern.search(clean)
        if m:
            return fmt.format(*m.groups())
    return None


def os_name() -> str:
    """Kernel name and release ('Linux 6.1.102'), part of the fingerprint since it changes scheduling/drivers."""
    return f"{platform.system()} {platform.release()}"


def cpu_fingerprint(proc: Path = PROC, sys_cpu: Path = SYS_CPU, sys_node: Path = SYS_NODE) -> dict[str, Any]:
    """The CPU's hardware columns plus its ``hw_id`` (static properties only: stable across runs)."""
    info, n_blocks = _cpuinfo(proc)
    online = _read(sys_cpu / "online")
    cpus = _cpu_list(online) if online else list(range(n_blocks))
    core_of: dict[int, tuple[int, int]] = {}
    for c in cpus:
        topo = sys_cpu / f"cpu{c}" / "topology"
        pkg, core = _read(topo / "physical_package_id"), _read(topo / "core_id")
        core_of[c] = (int(pkg or 0), int(core if core is not None else c))
    name = re.sub(r"\s+", " ", info.get("model name") or info.get("Model name") or platform.processor()).strip()
    vendor_id = info.get("vendor_id") or info.get("CPU implementer", "")
    flags = (info.get("flags") or info.get("Features") or "").split()
    nodes = list(sys_node.glob("node[0-9]*"))
    base, mx = _clocks(sys_cpu, name)
    fp: dict[str, Any] = {
        "device_name": name or f"unknown {platform.machine()} CPU",
        "device_kind": "cpu",
        "vendor": _VENDORS.get(vendor_id) or _ARM_IMPLEMENTERS.get(vendor_id.lower(), vendor_id or None),
        "family": cpu_family(name),
        "sockets": len({p for p, _ in core_of.values()}),
        "cores": len(set(core_of.values())),
        "threads": len(cpus),
        "clock_mhz": base,
        "max_clock_mhz": mx,
        **_caches(sys_cpu, cpus, core_of),
        "isa_flags": " ".join(sorted({f for f in flags if _ISA.match(f)})) or None,
        "numa_nodes": len(nodes) or 1,
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": os_name(),
    }
    return _with_id(fp)


# ---------------------------------------------------------------- GPU
def gpu_fingerprint(props: Any, nvml_info: dict[str, float] | None = None) -> dict[str, Any]:
    """Hardware columns of one GPU from ``torch.cuda.get_device_properties`` (+ NVML's static clocks).

    ``device_id`` and spec-sheet peaks come from ``hardware_specs`` by name, so probed and imported
    records of the same model line up.
    """
    from perfcast.records import hardware_specs

    cc = f"{props.major}.{props.minor}"
    fp: dict[str, Any] = {
        "device_name": props.name,
        "device_kind": "gpu",
        "vendor": "AMD" if getattr(props, "gcnArchName", "") else "NVIDIA",
        "family": _GPU_ARCH.get(cc),
        "sm_count": props.multi_processor_count,
        "mem_gb": round(props.total_memory / 2**30, 1),
        "l2_mb": props.L2_cache_size / 2**20 if getattr(props, "L2_cache_size", 0) else math.nan,
        "compute_capability": cc,
        **(nvml_info or {}),
        "os": os_name(),
    }
    device_id = hardware_specs.resolve_device_id(props.name)
    if device_id is not None:
        spec = hardware_specs.get_spec(device_id)
        fp["device_id"] = device_id
        fp.update({k: spec[k] for k in _SPEC_COLUMNS if k not in fp and spec.get(k) is not None})
    return _with_id(fp)


def _nvml_info(nvml: Any, index: int) -> dict[str, float]:
    """Static NVML facts: max SM clock (MHz) and peak memory bandwidth (bus width x max memory clock x 2)."""
    h = nvml.nvmlDeviceGetHandleByIndex(index)
    out: dict[str, float] = {"max_clock_mhz": float(nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM))}
    try:
        bus_bits = nvml.nvmlDeviceGetMemoryBusWidth(h)
        mem_mhz = nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_MEM)
        out["mem_bw_gbs"] = 2 * mem_mhz * 1e6 * bus_bits / 8 / 1e9
    except nvml.NVMLError:  # not reported on every board
        pass
    return out


def gpu_fingerprints() -> list[dict[str, Any]]:
    """One fingerprint per visible CUDA device; empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    try:
        import pynvml as nvml

        nvml.nvmlInit()
    except Exception:  # no nvidia-ml-py or no driver access: NVML-only columns stay missing
        nvml = None
    return [gpu_fingerprint(torch.cuda.get_device_properties(i), _nvml_info(nvml, i) if nvml else None)
            for i in range(torch.cuda.device_count())]


# ---------------------------------------------------------------- shared
def _with_id(fp: dict[str, Any]) -> dict[str, Any]:
    """Drop unknown (None/NaN) values — absent, not empty, so ids match sources that lack them — and add hw_id."""
    fp = {k: v for k, v in fp.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    fp["hw_id"] = str(hardware_ids(pd.DataFrame([fp])).iloc[0])
    return fp


def software_versions() -> dict[str, Any]:
    """Versions that change kernel speed: python, torch (+ its BLAS and CPU capability), numpy, loaded
    BLAS/OpenMP libraries (threadpoolctl), CUDA/cuDNN when present."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_info

    from perfcast._version import __version__

    cfg = torch.__config__.show()
    m = re.search(r"BLAS_INFO=(\w+)", cfg)
    out: dict[str, Any] = {
        "perfcast": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_blas": m.group(1) if m else None,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy": np.__version__,
        "threadpools": sorted(
            ({k: p.get(k) for k in ("user_api", "internal_api", "version", "architecture", "threading_layer")}
             for p in threadpool_info()),
            key=lambda p: json.dumps(p, sort_keys=True),
        ),
    }
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return out


def software_json() -> str:
    """:func:`software_versions` as canonical JSON (the ``software`` record column)."""
    return json.dumps(software_versions(), sort_keys=True, separators=(",", ":"))


def fingerprint_table() -> pd.DataFrame:
    """One row per device of this machine (the CPU, then each GPU), for ``perfcast hw``."""
    return pd.DataFrame([cpu_fingerprint(), *gpu_fingerprints()])
