"""Predictor: load a trained perfcast model once, then predict many configurations with intervals and OOD flags.

    p = Predictor.load("models:/gemm-runtime/3")     # registry URI, run URI (runs:/ID/model) or local directory
    p.predict({"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16", "device": "h100_sxm"})   # -> dict
    p.predict(frame)                                   # -> DataFrame, one row per input row (same index)
    p.rank(config, devices=["a100_sxm", "h100_sxm", "l40s"], by="runtime_ms")             # -> sorted DataFrame

Every prediction carries ``<target>_lo`` / ``<target>_hi`` at the model's calibrated level (or ``level=``),
``in_distribution`` and, when that is false, ``ood_reason``. A model of runtime and power also gives ``energy_j``
(power x runtime, interval from both: :func:`perfcast.models.estimators.power.energy_interval`) and ranks by it.
Inputs are checked before anything runs: a missing column, an unknown device, a non-numeric, boolean or infinite
size, or one above 2**53 (:data:`MAX_SIZE`) is reported by name and row; a size above the training range but below
that is predicted and flagged. MLflow is imported only for ``runs:/`` and ``models:/`` URIs, so loading a local
model stays fast.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.records.hardware_specs import ENV_VAR, Catalog, catalog, resolve_device_id
from perfcast.records.parsing import decimal
from perfcast.records.schema import columns
from perfcast.features import MissingColumnError, UnknownDeviceError
from perfcast.features.hardware import DEVICE_ALIAS
from perfcast.features.base import missing
from perfcast.features.records import Records
from perfcast.models.persistence.bundle import MANIFEST, ModelFormatError, PerfcastModel
from perfcast.models.uncertainty.domain import NOT_SIZES
from perfcast.models.uncertainty.calibration import FOREIGN_VENDOR, check_level
from perfcast.models.outputs import derived_outputs
from perfcast.mlflow_quiet import BUNDLE_ARTIFACT

#: a model argument naming a shipped model by task: ``builtin:gemm``
BUILTIN_SCHEME = "builtin:"
#: where MLflow puts a logged model's bundle in the model directory
BUNDLE_IN_MLFLOW_MODEL = Path("data") / BUNDLE_ARTIFACT
#: targets where a higher value is better (ranked descending by default)
HIGHER_IS_BETTER = frozenset({"score"})
#: the largest size (m, n, k, batch, ...) predicted: 2**53, beyond which float64 no longer holds every integer. A
#: size above the training range but below this is predicted and flagged out of distribution; above it, refused
MAX_SIZE = float(2**53)
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def resolve_model_dir(uri_or_path: str | os.PathLike[str]) -> Path:
    """The local bundle directory of a model path, an MLflow model directory, a ``runs:/``/``models:/`` URI, or
    ``builtin:TASK`` (the shipped model of a task: what a fresh install adapts, ``perfcast adapt builtin:gemm``)."""
    text = str(uri_or_path)
    if text.startswith(BUILTIN_SCHEME):
        from perfcast.builtin import bundle_path

        return bundle_path(text[len(BUILTIN_SCHEME):])
    if "://" in text or text.startswith(("runs:/", "models:/")):
        import mlflow

        from perfcast.mlflow_quiet import quiet_mlflow

        _check_tracking_store(text, mlflow.get_registry_uri() if text.startswith("models:/") else
                              mlflow.get_tracking_uri())
        with quiet_mlflow():
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text))
    else:
        local = Path(text).expanduser()
        if not local.exists():
            raise FileNotFoundError(
                f"no model at {text!r}: give a directory written by perfcast, an MLflow run URI (runs:/RUN_ID/model), "
                f"a registry URI (models:/NAME/VERSION) or a built-in model ({BUILTIN_SCHEME}gemm, "
                f"{BUILTIN_SCHEME}attention)")
    for candidate in (local, local / BUNDLE_IN_MLFLOW_MODEL):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise ModelFormatError(f"{text} holds no perfcast model (no {MANIFEST} in it or in its {BUNDLE_IN_MLFLOW_MODEL})")


def _frame(cols: dict[str, Any], index: pd.Index) -> pd.DataFrame:
    """Prediction columns as a frame whose ``ood_reason`` stays objects: pandas would infer text and turn an
    in-distribution row's None into NaN, which JSON (a served answer, ``--format json``) cannot carry."""
    return pd.DataFrame(cols, index=index).assign(ood_reason=pd.Series(cols["ood_reason"], index=index, dtype=object))


def _check_tracking_store(model_uri: str, store_uri: str) -> None:
    """Refuse a ``runs:/``/``models:/`` URI whose SQLite tracking store does not exist, before MLflow creates
    an empty database there (the user is in the wrong directory or forgot ``MLFLOW_TRACKING_URI``)."""
    if not model_uri.startswith(("runs:/", "models:/")) or not store_uri.startswith("sqlite:///"):
        return
    db = Path(store_uri.removeprefix("sqlite:///"))
    if not db.is_file():
        raise FileNotFoundError(
            f"cannot look up {model_uri}: the MLflow tracking store {store_uri} does not exist ({db.resolve()}). "
            f"Point MLFLOW_TRACKING_URI (or --tracking-uri) at the store the model was logged to, e.g. "
            f"sqlite:////path/to/mlflow.db, or run from the directory that holds its mlflow.db")


class Predictor:
    """Predictions with calibrated intervals and out-of-distribution flags from one loaded model."""

    def __init__(self, model: PerfcastModel):
        self.model = model
        self.task = model.task
        self.targets = list(model.targets)
        self.level = model.calibration.level
        schema = columns(self.task)
        self._numeric = [c for c, col in schema.items() if col.kind in ("int", "float") and col.group != "targets"]
        self._sizes = frozenset(c for c in self._numeric if schema[c].group == "config" and c not in NOT_SIZES)
        self._boolean = [c for c, col in schema.items() if col.kind == "bool"]
        #: the same as sets, for a request's per-key membership tests
        self._numeric_set, self._boolean_set = frozenset(self._numeric), frozenset(self._boolean)
        self._required = tuple(type(model.features).required)
        self._required_set = frozenset(self._required)
        self._needs_device = self.task in ("gemm", "attention")
        #: outputs computed from the targets: energy (J) = power x runtime when the model predicts both but not it
        self.derived = derived_outputs(self.targets)

    @classmethod
    def load(cls, uri_or_path: str | os.PathLike[str], *, threads: int = 1) -> Predictor:
        """Load a model (local directory, ``runs:/ID/model`` or ``models:/NAME/VERSION``).

        ``threads`` is the number of threads the tree models predict with (1 is fastest for small batches).
        Raises :class:`~perfcast.models.persistence.bundle.IncompatibleModelError` when the model was built with other
        major.minor library versions, and :class:`~perfcast.models.persistence.bundle.ModelFormatError` for a damaged one.
        """
        return cls(PerfcastModel.load(resolve_model_dir(uri_or_path), threads=threads))

    @classmethod
    def builtin(cls, task: str = "gemm", *, threads: int = 1) -> Predictor:
        """perfcast's shipped model for ``task`` (``"gemm"`` or ``"attention"``), trained on the public
        aiconfigurator and NeuSight measurements: any GPU with a spec sheet is predictable with nothing trained."""
        from perfcast.builtin import bundle_path, load_builtin

        return cls(load_builtin(bundle_path(task), threads=threads))

    @property
    def metadata(self) -> dict[str, Any]:
        """What the model was trained on and how it scored (as recorded when it was saved)."""
        return self.model.metadata

    def adapt(self, records: pd.DataFrame, *, seed: int = 0, donors: pd.DataFrame | None = None,
              setting: str = "fast") -> Predictor:
        """A new Predictor corrected for the device ``records`` measured (the target column holds the
        measurements): per-kernel-kind level (for attention, with a latency floor the base does not know where
        the rows' folds support it), shape residual and intervals recalibrated on the device's own
        cross-fitted residuals, each kept only where cross-validation on these rows supports it
        (:mod:`perfcast.models.estimators.adapt`). ``donors``: measured records of another device (a sibling of this one),
        offered as a starting point the correction may prefer. ``setting``: ``"fast"`` (predicts about as fast as the
        base) or ``"accurate"`` (the accuracy benchmark's choice, slower to predict; see
        :data:`perfcast.models.persistence.adapted.SETTINGS`). Save it with :func:`perfcast.models.persistence.adapted.save_adapted`."""
        from perfcast.models.persistence.adapted import adapt_loaded, setting_options

        frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
        options = setting_options(setting, self.task, len(frame))
        donor_rows = None if donors is None or not len(donors) else self._records(donors)
        return Predictor(adapt_loaded(self.model, self._records(frame) if len(frame) else frame, seed=seed,
                                      donors=donor_rows, **options)[0])

    # ------------------------------------------------------------------------------------ predict
    def predict(self, config: Mapping[str, Any] | pd.DataFrame, level: float | None = None
                ) -> dict[str, Any] | pd.DataFrame:
        """A dict in gives a dict out; a DataFrame (or list of dicts) gives a DataFrame with the input's index."""
        if type(config) is dict or isinstance(config, Mapping):  # (a Mapping check alone is ~1 us of ABC machinery)
            row, clean, cat = self._one_row(config)
            cols = self._predict(Records(row, catalog=cat) if clean else self._records(pd.DataFrame(row)), level)
            return {k: v.tolist()[0] for k, v in cols.items()}  # Python values (every column is an array)
        records = self._records(config if isinstance(config, pd.DataFrame) else pd.DataFrame(list(config)))
        return _frame(self._predict(records, level), records.index)

    def rank(self, config: Mapping[str, Any], devices: Sequence[str], by: str = "runtime_ms",
             level: float | None = None, ascending: bool | None = None) -> pd.DataFrame:
        """``config`` predicted on each of ``devices``, best first by ``by`` (lowest runtime, highest score).

        Returns one row per device: ``rank``, ``device_id`` and the prediction columns with their intervals.
        """
        if by not in self.targets and by not in self.derived:
            raise ValueError(f"cannot rank by {by!r}: this model predicts {', '.join(self.targets + self.derived)}")
        clash = [c for c in ("device_id", "device_name", DEVICE_ALIAS) if c in config]
        if clash:
            raise ValueError(f"rank() takes the devices as its `devices` argument; remove {clash} from the config")
        if isinstance(devices, str) or not len(devices):
            raise ValueError(f"devices must be a non-empty list of device ids, got {devices!r}")
        frame = pd.DataFrame([{**config, "device_id": d} for d in devices])
        records = self._records(frame)
        out = _frame(self._predict(records, level), pd.RangeIndex(len(records)))
        out.insert(0, "device_id", records["device_id"].to_numpy())
        up = (by not in HIGHER_IS_BETTER) if ascending is None else ascending
        out = out.sort_values(by, ascending=up, kind="stable").reset_index(drop=True)
        out.insert(0, "rank", np.arange(1, len(out) + 1))
        return out

    def _predict(self, records: pd.DataFrame | Records, level: float | None) -> dict[str, Any]:
        """Column name -> values (arrays), in output order."""
        if level is not None:
            check_level(level)
        model = self.model
        # feature rows by position, never a frame: a request's costs are per call, not per row (rows.py)
        # a dtype the model never saw is predicted as its stand-in (fp16 as bf16); the domain check flags it below
        A, names = model.features.transform_array(model.domain.stand_in(records)), model.features.names_out()
        pred = model.predict_rows(A, names)
        cal = model.calibration
        lo, hi = cal.bounds(pred, cal.noise(records, len(records)), level, features=A, names=names)
        ok, reasons = model.domain.check(records, A, names)
        foreign = cal.out_of_distribution(A, names)  # the K = 0 rule's flag: a vendor no training GPU has
        if foreign is not None and foreign.any():
            ok, reasons = ok & ~foreign, [("; ".join(filter(None, (r, FOREIGN_VENDOR))) if f else r)
                                          for r, f in zip(reasons, foreign, strict=True)]
        out: dict[str, Any] = {}
        for j, t in enumerate(self.targets):
            out[t], out[f"{t}_lo"], out[f"{t}_hi"] = pred[:, j], lo[:, j], hi[:, j]
        if self.derived:  # imported here: the power module pulls in the tree libraries it fits with
            from perfcast.models.estimators.power import energy_interval
        for t in self.derived:
            out[t], out[f"{t}_lo"], out[f"{t}_hi"] = energy_interval(
                *(tuple(out[f"{name}{s}"] for s in ("", "_lo", "_hi")) for name in ("runtime_ms", "power_w")))
        out["in_distribution"] = ok
        out["ood_reason"] = np.where(ok, None, np.asarray(reasons, dtype=object)) if len(ok) != 1 else \
            np.array([None if ok[0] else reasons[0]], dtype=object)  # a request's (np.where is ~3 calls)
        return out

    # ------------------------------------------------------------------------------- input checks
    def _one_row(self, config: Mapping[str, Any]) -> tuple[dict[str, Any], bool, Catalog | None]:
        """``config`` as one-row columns whose numbers (also given as plain decimal text, "4096") are float64 and whose
        other text is an object array, whether it is clean, and the spec catalog its device was found in. Clean:
        every required value and the device given as :meth:`_records` would leave them (finite numbers, a canonical
        device id, no flags to parse), so the row is predicted as :class:`~perfcast.features.records.Records` and
        never becomes a DataFrame (pandas is not even imported: :mod:`perfcast.lazy`); the features then read that
        catalog rather than ask for it again (each ask ``stat``s the spec files). Anything else goes through
        :meth:`_records`, which converts it or says what is wrong."""
        cols: dict[str, Any] = {}
        cat = None
        clean = not (DEVICE_ALIAS in config and "device_id" in config) and "device_name" not in config
        numeric = self._numeric_set
        for key, v in config.items():
            kind = type(v)
            if key in numeric and (kind is float or kind is int or (
                    isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)))):
                cols[key] = column = np.array([v], dtype="float64")
                x = v if kind is float else column.item()
                clean = clean and math.isfinite(x) and abs(x) <= MAX_SIZE
            elif key in numeric and kind is str and (x := decimal(v)) is not None:  # "4096" from a command line
                cols[key] = np.array([x], dtype="float64")
                clean = clean and math.isfinite(x) and abs(x) <= MAX_SIZE
            elif key in ("device_id", DEVICE_ALIAS) and isinstance(v, str):
                cols["device_id" if clean else key] = np.array([v], dtype=object)
                cat = catalog() if clean else None
                clean = clean and v in cat.specs
            else:
                text = isinstance(v, str)
                cols[key] = np.array([v], dtype=object) if text else [v]
                clean = clean and isinstance(key, str) and key not in numeric \
                    and key not in self._boolean_set \
                    and (key not in self._required or (text and v != ""))
        clean = clean and cols.keys() >= self._required_set and (not self._needs_device or "device_id" in cols)
        return cols, clean, cat if clean else None

    def _records(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The input as records the features read: device alias resolved, types coerced, required columns present."""
        if frame.empty:
            raise ValueError("nothing to predict: the input has no rows")
        if not all(isinstance(c, str) for c in frame.columns):
            frame = frame.rename(columns=str)
        if DEVICE_ALIAS in frame.columns:
            if "device_id" in frame.columns:
                raise ValueError(f"give the device as either {DEVICE_ALIAS!r} or 'device_id', not both")
            frame = frame.rename(columns={DEVICE_ALIAS: "device_id"})
        absent = [c for c in self._required if c not in frame.columns]
        if absent:
            raise MissingColumnError(
                f"the input lacks column(s) {absent}; a {self.task} prediction needs {', '.join(self._required)}"
                + (" and a device (device_id such as 'h100_sxm', or device_name)" if self._needs_device else ""))
        updates: dict[str, pd.Series] = {}
        for c in self._required:
            blank = missing(frame[c])
            if blank.any():
                raise ValueError(f"column {c!r} is empty in {int(blank.sum())} row(s) (first: row "
                                 f"{frame.index[blank][0]!r}); every {self.task} prediction needs it")
        present = set(frame.columns)
        for c in (c for c in self._numeric if c in present and frame[c].dtype != np.float64):
            updates[c] = self._number(frame[c], c)
        for c in (c for c in self._numeric if c in present):
            self._finite(updates.get(c, frame[c]), c, c in self._sizes)
        for c in (c for c in self._boolean if c in present):
            updates[c] = self._flag(frame[c], c)
        if "device_id" in frame.columns:
            given = frame["device_id"]
            ids = self._devices(given)
            if ids is not given:
                updates["device_id"] = ids
        elif self._needs_device and "device_name" not in frame.columns:
            raise MissingColumnError("the input names no device: add a device_id column (a spec-sheet id such as "
                                     "'h100_sxm') or device_name")
        return frame.assign(**updates) if updates else frame

    @staticmethod
    def _number(s: pd.Series, name: str) -> pd.Series:
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            return s.astype("float64")
        flags = np.fromiter((isinstance(v, (bool, np.bool_)) for v in s), dtype=bool, count=len(s))
        if flags.any():  # pandas reads True as 1: a flag given for a size is a mistake, not m=1
            first = s.index[flags][0]
            raise ValueError(f"column {name!r} must be a number; row {first!r} has {bool(s[first])} (true/false is not "
                             f"a number)")
        out = pd.to_numeric(s, errors="coerce").astype("float64")
        bad = (out.isna() & s.notna()).to_numpy()
        if bad.any():
            first = s.index[bad][0]
            raise ValueError(f"column {name!r} must be a number; row {first!r} has {s[first]!r}")
        return out

    @staticmethod
    def _finite(s: pd.Series, name: str, size: bool) -> None:
        """Refuse infinities, and sizes beyond :data:`MAX_SIZE`: no kernel has them, and the work they imply
        overflows float64, so no prediction (not even an out-of-distribution one) would mean anything. Missing
        (NaN) stays missing: a required column was checked for it already."""
        v = s.to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isinf(v) | (np.abs(v) > MAX_SIZE) if size else np.isinf(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"column {name!r} must be a finite number{' of at most 2**53' if size else ''}; row "
                             f"{s.index[i]!r} has {v[i]:g}")

    @staticmethod
    def _flag(s: pd.Series, name: str) -> pd.Series:
        if pd.api.types.is_bool_dtype(s):
            return s.astype("boolean")
        if pd.api.types.is_numeric_dtype(s):  # 1.0 / 0.0: how training's model input carries a flag
            s = s.map({1: "true", 0: "false"}).where(s.isin([0, 1]), s)
        text = s.astype("string").str.strip().str.lower()
        out = pd.Series(pd.NA, index=s.index, dtype="boolean")
        out[text.isin(_TRUE).fillna(False).to_numpy(dtype=bool)] = True
        out[text.isin(_FALSE).fillna(False).to_numpy(dtype=bool)] = False
        bad = (out.isna() & s.notna()).to_numpy()
        if bad.any():
            first = s.index[bad][0]
            raise ValueError(f"column {name!r} must be true or false; row {first!r} has {s[first]!r}")
        return out

    @staticmethod
    def _devices(s: pd.Series) -> pd.Series:
        """Canonical spec-sheet ids; aliases ("H100 SXM", "NVIDIA L40S") are resolved, unknown ids refused.

        Returns ``s`` itself when it is text of canonical ids already.
        """
        ids = s if s.dtype == "string" else s.astype("string")
        known = catalog().specs
        names = [v for v in pd.unique(ids.to_numpy(dtype=object, na_value=None)) if v is not None and v not in known]
        mapping = {v: resolve_device_id(v) for v in names}
        unknown = sorted(v for v, dev in mapping.items() if dev is None)
        if unknown:
            first = ids.index[ids.isin(unknown).fillna(False).to_numpy(dtype=bool)][0]
            close = difflib.get_close_matches(unknown[0].lower(), list(known), n=4, cutoff=0.4)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownDeviceError(
                f"unknown device {unknown[0]!r} (row {first!r}){hint} Known devices: {', '.join(sorted(known))}. "
                f"Describe a new device in a YAML spec file named by ${ENV_VAR}.")
        return ids.replace({v: dev for v, dev in mapping.items()}) if mapping else ids


__all__ = ["Predictor", "resolve_model_dir"]
