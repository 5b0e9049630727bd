"""Hyperparameter search: an Optuna study over the config's search space, every trial a nested MLflow run.

Trials are scored on an inner split of the *training* rows (``tune.validation``), never on the test rows the
final model is judged on. The study lives in a database (SQLite by default, any SQLAlchemy URL otherwise;
beside a PostgreSQL tracking store, in its own schema of the same database), so many workers on many machines
can run ``perfcast train CONFIG --tune N [--workers W]`` against one study: Optuna's storage hands every trial
a number once, so no two workers run the same trial. Each command finishes by refitting the best parameters
found so far on the full training split, evaluating them on the protocol's test split, and logging and
registering that model.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import optuna
from optuna.pruners import MedianPruner
from optuna.samplers import TPESampler
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, ProgrammingError

from perfcast.eval.metrics import scores
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


#: the PostgreSQL schema that holds Optuna's tables beside MLflow's (both keep an ``alembic_version`` table,
#: so they cannot share one schema)
OPTUNA_SCHEMA = "optuna"
#: seconds between the parent's looks at the study while parallel workers run (progress lines only)
POLL_S = 2.0


def is_postgres(url: str) -> bool:
    """Whether ``url`` is a PostgreSQL SQLAlchemy URL (any driver: ``postgresql://``, ``postgresql+psycopg://``)."""
    return url.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def in_schema(url: str, schema: str) -> str:
    """``url`` with every table it creates or reads in ``schema`` (created if missing) of the same database."""
    target = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = create_engine(make_url(url))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    except (IntegrityError, ProgrammingError):  # created by another worker at the same instant
        pass
    finally:
        engine.dispose()
    return target.render_as_string(hide_password=False)


def study_storage(storage: str | None, configured: str | None, tracking_uri: str) -> str:
    """Where the study lives: ``--storage``, else the config's, else a PostgreSQL tracking database, else
    :data:`DEFAULT_STUDY_STORAGE`. A PostgreSQL study goes to schema :data:`OPTUNA_SCHEMA` of its database
    unless the URL sets its own ``options`` (search_path), so it can never collide with MLflow's tables."""
    url = storage or configured or (tracking_uri if is_postgres(tracking_uri) else DEFAULT_STUDY_STORAGE)
    if is_postgres(url) and "options" not in make_url(url).query:
        return in_schema(url, OPTUNA_SCHEMA)
    return url


def _sampler_seeds(seed: int, study: optuna.Study, workers: int) -> list[int]:
    """One TPE seed per worker: the config's seed for the first worker on a fresh study (reproducible), a
    distinct one for every other worker and for workers joining a study (alike seeds draw alike trials)."""
    n = len(study.trials)
    return [seed if n == 0 and i == 0 else
            int(np.random.SeedSequence([seed, n, os.getpid(), i]).generate_state(1)[0]) for i in range(workers)]


def shares(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` split as evenly as possible over ``workers`` (each worker gets at least one)."""
    workers = min(workers, n_trials)
    return [n_trials // workers + (i < n_trials % workers) for i in range(workers)]


class _Objective:
    """Validation MAPE of the primary target for one trial's parameters, logged as a nested run."""

    def __init__(self, config: TrainConfig, inner: Split, progress: Progress, parent_run_id: str):
        self.config, self.progress, self.parent_run_id = config, progress, parent_run_id
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
        return scores(self.Y_val, pipe.predict(self.X_val), "val_")

    def __call__(self, trial: optuna.Trial) -> float:
        params = {**self.config.model.params, **suggest(trial, self.config.tune.space)}
        key = f"val_{self.primary}_mape"
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, parent_run_id=self.parent_run_id):
            mlflow.set_tags({"optuna.trial_number": trial.number,
                             "perfcast.worker": f"{socket.gethostname()}:{os.getpid()}"})
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


def _load_study(config: TrainConfig, storage: str, seed: int) -> optuna.Study:
    return optuna.load_study(study_name=config.study_name, storage=storage, sampler=TPESampler(seed=seed),
                             pruner=MedianPruner())


def _worker(config: TrainConfig, inner: Split, storage: str, uri: str, parent_run_id: str, seed: int,
            n_trials: int) -> int:
    """One tuning process: ``n_trials`` trials of the shared study, each a child run of ``parent_run_id``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the parent reports every trial from the study
    tracking.start(uri, config.tracking.experiment)
    study = _load_study(config, storage, seed)
    study.optimize(_Objective(config, inner, no_progress, parent_run_id), n_trials=n_trials, catch=(ValueError,))
    return n_trials


def _report(study: optuna.Study, seen: set[int], primary: str, progress: Progress) -> None:
    """A progress line for every trial of the study that finished since the last call (any worker's)."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    for t in study.get_trials(deepcopy=False, states=done):
        if t.number in seen:
            continue
        seen.add(t.number)
        state = t.state.name.lower()
        value = "" if t.value is None else f", validation {primary} MAPE {100 * t.value:.2f}%"
        progress(f"trial {t.number}: {state}{value} {t.params}")


def _run_workers(config: TrainConfig, inner: Split, storage: str, uri: str, parent_run_id: str,
                 seeds: list[int], counts: list[int], progress: Progress) -> None:
    """Run one process per entry of ``counts`` on the study and report their trials as they finish."""
    study = optuna.load_study(study_name=config.study_name, storage=storage)
    seen = {t.number for t in study.get_trials(deepcopy=False)}
    with ProcessPoolExecutor(len(counts), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures: list[Future[int]] = [
            pool.submit(_worker, config, inner, storage, uri, parent_run_id, seed, n)
            for seed, n in zip(seeds, counts)]
        while not all(f.done() for f in futures):
            time.sleep(POLL_S)
            _report(study, seen, config.targets[0], progress)
        for f in futures:
            f.result()  # a worker's error is this command's error
    _report(study, seen, config.targets[0], progress)


def tune(
    config: TrainConfig,
    n_trials: int | None = None,
    storage: str | None = None,
    *,
    tracking_uri: str | None = None,
    workers: int = 1,
    progress: Progress = no_progress,
) -> TuneResult:
    """Run ``n_trials`` (default ``tune.n_trials``) of the study, shared by ``workers`` processes (one: in this
    process), then refit, test and register the best."""
    n_trials = n_trials if n_trials is not None else config.tune.n_trials
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if not config.tune.space:
        raise ValueError("tune.space is empty: give at least one parameter to search (see configs/*.toml)")
    uri = tracking.tracking_uri(tracking_uri, config.tracking.uri)
    storage = study_storage(storage, config.tune.storage, uri)

    records = load_records(config.data, config.task, progress)
    split = split_records(records.frame, config.eval, config.seed, list(config.targets))
    inner = split_records(split.train, config.tune.validation, config.seed, list(config.targets))

    study = optuna.create_study(study_name=config.study_name, storage=storage, load_if_exists=True,
                                direction="minimize", pruner=MedianPruner())
    counts = shares(n_trials, workers)
    seeds = _sampler_seeds(config.seed, study, len(counts))

    tracking.start(uri, config.tracking.experiment)
    with mlflow.start_run(run_name=f"{config.name}-tune") as parent:
        mlflow.set_tags({"optuna.study_name": config.study_name, "optuna.storage": safe_url(storage)})
        progress(f"tuning: {n_trials} trial(s) in {len(counts)} worker(s), study {config.study_name!r} "
                 f"({safe_url(storage)})")
        if len(counts) == 1:
            study.sampler = TPESampler(seed=seeds[0])
            study.optimize(_Objective(config, inner, progress, parent.info.run_id), n_trials=n_trials,
                           catch=(ValueError,))
        else:
            _run_workers(config, inner, storage, uri, parent.info.run_id, seeds, counts, progress)
            study = _load_study(config, storage, seeds[0])
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
