"""Nested selection of the CPU presets on real slices: the forward folds stay inside the training years, the
choice cannot see the test years' labels, and the monotone constraints land on the features they name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from perfcast.eval.protocols import future_split
from perfcast.experiments.results import workspace
from perfcast.experiments.cpu_selection import (
    PCDB_CANDIDATES, SPEC_CANDIDATES, SPEC_CHOSEN, Candidate, bagged, forward_folds, pcdb_report, spec_base_rows,
    spec_report,
)
from perfcast.features import CpuFeatures, feature_names
from perfcast.models import make_model
from perfcast.models.estimators.generation_step import GenerationStep
from perfcast.training.config import load_config
from perfcast.training.train import model_input

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CHEAP = {"n_estimators": 30, "num_leaves": 15, "seeds": [0]}


def _records(data_root: Path, dataset: str) -> pd.DataFrame:
    with workspace(data_root) as ws:  # the benchmark's own import path
        return ws.records(dataset, "cpu_bench")


@pytest.fixture(scope="module")
def spec(data_root: Path) -> pd.DataFrame:
    """Every 10th base result of SPEC CPU2017 (all four suites, 2017-2024), the reference machine left out."""
    rows = spec_base_rows(_records(data_root, "spec-cpu2017"))
    return rows.sort_values("record_id").iloc[::10].reset_index(drop=True)


def _years(df: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(df["published_at"], utc=True).dt.year


def test_forward_folds_stay_inside_the_training_years(spec: pd.DataFrame) -> None:
    train, test = future_split(spec, cutoff="2024-01-01")
    folds = forward_folds(train, n_folds=2)
    assert [y for y, _, _ in folds] == [2023, 2022]
    for year, fit, val in folds:
        assert _years(fit).max() < year and set(_years(val)) == {year} and len(fit) and len(val)
    assert set(_years(test)) == {2024}
    with pytest.raises(ValueError, match="training years"):
        forward_folds(train[_years(train) == 2023], n_folds=1)


def test_the_choice_cannot_see_the_test_years_labels(spec: pd.DataFrame) -> None:
    """Tripling every 2024 score changes the test score but neither the nested scores nor the choice."""
    cands = [Candidate(c.label, c.model, {**c.params, **CHEAP}) for c in SPEC_CANDIDATES[:2]]
    perturbed = spec.copy()
    late = (_years(spec) >= 2024).to_numpy()
    perturbed.loc[late, "score"] = perturbed.loc[late, "score"] * 3.0
    runs = [spec_report(rows, [2024], cands, n_folds=1)[0] for rows in (spec, perturbed)]
    assert runs[0]["chosen"] == runs[1]["chosen"] and runs[0]["nested"] == runs[1]["nested"]
    assert runs[0]["selected_on"] == "forward-chaining inside the training years: validate 2023 (fit < 2023)"
    assert runs[1]["test"]["all"] > runs[0]["test"]["all"] + 0.3  # the test rows are scored, only after the choice
    assert max(runs[0]["nested"].values()) < 0.5  # the cheap candidates still learn the 2023 scores


@pytest.mark.parametrize("feature, grid", [("clock_mhz", (1500.0, 2500.0, 3500.0, 4500.0)),
                                           ("cpu_generation", (1.0, 2.0, 3.0, 4.0, 5.0, 6.0))])
def test_monotone_constraints_follow_the_named_features(spec: pd.DataFrame, feature: str,
                                                        grid: tuple[float, ...]) -> None:
    """The positional constraint list is built from feature names: it must match the transformer's columns,
    and the learned score / baseline ratio may then only rise with the constrained clock or generation (a
    generation no training row had, 6 in a slice of Xeon Scalable 1-5 and EPYC 1-5, included)."""
    X = model_input(spec, "cpu_bench")
    feats = CpuFeatures().fit(X).transform(X)
    assert list(feats.columns) == feature_names("cpu_bench")
    params = {**SPEC_CANDIDATES[1].params, **CHEAP, "monotone": {feature: 1}}  # the law without generation
    model = make_model("normalized", "cpu_bench", ["score"], params).fit(X, spec[["score"]])
    ratio = model.named_steps["model"].estimators_[0].estimator_  # the trees on score / baseline
    rows = feats.iloc[:40]
    preds = np.vstack([ratio.predict(rows.assign(**{feature: value})) for value in grid])
    assert (np.diff(preds, axis=0) >= -1e-9).all()
    assert np.ptp(preds, axis=0).max() > 0  # the trees do use the feature: the check is not vacuous
    with pytest.raises(ValueError, match="monotone"):
        make_model("normalized", "cpu_bench", ["score"], {"monotone": {"no_such_feature": 1}})


def test_the_generation_candidates_see_the_parsed_generation(spec: pd.DataFrame) -> None:
    """Every SPEC candidate builds (its monotone and law features exist), and the round C1 ones read the
    generation parsed from the processor name: Sapphire Rapids is Xeon Scalable generation 4, Genoa EPYC 4."""
    for cand in SPEC_CANDIDATES:
        make_model(cand.model, "cpu_bench", ["score"], cand.params)
    by_label = {c.label: c.params for c in SPEC_CANDIDATES}
    per_family = by_label["law with generation per family, monotone per core"]
    assert "cpu_generation" in per_family["scale_by"] and per_family["group_by"][-1] == "family_code"
    assert "cpu_generation" in by_label["law with generation, monotone per core"]["scale_by"]
    assert by_label["law without generation, monotone per core and generation"]["monotone"]["cpu_generation"] == 1
    X = model_input(spec, "cpu_bench")
    feats = CpuFeatures().fit(X).transform(X)
    names = spec["device_name"].astype(str)
    assert (feats.loc[names.str.contains(r"Xeon Platinum 84\d\dH?\b", regex=True), "cpu_generation"] == 4).all()
    assert (feats.loc[names.str.contains(r"EPYC 9\d\d4\b", regex=True), "cpu_generation"] == 4).all()
    assert names.str.contains(r"EPYC 9\d\d4\b", regex=True).any()


def test_the_configs_hold_the_selected_settings() -> None:
    """The SPEC preset's model is the selection's choice (benchmarks/ANALYSIS_cpu.md), not a hand-set one."""
    cfg = load_config(CONFIGS / "spec_cpu2017_future.toml")
    chosen = bagged({c.label: c for c in SPEC_CANDIDATES}[SPEC_CHOSEN])
    assert (cfg.model.name, dict(cfg.model.params)) == (chosen.model, chosen.params)


@pytest.mark.slow
def test_perfcastdb_selection_scores_the_chosen_model_on_outer_repeats(data_root: Path) -> None:
    rows = _records(data_root, "perfcastdb-sample")
    cands = [c for c in PCDB_CANDIDATES if c.params["base"] != "group_attention"]
    run = pcdb_report(rows, seeds=1, candidates=cands)[0]
    assert run["chosen"] in {c.label for c in cands} and set(run["nested"]) == {c.label for c in cands}
    assert run["test"]["rows"] == 29 and run["test"]["all"] < 0.3


def _step_model(params: dict) -> Any:
    model = make_model("normalized", "cpu_bench", ["score"], params)
    return model.set_params(model__estimator=GenerationStep(model.named_steps["model"].estimator))


def test_the_generation_step_is_learned_on_held_out_latest_generations(spec: pd.DataFrame) -> None:
    """Fitted before 2022, Genoa (EPYC generation 4) is newer than any fitted EPYC and gets the step, Milan does
    not; and scores of the latest fitted generations raised by half raise the learned step by about log 1.5."""
    params = {**SPEC_CANDIDATES[-1].params, **CHEAP}
    fit, later = spec[_years(spec) < 2022], spec[_years(spec) >= 2022]
    model = _step_model(params).fit(fit, fit[["score"]])
    step = model.named_steps["model"].estimators_[0]
    feats = model.named_steps["features"].transform(later)
    newer = step.newer(feats)
    names = later["device_name"].astype(str)
    genoa, milan = names.str.contains(r"EPYC 9\d\d4\b").to_numpy(), names.str.contains(r"EPYC 7\d\d3").to_numpy()
    assert genoa.any() and milan.any() and newer[genoa].all() and not newer[milan].any()
    inner = step.estimator_.predict(feats)
    assert np.allclose(model.predict(later), inner * np.where(newer, np.exp(step.step_), 1.0))
    assert step.step_families_ >= 2 and abs(step.step_) < 0.5
    # the same rows with every family's latest fitted generation scoring 1.5 times as much
    fit_feats = model.named_steps["features"].transform(fit)
    fam, gen = fit_feats["family_code"], fit_feats["cpu_generation"]
    latest = gen.eq(gen.groupby(fam).transform("max")) & gen.gt(gen.groupby(fam).transform("min"))
    raised = fit.assign(score=fit["score"].where(~latest.to_numpy(), fit["score"] * 1.5))
    raised_step = _step_model(params).fit(raised, raised[["score"]]).named_steps["model"].estimators_[0].step_
    assert 0.25 < raised_step - step.step_ < 0.55
