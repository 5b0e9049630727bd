"""One measurement harness for every probe: warm up, repeat until the median is known, report the noise.

Why one harness: every record's ``runtime_ms`` must mean the same thing (median per-call time of a warm
kernel) and carry its own noise (``runtime_cv``, ``n_repeats``) so evaluation can use it as a floor.

Procedure (``measure``):
1. *Warm-up*: run samples until per-call time is stable (two consecutive windows agree within 5 %) or
   ``warmup_s`` has passed, at least two samples. Meanwhile choose ``inner``, the calls per timed sample, so that one sample
   lasts at least ``min_sample_ms`` (a timer's resolution and call overhead vanish in long samples).
2. *Repeats*: time samples (``setup`` runs before each, untimed) until at least ``min_repeats`` and the
   distribution-free 95 % confidence interval of the median is within ``rel_precision`` of it, or
   ``max_repeats``/``max_time_s`` is hit (then ``converged`` is False). A power meter, if given, brackets
   exactly these repeats; they continue until its minimum window is covered.
3. *Statistics*: median, min, mean, CV, IQR of per-call times; outliers (> Q3 + 3 IQR) are counted, not
   dropped — the median is already robust to them and the count is a quality signal.

Timers are a narrow interface (``sample(fn, inner) -> ms``, ``now() -> s``) so the stopping logic is
unit-tested with fake clocks, and the CUDA timer with fake events, without a GPU.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np
from scipy.stats import binom
from threadpoolctl import threadpool_limits

from perfcast.perf_probe.power import PowerMeter, PowerReading

CONFIDENCE = 0.95
OUTLIER_IQR = 3.0
STABLE_TOL = 0.05
STABLE_WINDOW = 3
MAX_INNER = 1_000_000


class Timer(Protocol):
    """Times ``inner`` back-to-back calls of ``fn`` (one sample) and tells wall time for the caps."""

    def sample(self, fn: Callable[[], Any], inner: int) -> float:
        """Elapsed milliseconds of ``inner`` calls of ``fn``."""

    def now(self) -> float:
        """Seconds on a monotonic clock (for warm-up and time caps)."""


class CpuTimer:
    """Host wall-clock timer (``time.perf_counter_ns``: monotonic, ns resolution)."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns):
        self._clock = clock

    def sample(self, fn: Callable[[], Any], inner: int) -> float:
        t0 = self._clock()
        for _ in range(inner):
            fn()
        return (self._clock() - t0) * 1e-6

    def now(self) -> float:
        return self._clock() * 1e-9


class CudaTimer:
    """Device-side timer: CUDA events around the calls, with L2 flushed before every sample.

    Host timing of asynchronous kernels measures launch cost, not the kernel; events measure the GPU
    stream. Flushing L2 (writing a buffer twice its size) keeps one sample's inputs from being served by
    the cache the previous sample warmed. ``event``/``synchronize``/``flush`` are injectable for tests.
    """

    def __init__(self, device: Any = None, *, event: Callable[[], Any] | None = None,
                 synchronize: Callable[[], None] | None = None, flush: Callable[[], None] | None = None):
        import torch

        if event is None:
            if not torch.cuda.is_available():
                raise RuntimeError(
                    "device='cuda' requested but torch.cuda.is_available() is False (CPU-only torch build or "
                    "no NVIDIA driver): measure with device='cpu' or run on a machine with a CUDA GPU"
                )
            dev = torch.device(device if device is not None else "cuda")
            l2 = torch.cuda.get_device_properties(dev).L2_cache_size
            scratch = torch.empty(max(2 * l2, 1 << 20) // 4, dtype=torch.float32, device=dev)
            event = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
            synchronize = lambda: torch.cuda.synchronize(dev)  # noqa: E731
            flush = scratch.zero_
        self._event = event
        self._sync = synchronize or (lambda: None)
        self._flush = flush or (lambda: None)

    def sample(self, fn: Callable[[], Any], inner: int) -> float:
        self._flush()
        start, end = self._event(), self._event()
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    def now(self) -> float:
        self._sync()
        return time.perf_counter()


@dataclass
class Timing:
    """Per-call times of one measurement and their robust summary."""

    times_ms: np.ndarray
    median_ms: float
    min_ms: float
    mean_ms: float
    cv: float
    iqr_ms: float
    n_repeats: int
    n_warmup: int
    n_outliers: int
    inner: int
    converged: bool
    threads: int
    ci_rel: float
    power_w: float = math.nan
    energy_j: float = math.nan
    power_source: str = "none"
    power_note: str = "no power meter was attached to this measurement"
    outliers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def to_record(self) -> dict[str, Any]:
        """Schema columns: target ``runtime_ms`` (median), quality columns, power per call."""
        return {
            "runtime_ms": self.median_ms,
            "runtime_min_ms": self.min_ms,
            "runtime_cv": self.cv,
            "n_repeats": self.n_repeats,
            "power_w": self.power_w,
            "energy_j": self.energy_j,
            "power_source": self.power_source,
            "power_note": self.power_note,
        }


def median_ci(sorted_x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free CI of the median from order statistics (binomial(n, 1/2) ranks).

    With few samples (n < 6 at 95 %) no pair of order statistics reaches the level; the range
    [min, max] is returned, the widest honest answer.
    """
    n = len(sorted_x)
    lo = max(int(binom.ppf((1 - confidence) / 2, n, 0.5)), 1)  # 1-based rank of the lower bound
    return float(sorted_x[lo - 1]), float(sorted_x[n - lo])


def robust_stats(times_ms: np.ndarray) -> dict[str, Any]:
    """Median, min, mean, CV, IQR, CI half-width / median and outlier flags of per-call times."""
    x = np.sort(np.asarray(times_ms, dtype=float))
    med = float(np.median(x))
    q1, q3 = np.percentile(times_ms, [25, 75])
    lo, hi = median_ci(x)
    mean = float(np.mean(x))
    return {
        "median_ms": med,
        "min_ms": float(x[0]),
        "mean_ms": mean,
        "cv": float(np.std(x, ddof=1) / mean) if len(x) > 1 else math.nan,
        "iqr_ms": float(q3 - q1),
        "ci_rel": (hi - lo) / 2 / med,
        "outliers": np.asarray(times_ms) > q3 + OUTLIER_IQR * (q3 - q1),
    }


def _stable(per_call: list[float]) -> bool:
    """The last two windows of warm-up samples agree within STABLE_TOL (median vs median)."""
    if len(per_call) < 2 * STABLE_WINDOW:
        return False
    prev = np.median(per_call[-2 * STABLE_WINDOW:-STABLE_WINDOW])
    last = np.median(per_call[-STABLE_WINDOW:])
    return abs(last - prev) <= STABLE_TOL * prev


def _inner_for(per_call_ms: float, min_sample_ms: float) -> int:
    if per_call_ms <= 0:
        return MAX_INNER
    return int(min(MAX_INNER, max(1, math.ceil(min_sample_ms / per_call_ms))))


def one_call_ms(fn: Callable[[], Any], *, device: str = "cpu", timer: Timer | None = None) -> float:
    """Milliseconds of one warm call of ``fn``: a first, untimed call pays lazy initialisation and page faults."""
    if timer is None:
        timer = CpuTimer() if device == "cpu" else CudaTimer(device)
    fn()
    return timer.sample(fn, 1)


def measure(
    fn: Callable[[], Any],
    *,
    device: str = "cpu",
    setup: Callable[[], Any] | None = None,
    rel_precision: float = 0.01,
    min_repeats: int = 5,
    max_repeats: int = 200,
    max_time_s: float = 1.0,
    warmup_s: float = 0.1,
    min_sample_ms: float = 1.0,
    meter: PowerMeter | None = None,
    timer: Timer | None = None,
) -> Timing:
    """Time ``fn()`` (no arguments, the whole kernel) and return its per-call :class:`Timing`.

    ``min_repeats`` samples are always taken, so every timing has a spread; ``max_time_s`` caps the
    repeat phase beyond that. ``timer`` defaults to :class:`CpuTimer` or :class:`CudaTimer` by ``device``.
    """
    if min_repeats < 2 or max_repeats < min_repeats:
        raise ValueError(f"need 2 <= min_repeats <= max_repeats, got min_repeats={min_repeats}, "
                         f"max_repeats={max_repeats}")
    if not 0 < rel_precision < 1:
        raise ValueError(f"rel_precision must be in (0, 1), got {rel_precision}")
    if timer is None:
        timer = CpuTimer() if device == "cpu" else CudaTimer(device)
    setup = setup or (lambda: None)

    # warm-up: also calibrates inner so one sample lasts >= min_sample_ms
    inner, warm, n_warmup, t0 = 1, [], 0, timer.now()
    while True:
        setup()
        warm.append(timer.sample(fn, inner) / inner)
        n_warmup += 1
        new_inner = _inner_for(min(warm[-STABLE_WINDOW:]), min_sample_ms)
        if new_inner > inner:  # inner only grows (so this ends); other inners' samples are not comparable
            inner, warm = new_inner, []
        elif len(warm) >= 2 and (timer.now() - t0 >= warmup_s or _stable(warm)):
            break  # >= 2: the first call is cold (lazy init, page faults) and says little about inner

    times: list[float] = []
    if meter is not None:
        meter.start()
    t0 = timer.now()
    converged = False
    while len(times) < max_repeats:
        setup()
        times.append(timer.sample(fn, inner) / inner)
        if len(times) < min_repeats:
            continue
        elapsed = timer.now() - t0
        window_ok = meter is None or elapsed >= meter.min_window_s
        converged = robust_stats(np.array(times))["ci_rel"] <= rel_precision
        if (converged and window_ok) or elapsed >= max_time_s:
            break
    reading = meter.stop() if meter is not None else None

    arr = np.array(times)
    s = robust_stats(arr)
    return Timing(
        times_ms=arr, median_ms=s["median_ms"], min_ms=s["min_ms"], mean_ms=s["mean_ms"], cv=s["cv"],
        iqr_ms=s["iqr_ms"], n_repeats=len(arr), n_warmup=n_warmup, n_outliers=int(s["outliers"].sum()),
        inner=inner, converged=converged, threads=current_threads(), ci_rel=s["ci_rel"],
        outliers=s["outliers"], **_power_fields(reading, s["median_ms"]),
    )


def _power_fields(reading: PowerReading | None, median_ms: float) -> dict[str, Any]:
    """Average power over the repeats, and energy per call = power x median per-call time."""
    if reading is None:
        return {}
    p = reading.power_w
    return {"power_w": p, "energy_j": p * median_ms * 1e-3, "power_source": reading.source,
            "power_note": reading.note}


def current_threads() -> int:
    """Intra-op threads torch uses now (what a CPU kernel measured here ran with)."""
    import torch

    return torch.get_num_threads()


@contextmanager
def threads(n: int) -> Iterator[int]:
    """Run the block with ``n`` threads in torch and in every BLAS/OpenMP pool; restore both after."""
    import torch

    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    before = torch.get_num_threads()
    with threadpool_limits(limits=n):
        torch.set_num_threads(n)
        try:
            yield n
        finally:
            torch.set_num_threads(before)
