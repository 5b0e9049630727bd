"""Power measured *during* a kernel: one ``PowerMeter`` interface over RAPL, NVML, or nothing.

A meter brackets the timed region (``start()`` before the repeats, ``stop()`` after), so the reading is
the average power while the kernel ran back to back, not an idle sample taken afterwards. Where no
counter is readable (virtual machine, no permission, no driver) the ``NullMeter`` says why and power
stays missing (NaN) — a made-up 0 W would poison every model trained on it.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class PowerReading:
    """Energy over one measurement window; ``power_w``/``energy_j`` are NaN when not measured."""

    energy_j: float
    duration_s: float
    source: str
    note: str

    @property
    def power_w(self) -> float:
        """Average power over the window."""
        if not math.isfinite(self.energy_j) or self.duration_s <= 0:
            return math.nan
        return self.energy_j / self.duration_s


class PowerMeter(ABC):
    """Brackets a region of work and reports the energy it drew."""

    #: ``power_source`` column value: rapl, nvml, none
    source: str = "none"
    #: the window needed for a trustworthy reading (counter update period x ~100)
    min_window_s: float = 0.0

    def __init__(self, note: str = ""):
        #: ``power_note`` column value: what was measured, or why nothing was
        self.note = note

    @abstractmethod
    def start(self) -> None:
        """Begin a window (call right before the timed region)."""

    @abstractmethod
    def stop(self) -> PowerReading:
        """End the window begun by :meth:`start` and return its reading."""


class NullMeter(PowerMeter):
    """No readable power counter here; every reading is NaN with the reason attached."""

    source = "none"

    def __init__(self, reason: str):
        super().__init__(reason)
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> PowerReading:
        return PowerReading(math.nan, time.perf_counter() - self._t0, self.source, self.note)


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL package zone: its counter file and the value at which the counter wraps."""

    name: str
    energy_file: Path
    max_range_uj: int

    def read_uj(self) -> int:
        return int(self.energy_file.read_text().strip())


def rapl_packages(root: Path = POWERCAP_ROOT) -> list[RaplDomain]:
    """The package-level RAPL zones under ``root`` (sub-zones such as core/dram are inside them).

    Raises ``FileNotFoundError``/``PermissionError`` with the path involved, so the caller can say why
    power is unavailable.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist (RAPL not exposed: a virtual machine, a non-x86 "
                                "CPU, or a kernel without the intel_rapl driver)")
    zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
    pkgs = [z for z in zones if (z / "name").is_file() and (z / "name").read_text().strip().startswith("package")]
    if not pkgs:
        raise FileNotFoundError(f"no RAPL package zone (intel-rapl:N with name 'package-N') under {root}")
    out = []
    for z in pkgs:
        dom = RaplDomain((z / "name").read_text().strip(), z / "energy_uj",
                         int((z / "max_energy_range_uj").read_text().strip()))
        dom.read_uj()  # PermissionError here: energy_uj is root-only since Linux 5.10 (CVE-2020-8694)
        out.append(dom)
    return out


def counter_delta(start: int, end: int, max_range: int) -> int:
    """Increase of a counter that wraps to 0 after ``max_range`` (at most one wrap per window)."""
    return end - start if end >= start else end + max_range - start


class RaplMeter(PowerMeter):
    """CPU package energy from RAPL counters, summed over every package."""

    source = "rapl"
    min_window_s = 0.1  # counters update every ~1 ms; 100 updates bound the quantisation error to ~1 %

    def __init__(self, root: Path = POWERCAP_ROOT, clock: Callable[[], float] = time.perf_counter):
        self.domains = rapl_packages(Path(root))
        names = ", ".join(d.name for d in self.domains)
        super().__init__(f"RAPL package energy ({names}) over the timed repeats; includes anything else "
                         "running on those packages")
        self._clock = clock
        self._start: list[int] = []
        self._t0 = 0.0

    def start(self) -> None:
        self._start = [d.read_uj() for d in self.domains]
        self._t0 = self._clock()

    def stop(self) -> PowerReading:
        end = [d.read_uj() for d in self.domains]
        dt = self._clock() - self._t0
        uj = sum(counter_delta(s, e, d.max_range_uj) for s, e, d in zip(self._start, end, self.domains))
        return PowerReading(uj * 1e-6, dt, self.source, self.note)


class NvmlMeter(PowerMeter):
    """GPU board energy from NVML: the total-energy counter where supported, else sampled power."""

    source = "nvml"

    def __init__(self, index: int = 0, nvml: Any = None, interval_s: float = 0.01,
                 clock: Callable[[], float] = time.perf_counter):
        if nvml is None:
            import pynvml as nvml  # nvidia-ml-py; ImportError is reported by power_meter()
        self._nvml = nvml
        nvml.nvmlInit()
        self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self._clock = clock
        self._interval = interval_s
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.counter = True
            self.min_window_s = 0.1
            note = f"NVML total-energy counter of GPU {index} over the timed repeats"
        except nvml.NVMLError:
            self.counter = False
            self.min_window_s = 0.5  # power readings refresh every ~20-100 ms
            note = (f"NVML power of GPU {index} sampled every {interval_s * 1e3:.0f} ms over the timed repeats "
                    "(no energy counter on this device)")
        super().__init__(note)
        self._samples: list[tuple[float, float]] = []
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._e0 = 0
        self._t0 = 0.0

    def _sample(self) -> None:
        while True:
            self._samples.append((self._clock(), self._nvml.nvmlDeviceGetPowerUsage(self._handle) * 1e-3))
            if self._stop_evt.wait(self._interval):
                return

    def start(self) -> None:
        self._t0 = self._clock()
        if self.counter:
            self._e0 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            return
        self._samples = []
        self._stop_evt.clear()
        self._thread = threading.Thread(target=self._sample, name="nvml-power", daemon=True)
        self._thread.start()

    def stop(self) -> PowerReading:
        if self.counter:
            mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._e0
            return PowerReading(mj * 1e-3, self._clock() - self._t0, self.source, self.note)
        self._stop_evt.set()
        if self._thread is None:
            raise RuntimeError("NvmlMeter.stop() called before start()")
        self._thread.join()
        self._thread = None
        # close the window with a sample at its end, so the samples span exactly the timed region
        self._samples.append((self._clock(), self._nvml.nvmlDeviceGetPowerUsage(self._handle) * 1e-3))
        span = self._samples[-1][0] - self._samples[0][0]
        return PowerReading(integrate_power(self._samples), span, self.source, self.note)


def integrate_power(samples: list[tuple[float, float]]) -> float:
    """Energy (J) from (time s, power W) samples by the trapezoid rule; NaN with fewer than 2 samples."""
    if len(samples) < 2:
        return math.nan
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


def power_meter(device: str = "cpu", *, root: Path = POWERCAP_ROOT, nvml: Any = None) -> PowerMeter:
    """The best meter for ``device`` ("cpu", "cuda", "cuda:N"); its ``note`` says what it measures or why not."""
    if device == "cpu":
        try:
            return RaplMeter(root)
        except PermissionError as e:
            return NullMeter(f"RAPL counter not readable ({e.filename}: permission denied; energy_uj is "
                             "root-only since Linux 5.10): run as root or grant read access")
        except (FileNotFoundError, ValueError, OSError) as e:
            return NullMeter(f"no RAPL energy counter: {e}")
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        try:
            return NvmlMeter(index, nvml)
        except ImportError:
            return NullMeter("nvidia-ml-py (pynvml) is not installed: pip install 'perfcast[gpu]'")
        except Exception as e:  # pynvml raises NVMLError subclasses (no driver, no device, no permission)
            return NullMeter(f"NVML unavailable for GPU {index}: {e}")
    raise ValueError(f"unknown device {device!r} for a power meter: expected 'cpu', 'cuda' or 'cuda:N'")
