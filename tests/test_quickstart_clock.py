"""quickstart's phase clock (wall and CPU seconds per phase, a phase inside another counted for itself only) and
the probing budget it derives, on a scripted clock (no timing of the real machine)."""

from __future__ import annotations

import pytest

from perfcast.workflows import quickstart_clock
from perfcast.workflows.quickstart_clock import AFTER_PROBE_CPU_S, MIN_SHARE, PhaseClock, probe_budget


class Scripted:
    """Wall and CPU clocks that move only when told (CPU at ``share`` of the wall)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def advance(self, wall: float, share: float) -> None:
        self.wall += wall
        self.cpu += wall * share


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> Scripted:
    s = Scripted()
    monkeypatch.setattr(quickstart_clock.time, "perf_counter", lambda: s.wall)
    monkeypatch.setattr(quickstart_clock.time, "process_time", lambda: s.cpu)
    return s


def test_phases_add_up_and_a_nested_phase_counts_for_itself_only(clocks: Scripted) -> None:
    clock = PhaseClock(startup=(4.0, 2.0))
    with clock.phase("outer"):
        clocks.advance(1.0, 1.0)
        with clock.phase("inner"):
            clocks.advance(10.0, 0.5)
        clocks.advance(2.0, 1.0)
    with clock.phase("inner"):  # entered again: adds up
        clocks.advance(3.0, 0.0)
    assert clock.phases == {"outer": [3.0, 3.0], "inner": [13.0, 5.0]}
    assert clock.elapsed() == (16.0, 8.0)
    assert clock.share() == pytest.approx((8.0 + 2.0) / (16.0 + 4.0))
    rows = clock.table().columns[0]._cells
    assert rows[0].startswith("start-up") and rows[1:] == ["outer", "inner", "total"]


def test_the_probing_budget_is_what_the_rest_leaves_at_this_process_s_share_of_a_core(clocks: Scripted) -> None:
    clock = PhaseClock()
    clocks.advance(100.0, 0.5)
    assert probe_budget(300.0, clock, later_wall_s=10.0) == pytest.approx(300 - 100 - 10 - AFTER_PROBE_CPU_S / 0.5)
    # a starved process: the rest is costed at the least share counted on, and a spent budget allows nothing
    clocks.advance(100.0, 0.0)
    assert clock.share() == pytest.approx(0.25)
    assert probe_budget(300.0, clock, later_wall_s=10.0) == pytest.approx(300 - 200 - 10 - AFTER_PROBE_CPU_S / 0.25)
    clocks.advance(100.0, 0.0)
    assert probe_budget(300.0, clock, later_wall_s=10.0) == 0.0
    starved = PhaseClock()
    clocks.advance(10.0, 0.0)
    assert starved.share() == MIN_SHARE
