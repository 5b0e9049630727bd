"""Power meters: RAPL counters (fake powercap tree), NVML (fake library), and selection on this machine."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from perfcast.perf_probe.power import (
    NullMeter,
    NvmlMeter,
    RaplDomain,
    RaplMeter,
    counter_delta,
    integrate_power,
    power_meter,
    rapl_packages,
)
from perfcast.perf_probe.timing import measure

MAX_UJ = 262_143_328_850


def _zone(root: Path, name: str, label: str, energy: int, max_uj: int = MAX_UJ) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{energy}\n")
    (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return z


@pytest.fixture()
def powercap(tmp_path: Path) -> Path:
    """Two packages (one about to wrap), a core sub-zone and a psys zone, laid out like /sys/class/powercap."""
    root = tmp_path / "powercap"
    _zone(root, "intel-rapl:0", "package-0", MAX_UJ - 1_000)
    _zone(root, "intel-rapl:0:0", "core", 5)  # inside package 0: must not be added again
    _zone(root, "intel-rapl:1", "package-1", 10_000_000)
    _zone(root, "intel-rapl:2", "psys", 7)  # platform total, overlaps packages
    return root


def test_counter_delta_handles_one_wrap():
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(900, 50, 1000) == 150


def test_rapl_packages_finds_only_package_zones(powercap):
    doms = rapl_packages(powercap)
    assert [d.name for d in doms] == ["package-0", "package-1"]
    assert all(d.max_range_uj == MAX_UJ for d in doms)


def test_rapl_meter_sums_packages_across_a_wrap(powercap):
    clock = iter([10.0, 10.5])
    meter = RaplMeter(powercap, clock=lambda: next(clock))
    meter.start()
    (powercap / "intel-rapl:0" / "energy_uj").write_text("500\n")  # wrapped: +1500 uJ
    (powercap / "intel-rapl:1" / "energy_uj").write_text("12000000\n")  # +2 J
    (powercap / "intel-rapl:0:0" / "energy_uj").write_text("99999999\n")  # sub-zone: ignored
    r = meter.stop()
    assert r.energy_j == pytest.approx(2.0015)
    assert r.duration_s == pytest.approx(0.5)
    assert r.power_w == pytest.approx(4.003)
    assert r.source == "rapl" and "package-0" in r.note and "package-1" in r.note


def test_power_meter_prefers_rapl_when_readable(powercap):
    assert isinstance(power_meter("cpu", root=powercap), RaplMeter)


def test_power_meter_says_why_without_rapl(tmp_path):
    m = power_meter("cpu", root=tmp_path / "absent")
    assert isinstance(m, NullMeter) and m.source == "none"
    assert "absent" in m.note and "RAPL" in m.note


def test_power_meter_says_why_without_permission(powercap, monkeypatch):
    def denied(self):
        raise PermissionError(13, "Permission denied", str(self.energy_file))

    monkeypatch.setattr(RaplDomain, "read_uj", denied)
    m = power_meter("cpu", root=powercap)
    assert isinstance(m, NullMeter)
    assert "permission denied" in m.note and "energy_uj" in m.note and "root" in m.note


def test_null_meter_reports_nan_never_zero():
    m = NullMeter("no counter here")
    m.start()
    r = m.stop()
    assert math.isnan(r.energy_j) and math.isnan(r.power_w) and r.note == "no counter here"


class FakeNvml:
    """The slice of pynvml a meter uses: a 150 W board, with or without the total-energy counter."""

    class NVMLError(Exception):
        pass

    def __init__(self, energy_counter: bool):
        self.energy_counter = energy_counter
        self.energy_mj = 1_000_000
        self.power_calls = 0

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy_counter:
            raise self.NVMLError("Not Supported")
        return self.energy_mj

    def nvmlDeviceGetPowerUsage(self, h):
        self.power_calls += 1
        return 150_000  # mW


def test_nvml_energy_counter():
    nvml = FakeNvml(energy_counter=True)
    clock = iter([0.0, 2.0])
    m = NvmlMeter(0, nvml, clock=lambda: next(clock))
    assert m.counter and "total-energy counter" in m.note
    m.start()
    nvml.energy_mj += 300_000  # 300 J in 2 s
    r = m.stop()
    assert r.energy_j == pytest.approx(300.0) and r.power_w == pytest.approx(150.0) and r.source == "nvml"


def test_nvml_sampling_fallback_integrates_power_over_the_window():
    nvml = FakeNvml(energy_counter=False)
    m = NvmlMeter(0, nvml, interval_s=0.005)
    assert not m.counter and "sampled" in m.note
    m.start()
    time.sleep(0.1)
    r = m.stop()
    assert nvml.power_calls >= 5  # a background thread sampled during the window
    assert r.power_w == pytest.approx(150.0)
    assert r.duration_s == pytest.approx(0.1, abs=0.05)


def test_integrate_power_trapezoid():
    assert integrate_power([(0.0, 100.0), (1.0, 200.0), (3.0, 200.0)]) == pytest.approx(550.0)
    assert math.isnan(integrate_power([(0.0, 100.0)]))


def test_selection_on_this_machine_gives_a_clear_reason():
    cpu = power_meter("cpu")
    assert cpu.note
    if isinstance(cpu, NullMeter):
        assert "RAPL" in cpu.note
    else:
        assert isinstance(cpu, RaplMeter)
    # a real measurement with it: power either measured (positive) or NaN with that reason, never 0
    t = measure(lambda: sum(range(1000)), meter=cpu)
    assert t.power_source == cpu.source and t.power_note == cpu.note
    assert math.isnan(t.power_w) if cpu.source == "none" else t.power_w > 0
    gpu = power_meter("cuda")
    assert gpu.note
    if isinstance(gpu, NullMeter):
        assert "NVML" in gpu.note or "pynvml" in gpu.note


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        power_meter("tpu")

