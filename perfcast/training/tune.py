"""Hyperparameter search: an Optuna study over the config's search space, every trial a nested MLflow run.

Trials are scored on an inner split of the *training* rows (``tune.validation``), never on the test rows the
final model is judged on. The study lives in a database (SQLite by default, any SQLAlchemy URL otherwise),
so many workers on many machines can run ``perfcast train CONFIG --tune N`` against one study; each worker
finishes by refitting the best parameters found so far on the full training split, evaluating them on the
protocol's test split, and logging and registering that model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import optuna
from optuna.pruners import MedianPruner
from optuna.samplers import TPESampler
from sqlalchemy.engine import make_url

from perfcast.training import tracking
from perfcast.training.config import (
    DEFAULT_STUDY_STORAGE,
    CategoricalSpace,
    FloatSpace,
    ParamSpace,
    TrainConfig,
)
from perfcast.training.train import (
    Progress,
    Split,
    TrainingDataError,
    TrainResult,
    build_model,
    evaluate,
    fit_and_log,
    load_records,
    log_config,
    model_input,
    no_progress,
    split_records,
)


@dataclass(frozen=True)
class TuneResult:
    """The study's outcome and the refitted, registered best model."""

    study_name: str
    storage: str
    n_trials: int
    n_complete: int
    n_pruned: int
    best_params: dict[str, Any]
    best_value: float
    parent_run_id: str
    final: TrainResult


def suggest(trial: optuna.Trial, space: dict[str, ParamSpace]) -> dict[str, Any]:
    """Draw one value per parameter of ``space``."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, CategoricalSpace):
            out[name] = trial.suggest_categorical(name, spec.choices)
        elif isinstance(spec, FloatSpace):
            out[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        else:
            out[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
    return out


def safe_url(storage: str) -> str:
    """The storage URL with any password masked (it is logged and printed)."""
    return make_url(storage).render_as_string(hide_password=True)


def _sampler_seed(seed: int, study: optuna.Study) -> int:
    """The config's seed for a fresh study (reproducible); a distinct one for a worker joining a study.

    Every worker seeding TPE alike would draw the same start-up trials; workers started at the same
    instant on an empty study still do, so start the first worker before the others.
    """
    if not study.trials:
        return seed
    return int(np.random.SeedSequence([seed, len(study.trials), os.getpid()]).generate_state(1)[0])


class _Objective:
    """Validation MAPE of the primary target for one trial's parameters, logged as a nested run."""

    def __init__(self, config: TrainConfig, inner: Split, progress: Progress):
        self.config, self.progress = config, progress
        self.primary = config.targets[0]
        targets = list(config.targets)
        # a fixed shuffle, so each pruning rung fits on a superset of the previous rung's rows
        fit = inner.train.sample(frac=1.0, random_state=config.seed)
        self.X_fit, self.Y_fit = model_input(fit, config.task), fit[targets].astype("float64")
        self.X_val, self.Y_val = model_input(inner.test, config.task), inner.test[targets].astype("float64")
        if not self.Y_val[self.primary].notna().any():
            raise TrainingDataError(f"tune.validation leaves no validation row with {self.primary} measured")

    def _score(self, params: dict[str, Any], n_rows: int) -> dict[str, float]:
        pipe = build_model(self.config, params).fit(self.X_fit.iloc[:n_rows], self.Y_fit.iloc[:n_rows])
        return evaluate(self.Y_val, pipe.predict(self.X_val), "val_")

    def __call__(self, trial: optuna.Trial) -> float:
        params = {**self.config.model.params, **suggest(trial, self.config.tune.space)}
        key = f"val_{self.primary}_mape"
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.set_tag("optuna.trial_number", trial.number)
            tracking.log_params({"model": {"params": params}})
            for step, frac in enumerate(self.config.tune.prune_at):
                value = self._score(params, max(2, round(frac * len(self.X_fit))))[key]
                mlflow.log_metric(key, value, step=step)
                trial.report(value, step)
                if trial.should_prune():
                    mlflow.set_tag("optuna.state", "PRUNED")
                    self.progress(f"trial {trial.number}: pruned, validation {self.primary} MAPE "
                                  f"{100 * value:.2f}% on {frac:.0%} of the rows")
                    raise optuna.TrialPruned(f"{key} {value:.4g} at {frac:.0%} of the rows")
            scores = self._score(params, len(self.X_fit))
            mlflow.log_metrics(scores, step=len(self.config.tune.prune_at))
            mlflow.set_tag("optuna.state", "COMPLETE")
        self.progress(f"trial {trial.number}: validation {self.primary} MAPE {100 * scores[key]:.2f}% {params}")
        return scores[key]


def tune(
    config: TrainConfig,
    n_trials: int | None = None,
    storage: str | None = None,
    *,
    tracking_uri: str | None = None,
    progress: Progress = no_progress,
) -> TuneResult:
    """Run ``n_trials`` (default ``tune.n_trials``) of the study, then refit, test and register the best."""
    n_trials = n_trials if n_trials is not None else config.tune.n_trials
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if not config.tune.space:
        raise ValueError("tune.space is empty: give at least one parameter to search (see configs/*.toml)")
    storage = storage or config.tune.storage or DEFAULT_STUDY_STORAGE

    records = load_records(config.data, config.task, progress)
    split = split_records(records.frame, config.eval, config.seed, list(config.targets))
    inner = split_records(split.train, config.tune.validation, config.seed, list(config.targets))
    objective = _Objective(config, inner, progress)

    study = optuna.create_study(study_name=config.study_name, storage=storage, load_if_exists=True,
                                direction="minimize", pruner=MedianPruner())
    study.sampler = TPESampler(seed=_sampler_seed(config.seed, study))

    tracking.start(tracking.tracking_uri(tracking_uri, config.tracking.uri), config.tracking.experiment)
    with mlflow.start_run(run_name=f"{config.name}-tune") as parent:
        mlflow.set_tags({"optuna.study_name": config.study_name, "optuna.storage": safe_url(storage)})
        progress(f"tuning: {n_trials} trial(s) in study {config.study_name!r} ({safe_url(storage)})")
        study.optimize(objective, n_trials=n_trials, catch=(ValueError,))
        states = [t.state for t in study.trials]
        n_complete = states.count(optuna.trial.TrialState.COMPLETE)
        if not n_complete:
            raise RuntimeError(f"no trial of study {config.study_name!r} completed; see the failed trial runs")
        best = {**config.model.params, **study.best_params}
        log_config(config, best)
        mlflow.log_params({"tune.n_trials_study": len(states), "tune.best_trial": study.best_trial.number,
                           "tune.validation": config.tune.validation.protocol})
        mlflow.log_metric(f"tune_best_val_{config.targets[0]}_mape", study.best_value)
        progress(f"refitting the best parameters (trial {study.best_trial.number}) on the full training split")
        final = fit_and_log(config, split, records.source, best, progress)
    return TuneResult(
        study_name=config.study_name,
        storage=safe_url(storage),
        n_trials=len(states),
        n_complete=n_complete,
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        best_params=best,
        best_value=float(study.best_value),
        parent_run_id=parent.info.run_id,
        final=final,
    )
