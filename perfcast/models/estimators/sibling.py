"""Sibling copy with a shrunk correction: never much worse than copying a measured sibling GPU.

Why: where a GPU of the same family (same vendor and compute-capability major, at most ``max_cc_gap`` apart:
B200 / GB200 / B300 / GB300, H100 / H200) measured the same configuration, its latency is the strongest
evidence there is, and a model that corrects it by a spec-sheet ratio is only worth the ratio's accuracy.
:class:`~perfcast.models.estimators.transfer.SiblingTransfer` trusts that ratio fully (the base model's
predicted ratio between the two devices) and lost to plain copying on most held-out siblings. Here the
prediction for a row whose configuration a sibling measured is

    log ŷ = log y_sibling + λ_kind · (log f(x, device) − log f(x, sibling))

with ``f`` the transfer's base model, the roofline, or the transfer itself (``source``; the last blends the
copy with the transfer's prediction; ``"resid"`` takes only the transfer's residual part, ``"shape"`` the
transfer's correction minus its level on fixed reference configurations: see :data:`SOURCES`), ``λ`` a
shrinkage toward pure copying (λ = 0), the sibling the nearest one, a distance-weighted mean of all of them,
or their mean after shifting each to the nearest one's level
(``donor``; averaging two siblings cancels part of their shape-by-shape noise). ``(source, λ, donor)`` is
chosen per kernel kind (dtype, attention phase) by *nested* validation inside the training devices: each
training device that itself has a sibling among the others is held out in turn, the transfer refitted without
it, and every setting scored on its rows ("nested leave-one-training-sibling-out"); a correction is adopted
only where it beat copying on every such fold by a margin, significantly over the configurations' layers
(:mod:`.sibling_rule`), and only for rows whose nearest measuring sibling is no farther than the folds' were:
beyond that distance no fold tested the correction and the row copies its sibling. The
held-out test device never enters the choice. The same nested residuals calibrate the interval
(split-conformal per kernel kind, pooled where a kind has few rows), widened in proportion to a sibling's
distance beyond the nested folds'. Rows no sibling measured get the transfer's prediction unchanged (and an
unbounded interval: nothing here calibrated it).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from perfcast.features.estimator_base import Regressor, check_fitted, clone
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.estimators.roofline import ROOFLINE_COLUMN
from perfcast.models.estimators.sibling_level import Reference, correction_levels
from perfcast.models.estimators.sibling_rule import fold_gains, layer_keys, passes
from perfcast.models.estimators.transfer import SiblingTransfer, row_keys
from perfcast.models.uncertainty.calibration import conformal_quantile

#: where the correction's ratio comes from: the transfer's base model, the spec sheet's roofline, the
#: transfer's own prediction (λ then blends the copy with the transfer in log space), or the transfer's
#: residual part alone (``"resid"``: the similarity-weighted mean of the training devices' residuals minus
#: the sibling's own, i.e. the transfer's correction without the base model's device ratio). The last pulls
#: the sibling's configuration-by-configuration quirk toward the family's consensus without moving its level
#: by a spec-sheet ratio, the part that misleads across an architecture step (B300 vs GB200: same sheet
#: class, different compute capability); or the transfer's correction minus its level (``"shape"``: the level
#: measured on fixed reference configurations featurized for the target, :mod:`.sibling_level`), which keeps
#: how the ratio changes with the configuration and drops the level that misleads
SOURCES: tuple[str, ...] = ("base", "roofline", "transfer", "resid", "shape")
#: which siblings a row copies: the nearest alone (what the copy-sibling baseline copies); the mean over all
#: that measured it, weighted like the transfer's residuals (``exp(-distance / scale)``); or the equal-weight
#: mean of all of them after shifting each to the nearest one's level (its median log ratio to the nearest over
#: the training configurations of the row's kernel kind), which averages the siblings' shape-by-shape noise
#: but keeps the nearest sibling's level. The first wins ties, which is all that nested folds with a single
#: sibling each can give (with one sibling every donor is the nearest)
DONORS: tuple[str, ...] = ("nearest", "mean", "aligned")
#: the shrinkage weights tried (0 = copy the sibling; 1 = trust the ratio fully); smaller wins ties
LAMBDAS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: a kernel kind with fewer nested rows than this takes the pooled setting and interval
MIN_KIND_ROWS = 100
#: the split every setting is chosen on (recorded with the model and in the benchmark rows)
SELECTED_ON = "nested leave-one-training-sibling-out"
#: prefix of the conformal scores of pure copying (rows beyond the nested folds' distance copy their sibling)
COPY_SCORES = "copy:"
VENDORS: tuple[str, ...] = ("vendor_nvidia", "vendor_amd", "vendor_intel")
#: spec-sheet fields ranking the siblings for ``donor="nearest"`` (log, scaled by their spread over the training
#: devices; a field unknown on either side is skipped): the copy-sibling baseline's ranking without its bf16
#: peak (a row carries only its own dtype's peak), so λ = 0 copies the sibling that baseline copies
RANK_FIELDS: tuple[str, ...] = ("mem_bw_gbs", "peak_tflops_fp32", "tdp_w", "mem_gb", "sm_count", "l2_mb")


def _identity(X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a vendor code (-1 unknown) and the compute capability (NaN unknown)."""
    flags = X[list(VENDORS)].fillna(0.0).to_numpy(dtype="float64") > 0.5
    vendor = np.where(flags.any(axis=1), flags.argmax(axis=1), -1)
    return vendor, X["compute_capability"].to_numpy(dtype="float64")


def are_siblings(vendor_a: np.ndarray, cc_a: np.ndarray, vendor_b: Any, cc_b: Any, max_gap: float) -> np.ndarray:
    """Same known vendor, same compute-capability major and at most ``max_gap`` apart (A100 8.0 and L40S 8.9
    are not siblings; GB200 10.0 and B300 10.3 are)."""
    with np.errstate(invalid="ignore"):
        return ((vendor_a == vendor_b) & (vendor_a >= 0) & (np.floor(cc_a) == np.floor(cc_b))
                & (np.abs(cc_a - cc_b) <= max_gap + 1e-9))


class SiblingShrink(Regressor):
    """A measured sibling's latency times a learned device ratio shrunk toward 1; ``transfer`` elsewhere.

    ``transfer``: an unfitted :class:`SiblingTransfer` (fallback, and the base model whose ratio corrects the
    copy). ``lambdas`` / ``sources`` / ``donors``: the settings nested validation chooses from per kernel
    kind. ``nested_max_rows``: the base fit of each nested fold samples at most this many rows (None: the
    transfer's own ``max_rows``). ``nested_share``: the share of the configurations (chosen by their hash, so
    the same on every fit) the nested folds fit and score on; below 1 it keeps the nested refits cheap enough
    for a benchmark that fits the model once per held-out GPU and calibration fold. ``level``: the interval
    level :meth:`predict_interval` defaults to.
    """

    #: the fitted transfer is saved as a sub-estimator of its own (the persistence layer walks it)
    state_children: ClassVar[dict[str, str]] = {"transfer_": "transfer"}

    def __init__(self, transfer: SiblingTransfer | None = None, lambdas: tuple[float, ...] = LAMBDAS,
                 sources: tuple[str, ...] = SOURCES, donors: tuple[str, ...] = DONORS, max_cc_gap: float = 0.5,
                 nested_max_rows: int | None = None, nested_share: float = 1.0, level: float = 0.9,
                 target: str = "runtime_ms"):
        self.transfer = transfer
        self.lambdas = lambdas
        self.sources = sources
        self.donors = donors
        self.max_cc_gap = max_cc_gap
        self.nested_max_rows = nested_max_rows
        self.nested_share = nested_share
        self.level = level
        self.target = target

    # ------------------------------------------------------------------------------------------ tables
    def grid(self) -> list[tuple[str, float, str]]:
        """Every (source, λ, donor) tried, pure copying of the nearest sibling first (λ = 0 once per donor)."""
        bad = sorted({*self.sources} - set(SOURCES)) + sorted({*self.donors} - set(DONORS))
        if bad or not self.lambdas or any(not 0.0 <= float(v) <= 1.0 for v in self.lambdas):
            raise ValueError(f"sibling: sources must be among {SOURCES}, donors among {DONORS} and lambdas in "
                             f"[0, 1]; got sources={self.sources}, donors={self.donors}, lambdas={self.lambdas}")
        grid = [(s, float(v), d) for v in sorted(self.lambdas) for s in self.sources for d in self.donors]
        return [g for i, g in enumerate(grid) if g[1] > 0 or all(h[2] != g[2] or h[1] > 0 for h in grid[:i])]

    @staticmethod
    def _tables(X: pd.DataFrame, y: np.ndarray, devices: np.ndarray, configs: np.ndarray) -> pd.DataFrame:
        """Per (device, config): mean log measurement and mean log roofline."""
        frame = pd.DataFrame({"device": devices, "config": configs, "log_y": np.log(y),
                              "log_roof": np.log(10.0) * X[ROOFLINE_COLUMN].to_numpy(dtype="float64")})
        return frame.groupby(["device", "config"], sort=False)[["log_y", "log_roof"]].mean()

    @staticmethod
    def _offsets(tables: pd.DataFrame, config_kind: pd.Series, devices: list[int]) -> tuple[list[str], np.ndarray]:
        """Per kernel kind, the (device, device) median log ratio over the configurations both measured (NaN
        where they share none): the level :data:`DONORS` ``"aligned"`` removes before averaging siblings."""
        log_y = tables["log_y"].unstack("device").reindex(columns=devices)
        kinds = config_kind.reindex(log_y.index).to_numpy()
        names = sorted(str(k) for k in pd.unique(kinds))
        out = np.full((len(names), len(devices), len(devices)), np.nan)
        for a, name in enumerate(names):
            table = log_y.to_numpy()[kinds.astype(str) == name]
            for i in range(len(devices)):
                with np.errstate(all="ignore"):
                    diff = table[:, [i]] - table
                    seen = np.isfinite(diff).any(axis=0)
                out[a, i, seen] = np.nanmedian(diff[:, seen], axis=0)
        return names, out

    @staticmethod
    def _device_info(X: pd.DataFrame, devices: np.ndarray) -> pd.DataFrame:
        """Per device: vendor code, compute capability and the log :data:`RANK_FIELDS`."""
        vendor, cc = _identity(X)
        info = pd.DataFrame({"device": devices, "vendor": vendor, "cc": cc})
        for f in RANK_FIELDS:
            info[f] = np.log(X[f].to_numpy(dtype="float64"))
        return info.drop_duplicates("device").set_index("device")

    def _siblings_of(self, info: pd.DataFrame, device: int, among: list[int]) -> list[int]:
        me = info.loc[device]
        return [d for d in among if d != device and bool(are_siblings(
            np.asarray(me["vendor"]), np.asarray(me["cc"]), info.loc[d, "vendor"], info.loc[d, "cc"],
            self.max_cc_gap))]

    def _matrices(self, X: pd.DataFrame, transfer: SiblingTransfer, tables: pd.DataFrame, info: pd.DataFrame,
                  shape: bool = True) -> dict[str, np.ndarray]:
        """(rows, training devices) log measurement, base and roofline log ratios, distance (NaN / inf where
        the column's device is no sibling of the row's device or did not measure the row's configuration),
        each device's level offset to the row's nearest sibling (:meth:`_offsets`), ``own``: the
        transfer's log prediction per row, and (``shape``) the transfer's correction minus its level."""
        keys = row_keys(X, transfer.config_columns)
        vendor, cc = _identity(X)
        dist = transfer.distances(X)
        log_base = np.log(transfer.estimator_.predict(X))
        log_roof = np.log(10.0) * X[ROOFLINE_COLUMN].to_numpy(dtype="float64")
        n, m = len(X), len(transfer.devices_)
        out = {k: np.full((n, m), np.nan) for k in ("log_y", "base", "roofline")}
        out["dist"], out["rank"] = np.full((n, m), np.inf), np.full((n, m), np.inf)
        family = np.zeros((n, m), dtype=bool)
        spread = info[list(RANK_FIELDS)].std(ddof=0).fillna(0.0).replace(0.0, 1.0).to_numpy()
        own_spec = np.log(X[list(RANK_FIELDS)].to_numpy(dtype="float64")) / spread
        for j, dev in enumerate(transfer.devices_):
            if dev not in info.index:
                continue
            sib = are_siblings(vendor, cc, info.loc[dev, "vendor"], info.loc[dev, "cc"], self.max_cc_gap)
            if not sib.any():
                continue
            family[:, j] = sib
            table = tables.xs(dev, level="device").reindex(keys)
            resid = transfer.residuals_[dev].reindex(keys).to_numpy(dtype="float64")
            ly = np.where(sib, table["log_y"].to_numpy(dtype="float64"), np.nan)
            out["log_y"][:, j] = ly
            out["base"][:, j] = log_base - (ly - resid)
            out["roofline"][:, j] = log_roof - table["log_roof"].to_numpy(dtype="float64")
            out["dist"][:, j] = np.where(np.isfinite(ly), dist[:, j], np.inf)
            gap = own_spec - info.loc[dev, list(RANK_FIELDS)].to_numpy(dtype="float64") / spread
            out["rank"][:, j] = np.where(np.isfinite(ly), np.sqrt(np.nansum(gap ** 2, axis=1)), np.inf)
        out["own"] = log_base + transfer.correction(X, distances=dist)
        out["transfer"] = out["own"][:, None] - out["log_y"]
        out["resid"] = out["transfer"] - out["base"]  # the residual mix minus the sibling's own residual
        kinds = kernel_kinds(X).astype(str).to_numpy()
        if shape:
            memo = self.__dict__.setdefault("_level_memo", {})
            out["shape"] = out["transfer"] - correction_levels(X, kinds, family, transfer, self.reference_, tables,
                                                               memo)
        out["offset"] = np.full((n, m), np.nan)
        position = {int(d): i for i, d in enumerate(self.offset_devices_)}
        cols = np.asarray([position.get(int(d), -1) for d in transfer.devices_], dtype=np.int64)
        nearest = cols[np.argmin(out["rank"], axis=1)]
        for a, name in enumerate(self.offset_kinds_):
            sel = (kinds == name) & (nearest >= 0)
            known = cols >= 0
            block = np.full((int(sel.sum()), m), np.nan)
            block[:, known] = self.offsets_[a][np.ix_(cols[known], nearest[sel])].T
            out["offset"][sel] = block
        return out

    @staticmethod
    def _candidate(mats: dict[str, np.ndarray], setting: tuple[str, float, str], scale: float) -> np.ndarray:
        """Log prediction of one setting per row (NaN where no sibling measured the configuration)."""
        source, lam, donor = setting
        shift = 0.0 if lam == 0 else lam * np.nan_to_num(mats[source], nan=0.0)
        cand = mats["log_y"] + shift
        has = np.isfinite(mats["log_y"]).any(axis=1)
        if donor == "nearest":
            j = np.argmin(mats["rank"], axis=1)
            out = cand[np.arange(len(cand)), j]
        elif donor == "aligned":
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a row no sibling measured: NaN, as below
                out = np.nanmean(cand - mats["offset"], axis=1)
        else:
            seen = np.isfinite(cand)
            weight = np.where(seen, np.exp(-(mats["dist"] - mats["dist"].min(axis=1, keepdims=True)) / scale), 0.0)
            with np.errstate(invalid="ignore"):
                out = (weight * np.nan_to_num(cand)).sum(axis=1) / weight.sum(axis=1)
        return np.where(has, out, np.nan)

    # --------------------------------------------------------------------------------------------- fit
    def fit(self, X: pd.DataFrame, y: Any) -> SiblingShrink:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"sibling reads named feature columns; got {type(X).__name__}")
        if not isinstance(self.transfer, SiblingTransfer):
            raise TypeError(f"sibling: transfer must be a SiblingTransfer, got {type(self.transfer).__name__}")
        y = np.asarray(y, dtype="float64").ravel()
        settings = self.grid()
        self.__dict__.pop("_level_memo", None)
        base = clone(self.transfer).set_params(target=self.target)
        self.transfer_ = base.fit(X, y)
        devices = row_keys(X, base.device_columns)
        configs = row_keys(X, base.config_columns)
        kinds = kernel_kinds(X).to_numpy()
        tables = self._tables(X, y, devices, configs)
        info = self._device_info(X, devices)
        order = list(pd.unique(devices))
        config_kind = pd.Series(kinds, index=configs).groupby(level=0).first()
        self.offset_devices_ = order
        self.offset_kinds_, self.offsets_ = self._offsets(tables, config_kind, order)
        self.reference_ = Reference.choose(X, devices, configs, kinds)
        # nested: every training device with a sibling among the others, held out in turn
        scores: dict[str, list[np.ndarray]] = {}  # setting label -> per-row log error over the nested rows
        nested_kind, nested_fold, nested_reach, transfer_err, nested_layer = [], [], [], [], []
        drawn = self._nested_rows(configs)
        for fold, dev in enumerate(d for d in order if self._siblings_of(info, d, order)):
            held, rest = drawn & (devices == dev), drawn & (devices != dev)
            inner = clone(base)
            if self.nested_max_rows is not None:
                inner.set_params(max_rows=self.nested_max_rows)
            inner.fit(X.loc[rest], y[rest])
            mats = self._matrices(X.loc[held], inner, tables, info, shape="shape" in self.sources)
            has = np.isfinite(mats["log_y"]).any(axis=1)
            truth = np.log(y[held][has])
            sub = {k: v[has] for k, v in mats.items()}
            for s in settings:
                scores.setdefault(repr(s), []).append(self._candidate(sub, s, inner.scale) - truth)
            transfer_err.append(sub["own"] - truth)
            nested_kind.append(kinds[held][has])
            nested_reach.append(sub["dist"].min(axis=1))
            nested_fold.append(np.full(int(has.sum()), fold))
            nested_layer.append(layer_keys(X.loc[held], base.config_columns)[has])
        self._choose(settings, scores, transfer_err, nested_kind, nested_fold, nested_layer)
        reach = pd.Series(np.concatenate(nested_reach) if nested_reach else [], dtype="float64")
        by_kind = reach.groupby(np.concatenate(nested_kind) if nested_kind else []).max()
        self.reach_ = {"*": float(reach.max()) if len(reach) else 0.0,
                       **{str(k): float(v) for k, v in by_kind.items() if str(k) in self.settings_}}
        self.tables_, self.info_ = tables, info
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def _nested_rows(self, configs: np.ndarray) -> np.ndarray:
        """The rows of the configurations in the nested folds' share: a fixed residue class of the
        configuration's hash, so every device keeps the same configurations (a sibling pair stays aligned) and
        the draw does not depend on which devices are in training."""
        if not 0.0 < float(self.nested_share) <= 1.0:
            raise ValueError(f"sibling: nested_share must be in (0, 1], got {self.nested_share}")
        if self.nested_share >= 1.0:
            return np.ones(len(configs), dtype=bool)
        return (configs % np.uint64(10_007)) < np.uint64(round(self.nested_share * 10_007))

    def _choose(self, settings: list[tuple[str, float, str]], scores: dict[str, list[np.ndarray]],
                transfer_err: list[np.ndarray], nested_kind: list[np.ndarray], nested_fold: list[np.ndarray],
                nested_layer: list[np.ndarray]) -> None:
        """Per kernel kind, among the settings that beat pure copying on *every* nested fold
        (:func:`~.sibling_rule.passes`: by a margin, by more than that excess's standard error over
        layers), the one of least nested mean APE (mean over held-out devices); pure copying when none does.
        A correction is adopted only where it won on every held-out sibling, which is what the test asks of
        it. Also the conformal scores of the chosen settings and the nested scores kept for reporting, with
        ``"z"``: the fewest standard errors by which the best setting passing the margin alone exceeded it
        over the folds (the test's margin of safety; absent where no setting passes the margin)."""
        self.settings_: dict[str, tuple[str, float, str]] = {}
        self.nested_: dict[str, dict[str, float]] = {}
        self.n_nested_folds_ = len(nested_fold)
        if not nested_fold:  # no training device has a sibling: copy the nearest sibling, uncorrected
            self.pooled_ = settings[0]
            self.scores_ = {"*": np.empty(0), COPY_SCORES + "*": np.empty(0)}
            return
        kind = np.concatenate(nested_kind)
        fold = np.concatenate(nested_fold)
        layer = np.concatenate(nested_layer)
        errs = {k: np.concatenate(v) for k, v in scores.items()}
        errs["transfer"] = np.concatenate(transfer_err)

        def per_fold(err: np.ndarray, sel: np.ndarray) -> pd.Series:
            return pd.Series(np.abs(np.expm1(err[sel]))).groupby(fold[sel]).mean()

        def best(sel: np.ndarray) -> tuple[tuple[str, float, str], dict[str, float]]:
            folds = {k: per_fold(e, sel) for k, e in errs.items()}
            table = {k: float(v.mean()) for k, v in folds.items()}
            copy = np.abs(np.expm1(errs[repr(settings[0])][sel]))
            gains = {s: fold_gains(np.abs(np.expm1(errs[repr(s)][sel])), copy, fold[sel], layer[sel])
                     for s in settings[1:]}
            margin = [s for s in settings[1:] if passes(gains[s], z=None)]
            wins = [s for s in margin if passes(gains[s])]
            pick = min(wins, key=lambda s: table[repr(s)]) if wins else settings[0]
            if margin:  # strict JSON in the saved state: no entry rather than NaN
                best_margin = gains[min(margin, key=lambda s: table[repr(s)])]
                table["z"] = float((best_margin["excess"] / best_margin["se"]).min())
            return pick, table

        everything = np.ones(len(kind), dtype=bool)
        self.pooled_, self.nested_["*"] = best(everything)
        chosen = np.full(len(kind), np.nan)
        for k in pd.unique(kind):
            sel = kind == k
            if sel.sum() >= MIN_KIND_ROWS:
                self.settings_[str(k)], self.nested_[str(k)] = best(sel)
            pick = self.settings_.get(str(k), self.pooled_)
            chosen[sel] = errs[repr(pick)][sel]
        self.nested_["*"]["chosen"] = float(per_fold(chosen, everything).mean())
        copy = errs[repr(settings[0])]
        self.scores_ = {"*": np.sort(np.abs(chosen)), COPY_SCORES + "*": np.sort(np.abs(copy))}
        for k in self.settings_:
            self.scores_[k] = np.sort(np.abs(chosen[kind == k]))
            self.scores_[COPY_SCORES + k] = np.sort(np.abs(copy[kind == k]))

    # ----------------------------------------------------------------------------------------- predict
    def _log_parts(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(log prediction, whether a sibling measured the row's configuration, how far the row's nearest
        measuring sibling is beyond the distance the nested folds validated: ``max(1, d / reach)``, and whether
        the row is within that distance, so the chosen setting applies)."""
        check_fitted(self, "settings_")
        used = [*self.settings_.values(), self.pooled_]
        mats = self._matrices(X, self.transfer_, self.tables_, self.info_, shape=any(s[0] == "shape" for s in used))
        kinds = kernel_kinds(X).to_numpy()
        out = mats["own"].copy()
        has = np.isfinite(mats["log_y"]).any(axis=1)
        stretch, within = np.ones(len(X)), np.ones(len(X), dtype=bool)
        copy = (self.pooled_[0], 0.0, "nearest")
        for k in pd.unique(kinds):
            sel = (kinds == k) & has
            if sel.any():
                sub = {n: v[sel] for n, v in mats.items()}
                ratio = self._reach_ratio(sub, str(k))
                chosen = self._candidate(sub, self.settings_.get(str(k), self.pooled_), self.transfer_.scale)
                out[sel] = np.where(ratio <= 1.0, chosen, self._candidate(sub, copy, self.transfer_.scale))
                stretch[sel], within[sel] = np.maximum(1.0, ratio), ratio <= 1.0
        return out, has, stretch, within

    def _reach_ratio(self, mats: dict[str, np.ndarray], kind: str) -> np.ndarray:
        """Per row, ``d / reach``: ``d`` the distance to the row's nearest measuring sibling, ``reach`` the
        largest such distance the nested folds validated the kind's setting at. Above 1 the setting is an
        extrapolation no fold tested (a correction validated on near twins, B300 and GB300, applied to a
        sibling three times as far, GB200), so the row copies its nearest sibling, the baseline the guard
        in :meth:`_choose` falls back to wherever a correction is not shown to beat it."""
        reach = self.reach_.get(kind, self.reach_["*"])
        near = mats["dist"].min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(reach > 0, near / reach, np.where(near > 0, np.inf, 0.0))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.exp(self._log_parts(X)[0])

    def distance_stretch(self, X: pd.DataFrame) -> np.ndarray:
        """Per row, the factor :meth:`predict_interval` widens the nested quantile by (``d / reach`` of
        :meth:`_reach_ratio`; 1 within the nested folds' distance and on rows no sibling measured), for
        reporting."""
        return self._log_parts(X)[2]

    def predict_transfer(self, X: pd.DataFrame) -> np.ndarray:
        """What the fallback transfer alone predicts (the previous unseen-GPU model), for comparison."""
        check_fitted(self, "transfer_")
        return self.transfer_.predict(X)

    def predict_interval(self, X: pd.DataFrame, level: float | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prediction, lo, hi): on sibling rows ``ŷ·e^(±q)`` with ``q`` the split-conformal quantile of the
        nested |log error| of what the row gets (the chosen setting, or pure copying beyond the folds'
        distance) for the row's kernel kind (pooled for a kind without its own setting), times
        ``max(1, d / reach)`` for a row whose nearest measuring sibling is farther away (``d``) than any the
        nested folds calibrated (``reach``, as in :meth:`_reach_ratio`): a prior that a sibling's error grows
        in proportion to its distance, since no nested fold reaches that far; on rows no sibling measured,
        unbounded (0, inf)."""
        log_pred, has, stretch, within = self._log_parts(X)
        level = self.level if level is None else level
        kinds = kernel_kinds(X).to_numpy()
        q = np.full(len(X), np.inf)
        for k in pd.unique(kinds):
            for inside, prefix in ((True, ""), (False, COPY_SCORES)):
                sel = (kinds == k) & (within == inside)
                scores = self.scores_.get(prefix + str(k), self.scores_[prefix + "*"])
                q[sel] = conformal_quantile(scores, level)
        q = np.where(has, q * stretch, np.inf)
        pred = np.exp(log_pred)
        return pred, pred * np.exp(-q), pred * np.exp(q)

    # ------------------------------------------------------------------------------------------- state
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The chosen settings and nested scores (JSON), the sibling tables and conformal scores (arrays). The
        fitted transfer is a sub-estimator (:attr:`state_children`), saved by the persistence layer."""
        check_fitted(self, "settings_")
        tables = self.tables_.reset_index()
        info = self.info_.reset_index()
        kinds = sorted(self.scores_)
        params = {"settings": {k: list(v) for k, v in self.settings_.items()}, "pooled": list(self.pooled_),
                  "nested": self.nested_, "max_cc_gap": float(self.max_cc_gap), "level": float(self.level),
                  "target": self.target, "score_kinds": kinds, "selected_on": SELECTED_ON,
                  "n_nested_folds": int(self.n_nested_folds_), "reach": self.reach_,
                  "offset_kinds": list(self.offset_kinds_), "reference_columns": list(self.reference_.rows.columns)}
        arrays = {"table_device": tables["device"].to_numpy(dtype=np.uint64),
                  "table_config": tables["config"].to_numpy(dtype=np.uint64),
                  "table_log_y": tables["log_y"].to_numpy(dtype="float64"),
                  "table_log_roof": tables["log_roof"].to_numpy(dtype="float64"),
                  "info_device": info["device"].to_numpy(dtype=np.uint64),
                  "info_vendor": info["vendor"].to_numpy(dtype=np.int64),
                  "info_cc": info["cc"].to_numpy(dtype="float64"),
                  "info_spec": info[list(RANK_FIELDS)].to_numpy(dtype="float64"),
                  "offset_devices": np.asarray(self.offset_devices_, dtype=np.uint64),
                  "offsets": np.asarray(self.offsets_, dtype="float64"),
                  "score_sizes": np.asarray([len(self.scores_[k]) for k in kinds], dtype=np.int64),
                  "scores": np.concatenate([self.scores_[k] for k in kinds]),
                  "reference_rows": self.reference_.rows.to_numpy(dtype="float64"),
                  "reference_device": self.reference_.device, "reference_kind": self.reference_.kind.astype(str)}
        return params, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> SiblingShrink:
        """A model whose predictions match once its transfer is attached as ``transfer_``: the fitted one
        (:meth:`predict`), or the one a bundle rebuilds from its state (a sub-estimator: :attr:`state_children`)."""
        if COPY_SCORES + "*" not in params["score_kinds"]:
            raise ValueError("sibling: this saved model predates the interval of rows beyond the nested folds' "
                             "sibling distance (it has no nested scores of copying); refit and save it again")
        model = cls(None, max_cc_gap=params["max_cc_gap"], level=params["level"], target=params["target"])
        model.settings_ = {k: (str(v[0]), float(v[1]), str(v[2])) for k, v in params["settings"].items()}
        p = params["pooled"]
        model.pooled_ = (str(p[0]), float(p[1]), str(p[2]))
        model.nested_ = params["nested"]
        model.n_nested_folds_ = int(params["n_nested_folds"])
        model.reach_ = {str(k): float(v) for k, v in params["reach"].items()}
        model.offset_kinds_ = [str(k) for k in params["offset_kinds"]]
        model.offset_devices_ = [int(d) for d in arrays["offset_devices"]]
        model.offsets_ = arrays["offsets"]
        index = pd.MultiIndex.from_arrays([arrays["table_device"], arrays["table_config"]], names=["device", "config"])
        model.tables_ = pd.DataFrame({"log_y": arrays["table_log_y"], "log_roof": arrays["table_log_roof"]},
                                     index=index)
        model.info_ = pd.DataFrame({"vendor": arrays["info_vendor"], "cc": arrays["info_cc"]},
                                   index=pd.Index(arrays["info_device"], name="device"))
        model.info_[list(RANK_FIELDS)] = arrays["info_spec"]
        columns = params.get("reference_columns", [])  # a model saved before the "shape" source: none
        model.reference_ = (Reference(pd.DataFrame(arrays["reference_rows"], columns=columns),
                                      arrays["reference_device"], arrays["reference_kind"])
                            if "reference_rows" in arrays else Reference.empty(columns))
        bounds = np.concatenate([[0], np.cumsum(arrays["score_sizes"])])
        model.scores_ = {k: arrays["scores"][a:b] for k, a, b in zip(params["score_kinds"], bounds[:-1], bounds[1:],
                                                                     strict=True)}
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
