"""The fault suite: hostile input and failures against the record store, importers and probes.

Each case builds its own scratch store or dataset copy (slices of the real files in ../shared/datasets),
injects one fault, runs perfcast the way a user would (the CLI in-process, or a subprocess where a signal
or a second process is the fault) and reports ``{"case", "expected", "got", "crash", "silent_change",
"data_lost", "inputs"}``: crash = a traceback or an exit code other than the named one; silent change =
stored or returned values differ from what was written without an error; data lost = records stored
before the fault are gone. Fuzz cases count each fuzzed input under ``inputs``.

    python benchmarks/faults.py                 # every case, >= 200 fuzzed importer inputs; writes FAULTS.md
    python benchmarks/faults.py --fuzz 20 --no-write

``benchmarks/faults_models.py`` (model-file faults), when present, contributes its ``CASES`` too.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = Path(os.environ.get("PERFCAST_DATA_ROOT", REPO.parent / "shared" / "datasets"))
Case = Callable[[Path], dict]


def row(case: str, expected: str, got: str, *, crash: bool | int = False, silent_change: bool | int = False,
        data_lost: bool | int = False, inputs: int = 1) -> dict:
    return {"case": case, "expected": expected, "got": got, "crash": crash, "silent_change": silent_change,
            "data_lost": data_lost, "inputs": inputs}


def cli(*args: str) -> tuple[int, str]:
    """``perfcast ARGS`` in-process: (exit code, output); an uncaught exception is exit 1 with its traceback."""
    from typer.testing import CliRunner

    from perfcast.cli import app

    res = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})
    out = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        out += "".join(traceback.format_exception(res.exception))
    return res.exit_code, out


def _named(code: int, out: str, *needles: str, want: int = 2) -> tuple[str, bool]:
    """(what happened, crashed?): the exit code and whether the message names every needle."""
    named = all(n in out for n in needles)
    crashed = code != want or "Traceback" in out or not named
    shown = ", ".join(n if len(n) <= 40 else n[:20] + "…" for n in needles)
    return f"exit {code}, {'names ' + shown if named else 'message lacks ' + repr(needles)}", crashed


def batch(start: int, n: int, device: str = "cpu a") -> pd.DataFrame:
    """Valid GEMM records ``m = start+1 .. start+n`` (what a store holds before the fault)."""
    from perfcast.records.schema import hardware_ids

    df = pd.DataFrame({
        "source": "probe", "device_name": device, "device_kind": "cpu", "op": "matmul",
        "m": range(start + 1, start + n + 1), "n": 64, "k": 64, "batch": 1, "dtype": "float32",
        "runtime_ms": [0.01 * (i + 1) for i in range(start, start + n)], "power_w": 35.5,
        "collected_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
    })
    df["hw_id"] = hardware_ids(df)
    return df


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every stored part (locks, claims and scratch files are not data)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet")) if not p.name.startswith(".")} if root.exists() else {}


def seeded_store(tmp: Path, parts: int = 3):  # noqa: ANN201
    from perfcast.records.store import RecordStore

    rs = RecordStore(tmp / "store")
    for i in range(parts):
        rs.append(batch(20 * i, 20), "gemm")
    return rs


# ---------------------------------------------------------------- store
def flip_bits(tmp: Path, n: int = 60, seed: int = 0) -> dict:
    """n single-bit flips, each at a random bit of a fresh part: every one must be a named error."""
    from perfcast.records.store import CorruptPartError, RecordStore

    rng = random.Random(seed)
    detected = silent = crash = lost = 0
    rs = seeded_store(tmp, parts=2)
    good = rs.read("gemm").sort_values("m").reset_index(drop=True)
    target = rs.parts("gemm")[0]
    original = target.read_bytes()
    for _ in range(n):
        data = bytearray(original)
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        target.write_bytes(bytes(data))
        try:
            df = RecordStore(rs.root).read("gemm").sort_values("m").reset_index(drop=True)
            silent += not df.equals(good)
        except CorruptPartError as e:
            detected += target.name in str(e) and "perfcast data repair" in str(e)
        except Exception:  # noqa: BLE001 - a crash is what this counts
            crash += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kept = RecordStore(rs.root).read("gemm", on_bad="skip")
        lost += len(kept) != 20  # the untouched part must still read in full
    target.write_bytes(original)
    return row(f"{n} random single-bit flips in a part", "each read names the part (CorruptPartError)",
               f"{detected}/{n} named the part", crash=crash, silent_change=silent, data_lost=lost, inputs=n)


def truncated_part(tmp: Path) -> dict:
    rs = seeded_store(tmp)
    p = rs.parts("gemm")[1]
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    got, crash = _named(*cli("data", "ls", "--store", str(rs.root)), p.name, "perfcast data check")
    code, out = cli("data", "ls", "--store", str(rs.root), "--skip-bad")
    lost = code != 0 or "40" not in out
    return row("part cut in half, `data ls`", "exit 2 naming the part; --skip-bad lists the other 40",
               got + f"; --skip-bad exit {code}", crash=crash, data_lost=lost)


def check_and_repair(tmp: Path) -> dict:
    rs = seeded_store(tmp)
    bad = rs.parts("gemm")[0]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad.write_bytes(bytes(data))
    code1, out1 = cli("data", "check", "--store", str(rs.root))
    code2, out2 = cli("data", "repair", "--store", str(rs.root))
    code3, _ = cli("data", "check", "--store", str(rs.root))
    moved = rs.root / "quarantine" / "gemm" / bad.name
    ok = (code1 == 2 and bad.name in out1 and code2 == 0 and bad.name in out2 and code3 == 0
          and moved.exists() and moved.read_bytes() == bytes(data))
    return row("`data check` then `data repair` on a flipped part",
               "check exit 2 names it; repair moves it to quarantine/ unchanged; check exit 0",
               f"check {code1}, repair {code2}, check {code3}, quarantined bytes kept: {moved.exists()}",
               crash=not ok, data_lost=len(rs.read("gemm")) != 40)


def legacy_part(tmp: Path) -> dict:
    """A part written before checksums (old name) still reads; repair seals it under its hash."""
    rs = seeded_store(tmp, parts=1)
    p = rs.parts("gemm")[0]
    legacy = p.with_name(f"part-{p.name[5:26]}-{'a1b2c3d4e5f6'}.parquet")
    p.rename(legacy)
    before = rs.read("gemm")
    code, out = cli("data", "check", "--store", str(rs.root))
    cli("data", "repair", "--store", str(rs.root))
    after = rs.read("gemm")
    sealed = [x.name for x in rs.parts("gemm")]
    ok = code == 0 and "legacy" in out and len(before) == 20 and after.equals(before) and legacy.name not in sealed
    return row("legacy part (no checksum in its name)", "reads; check says legacy; repair seals it",
               f"reads {len(before)} rows, check exit {code}, sealed: {legacy.name not in sealed}", crash=not ok,
               data_lost=len(after) != 20)


def mixed_timestamps(tmp: Path) -> dict:
    """Parts whose timestamps were written at different units (importers vs probes) read as datetimes."""
    from perfcast.records.store import RecordStore

    rs = RecordStore(tmp / "store")
    rs.append(batch(0, 5).assign(source="gpperf-cutlass",
                                 collected_at=pd.Timestamp("2024-11-12 00:54:04", tz="UTC").as_unit("s")), "gemm")
    rs.append(batch(5, 5).assign(collected_at=datetime.now(timezone.utc)), "gemm")
    dtype = rs.read("gemm")["collected_at"].dtype
    ok = str(dtype).startswith("datetime64")
    return row("store mixing sources (s and us timestamps)", "collected_at read as datetime64[UTC]", str(dtype),
               silent_change=not ok)


def concurrent_mock_s3(tmp: Path) -> dict:
    """Two writers on a non-local filesystem (no lock) storing overlapping records: dedupe on read."""
    import pyarrow.fs as pafs

    from perfcast.records.store import RecordStore

    fs, base = pafs.FileSystem.from_uri("mock:///store")
    a, b = RecordStore(base, filesystem=fs), RecordStore(base, filesystem=fs)
    for i in range(5):
        a.append(batch(10 * i, 15), "gemm")
        b.append(batch(10 * i + 5, 15), "gemm")
    df = a.read("gemm")
    ok = df["record_id"].is_unique and sorted(df["m"].astype(int)) == list(range(1, 61))
    return row("two writers, no lock (non-local filesystem)", "60 unique records", f"{len(df)} records",
               data_lost=not ok)


# ---------------------------------------------------------------- probes
def probe_into_file(tmp: Path) -> dict:
    f = tmp / "a-file"
    f.write_text("not a store")
    got, crash = _named(*cli("probe", "cpu", "--quick", "--budget", "5s", "--store", str(f)), str(f), "is a file")
    return row("`probe cpu --quick --store <a file>`", "exit 2 before measuring", got, crash=crash,
               data_lost=f.read_text() != "not a store")


def probe_under_file(tmp: Path) -> dict:
    f = tmp / "a-file"
    f.write_text("x")
    got, crash = _named(*cli("probe", "cpu", "--quick", "--budget", "5s", "--store", str(f / "store")),
                        "cannot be written")
    return row("`probe` into a path under a file (not a directory)", "exit 2 before measuring", got, crash=crash)


def probe_disk_full(tmp: Path) -> dict:
    """The disk fills after the first stored configuration (ENOSPC from the write)."""
    from perfcast.records import store as store_mod

    real = store_mod._write_local_atomic
    calls = {"n": 0}

    def full_after_one(final: Path, data: object) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device")
        real(final, data)

    root = tmp / "store"
    with mock.patch.object(store_mod, "_write_local_atomic", full_after_one):
        code, out = cli("probe", "cpu", "--quick", "--store", str(root))
    got, crash = _named(code, out, "could not be stored", "No space left on device")
    kept = store_mod.RecordStore(root).read("cpu_bench")
    return row("disk full after the first stored config (probe cpu)", "exit 2 naming the store; first config kept",
               got + f"; {len(kept)} records kept", crash=crash, data_lost=len(kept) == 0)


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # SIGINT back to its default: a shell without job control starts background jobs with it ignored
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def probe_sigint(tmp: Path) -> dict:
    """Ctrl-C to a running `perfcast probe cpu --quick`: exit 130, what was measured is stored."""
    from perfcast.records.store import RecordStore

    root = tmp / "store"
    proc = _python("from perfcast.cli import app; app()", "probe", "cpu", "--quick", "--store", str(root))
    rs = RecordStore(root)
    deadline = time.monotonic() + 300
    while len(rs.parts("cpu_bench")) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    stored_before = len(rs.read("cpu_bench"))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    after = rs.read("cpu_bench")
    got, crash = _named(proc.returncode, out, "interrupted", want=130)
    return row("SIGINT to a running `probe cpu --quick`", "exit 130, measured records stored",
               got + f"; {stored_before} -> {len(after)} records", crash=crash,
               data_lost=len(after) < stored_before or len(after) == 0)


SWEEP_SCRIPT = """
    import json, sys
    from perfcast.records.store import RecordStore
    from perfcast.perf_probe.gemm import GemmProbe
    from perfcast.perf_probe.sweep import run_sweep
    r = run_sweep(GemmProbe(devices=("cpu",), max_time_s=0.05, warmup_s=0.01), RecordStore(sys.argv[1]),
                  configs=json.loads(sys.argv[2]), progress=False)
    print(json.dumps({"measured": r.measured, "claimed_elsewhere": r.claimed_elsewhere}))
"""


def sweep_configs(n: int) -> list[dict]:
    return [{"op": "matmul", "m": 16 + i, "n": 24, "k": 8, "batch": 1, "dtype": "float32", "layout": "nn",
             "backend": "torch", "device": "cpu", "n_threads": 1} for i in range(n)]


def concurrent_probes(tmp: Path, n: int = 16) -> dict:
    """Two probe sweeps of the same plan at once on one machine: each config measured exactly once."""
    from perfcast.records.store import RecordStore

    root = tmp / "store"
    cfgs = json.dumps(sweep_configs(n))
    procs = [_python(SWEEP_SCRIPT, str(root), cfgs) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    measured = [json.loads(o.strip().splitlines()[-1])["measured"] if p.returncode == 0 else -1
                for p, o in zip(procs, outs)]
    keys = RecordStore(root).read("gemm")["params_json"]
    twice = int(keys.duplicated().sum())
    crash = any(p.returncode != 0 for p in procs)
    return row(f"two concurrent probe sweeps of one {n}-config plan", f"{n} configs, each measured once",
               f"measured {measured[0]} + {measured[1]}, stored {keys.nunique()} configs, {twice} twice",
               crash=crash, silent_change=twice, data_lost=keys.nunique() != n)


# ---------------------------------------------------------------- imports
def _copy(tmp: Path, dataset: str) -> Path:
    dest = tmp / dataset
    shutil.copytree(DATA / dataset, dest)
    for p in dest.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    dest.chmod(0o755)
    return dest


def _import_case(tmp: Path, name: str, dataset: str, damage: Callable[[Path], Path], expected: str,
                 *needles: str) -> dict:
    """Damage a copy of ``dataset``, import it with the CLI into a store already holding records."""
    rs = seeded_store(tmp, parts=1)
    before = snapshot(rs.root)
    root = _copy(tmp, dataset)
    damaged = damage(root)
    code, out = cli("data", "import", dataset, str(root), "--store", str(rs.root))
    got, crash = _named(code, out, *(needles or (damaged.name,)))
    return row(name, expected, got, crash=crash, data_lost=snapshot(rs.root) != before)


def _gz_rewrite(path: Path, edit: Callable[[bytes], bytes]) -> Path:
    path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes()))))
    return path


def _replace_first_value(text: bytes, column: str, value: str) -> bytes:
    lines = text.split(b"\n")
    header = lines[0].decode().split(",")
    cells = lines[1].decode().split(",")
    cells[header.index(column)] = value
    lines[1] = ",".join(cells).encode()
    return b"\n".join(lines)


IMPORT_CASES: list[tuple[str, str, Callable[[Path], Path], str, tuple[str, ...]]] = [
    ("gzip truncated mid-stream", "gpperf-ada-matmul",
     lambda r: (p := r / "tiled_rtx4070.csv.gz").write_bytes(p.read_bytes()[:3000]) and p,
     "exit 2 naming the file, nothing stored", ("tiled_rtx4070.csv.gz", "cut off mid-stream")),
    ("binary file as machine.data", "uci-computer-hardware",
     lambda r: (p := r / "machine.data").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(4000)))
     and p, "exit 2 naming the file", ("machine.data",)),
    ("non-UTF-8 byte in a CSV", "specpower-ssj2008",
     lambda r: (p := r / "SPECpower-full-results.csv").write_bytes(p.read_bytes().replace(b"Intel", b"Int\xe9l", 1))
     and p, "exit 2 naming the file", ("SPECpower-full-results.csv", "not UTF-8")),
    ("empty file", "uci-computer-hardware", lambda r: (p := r / "machine.data").write_bytes(b"") == 0 and p,
     "exit 2 naming the file", ("machine.data", "empty")),
    ("empty gzip", "gpperf-cutlass",
     lambda r: (p := r / "cutlass_rtx4070.csv.gz").write_bytes(gzip.compress(b"")) and p,
     "exit 2 naming the file", ("cutlass_rtx4070.csv.gz", "empty")),
    ("m=1e20 in a CSV", "gpperf-ada-matmul",
     lambda r: _gz_rewrite(r / "tiled_rtx4070.csv.gz", lambda t: _replace_first_value(t, "m", "1e20")),
     "exit 2 naming file, row and column", ("tiled_rtx4070.csv.gz", "m=", "out of range")),
    ("runtime_ms=inf in a CSV", "gpperf-ada-matmul",
     lambda r: _gz_rewrite(r / "tiled_rtx4070.csv.gz", lambda t: _replace_first_value(t, "runtime_ms", "inf")),
     "exit 2 naming file, row and column", ("tiled_rtx4070.csv.gz", "row 0: runtime_ms=inf")),
    ("power_w=inf in a CSV", "gpperf-ada-matmul",
     lambda r: _gz_rewrite(r / "tiled_rtx4070.csv.gz", lambda t: _replace_first_value(t, "power_w", "inf")),
     "exit 2 naming file, row and column", ("tiled_rtx4070.csv.gz", "row 0: power_w=inf")),
    ("text cut mid-row (in the GPU name)", "gpperf-cutlass",
     lambda r: _gz_rewrite(r / "cutlass_rtx4070.csv.gz",
                           lambda t: t[: t.index(b"NVIDIA GeForce RTX 4070", len(t) - 400) + 20]),
     "exit 2 naming the file, nothing stored", ("cutlass_rtx4070.csv.gz", "ends mid-row")),
]


def import_cases() -> list[Case]:
    def make(spec: tuple) -> Case:
        name, dataset, damage, expected, needles = spec
        return lambda tmp: _import_case(tmp, f"import: {name}", dataset, damage, expected, *needles)

    return [make(s) for s in IMPORT_CASES]


def import_missing_path(tmp: Path) -> dict:
    missing = tmp / "no-such-dir"
    got, crash = _named(*cli("data", "import", "uci-computer-hardware", str(missing), "--store", str(tmp / "s")),
                        str(missing), "does not exist")
    return row("import: missing path", "exit 2 naming the path", got, crash=crash)


def _train(tmp: Path, body: str) -> tuple[int, str]:
    cfg = tmp / "cfg.toml"
    cfg.write_text(body)
    return cli("train", str(cfg), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}")


def train_missing_import(tmp: Path) -> dict:
    body = ('task = "gemm"\ntargets = ["runtime_ms"]\n[[data.imports]]\ndataset = "gpperf-cutlass"\n'
            f'path = "{tmp / "nope"}"\n[model]\nname = "lightgbm"\n[eval]\nprotocol = "random"\n')
    got, crash = _named(*_train(tmp, body), "data.imports[0]", "does not exist")
    return row("train: missing import path", "exit 2 naming the config key and path", got, crash=crash)


def train_empty_filter(tmp: Path) -> dict:
    body = ('task = "gemm"\ntargets = ["runtime_ms"]\n[[data.imports]]\ndataset = "gpperf-ada-matmul"\n'
            f'path = "{DATA / "gpperf-ada-matmul"}"\n[data.filters]\ndevice_name = "no such GPU"\n'
            '[model]\nname = "lightgbm"\n[eval]\nprotocol = "random"\n')
    got, crash = _named(*_train(tmp, body), "no gemm records", "no such GPU")
    return row("train: filter leaves no rows", "exit 2 naming the filter", got, crash=crash)


# ---------------------------------------------------------------- fuzzing
FUZZ_BASES = {  # dataset -> (file, rows kept): small real slices, so each fuzzed import is quick
    "uci-computer-hardware": ("machine.data", 209),
    "specpower-ssj2008": ("SPECpower-full-results.csv", 60),
    "gpperf-cutlass": ("cutlass_rtx4070.csv.gz", 60),
}


def fuzz_base(tmp: Path, dataset: str) -> tuple[Path, Path, bytes]:
    """A copy of ``dataset`` whose unit is cut to its first rows: (root, unit, unit's text bytes)."""
    root = _copy(tmp, dataset)
    name, rows = FUZZ_BASES[dataset]
    unit = root / name
    text = gzip.decompress(unit.read_bytes()) if name.endswith(".gz") else unit.read_bytes()
    text = b"\n".join(text.split(b"\n")[: rows + 1]) + b"\n"
    unit.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    return root, unit, text


KINDS = ("truncate", "overwrite", "insert", "delete", "bitflip")


def apply_mutation(text: bytes, gz: bool, kind: str, where: float, payload: bytes, on_text: bool) -> bytes:
    """``text`` (a unit's content; gzipped again when ``gz``) with one mutation at fraction ``where`` of its
    length: truncation, overwrite with / insertion of ``payload``, deletion of ``len(payload)`` bytes, or a
    bit flip; on a .gz file applied to the text inside (``on_text``) or to the compressed bytes."""
    on_text = on_text or not gz
    data = bytearray(text if on_text else gzip.compress(text))
    i = min(int(where * len(data)), max(len(data) - 1, 0))
    if kind == "truncate":
        del data[i:]
    elif kind == "overwrite":
        data[i:i + len(payload)] = payload
    elif kind == "insert":
        data[i:i] = payload
    elif kind == "delete":
        del data[i:i + len(payload)]
    else:
        data[i] ^= 1 << (payload[0] % 8)
    return gzip.compress(bytes(data)) if gz and on_text else bytes(data)


def mutate(text: bytes, rng: random.Random, gz: bool) -> tuple[bytes, str]:
    """One random mutation (see :func:`apply_mutation`) and a description of it."""
    kind = rng.choice(KINDS)
    payload = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return apply_mutation(text, gz, kind, rng.random(), payload, rng.random() < 0.5), kind


def fuzz_one(dataset: str, root: Path, unit: Path, data: bytes, store_root: Path) -> str:
    """Import a mutated unit into a store already holding records. Returns "ok" (imported, the earlier
    records intact), "named" (the importer's named error naming the file, store unchanged), "lost" (the
    store changed on error or lost earlier records) or "crash" (any other exception)."""
    from perfcast.datasets.importers import get_importer
    from perfcast.datasets.importers.base import DatasetLayoutError
    from perfcast.records.parsing import DataFileError
    from perfcast.records.schema import SchemaError
    from perfcast.records.store import RecordStore

    shutil.rmtree(store_root, ignore_errors=True)
    rs = RecordStore(store_root)
    rs.append(batch(0, 5), "gemm")
    seeded = set(rs.record_ids("gemm").to_pylist())
    before = snapshot(store_root)
    unit.write_bytes(data)
    try:
        get_importer(dataset).run(root, rs)
    except (DataFileError, DatasetLayoutError, SchemaError) as e:
        if snapshot(store_root) != before:
            return "lost"
        return "named" if unit.name in str(e) + "".join(getattr(e, "__notes__", [])) else "crash"
    except Exception:  # noqa: BLE001 - anything else is a crash
        return "crash"
    return "ok" if seeded <= set(rs.record_ids("gemm").to_pylist()) else "lost"


def fuzz_cases(n_total: int, seed: int = 0) -> list[Case]:
    """Fuzzed importer inputs spread over :data:`FUZZ_BASES` (one table row per dataset)."""
    from perfcast.datasets.importers import get_importer
    from perfcast.records.store import RecordStore

    per = max(1, n_total // len(FUZZ_BASES))

    def make(dataset: str) -> Case:
        def case(tmp: Path) -> dict:
            rng = random.Random(f"{seed}-{dataset}")
            root, unit, text = fuzz_base(tmp, dataset)
            clean = RecordStore(tmp / "clean")
            get_importer(dataset).run(root, clean)
            task = "gemm" if dataset.startswith("gpperf") else "cpu_bench"
            truth = set(clean.read(task, columns_=["record_id"])["record_id"])
            tally: dict[str, int] = {}
            silent = 0
            for _ in range(per):
                data, kind = mutate(text, rng, unit.name.endswith(".gz"))
                outcome = fuzz_one(dataset, root, unit, data, tmp / "store")
                if outcome == "ok" and kind == "truncate":
                    got = set(RecordStore(tmp / "store").read(task, columns_=["record_id"])["record_id"])
                    silent += not got <= truth  # a cut file may lose rows, never store altered ones
                tally[outcome] = tally.get(outcome, 0) + 1
            return row(f"fuzz: {dataset} ({unit.name}, {FUZZ_BASES[dataset][1]} rows)",
                       "clean import or the importer's named error; store unchanged on error",
                       ", ".join(f"{k} {v}" for k, v in sorted(tally.items())),
                       crash=tally.get("crash", 0), silent_change=silent, data_lost=tally.get("lost", 0),
                       inputs=per)
        return case

    return [make(d) for d in FUZZ_BASES]


# ---------------------------------------------------------------- suite
CASES: list[Case] = [
    flip_bits, truncated_part, check_and_repair, legacy_part, mixed_timestamps, concurrent_mock_s3,
    probe_into_file, probe_under_file, probe_disk_full, probe_sigint, concurrent_probes,
    *import_cases(), import_missing_path, train_missing_import, train_empty_filter,
]


def model_cases() -> list[Case]:
    """``CASES`` of benchmarks/faults_models.py (another module's faults), if it exists."""
    path = HERE / "faults_models.py"
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location("faults_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.CASES)


def run_case(case: Case) -> dict:
    with tempfile.TemporaryDirectory(prefix="perfcast-faults-") as tmp:
        try:
            with contextlib.redirect_stderr(open(os.devnull, "w")):  # noqa: SIM115
                return case(Path(tmp))
        except Exception as e:  # noqa: BLE001 - the harness reports a case that blew up as a crash
            name = getattr(case, "__name__", "case")
            return row(name, "(case ran)", f"{type(e).__name__}: {str(e)[:200]}", crash=True)


def _cell(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def table(rows: list[dict]) -> str:
    lines = ["| case | expected | got | crash | silent change | data lost | inputs |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k, "")).replace("|", "/") for k in
                                       ("case", "expected", "got", "crash", "silent_change", "data_lost")) +
                     f" | {r.get('inputs', 1)} |")
    return "\n".join(lines)


def totals(rows: list[dict]) -> dict[str, int]:
    return {k: int(sum(int(r.get(k, 0)) for r in rows)) for k in ("crash", "silent_change", "data_lost", "inputs")}


NOTES = """Notes:
- The full disk is simulated: the part write raises ENOSPC after the first stored configuration.
- A read-only store directory is not in the table: as root (this machine) permissions are not enforced;
  `tests/test_faults_store.py` checks it when run as another user.
- Fuzz rows count mutated inputs (truncation, byte overwrite/insertion/deletion, bit flip; on a .gz the
  compressed bytes or the text inside). "ok" is a clean import of the mutated file; silent change counts
  truncated files that imported a row the intact file does not have.
- Known blind spot: SPECpower's published list has no final newline, so a cut exactly after the last
  comma of its last row (an empty last flag) cannot be told from the published file.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fuzz", type=int, default=210, help="fuzzed importer inputs in total")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print only; do not rewrite benchmarks/FAULTS.md")
    args = ap.parse_args()
    cases = [*CASES, *fuzz_cases(args.fuzz, args.seed), *model_cases()]
    t0 = time.monotonic()
    rows = []
    for case in cases:
        rows.append(run_case(case))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    t = totals(rows)
    fuzzed = sum(r.get("inputs", 1) for r in rows if str(r["case"]).startswith("fuzz"))
    summary = (f"{len(rows)} cases, {t['inputs']} inputs ({fuzzed} fuzzed): {t['crash']} crashes, "
               f"{t['silent_change']} silent changes, {t['data_lost']} with data lost "
               f"({time.monotonic() - t0:.0f} s)")
    print("\n" + table(rows) + "\n\n" + summary)
    if not args.no_write:
        cmd = "python benchmarks/faults.py" + (f" --fuzz {args.fuzz}" if args.fuzz != 210 else "")
        (HERE / "FAULTS.md").write_text(
            f"# Fault suite\n\n`{cmd}` — {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"{os.cpu_count()} cores.\n\n{summary}\n\n{table(rows)}\n\n{NOTES}")


if __name__ == "__main__":
    main()
