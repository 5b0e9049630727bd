"""Model-side fault cases: crafted LightGBM files, edited manifests, flipped bytes, bad parameters, hostile inputs.

Each case in :data:`CASES` takes a scratch directory and returns ``{"case", "expected", "got", "crash",
"silent_change", "data_lost"}``: ``crash`` is a segfault, a hang (a timeout) or an uncaught traceback;
``silent_change`` a damaged model that loaded and predicted something else; ``data_lost`` a saved model that
loading changed. Whatever could crash the interpreter (a crafted tree walked by compiled code, a damaged file
handed to a parser) runs in a subprocess with a timeout. ``benchmarks/faults.py`` runs these beside the store
and probe cases; on its own:

    python benchmarks/faults_models.py            # prints the table as Markdown (minutes: each CLI case starts python)

The model is a small hybrid (roofline x LightGBM, walked by :mod:`perfcast.models.persistence.compiled`) trained on
aiconfigurator bf16 GEMM latencies of three GPUs, saved as a bundle; ``tests/test_faults_models.py`` uses the
same helpers.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PERFCAST_DATA_ROOT", REPO.parent / "shared" / "datasets"))
TRAIN_GPUS = ("a100_sxm", "h100_sxm", "l40s")
ONE = {"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16", "device": "h100_sxm"}
BOOSTER = Path("estimators") / "runtime_ms" / "lightgbm.txt"
#: seconds a subprocess may take before it counts as a hang (imports on a busy machine take several)
TIMEOUT = 120


# ------------------------------------------------------------------------------------------- the model
def training_rows(rows_per_gpu: int = 150):  # noqa: ANN201 (a DataFrame; pandas is imported on use)
    """bf16 GEMM latencies of :data:`TRAIN_GPUS` from the shared aiconfigurator copy."""
    import pandas as pd

    from perfcast.datasets.importers import get_importer

    imp, root = get_importer("aiconfigurator"), DATA / "aiconfigurator"
    units = [u for u in imp.units(root) if u.match("*/gemm/trtllm/*/gemm_perf.parquet") and u.parts[-5] in TRAIN_GPUS]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"] == "bfloat16"].groupby("device_id").sample(n=rows_per_gpu, random_state=0)
    return df.reset_index(drop=True)


def train_bundle(dest: Path) -> Path:
    """A small hybrid with calibrated intervals, saved as a bundle at ``dest``."""
    from perfcast.models import make_model
    from perfcast.models.persistence.bundle import save_model
    from perfcast.models.uncertainty.intervals import ConformalRegressor

    train = training_rows()
    model = ConformalRegressor(make_model("hybrid", "gemm", ["runtime_ms"], {"n_estimators": 30}), n_splits=3)
    return save_model(model.fit(train, train[["runtime_ms"]]), "gemm", train, dest)


@functools.cache
def shared_bundle() -> Path:
    """The bundle every case copies, trained once per process (removed at exit)."""
    home = tempfile.mkdtemp(prefix="perfcast-faults-")
    atexit.register(shutil.rmtree, home, True)
    return train_bundle(Path(home) / "model")


def fresh_bundle(scratch: Path, name: str = "model") -> Path:
    """A copy of :func:`shared_bundle` under ``scratch``."""
    return Path(shutil.copytree(shared_bundle(), scratch / name))


def digests(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (to prove loading changed nothing)."""
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def reseal(bundle: Path) -> None:
    """Recompute every checksum and the manifest digest, as a forger would: what is still refused is refused by
    the structural checks, not by a checksum."""
    from perfcast.models.persistence.bundle import MANIFEST, manifest_digest

    doc = json.loads((bundle / MANIFEST).read_text())
    if isinstance(doc.get("files"), dict):
        doc["files"] = {k: v for k, v in digests(bundle).items() if k in doc["files"]}
    doc["digest"] = manifest_digest(doc)
    (bundle / MANIFEST).write_text(json.dumps(doc, indent=1))


def edit_manifest(bundle: Path, edit: Callable[[dict[str, Any]], None], seal: bool = True) -> None:
    from perfcast.models.persistence.bundle import MANIFEST

    doc = json.loads((bundle / MANIFEST).read_text())
    edit(doc)
    (bundle / MANIFEST).write_text(json.dumps(doc, indent=1))
    if seal:
        reseal(bundle)


# ------------------------------------------------------------------------------------ crafted LightGBM
def edit_tree(text: str, tree: int, key: str, edit: Callable[[list[str]], list[str]]) -> str:
    """``text`` with the values of ``key`` in tree ``tree`` replaced by ``edit(values)``."""
    start = text.index(f"\nTree={tree}\n")
    line = re.compile(rf"^{key}=(.*)$", re.M).search(text, start)
    assert line is not None, f"tree {tree} has no {key}"
    return text[:line.start(1)] + " ".join(edit(line.group(1).split())) + text[line.end(1):]


def _child_back_to_parent(values: list[str]) -> list[str]:
    """The first split child that is a node (> 0) is pointed back at the root: the walk would cycle."""
    i = next(i for i, v in enumerate(values) if int(v) > 0)
    return [*values[:i], "0", *values[i + 1:]]


#: name -> (key, edit of its values in tree 1): each makes the compiled walker read out of bounds or loop
LGB_CRAFTS: dict[str, tuple[str, Callable[[list[str]], list[str]]]] = {
    "split feature out of range": ("split_feature", lambda v: ["4000", *v[1:]]),
    "split feature wraps int32": ("split_feature", lambda v: [str(2**32 + 1), *v[1:]]),
    "child node out of range": ("right_child", lambda v: ["100000", *v[1:]]),
    "leaf index out of range": ("left_child", lambda v: ["-100000", *v[1:]]),
    "child points back to its parent": ("left_child", _child_back_to_parent),
}


def crafted_bundle(scratch: Path, craft: str) -> Path:
    """A bundle whose booster has ``craft`` applied in tree 1, checksums recomputed."""
    bundle = fresh_bundle(scratch, _slug(craft))
    key, edit = LGB_CRAFTS[craft]
    (bundle / BOOSTER).write_text(edit_tree((bundle / BOOSTER).read_text(), 1, key, edit))
    edit_manifest(bundle, _without_parsed_forests, seal=False)  # so loading reads the crafted text (crafted
    for parsed in bundle.rglob("forest.npz"):  # parsed forests: tests/test_bundle_forest.py)
        parsed.unlink()
    reseal(bundle)
    return bundle


def _without_parsed_forests(node: Any) -> None:
    """Drop the parsed forest (``forest.npz``) of every LightGBM leaf in a manifest, as bundles written before
    those were stored: such a leaf is read from its text."""
    if isinstance(node, dict):
        if node.get("kind") == "lightgbm":
            node.pop("forest", None)
        for value in node.values():
            _without_parsed_forests(value)
    elif isinstance(node, list):
        for value in node:
            _without_parsed_forests(value)


# ------------------------------------------------------------------------------------------ subprocesses
def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = TIMEOUT) -> dict[str, Any]:
    """``perfcast ARGS`` in a fresh interpreter: exit code (None on a timeout), stderr and whether it crashed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "400"}  # rich wraps at 80 without a terminal, mid-path (where depends on the path's length)
    try:
        done = subprocess.run([sys.executable, "-m", "perfcast.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        return {"rc": None, "out": "", "err": f"no answer in {timeout:.0f} s", "crash": True}
    crash = done.returncode < 0 or done.returncode not in (0, 1, 2) or "Traceback" in done.stderr
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr, "crash": crash}


def said(res: dict[str, Any], scratch: Path) -> str:
    """``got`` of a CLI run: its exit and the start of what it said (the scratch directory shown as ``~``)."""
    text = " ".join(res["err"].split()) or " ".join(res["out"].split())
    return f"exit {res['rc']}: {text.replace(str(scratch), '~')[:160]}"


def predict_args(bundle: Path, **values: Any) -> list[str]:
    return ["predict", str(bundle), *[a for k, v in {**ONE, **values}.items() for a in ("--set", f"{k}={v}")]]


# ------------------------------------------------------------------------------------------ fuzzing
NUMBERS = (0, 1, -1, 7, 4096, 2**31, 2**53, 2**53 + 2, 2**63, 1e20, 1e308, 0.5, -0.0, float("inf"), float("-inf"),
           float("nan"), True, False, None, "", "4096", " 12 ", "1e20", "big", "inf", "nan", "0x10", [4096], {"m": 1})
DTYPES = ("bf16", "bfloat16", "fp8", "fp16", "fp32", "float32", "int8", "", "  ", "BF16", None, 3, True, "x" * 300)
DEVICES = ("h100_sxm", "a100_sxm", "l40s", "gb200", "NVIDIA H100 80GB HBM3", "h100_sxn", "", None, 5, "../../etc")


def fuzz_config(rng: np.random.Generator) -> dict[str, Any]:
    """One hostile request: each field kept, dropped or replaced by an edge value; sometimes an extra key."""
    def pick(seq: tuple[Any, ...]) -> Any:
        return seq[int(rng.integers(len(seq)))]

    config: dict[Any, Any] = {}
    for key, choices in (("m", NUMBERS), ("n", NUMBERS), ("k", NUMBERS), ("dtype", DTYPES), ("device", DEVICES)):
        roll = rng.random()
        if roll < 0.7:
            config[key] = ONE[key] if key in ("dtype", "device") else int(2 ** rng.integers(0, 17))
        elif roll < 0.97:
            config[key] = pick(choices)
    if rng.random() < 0.15:
        config[pick(("device_id", "batch", "trans_a", "alpha", 7, "runtime_ms"))] = pick(NUMBERS)
    return config


def check_prediction(predictor: Any, config: dict[str, Any]) -> str:
    """``"ok"`` for a prediction with a finite positive runtime, ``"refused"`` for a named input error with a
    message; anything else is returned as the failure it is."""
    from perfcast.features import MissingColumnError, UnknownDeviceError

    try:
        out = predictor.predict(config)
    except (ValueError, MissingColumnError, UnknownDeviceError) as err:
        return "refused" if str(err).strip() else f"{type(err).__name__} without a message"
    except Exception as err:  # noqa: BLE001 - the point is to catch what should not happen
        return f"uncaught {type(err).__name__}: {err}"
    runtime = out["runtime_ms"]
    return "ok" if np.isfinite(runtime) and runtime > 0 else f"runtime_ms={runtime!r}"


def flip_bytes(bundle: Path, n: int, seed: int = 0) -> dict[str, int]:
    """``n`` times: flip one random bit of one random file of a copy of ``bundle`` and load it and predict.
    Counts of outcomes: refused (a named model error), same (loaded, every prediction identical: a flip that
    changes no value, such as ``1e-05`` -> ``1E-05``), changed (loaded, predictions differ: silent), other
    (another exception)."""
    import pandas as pd

    from perfcast import Predictor
    from perfcast.models.persistence.bundle import IncompatibleModelError, ModelFormatError

    rows = training_rows(20)
    expected = Predictor.load(bundle).predict(rows)
    files = sorted(p.relative_to(bundle) for p in bundle.rglob("*") if p.is_file())
    rng = np.random.default_rng(seed)
    counts = {"refused": 0, "same": 0, "changed": 0, "other": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            copy = Path(shutil.copytree(bundle, Path(tmp) / f"flip{i}"))
            target = copy / files[int(rng.integers(len(files)))]
            data = bytearray(target.read_bytes())
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
            target.write_bytes(bytes(data))
            try:
                got = Predictor.load(copy).predict(rows)
            except (ModelFormatError, IncompatibleModelError):
                counts["refused"] += 1
                continue
            except Exception:  # noqa: BLE001 - counted, and shown as a failure
                counts["other"] += 1
                continue
            same = all(pd.Series(got[c]).equals(pd.Series(expected[c])) for c in expected.columns)
            counts["same" if same else "changed"] += 1
    return counts


# ------------------------------------------------------------------------------------------------ cases
def _slug(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_")


def _row(case: str, expected: str, got: str, crash: bool = False, silent: bool = False, lost: bool = False
         ) -> dict[str, Any]:
    return {"case": case, "expected": expected, "got": got, "crash": crash, "silent_change": silent,
            "data_lost": lost}


def _lgb_case(craft: str) -> Callable[[Path], dict[str, Any]]:
    def case(scratch: Path) -> dict[str, Any]:
        bundle = crafted_bundle(scratch, craft)
        before = digests(bundle)
        res = run_cli(*predict_args(bundle))
        ok = res["rc"] == 2 and "tree 1" in res["err"]
        return _row(f"LightGBM file: {craft} (predict)", "exit 2, CorruptModelError naming file and tree",
                    said(res, scratch), crash=res["crash"] or not ok, silent=res["rc"] == 0, lost=digests(bundle) != before)

    case.__name__ = f"lightgbm_{_slug(craft)}"
    return case


MANIFEST_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "manifest without 'files'": lambda d: d.pop("files"),
    "manifest 'requires' emptied": lambda d: d.update(requires=[]),
    "manifest format_version = 0": lambda d: d.update(format_version=0),
    "manifest format_version = true": lambda d: d.update(format_version=True),
    "manifest lists no calibration file (unlisted file read)": lambda d: d["files"].pop("calibration/runtime_ms.npy"),
    "manifest without its digest": lambda d: d.pop("digest"),
}


def _manifest_case(name: str) -> Callable[[Path], dict[str, Any]]:
    def case(scratch: Path) -> dict[str, Any]:
        # edited and resealed (the digest alone would refuse an unsealed edit), except the digest's own case
        bundle = fresh_bundle(scratch)
        edit_manifest(bundle, MANIFEST_EDITS[name], seal="digest" not in name)
        res = run_cli(*predict_args(bundle))
        return _row(name, "exit 2, named error (what and what to do)", said(res, scratch), crash=res["crash"],
                    silent=res["rc"] == 0)

    case.__name__ = f"manifest_{_slug(name)}"
    return case


def digit_edits(bundle: Path, per_file: int = 3, seed: int = 0) -> dict[str, int]:
    """Change one digit (to another digit) at ``per_file`` random places of every file holding digits, load
    each: counts of refused / loaded."""
    from perfcast import Predictor
    from perfcast.models.persistence.bundle import IncompatibleModelError, ModelFormatError

    rng = np.random.default_rng(seed)
    counts = {"refused": 0, "loaded": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for rel in [p.relative_to(bundle) for p in sorted(bundle.rglob("*")) if p.is_file()]:
            data = (bundle / rel).read_bytes()
            places = [i for i, b in enumerate(data) if 48 <= b <= 57]
            for j, at in enumerate(rng.choice(places, size=min(per_file, len(places)), replace=False)):
                copy = Path(shutil.copytree(bundle, Path(tmp) / f"{rel.as_posix().replace('/', '_')}{j}"))
                edited = bytearray(data)
                edited[at] = 48 + (edited[at] - 48 + 1 + int(rng.integers(9))) % 10
                (copy / rel).write_bytes(bytes(edited))
                try:
                    Predictor.load(copy)
                    counts["loaded"] += 1
                except (ModelFormatError, IncompatibleModelError):
                    counts["refused"] += 1
    return counts


def digit_edits_case(scratch: Path) -> dict[str, Any]:
    bundle = fresh_bundle(scratch)
    counts = digit_edits(bundle)
    return _row("one digit edited in every bundle file (3 places each)", "every edit refused",
                f"{counts['refused']} refused, {counts['loaded']} loaded", silent=counts["loaded"] > 0)


def _in_subprocess(scratch: Path, call: str, timeout: float = 600) -> tuple[dict[str, Any] | None, str]:
    """Run ``call`` (an expression over this module, as ``fm``) in a fresh interpreter; its JSON result."""
    code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import faults_models as fm; "
            f"from pathlib import Path; print('RESULT' + json.dumps({call}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              cwd=scratch, env=env)
    except subprocess.TimeoutExpired:
        return None, f"no answer in {timeout:.0f} s"
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")), None)
    if done.returncode != 0 or line is None:
        return None, f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}"
    return json.loads(line.removeprefix("RESULT")), ""


def byte_flip_fuzz_case(scratch: Path, n: int = 60) -> dict[str, Any]:
    bundle = fresh_bundle(scratch)
    before = digests(bundle)
    counts, failure = _in_subprocess(scratch, f"fm.flip_bytes(Path({str(bundle)!r}), {n})")
    if counts is None:
        return _row(f"fuzz: {n} single-bit flips in bundle files", "each refused or no value changed", failure,
                    crash=True)
    return _row(f"fuzz: {n} single-bit flips in bundle files", "each refused or no value changed",
                ", ".join(f"{v} {k}" for k, v in counts.items()), crash=counts["other"] > 0,
                silent=counts["changed"] > 0, lost=digests(bundle) != before)


def predict_fuzz(bundle: Path, n: int, seed: int = 0) -> dict[str, int]:
    from perfcast import Predictor

    predictor = Predictor.load(bundle)
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {"ok": 0, "refused": 0, "failed": 0}
    for _ in range(n):
        outcome = check_prediction(predictor, fuzz_config(rng))
        counts[outcome if outcome in counts else "failed"] += 1
    return counts


def predict_fuzz_case(scratch: Path, n: int = 150) -> dict[str, Any]:
    bundle = fresh_bundle(scratch)
    counts, failure = _in_subprocess(scratch, f"fm.predict_fuzz(Path({str(bundle)!r}), {n})")
    got = failure if counts is None else ", ".join(f"{v} {k}" for k, v in counts.items())
    return _row(f"fuzz: {n} hostile predict inputs", "finite positive runtime or a named input error", got,
                crash=counts is None or counts["failed"] > 0)


def _input_case(name: str, values: dict[str, Any], expect: str) -> Callable[[Path], dict[str, Any]]:
    def case(scratch: Path) -> dict[str, Any]:
        res = run_cli(*predict_args(fresh_bundle(scratch), **values))
        return _row(f"predict {name}", f"exit 2 naming {expect}", said(res, scratch), crash=res["crash"],
                    silent=res["rc"] == 0 or expect not in res["err"])

    case.__name__ = f"input_{_slug(name)}"
    return case


def csv_huge_size_case(scratch: Path) -> dict[str, Any]:
    (scratch / "shapes.csv").write_text("m,n,k,dtype,device\n100000000000000000000,4096,4096,bf16,h100_sxm\n")
    res = run_cli("predict", fresh_bundle(scratch), "--input", scratch / "shapes.csv")
    return _row("predict m=1e20 from a CSV", "exit 2 naming column 'm'", said(res, scratch), crash=res["crash"],
                silent=res["rc"] == 0)


def float32_training_device_case(scratch: Path) -> dict[str, Any]:
    """A training device asked for fp32 (its peak_tflops outside the bf16 box) and the training rows with
    float32 features: neither may blame a training device's spec sheet."""
    from perfcast import Predictor
    from perfcast.models.uncertainty.domain import DomainGuard

    predictor = Predictor.load(fresh_bundle(scratch))
    fp32 = predictor.predict({**ONE, "dtype": "fp32"})
    rows = training_rows()
    features = predictor.model.features.transform(rows)
    guard = DomainGuard("gemm").fit(rows, features)
    ok, _ = guard.check(rows.drop(columns=["device_id"]), features.astype("float32"))
    blamed = "spec outside the training hull" in (fp32["ood_reason"] or "")
    return _row("training device at fp32; training rows as float32", "dtype flagged, device not; all rows in box",
                f"reason: {fp32['ood_reason']!r}; float32 rows outside the box: {int((~ok).sum())}",
                silent=blamed or not ok.all())


def _train_case(name: str, params: str, expect: str) -> Callable[[Path], dict[str, Any]]:
    def case(scratch: Path) -> dict[str, Any]:
        config = scratch / "tiny.toml"
        config.write_text(f'task = "gemm"\ntargets = ["runtime_ms"]\n[model]\nname = "lightgbm"\nparams = {params}\n')
        res = run_cli("train", config, cwd=scratch)
        ok = res["rc"] == 2 and expect in res["err"] + res["out"] and "model.params" in res["err"] + res["out"]
        return _row(f"perfcast train {name}", f"exit 2 naming {expect} and model.params", said(res, scratch),
                    crash=res["crash"], silent=not ok)

    case.__name__ = f"train_{_slug(name)}"
    return case


CASES: list[Callable[[Path], dict[str, Any]]] = [
    *[_lgb_case(c) for c in LGB_CRAFTS],
    *[_manifest_case(name) for name in MANIFEST_EDITS],
    digit_edits_case,
    _input_case("m=inf", {"m": "inf"}, "'m'"),
    _input_case("m=nan", {"m": "nan"}, "'m'"),
    _input_case("m=true", {"m": "true"}, "'m'"),
    csv_huge_size_case,
    float32_training_device_case,
    _train_case("params = {n_estimatorz = 20}", "{ n_estimatorz = 20 }", "n_estimatorz"),
    _train_case('params = {n_estimators = "many"}', '{ n_estimators = "many" }', "n_estimators"),
    predict_fuzz_case,
    byte_flip_fuzz_case,
]


def main() -> None:
    """Run every case and print a Markdown table (paste it into benchmarks/FAULTS_MODELS.md) and the totals."""
    totals = {"crash": 0, "silent_change": 0, "data_lost": 0}
    print("| case | expected | got | crash | silent change | data lost |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(CASES):
            scratch = Path(tmp) / f"case{i}"
            scratch.mkdir()
            row = case(scratch)
            for k in totals:
                totals[k] += bool(row[k])
            flags = " | ".join("yes" if row[k] else "no" for k in ("crash", "silent_change", "data_lost"))
            print(f"| {row['case']} | {row['expected']} | {row['got'].replace('|', '/')} | {flags} |", flush=True)
    print(f"\n{len(CASES)} cases: {totals['crash']} crashes, {totals['silent_change']} silent changes, "
          f"{totals['data_lost']} with data lost")


if __name__ == "__main__":
    main()
