"""Where ``perfcast quickstart``'s time goes (wall and CPU seconds per phase), and the share of its time budget
the adaptation plan's probing may take.

Why CPU beside wall: on a shared machine the wall time of a phase says how busy the neighbours were, its CPU
time what the phase costs; only the probes are paced by the wall clock (each measurement repeats for a fixed
wall time), every other phase takes its CPU seconds at whatever share of a core this process gets. So the
probing budget is what the total budget leaves after the phases still to come, each costed at its CPU
seconds divided by the share of a core this process got so far.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from rich.table import Table

#: CPU seconds the phases after probing take (adaptation and its cross-validation, the bundle, MLflow logging
#: into a new SQLite store, the comparison: 7-8 s in benchmarks/QUICKSTART.md's runs) and interpreter exit
AFTER_PROBE_CPU_S = 10.0
#: the least share of a core counted on (a starved process: 0.04 was measured under a load of 12 at nice 10)
MIN_SHARE = 0.02


@dataclass
class PhaseClock:
    """Wall and CPU seconds of each named phase (a phase entered twice adds up; a phase inside another counts
    for itself only), and of the process so far."""

    phases: dict[str, list[float]] = field(default_factory=dict)
    #: wall and CPU seconds spent before the clock started (interpreter start-up and imports)
    startup: tuple[float, float] = (0.0, 0.0)
    started: tuple[float, float] = field(default_factory=lambda: (time.perf_counter(), time.process_time()))
    #: the open phases' (wall, CPU) spent in phases inside them, innermost last
    _inner: list[list[float]] = field(default_factory=list)

    @classmethod
    def since_process_start(cls) -> PhaseClock:
        """A clock that also counts this process's start-up (its wall time from the OS's start time)."""
        import psutil

        cpu = time.process_time()
        return cls(startup=(max(time.time() - psutil.Process().create_time(), 0.0), cpu))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        got = self.phases.setdefault(name, [0.0, 0.0])  # listed in the order phases start
        w0, c0 = time.perf_counter(), time.process_time()
        self._inner.append([0.0, 0.0])
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            inner = self._inner.pop()
            got[0] += wall - inner[0]
            got[1] += cpu - inner[1]
            if self._inner:
                self._inner[-1][0] += wall
                self._inner[-1][1] += cpu

    def elapsed(self) -> tuple[float, float]:
        """(wall, CPU) seconds since the clock started, start-up not included."""
        return time.perf_counter() - self.started[0], time.process_time() - self.started[1]

    def share(self) -> float:
        """The share of one core this process got so far (CPU / wall seconds, start-up included)."""
        wall, cpu = self.elapsed()
        wall, cpu = wall + self.startup[0], cpu + self.startup[1]
        return min(1.0, max(MIN_SHARE, cpu / wall)) if wall > 0 else MIN_SHARE

    def table(self) -> Table:
        """One row per phase, start-up first, and the total."""
        table = Table(title="where quickstart's time went")
        for col in ("phase", "wall", "CPU"):
            table.add_column(col, justify="left" if col == "phase" else "right")
        rows = ([("start-up (interpreter, imports)", *self.startup)] if self.startup[0] else []) + [
            (name, wall, cpu) for name, (wall, cpu) in self.phases.items()]
        for name, wall, cpu in rows:
            table.add_row(name, f"{wall:.1f} s", f"{cpu:.1f} s")
        wall, cpu = self.elapsed()
        table.add_row("total", f"{wall + self.startup[0]:.0f} s", f"{cpu + self.startup[1]:.0f} s", style="bold")
        return table


def probe_budget(budget_s: float, clock: PhaseClock, later_wall_s: float) -> float:
    """Seconds the adaptation plan's probing may take: the budget left after what ran so far, the probing
    still to come after it (``later_wall_s``: wall-paced) and :data:`AFTER_PROBE_CPU_S` at this process's
    share of a core. Never negative (zero: measure only the minimum the adaptation needs)."""
    spent = clock.elapsed()[0] + clock.startup[0]
    return max(0.0, budget_s - spent - later_wall_s - AFTER_PROBE_CPU_S / clock.share())
