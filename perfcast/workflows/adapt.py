"""Adaptation workflow behind ``perfcast adapt``: correct a trained model for one device from its measurements in a record store.

    perfcast probe gemm --plan adapt --budget 128 --model ./model     # measure the most informative configs
    perfcast adapt ./model --store ~/.perfcast/store --out ./model-here

Why a separate step from training: the base model took hours of other hardware's data; a new device brings
minutes of probes. :func:`adapt_from_store` reads that device's records, adapts the model
(:meth:`perfcast.Predictor.adapt`), writes the adapted bundle and, given a tracking URI, logs and registers it
in MLflow with the base model and the records' content hash as its lineage. A device with no spec sheet
(this machine's CPU) is described by the sheet its probes measured (:func:`perfcast.perf_probe.peaks.probed_spec`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.records.hardware_specs import ENV_VAR, resolve_device_id
from perfcast.records.store import RecordStore


class AdaptationError(ValueError):
    """The adaptation records cannot adapt this model (the message says what, where and what to do)."""


@dataclass(frozen=True)
class AdaptOutcome:
    """What :func:`adapt_from_store` produced."""

    predictor: Any  # the adapted perfcast.Predictor
    path: Path
    device: str
    rows: int
    report: dict[str, Any]
    specs_path: Path | None
    run_id: str | None
    registered_version: int | None


def _device_of(frame: pd.DataFrame) -> pd.Series:
    """Each record's device: its spec-sheet id, else its reported name."""
    ids = frame["device_id"].astype("string") if "device_id" in frame.columns else pd.Series(pd.NA, index=frame.index)
    names = frame["device_name"].astype("string") if "device_name" in frame.columns else ids
    return ids.fillna(names).fillna("unknown")


def adaptation_records(store: RecordStore, task: str, target: str, device: str | None) -> tuple[pd.DataFrame, str]:
    """The records of one device that can adapt a ``task`` model of ``target``, and the device's name.

    Refuses (AdaptationError) a store with no ``task`` records (naming the tasks it has), a ``device`` it
    did not measure (naming those it did), several devices with no ``device`` chosen, and rows without a
    measured ``target``.
    """
    counts = store.counts()
    have = sorted(counts["task"].unique()) if not counts.empty else []
    if task not in have:
        raise AdaptationError(
            f"the store {store.root} holds no {task} records (it has {', '.join(have) or 'none'}), so it cannot "
            f"adapt this {task} model: measure the device with `perfcast probe {task if task != 'cpu_bench' else 'cpu'} "
            f"--plan adapt --store {store.root}` or pass the store that holds them")
    records = store.read(task)
    label = _device_of(records)
    if device is not None:
        wanted = {device, resolve_device_id(device) or device}
        keep = label.isin(wanted).to_numpy() | (records.get("device_name", label).astype("string") == device).fillna(
            False).to_numpy()
        if not keep.any():
            raise AdaptationError(f"no {task} record in {store.root} is of device {device!r}; it measured "
                                  f"{', '.join(sorted(label.unique()))}: pass one of them as --device")
        records, label = records[keep], label[keep]
    devices = sorted(label.unique())
    if len(devices) > 1:
        raise AdaptationError(f"the {task} records in {store.root} are of {len(devices)} devices ({', '.join(devices)}); "
                              f"an adaptation is for one device: choose it with --device")
    measured = pd.to_numeric(records[target], errors="coerce").gt(0).fillna(False).to_numpy()
    if not measured.any():
        raise AdaptationError(f"none of the {len(records)} {task} records of {devices[0]} in {store.root} has a "
                              f"measured {target}; nothing to adapt to")
    return records[measured], devices[0]


def donor_records(store: RecordStore, task: str, target: str, device: str | None, near: str) -> pd.DataFrame:
    """Other devices' measured records for the donor start and mix: ``device``'s only, else every device of the
    store but ``near``, nearest to ``near`` by spec sheet first (sorted by name where a sheet is missing), which
    is the order the donor table reads them in."""
    if device is not None:
        return adaptation_records(store, task, target, device)[0]
    have = store.counts()
    if have.empty or task not in set(have["task"]):
        raise AdaptationError(f"the donor store {store.root} holds no {task} records: pass a store of other "
                              f"devices' {task} measurements (e.g. an imported dataset's) as --donors")
    labels = sorted(set(_device_of(store.read(task))) - {near})
    if not labels:
        raise AdaptationError(f"the donor store {store.root} holds only {near}, the device being adapted: donors "
                              "are other devices' measurements")
    from perfcast.experiments.baselines import nearest_devices

    try:
        labels = nearest_devices(near, labels)
    except (KeyError, ValueError):  # a device without a spec sheet has no distance
        pass
    return pd.concat([adaptation_records(store, task, target, d)[0] for d in labels], ignore_index=True)


def measured_sheet(store: RecordStore, records: pd.DataFrame, where: Path) -> Path | None:
    """When the records' device has no spec sheet, write the sheet its probes measured to ``where`` and name it
    in ``$PERFCAST_HW_SPECS`` (for this process); None when the device is known already."""
    from perfcast.perf_probe.peaks import device_key, probed_spec, write_spec_file

    names = records["device_name"].dropna().astype(str).unique() if "device_name" in records.columns else []
    ids = records["device_id"].dropna().astype(str).unique() if "device_id" in records.columns else []
    if len(ids) or all(resolve_device_id(n) for n in names):
        return None
    hw = records["hw_id"].dropna().astype(str).unique() if "hw_id" in records.columns else []
    if not len(hw) or not len(names):
        raise AdaptationError(f"device {names[0] if len(names) else '?'} has no spec sheet and its records carry no "
                              f"hw_id to measure one from; describe it in a YAML file named by ${ENV_VAR}")
    try:
        spec = probed_spec(store, str(hw[0]))
    except ValueError:  # no GEMM records: the sheet's peak rates are measured by GEMMs
        raise AdaptationError(
            f"device {names[0]} has no spec sheet, and {store.root} holds none of its GEMM measurements to take its "
            f"peak rates from: run `perfcast probe gemm --quick --store {store.root}` (or a GEMM adaptation plan) "
            f"on it too, or describe it in a YAML file named by ${ENV_VAR}") from None
    path = write_spec_file(where, {device_key(spec["device_name"]): spec})
    os.environ[ENV_VAR] = str(path.resolve())  # a later chdir (a notebook, a test) still finds it
    return path


def load_base(model: str | os.PathLike[str]) -> Any:
    """The :class:`~perfcast.predictor.Predictor` to adapt; a model that is missing, unreadable, of another perfcast
    version or an unknown ``builtin:`` name is an :class:`AdaptationError` saying so (the CLI's exit 2)."""
    from perfcast.builtin import BuiltinModelError
    from perfcast.models.persistence.bundle import IncompatibleModelError, ModelFormatError
    from perfcast.predictor import Predictor

    try:
        return Predictor.load(model)
    except (FileNotFoundError, ModelFormatError, IncompatibleModelError, BuiltinModelError, ValueError) as err:
        raise AdaptationError(str(err)) from None


def adapt_from_store(model: str | os.PathLike[str], store: str | os.PathLike[str] | RecordStore, out: Path, *,
                     device: str | None = None, records: pd.DataFrame | None = None, tracking_uri: str | None = None,
                     experiment: str = "adapt", registered_name: str | None = None, seed: int = 0,
                     donors: pd.DataFrame | None = None, adapter: Callable[..., Any] | None = None,
                     setting: str = "fast") -> AdaptOutcome:
    """Adapt ``model`` (a bundle directory or MLflow URI) to ``device``'s records in ``store`` (or to the given
    ``records`` of it), write the adapted bundle to ``out`` and, with ``tracking_uri``, log it to MLflow
    (registered as ``registered_name`` when given). ``donors``: another device's records (a sibling), offered
    as a second starting point; ``setting``: ``fast`` or ``accurate`` (:meth:`Predictor.adapt
    <perfcast.Predictor.adapt>`). ``adapter(base, records, seed=, donors=)`` replaces :meth:`Predictor.adapt
    <perfcast.Predictor.adapt>` (the quickstart's CPU GEMMs add a physics term). The quickstart calls this on
    this machine's CPU GEMMs."""
    from perfcast.features import UnknownDeviceError
    from perfcast.models.persistence.adapted import save_adapted
    from perfcast.predictor import Predictor

    rs = store if isinstance(store, RecordStore) else RecordStore(Path(store))
    base = load_base(model)
    from perfcast.models.estimators.power_adapt import adapts_jointly

    joint = adapts_jointly(base.targets)  # runtime + power: rows need a runtime; power is corrected where read
    if len(base.targets) != 1 and not joint:
        raise AdaptationError(f"perfcast adapt corrects single-target models and runtime + power models; {model} "
                              f"predicts {base.targets}")
    target = "runtime_ms" if joint else base.targets[0]
    if records is None:
        records, name = adaptation_records(rs, base.task, target, device)
    else:
        name = device or str(_device_of(records).iloc[0])
    out = Path(out)
    specs = measured_sheet(rs, records, out.parent / f"{out.name}.hw_specs.yaml")
    start = time.perf_counter()
    try:
        if adapter is not None:
            adapted, named = adapter(base, records, seed=seed, donors=donors), {}
        else:
            adapted, named = base.adapt(records, seed=seed, donors=donors, setting=setting), {"setting": setting}
    except UnknownDeviceError as err:  # the features need a spec field neither a sheet nor the probes gave
        hint = "" if specs is None else (f" The spec sheet measured from this device's probes ({specs}) lacks it; "
                                         f"on a CPU, `perfcast probe cpu --store {rs.root}` measures its memory "
                                         "bandwidth.")
        raise AdaptationError(f"{err.args[0] if err.args else err}{hint}") from None
    report = {**adapted.metadata["adaptation"], **named, "device": name,
              "seconds": round(time.perf_counter() - start, 3)}
    lineage = {"base_model": str(model), "store": str(rs.root), "device": name, "rows": len(records)}
    from perfcast.training.tracking import content_hash

    lineage["records_sha256"] = content_hash(records)
    path = save_adapted(adapted.model, out, metadata={"adaptation": {**report, **lineage}})
    run_id = version = None
    if tracking_uri:
        run_id, version = _log(path, records, model, report, lineage, tracking_uri, experiment, registered_name)
    return AdaptOutcome(Predictor.load(path), path, name, len(records), report, specs, run_id, version)


def _log(path: Path, records: pd.DataFrame, model: Any, report: dict[str, Any], lineage: dict[str, Any], uri: str,
         experiment: str, registered_name: str | None) -> tuple[str, int | None]:
    """Log the adapted bundle as a pyfunc run (params, CV errors, the records as input) and register it."""
    import shutil
    import tempfile

    import mlflow

    from perfcast.features import feature_transformer
    from perfcast.mlflow_quiet import BUNDLE_ARTIFACT
    from perfcast.predictor import Predictor
    from perfcast.training import tracking

    tracking.start(uri, experiment)
    predictor = Predictor.load(path)
    with mlflow.start_run(run_name=f"adapt-{lineage['device']}") as run:
        mlflow.set_tags({"perfcast.base_model": str(model), "perfcast.kind": "adaptation"})
        tracking.log_params({"base_model": str(model), "device": lineage["device"], "rows": lineage["rows"],
                             "mode": report["mode"], "store": lineage["store"]})
        mlflow.log_metrics({f"cv_{m}_mape": v for m, v in report["cv_mean_ape"].items()})
        tracking.log_dataset(records, source=lineage["store"], name=f"adapt-{lineage['device']}", context="adaptation",
                             target=predictor.targets[0])
        with tempfile.TemporaryDirectory() as tmp:  # logged under the name Predictor.load looks for in a model
            logged = path if path.name == BUNDLE_ARTIFACT else shutil.copytree(path, Path(tmp) / BUNDLE_ARTIFACT)
            info = tracking.log_bundle(Path(logged), records, registered_name,
                                       feature_transformer(predictor.task).required)
    version = info.registered_model_version
    return run.info.run_id, int(version) if version is not None else None


def before_after(base: Any, adapted: Any, records: pd.DataFrame) -> dict[str, float]:
    """Mean APE and 90%-interval coverage of the base and the adapted Predictor on ``records`` (rows the
    adaptation did not see), for a before/after line."""
    target = adapted.targets[0]
    y = records[target].to_numpy(dtype="float64")
    out = {}
    for label, p in (("before", base), ("after", adapted)):
        got = p.predict(records)
        pred, lo, hi = (got[c].to_numpy(dtype="float64") for c in (target, f"{target}_lo", f"{target}_hi"))
        out[f"{label}_mape"] = float(np.mean(np.abs(pred / y - 1)))
        out[f"{label}_coverage"] = float(np.mean((y >= lo) & (y <= hi)))
    return out
