"""aiconfigurator, unseen GPU with a family sibling in training: the shrunk sibling copy vs copying the sibling.

Why a protocol of its own: the question it answers ("is the model ever worse than copying the sibling's
measurement?") concerns only the held-out GPUs that have a sibling in training, and the model
(:class:`~perfcast.models.estimators.sibling.SiblingShrink`) calibrates its own interval on held-out training
siblings, so it needs neither the every-GPU loop nor the conformal wrapper of
:func:`perfcast.experiments.aiconfigurator.aiconfigurator_unseen_gpu`. Per held-out GPU and table (GEMM, context and
generation attention) it scores the model, copy-sibling (the benchmark's baseline) and the previous default
(the sibling transfer, here the model's own fallback fitted on the same rows) on the same rows, and notes
beside each chosen setting its nested score (leave-one-training-sibling-out, training GPUs only) and its
score on the test rows.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pandas as pd

from perfcast.eval import metrics
from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.aiconfigurator import SIBLING_GOALS
from perfcast.experiments.baselines import (
    CONFIG_KEYS,
    PHASE_LABEL,
    ROOFLINE,
    SIBLING,
    SIBLING_NOTE,
    copy_from_devices,
    roofline,
    sibling_devices,
)
from perfcast.experiments.presets import choose
from perfcast.experiments.results import Result, RunConfig, Workspace
from perfcast.experiments.scoring import macro_mean, score
from perfcast.models import make_model
from perfcast.models.estimators.hybrid import kernel_kinds
from perfcast.models.estimators.sibling import SELECTED_ON, SiblingShrink
from perfcast.models.estimators.sibling_rule import MARGIN, Z

#: the previous unseen-GPU default (the transfer), scored on the same rows
TRANSFER = "transfer (previous)"
#: share of the configurations scored (seeded; every GPU's rows of a drawn configuration are kept, so each
#: sibling pair stays aligned): all of them, since the nested folds fit on the preset's ``nested_share`` of
#: the configurations, which bounds the cost; the final model is then the one the unseen-GPU protocol fits
#: for the same GPU (same rows, parameters and seed), so the two protocols' point predictions agree
CONFIG_SHARE = 1.0


def fitted_sibling(train: pd.DataFrame, task: str, params: dict) -> tuple[object, SiblingShrink]:
    """(fitted pipeline, its :class:`SiblingShrink`) of ``params`` on ``train``."""
    pipe = make_model("sibling", task, ["runtime_ms"], params).fit(train, train[["runtime_ms"]])
    return pipe, pipe[-1].estimators_[0]


def config_sample(records: pd.DataFrame, keys: list[str], share: float, seed: int) -> pd.DataFrame:
    """The rows of a seeded ``share`` of the configurations (``keys``), on every device."""
    if share >= 1.0:
        return records
    group = records.groupby(keys, dropna=False, observed=True).ngroup().to_numpy()
    drawn = np.random.default_rng(seed).random(group.max() + 1) < share
    return records[drawn[group]].reset_index(drop=True)


def setting_notes(est: SiblingShrink, kinds: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                  copy: np.ndarray, beyond: np.ndarray) -> list[str]:
    """Per kernel kind on these rows: the chosen setting, its nested score, the share of rows it applies to
    (the others, ``beyond`` the nested folds' sibling distance, copy) and the test score beside copying's."""
    notes = []
    for kind in sorted(pd.unique(kinds)):
        sel = (kinds == kind) & np.isfinite(copy)
        if not sel.any():
            continue
        setting = est.settings_.get(str(kind), est.pooled_)
        nested = est.nested_.get(str(kind), est.nested_["*"])
        copy_setting = repr(est.grid()[0])
        margin = (f"no setting beat copying by the {MARGIN:.0%} margin on every fold" if "z" not in nested else
                  f"the best setting over the {MARGIN:.0%} margin cleared it by {nested['z']:.1f} standard errors over "
                  f"layers on its worst fold, adopted above {Z}")
        notes.append(f"{kind}: chosen (source, λ, donor) = {setting}; nested {nested[repr(setting)]:.2%} "
                     f"(copy {nested[copy_setting]:.2%}, transfer {nested['transfer']:.2%}; {margin}); "
                     f"applied on {1 - beyond[sel].mean():.0%} of the rows (the rest copy); "
                     f"test {metrics.mape(truth[sel], pred[sel]):.2%} (copy {metrics.mape(truth[sel], copy[sel]):.2%})")
    return notes


def aiconfigurator_sibling(ws: Workspace, cfg: RunConfig, task: str) -> list[Result]:
    """Leave out, one at a time, every GPU with a family sibling in training; score it per table."""
    protocol = f"aiconfigurator-sibling-{task}"
    # the unseen-GPU preset's transfer (same file claims this protocol), wrapped in the shrunk sibling copy
    preset = choose(protocol)
    limit = preset.train_rows
    params = {**preset.params, "max_rows": limit, "nested_max_rows": limit}
    keys = CONFIG_KEYS[task]
    records = config_sample(ws.records("aiconfigurator", task), list(keys), CONFIG_SHARE, cfg.seed)
    devices = sorted(records["device_id"].dropna().unique())
    parts: list[str | None] = [None]
    if task == "attention":
        present = set(records["phase"].dropna())
        parts = [p for p in PHASE_LABEL if p in present] + sorted(present - set(PHASE_LABEL))
    per_part: dict[str | None, list[Result]] = {p: [] for p in parts}
    for dev in devices:
        train, test = unseen_hardware_split(records, test_devices=[dev])
        siblings = sibling_devices(dev, sorted(train["device_id"].unique()))
        copy = copy_from_devices(train, test, siblings, keys)
        if not np.isfinite(copy).any():  # no sibling, or none measured any of its configurations: nothing to copy
            continue
        start = time.perf_counter()
        pipe, est = fitted_sibling(train, task, params)
        features = pipe[:-1].transform(test)
        pred, lo, hi = est.predict_interval(features)
        previous = est.predict_transfer(features)
        stretch = est.distance_stretch(features)
        wall = time.perf_counter() - start
        roof = roofline(test, task)
        kinds = kernel_kinds(features).to_numpy()
        truth = test["runtime_ms"].to_numpy(dtype="float64")
        common = [f"siblings: {', '.join(siblings)}", f"selected_on: {SELECTED_ON} ({est.n_nested_folds_} folds)",
                  *([f"{CONFIG_SHARE:.0%} of the configurations drawn (seed {cfg.seed}), every GPU's rows of them"]
                    if CONFIG_SHARE < 1 else []),
                  f"base models fitted on at most {limit:,} rows (seed {cfg.seed}), nested folds too (on "
                  f"{est.nested_share:.0%} of the configurations); every row enters the sibling tables",
                  f"rows whose nearest measuring sibling is farther than the nested folds' largest distance copy "
                  f"it: {np.mean(stretch > 1):.0%} of this GPU's rows",
                  f"interval: nested quantile x max(1, distance to the nearest measuring sibling / the nested "
                  f"folds' largest), median x{np.median(stretch):.2f} on this GPU's rows"]
        for part in parts:
            sel = np.ones(len(test), dtype=bool) if part is None else (test["phase"] == part).to_numpy()
            if not np.isfinite(copy[sel]).any():  # its siblings measured none of this part's configurations
                continue
            target = "runtime_ms" if part is None else f"runtime_ms ({PHASE_LABEL.get(part, part)})"
            notes = [*common, *setting_notes(est, kinds[sel], truth[sel], pred[sel], copy[sel], stretch[sel] > 1)]
            res = score(protocol, target, dev, truth[sel], pred[sel], "sibling", wall,
                        baselines={SIBLING: copy[sel], TRANSFER: previous[sel], ROOFLINE: roof[sel]},
                        interval=(lo[sel], hi[sel]), notes=notes)
            res.goal = SIBLING_GOALS[task]
            per_part[part].append(res)
    rows = []
    for part in parts:
        if per_part[part]:
            rows.append(macro_mean(per_part[part], "GPUs with a sibling in training",
                                   notes=[SIBLING_NOTE, f"selected_on: {SELECTED_ON}"]))
            rows[-1].goal = SIBLING_GOALS[task]
            rows.extend(per_part[part])
    for row in rows:  # chosen inside fit, not by the preset (whose transfer settings it wraps)
        row.selected_on = (f"{SELECTED_ON} (three guard rules fixed on a sample of these GPUs; the interval's "
                           f"distance prior and copying beyond the folds' sibling distance added after runs on "
                           f"them, the 'resid' and 'shape' correction sources after diagnoses on a 10% sample of "
                           f"them, and the guard's significance test over layers after a full run on them: "
                           f"ANALYSIS_sibling.md)")
    return rows


#: the runners :data:`perfcast.experiments.registry.RUNNERS` names, one per task
aiconfigurator_sibling_gemm = partial(aiconfigurator_sibling, task="gemm")
aiconfigurator_sibling_attention = partial(aiconfigurator_sibling, task="attention")
