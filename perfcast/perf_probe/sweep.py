"""The resumable sweep runner (probes build their configurations with :mod:`perfcast.perf_probe.space`).

``run_sweep`` checks the store takes writes before measuring anything, then measures one configuration
at a time and appends its records to the store at once, so a crash (even ``kill -9``) loses at most the
configuration in flight and Ctrl-C loses nothing measured (it is deferred while records are stored); a
re-run skips every configuration whose key is already stored for this hardware. Two sweeps of the same
plan on one machine split the work: each configuration is claimed (a claim file taken under the store
lock) before it is measured, and a claim whose holder died is taken over, so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import psutil
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from perfcast._version import __version__
from perfcast.records.schema import SchemaError
from perfcast.records.store import RecordStore, StoreError
from perfcast.perf_probe.base import Probe
from perfcast.perf_probe.hardware import (
    cpu_fingerprint,
    gpu_fingerprints,
    software_json,
)

SOURCE = "probe"


# ---------------------------------------------------------------- runner
@dataclass
class SweepResult:
    """What a sweep did. ``unavailable`` is the probe's reason when it could not run here at all."""

    probe: str
    measured: int = 0
    records: int = 0
    skipped_done: int = 0
    failed: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    stopped_by_budget: bool = False
    interrupted: bool = False
    unavailable: str | None = None
    #: the hardware the sweep's configurations have stored records of: measured now, or already (a re-run that
    #: finds everything stored still says which machine its records describe)
    hw_ids: set[str] = field(default_factory=set)
    #: configurations another running sweep had claimed (it measures them)
    claimed_elsewhere: int = 0
    #: why measured records could not be stored; the sweep stops at the first such failure
    store_error: str | None = None
    #: configurations left out before the sweep because one call would take too long here, each with the seconds
    #: one call was estimated to take (:mod:`perfcast.perf_probe.affordable`; full sweeps only)
    left_out: list[tuple[dict[str, Any], float]] = field(default_factory=list)


class _Devices:
    """Hardware columns of the device a configuration runs on ("cpu", "cuda", "cuda:N"), fingerprinted once."""

    def __init__(self) -> None:
        self._cache: dict[str, dict[str, Any]] = {}

    def __call__(self, device: str) -> dict[str, Any]:
        if device not in self._cache:
            if device == "cpu":
                self._cache[device] = cpu_fingerprint()
            elif device.startswith("cuda"):
                gpus = gpu_fingerprints()
                index = int(device.split(":", 1)[1]) if ":" in device else 0
                if index >= len(gpus):
                    raise RuntimeError(f"configuration asks for {device} but this machine has {len(gpus)} CUDA device(s)")
                self._cache[device] = gpus[index]
            else:
                raise ValueError(f"unknown device {device!r} in a probe configuration: expected 'cpu' or 'cuda[:N]'")
        return self._cache[device]


def stored_keys(store: RecordStore, task: str) -> set[tuple[str, str]]:
    """(hw_id, params_json) of every probe record already in ``store`` for ``task``."""
    return _StoredKeys(store, task).refresh()


class _StoredKeys:
    """The stored (hw_id, params_json) keys, kept current by reading only the parts that appeared since
    the last look (a sweep looks before every configuration)."""

    def __init__(self, store: RecordStore, task: str) -> None:
        self.store, self.task = store, task
        self.keys: set[tuple[str, str]] = set()
        self._seen: set[str] = set()

    def refresh(self) -> set[tuple[str, str]]:
        for p in self.store.parts(self.task):
            if p.name in self._seen:
                continue
            try:
                df = self.store.read_part(p, ["hw_id", "params_json", "source"])
            except FileNotFoundError:  # compacted since listed: its rows are in the merged part
                continue
            df = df[df["source"] == SOURCE]
            self.keys.update(zip(df["hw_id"].astype(str), df["params_json"].astype(str)))
            self._seen.add(p.name)
        return self.keys


#: a claim by a sweep on another host is taken over after this long (a same-host claim: when its pid dies)
CLAIM_TTL_S = 3600.0


class _Claims:
    """Claim files ``<store>/<task>/.claims/<hash>.json``, taken under the store lock (local stores only:
    sweeps on different nodes measure different hardware, so their keys never collide)."""

    def __init__(self, store: RecordStore, task: str) -> None:
        self.dir = Path(store.root) / task / ".claims" if store.local else None
        self.host = socket.gethostname()

    def _path(self, hw_id: str, key: str) -> Path:
        assert self.dir is not None
        return self.dir / f"{hashlib.sha256(f'{hw_id}|{key}'.encode()).hexdigest()[:32]}.json"

    def _stale(self, path: Path) -> bool:
        try:
            info = json.loads(path.read_text())
            pid, host, at = int(info["pid"]), str(info["host"]), float(info["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return True  # unreadable: a holder crashed while writing it
        if host != self.host:
            return time.time() - at > CLAIM_TTL_S
        try:  # the same pid number reused by a younger process is not the holder
            return pid != os.getpid() and psutil.Process(pid).create_time() > at + 1
        except psutil.NoSuchProcess:
            return True

    def take(self, hw_id: str, key: str) -> bool:
        """Claim (call under the store lock); False if a live sweep holds it."""
        if self.dir is None:
            return True
        path = self._path(hw_id, key)
        if path.exists() and not self._stale(path):
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": os.getpid(), "host": self.host, "at": time.time()}))
        return True

    def release(self, hw_id: str, key: str) -> None:
        if self.dir is not None:
            self._path(hw_id, key).unlink(missing_ok=True)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C while a measurement is being stored, then raise it: what was measured is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hits: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: hits.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if hits:
            raise KeyboardInterrupt


def budget_share(budget_s: float | None, elapsed_s: float, probes_left: int) -> float | None:
    """One probe's part of what a run's ``budget_s`` has left after ``elapsed_s``: an equal share with the
    ``probes_left - 1`` probes after it, so a large sweep cannot spend the others' time; what it leaves unspent
    goes to them. None without a budget."""
    if budget_s is None:
        return None
    return (budget_s - elapsed_s) / max(probes_left, 1)


def run_sweep(
    probe: Probe,
    store: RecordStore,
    *,
    quick: bool = False,
    budget_s: float | None = None,
    configs: Iterable[dict[str, Any]] | None = None,
    progress: bool = True,
) -> SweepResult:
    """Measure ``probe``'s configurations not yet stored for this hardware, storing each as it finishes.

    Raises :class:`~perfcast.records.store.StoreError` before measuring if the store cannot be written
    or read. Stops cleanly at ``budget_s`` (never starting a configuration its estimate says will overrun:
    the median duration of those measured so far), on Ctrl-C, or when a measurement cannot be stored
    (``store_error``); a configuration that fails to measure is collected, not fatal.
    """
    t0 = time.monotonic()
    result = SweepResult(probe.name)
    ok, why = probe.available()
    if not ok:
        result.unavailable = why or "probe reports it cannot run here"
        return result
    store.check_writable(probe.task)
    todo = list(configs) if configs is not None else probe.space(quick=quick)
    devices = _Devices()
    stored = _StoredKeys(store, probe.task)
    claims = _Claims(store, probe.task)
    done = stored.refresh()
    pending = []
    for cfg in todo:
        hw_id = devices(cfg.get("device", "cpu"))["hw_id"]
        if (hw_id, probe.key(cfg)) in done:
            result.skipped_done += 1
            result.hw_ids.add(hw_id)
        else:
            pending.append((cfg, hw_id))
    provenance = {"source": SOURCE, "probe_version": f"{probe.name}/{__version__}",
                  "software": software_json()}
    durations: list[float] = []
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"probe {probe.name}", total=len(pending))
        try:
            for cfg, hw_id in pending:
                if budget_s is not None:
                    spent = time.monotonic() - t0
                    estimate = statistics.median(durations) if durations else 0.0
                    if spent + estimate > budget_s:
                        result.stopped_by_budget = True
                        break
                key = probe.key(cfg)
                with store.lock(probe.task):
                    if (hw_id, key) in stored.refresh():
                        result.skipped_done += 1
                        result.hw_ids.add(hw_id)
                        bar.advance(task)
                        continue
                    if not claims.take(hw_id, key):
                        result.claimed_elsewhere += 1
                        bar.advance(task)
                        continue
                c0 = time.monotonic()
                try:
                    if not _measure_and_store(probe, store, cfg, devices, provenance, result):
                        break
                finally:
                    claims.release(hw_id, key)
                durations.append(time.monotonic() - c0)
                bar.advance(task)
        except KeyboardInterrupt:
            result.interrupted = True
    result.elapsed_s = time.monotonic() - t0
    return result


def _measure_and_store(probe: Probe, store: RecordStore, cfg: dict[str, Any], devices: _Devices,
                       provenance: dict[str, str], result: SweepResult) -> bool:
    """Measure one configuration and store its records; False when the store failed (stop the sweep)."""
    try:
        hw = devices(cfg.get("device", "cpu"))
        df = pd.DataFrame(probe.run(cfg))
        df = df.assign(**hw, **provenance, params_json=probe.key(cfg), collected_at=datetime.now(timezone.utc))
    except Exception as e:  # one bad configuration must not end the sweep
        result.failed.append((cfg, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
        return True
    try:
        with _sigint_deferred():
            result.records += store.append(df, probe.task).written
            result.measured += 1
            result.hw_ids.add(hw["hw_id"])
    except SchemaError as e:  # the probe produced invalid records: a failed configuration
        result.failed.append((cfg, f"{type(e).__name__}: {e}"))
    except (StoreError, OSError) as e:
        result.store_error = f"{type(e).__name__}: {e}"
        return False
    return True


# ---------------------------------------------------------------- summary
def summarize(store: RecordStore, hw_id: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Best throughput per task and group of this hardware's probe records (the CLI's end-of-run table).

    gemm: best GFLOP/s per (device, backend, dtype); attention: best TFLOP/s per (device, phase, backend,
    dtype); cpu_bench: median score per (benchmark, subtest, unit). Also how many records and the median
    measured noise (runtime CV).
    """
    # imported here: the probe modules load torch, which a sweep of CPU benchmarks never needs
    from perfcast.perf_probe.attention import attention_flops
    from perfcast.perf_probe.gemm import gemm_flops

    ids = None if hw_id is None else ([hw_id] if isinstance(hw_id, str) else list(hw_id))
    frames = []
    specs = {
        "gemm": (["device_name", "backend", "dtype"], "GFLOP/s",
                 lambda d: gemm_flops(d["m"], d["n"], d["k"], d["batch"]) / d["runtime_ms"] / 1e6),
        "attention": (["device_name", "phase", "backend", "dtype"], "TFLOP/s",
                      lambda d: attention_flops(d["batch"], d["heads"], d["seq_q"], d["seq_kv"], d["head_dim"],
                                                d["causal"]) / d["runtime_ms"] / 1e9),
    }
    for task in ("gemm", "attention", "cpu_bench"):
        filters: dict[str, Any] = {"source": SOURCE}
        if ids is not None:
            filters["hw_id"] = ids
        df = store.read(task, filters=filters)
        if df.empty:
            continue
        if task in specs:
            keys, unit, rate = specs[task]
            df = df.assign(value=rate(df.astype({"runtime_ms": float})), unit=unit)
            agg = df.groupby(keys, dropna=False).agg(best=("value", "max"), records=("value", "size"),
                                                     median_cv=("runtime_cv", "median"), unit=("unit", "first"))
        else:
            keys = ["benchmark", "subtest", "score_unit"]
            agg = df.groupby(keys, dropna=False).agg(best=("score", "median"), records=("score", "size"),
                                                     median_cv=("runtime_cv", "median"), unit=("score_unit", "first"))
        agg = agg.reset_index()
        agg.insert(0, "task", task)
        agg["group"] = agg[keys].astype("string").fillna("").agg(" ".join, axis=1)
        frames.append(agg[["task", "group", "best", "unit", "records", "median_cv"]])
    cols = ["task", "group", "best", "unit", "records", "median_cv"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
