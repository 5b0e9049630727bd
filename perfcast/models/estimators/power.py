"""Board power (and energy) of GEMM and attention kernels: physics from the spec sheet, a learned correction on top.

Why physics first: a GPU's board power is its idle floor plus what the busy units draw, and it cannot exceed
the power limit. So ``P = L * (f + (1 - f) * u)`` with ``L`` the board's limit (the spec sheet's ``tdp_w``),
``f`` the idle share of it, and ``u`` a utilisation that saturates at 1:
``u = 1 - exp(-(a_c * u_c + a_m * u_m))``, where ``u_c`` = achieved FLOP rate / the dtype's peak and ``u_m`` =
achieved byte rate / the memory bandwidth, both from the kernel's runtime (predicted by the runtime head when
the model also learns ``runtime_ms``, else the roofline time). ``f``, ``a_c`` and ``a_m`` are three numbers
fitted by least squares on log power; a GPU never measured is predicted from its own limit, peaks and bandwidth.
A LightGBM model then learns log(measured / physics) from the task's features plus ``u_c``, ``u_m`` and the
runtime: what the three-parameter law misses on the training hardware (library, dtype, shape effects).

Targets: ``power_w`` always; ``runtime_ms`` (a :class:`~perfcast.models.estimators.hybrid.HybridRegressor`, the runtime
model of perfcast) and ``energy_j`` optional. Energy is not learned on its own: it is ``power_w * runtime_ms /
1000`` of the two predictions, so the three are consistent by construction; a conformal wrapper calibrates its
interval on energy's own out-of-fold errors (which carries the correlation of the power and runtime errors).
Without ``runtime_ms`` among the targets the runtime is the roofline time, and energy cannot be predicted.
The model is fitted jointly (``PerTargetRegressor(joint=True)``): power needs the runtime head's predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from perfcast.features.estimator_base import Regressor, check_fitted
from perfcast.models.estimators.hybrid import HybridRegressor
from perfcast.models.estimators.roofline import ROOFLINE_COLUMN
from perfcast.models.estimators.trees import tree_model

#: the columns the physics reads from a GEMM/attention feature frame
COMPUTE, MEMORY, LIMIT = "log10_compute_ms", "log10_memory_ms", "tdp_w"
#: columns the correction sees beside the task's features
UTILISATION: tuple[str, ...] = ("power_util_compute", "power_util_memory", "power_log10_runtime_ms")
#: parameter bounds of the physics fit: idle share of the limit, compute and memory weights
LOWER, UPPER = (0.02, 0.0, 0.0), (0.9, 50.0, 50.0)
START = (0.2, 2.0, 1.0)
#: the correction's LightGBM defaults (the other ``params`` of the model override them)
CORRECTION: dict[str, Any] = {"n_estimators": 400, "learning_rate": 0.05, "num_leaves": 63, "min_child_samples": 10}


@dataclass(frozen=True)
class PowerPhysics:
    """The fitted law ``P = L (f + (1 - f)(1 - exp(-(a_c u_c + a_m u_m))))`` (see the module docstring)."""

    idle_share: float
    compute_weight: float
    memory_weight: float

    @staticmethod
    def utilisation(F: pd.DataFrame, runtime_ms: np.ndarray) -> pd.DataFrame:
        """``u_c``, ``u_m`` (achieved rate / peak rate, from ``runtime_ms``) and log10 runtime per row."""
        t = np.asarray(runtime_ms, dtype="float64")
        with np.errstate(divide="ignore", invalid="ignore"):
            uc = 10.0 ** F[COMPUTE].to_numpy(dtype="float64") / t
            um = 10.0 ** F[MEMORY].to_numpy(dtype="float64") / t
            lt = np.log10(t)
        return pd.DataFrame(dict(zip(UTILISATION, (uc, um, lt), strict=True)), index=F.index)

    @staticmethod
    def _law(theta: np.ndarray | tuple[float, ...], limit: np.ndarray, uc: np.ndarray, um: np.ndarray) -> np.ndarray:
        f, ac, am = theta
        return limit * (f + (1.0 - f) * -np.expm1(-(ac * np.nan_to_num(uc) + am * np.nan_to_num(um))))

    def predict(self, F: pd.DataFrame, util: pd.DataFrame) -> np.ndarray:
        """Physics power (W) of each row from its limit and utilisation."""
        return self._law((self.idle_share, self.compute_weight, self.memory_weight),
                         limit_of(F), util[UTILISATION[0]].to_numpy(), util[UTILISATION[1]].to_numpy())

    @classmethod
    def fit(cls, F: pd.DataFrame, util: pd.DataFrame, power_w: np.ndarray) -> PowerPhysics:
        """Least squares on log power over the rows (three parameters, bounded: see :data:`LOWER`)."""
        from scipy.optimize import least_squares  # fitting only: loading a power model skips scipy's optimiser

        limit, y = limit_of(F), np.log(np.asarray(power_w, dtype="float64"))
        uc, um = util[UTILISATION[0]].to_numpy(), util[UTILISATION[1]].to_numpy()
        res = least_squares(lambda th: np.log(cls._law(th, limit, uc, um)) - y, START, bounds=(LOWER, UPPER),
                            loss="soft_l1", f_scale=0.1)
        return cls(*(float(v) for v in res.x))

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The three numbers (no arrays)."""
        return {"idle_share": self.idle_share, "compute_weight": self.compute_weight,
                "memory_weight": self.memory_weight}, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> PowerPhysics:
        return cls(**{k: float(params[k]) for k in ("idle_share", "compute_weight", "memory_weight")})


def limit_of(F: pd.DataFrame) -> np.ndarray:
    """Each row's power limit (the spec sheet's ``tdp_w``); a ValueError when a device has none."""
    limit = F[LIMIT].to_numpy(dtype="float64")
    if not np.isfinite(limit).all():
        raise ValueError(f"{int((~np.isfinite(limit)).sum())} row(s) have no tdp_w (power limit) in their spec sheet: "
                         f"the power model scales power by it; add tdp_w to the device's spec sheet")
    return limit


def with_utilisation(F: pd.DataFrame, util: pd.DataFrame) -> pd.DataFrame:
    """The correction's inputs: the task's features, then the utilisation columns."""
    return pd.concat([F, util], axis=1)


def combine(targets: list[str], runtime: np.ndarray, power: np.ndarray) -> np.ndarray:
    """(rows, targets) of runtime, power and energy = power x runtime / 1000, in ``targets`` order."""
    cols = {"runtime_ms": runtime, "power_w": power, "energy_j": power * runtime / 1e3}
    return np.column_stack([cols[t] for t in targets])


def energy_interval(runtime: tuple[np.ndarray, np.ndarray, np.ndarray], power: tuple[np.ndarray, np.ndarray, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy (J) = power x runtime / 1000 with an interval from the two targets' (prediction, lo, hi).

    For a model calibrated on runtime and power but not on energy: each bound's log distance from its
    prediction is combined in quadrature (the two errors treated as independent), so energy's interval is
    wider than either but narrower than stacking both worst cases. A model with ``energy_j`` among its
    targets calibrates energy on its own errors instead (see the module docstring).
    """
    (r, r_lo, r_hi), (p, p_lo, p_hi) = runtime, power
    with np.errstate(divide="ignore", invalid="ignore"):
        down = np.hypot(np.log(r / r_lo), np.log(p / p_lo))
        up = np.hypot(np.log(r_hi / r), np.log(p_hi / p))
    energy = p * r / 1e3
    return energy, energy * np.exp(-down), energy * np.exp(up)


class PowerRegressor(Regressor):
    """Joint model of ``targets`` (``power_w``, optionally ``runtime_ms`` and ``energy_j``); see the module docstring.

    ``runtime`` parameterises the runtime head (a :class:`HybridRegressor`'s LightGBM), ``correction`` the
    power correction's LightGBM (defaults: :data:`CORRECTION`).
    """

    #: the fitted power correction and runtime head (None without runtime_ms), each in its own sub-folder
    state_children: ClassVar[dict[str, str]] = {"correction_": "correction", "runtime_": "runtime"}

    def __init__(self, targets: list[str] | None = None, runtime: dict[str, Any] | None = None,
                 correction: dict[str, Any] | None = None):
        self.targets = targets
        self.runtime = runtime
        self.correction = correction

    def _check_targets(self) -> list[str]:
        targets = list(self.targets or ["power_w"])
        unknown = [t for t in targets if t not in ("runtime_ms", "power_w", "energy_j")]
        if unknown or "power_w" not in targets:
            raise ValueError(f"the power model predicts power_w (and optionally runtime_ms, energy_j); got targets "
                             f"{targets}")
        if "energy_j" in targets and "runtime_ms" not in targets:
            raise ValueError("the power model predicts energy_j as power x runtime: add runtime_ms to the targets")
        return targets

    def _runtime(self, F: pd.DataFrame) -> np.ndarray:
        if self.runtime_ is None:
            return 10.0 ** F[ROOFLINE_COLUMN].to_numpy(dtype="float64")
        return np.asarray(self.runtime_.predict(F), dtype="float64")

    def fit(self, X: pd.DataFrame, y: Any) -> PowerRegressor:
        targets = self._check_targets()
        Y = np.asarray(y, dtype="float64").reshape(len(X), -1)
        if Y.shape[1] != len(targets):
            raise ValueError(f"y has {Y.shape[1]} column(s), expected one per target {targets}")
        col = {t: Y[:, j] for j, t in enumerate(targets)}
        self.runtime_ = None
        if "runtime_ms" in targets:
            seen = np.isfinite(col["runtime_ms"])
            self.runtime_ = HybridRegressor(estimator=tree_model("lightgbm", self.runtime or {}))
            self.runtime_.fit(X.loc[seen], col["runtime_ms"][seen])
        seen = np.isfinite(col["power_w"])
        if not seen.any():
            raise ValueError("the power model needs rows with a measured power_w")
        F = X.loc[seen]
        util = PowerPhysics.utilisation(F, self._runtime(F))
        power = col["power_w"][seen]
        self.physics_ = PowerPhysics.fit(F, util, power)
        self.correction_ = tree_model("lightgbm", {**CORRECTION, **(self.correction or {})})
        self.correction_.fit(with_utilisation(F, util), np.log(power / self.physics_.predict(F, util)))
        self.targets_ = targets
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_fitted(self, "correction_")
        runtime = self._runtime(X)
        return combine(self.targets_, runtime, self.power_at(X, runtime))

    def power_at(self, X: pd.DataFrame, runtime_ms: np.ndarray) -> np.ndarray:
        """Power (W) of the rows of feature frame ``X`` when they run for ``runtime_ms`` (e.g. a measured runtime
        instead of the runtime head's prediction)."""
        check_fitted(self, "correction_")
        util = PowerPhysics.utilisation(X, runtime_ms)
        return self.physics_.predict(X, util) * np.exp(self.correction_.predict(with_utilisation(X, util)))

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "correction_")
        return {"targets": list(self.targets_), "physics": self.physics_.to_state()[0]}, {}

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> PowerRegressor:
        """A power model whose ``predict`` works once ``correction_`` and ``runtime_`` are set (the persistence
        layer does)."""
        out = cls(list(params["targets"]))
        out.targets_ = out._check_targets()
        out.physics_ = PowerPhysics.from_state(params["physics"], {})
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.multi_output = True
        return tags


def power_estimator(task: str, targets: list[str], params: dict[str, Any]) -> PowerRegressor:
    """The joint power model for gemm or attention; the registry wraps it as a joint per-target model.

    ``params``: ``runtime`` (a table for the runtime head's LightGBM), ``correction`` (a table for the power
    correction's), and any other key goes to the correction too (as the hybrid passes its extra keys to its
    LightGBM), so a tuning space over flat LightGBM names tunes the power correction.
    """
    if task not in ("gemm", "attention"):
        raise ValueError(f"the power model needs GEMM or attention work (FLOPs, bytes, peaks): task {task!r} has none")
    rest = dict(params)
    runtime, correction = rest.pop("runtime", None), {**(rest.pop("correction", None) or {})}
    for name, table in (("runtime", runtime), ("correction", correction)):
        if table is not None and not isinstance(table, dict):
            raise ValueError(f"power model: {name} must be a table of LightGBM parameters, got {table!r}")
    est = PowerRegressor(list(targets), runtime, {**correction, **rest})
    est._check_targets()
    return est
