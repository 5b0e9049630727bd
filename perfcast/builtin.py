"""Built-in GEMM and attention runtime models: an answer for "4096x4096x4096 bf16 on an H100" with nothing trained.

Why prebuilt bundles in the package: a first prediction must not wait for an import and a fit. The bundles
under ``perfcast/builtin_models/<task>/`` are ordinary perfcast bundles (LightGBM text, JSON, ``.npy`` and
``.npz`` arrays; checksums, version refusal, intervals and out-of-distribution flags as any saved model),
trained on the redistributable public data only: aiconfigurator (Apache-2.0) and NeuSight (MIT), see NOTICE.
Any GPU with a spec sheet (bundled, or in ``$PERFCAST_HW_SPECS``) is predicted from that sheet.

This module only finds and loads them (the predictor and CLI use it); building and measuring them is an
experiment, :mod:`perfcast.experiments.builtin_models` (``python -m perfcast.experiments.builtin_models
build|measure|report|path``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: the tasks with a built-in model
TASKS: tuple[str, ...] = ("gemm", "attention")
#: where the shipped bundles and their accuracy rows live (package data)
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_models"
ACCURACY_FILE = BUILTIN_DIR / "accuracy.json"
#: how to rebuild the bundles (named by every message about a missing or refused one)
REBUILD = "`python -m perfcast.experiments.builtin_models build --data-root DIR` (DIR laid out like shared/datasets)"
#: input keys that name a task when ``--task`` is not given
TASK_KEYS: dict[str, frozenset[str]] = {
    "attention": frozenset({"phase", "seq_q", "seq_kv", "heads", "head_dim"}),
    "gemm": frozenset({"m", "n", "k"}),
}


class BuiltinModelError(RuntimeError):
    """A built-in model is missing or unusable (says which and how to rebuild it)."""


def bundle_path(task: str) -> Path:
    """The shipped bundle directory of ``task`` (a :class:`BuiltinModelError` names the fix when it is absent)."""
    if task not in TASKS:
        raise ValueError(f"no built-in model for task {task!r}; built-in: {', '.join(TASKS)}")
    path = BUILTIN_DIR / task
    if not (path / "manifest.json").is_file():
        raise BuiltinModelError(f"the built-in {task} model is not installed at {path}; build it with {REBUILD}")
    return path


def load_builtin(path: Path, threads: int = 1) -> Any:
    """The :class:`~perfcast.models.persistence.bundle.PerfcastModel` at ``path``; a version refusal says how to rebuild it."""
    from perfcast.models.persistence.bundle import IncompatibleModelError, PerfcastModel

    try:
        return PerfcastModel.load(path, threads=threads)
    except IncompatibleModelError as err:
        raise IncompatibleModelError(f"{err}\nThe built-in models can be rebuilt for this environment with "
                                     f"{REBUILD}.") from None


def infer_task(keys: Iterable[str]) -> str:
    """The task whose keys the input uses: attention keys win (an attention config has no m/n/k)."""
    given = {str(k) for k in keys}
    for task, names in TASK_KEYS.items():
        if given & names:
            return task
    raise ValueError(f"cannot tell the task from the keys {sorted(given)}: a GEMM needs m, n, k, dtype and a device; "
                     f"attention needs phase, batch, heads, seq_q, seq_kv, head_dim, dtype and a device "
                     f"(or pass --task gemm|attention)")


def accuracy_rows() -> list[dict[str, Any]]:
    """The shipped leave-one-GPU-out rows (``[]`` when none were measured)."""
    if not ACCURACY_FILE.is_file():
        return []
    return list(json.loads(ACCURACY_FILE.read_text(encoding="utf-8"))["rows"])


def trained_devices(task: str) -> list[str]:
    """The device ids the shipped ``task`` model was trained on (``[]`` when it is not installed)."""
    manifest = BUILTIN_DIR / task / "manifest.json"
    if not manifest.is_file():
        return []
    return list(json.loads(manifest.read_text(encoding="utf-8"))["metadata"]["data"]["devices"])


def gpu_table() -> Any:
    """Every GPU with a spec sheet (bundled and ``$PERFCAST_HW_SPECS``): its headline numbers and whether the
    built-in models measured it or predict it from the sheet alone."""
    from perfcast.records.hardware_specs import spec_table

    specs = spec_table().rename_axis("device_id").reset_index()
    gpus = specs[specs["device_kind"] == "gpu"].sort_values(["vendor", "release_year", "device_id"])
    out = gpus[["device_id", "device_name", "arch", "release_year", "mem_bw_gbs", "peak_tflops_bf16",
                "peak_tflops_fp32"]].reset_index(drop=True)
    for task in TASKS:
        seen = set(trained_devices(task))
        out[f"{task} data"] = ["measured" if d in seen else "sheet only" for d in out["device_id"]]
    return out
