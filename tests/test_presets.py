"""Benchmark presets: every protocol's settings live in exactly one configs/*.toml, and the benchmark fits
through training's fit path with that file's interval settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from perfcast.experiments import presets
from perfcast.experiments.cpu import ncpp_paper
from perfcast.experiments.registry import RUNNERS, UNSEEN_HARDWARE
from perfcast.experiments.results import RunConfig, workspace
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.training.config import CONFIGS_DIR, ConfigError, load_config, load_preset, preset_files
from tests.test_bigger_root import benchmark_script

PRESET = """task = "gemm"
targets = ["runtime_ms"]
[model]
name = "lightgbm"
[benchmark]
protocols = [{protocols}]
selected_on = "a validation split"
"""


def test_every_protocol_has_exactly_one_preset_and_every_preset_a_protocol():
    files = preset_files()
    assert set(files) == set(RUNNERS), set(files) ^ set(RUNNERS)
    for path in sorted(CONFIGS_DIR.glob("*.toml")):
        bench = load_config(path).benchmark
        if bench is not None:
            assert set(bench.protocols) <= set(RUNNERS), path.name  # one spelling: the runner's name
            assert bench.selected_on.strip(), path.name
            assert all(files[p] == path for p in bench.protocols)


def test_a_protocol_claimed_twice_or_never_is_refused(tmp_path: Path):
    (tmp_path / "a.toml").write_text(PRESET.format(protocols='"p1"'))
    assert load_preset("p1", tmp_path).model.name == "lightgbm"
    with pytest.raises(ConfigError, match=r"no preset in .* names benchmark protocol 'p2'.*presets exist for: p1"):
        load_preset("p2", tmp_path)
    (tmp_path / "b.toml").write_text(PRESET.format(protocols='"p2", "p1"'))
    with pytest.raises(ConfigError, match="'p1' is claimed by both a.toml and b.toml"):
        preset_files(tmp_path)


@pytest.mark.parametrize("protocol", [p for p in UNSEEN_HARDWARE if p != "ncpp-paper"])
def test_interval_settings_come_from_the_preset(protocol: str, monkeypatch: pytest.MonkeyPatch):
    """The benchmark's fit builds its conformal wrapper from the preset's [intervals], nowhere else."""
    monkeypatch.setattr(ConformalRegressor, "fit", lambda self, *a, **k: self)  # construction is what is checked
    choice = presets.choose(protocol)
    rows = pd.DataFrame({"device_id": ["gb200"], "published_at": ["2024-01-01"],
                         **{t: [1.0] for t in choice.config.targets}})
    model = choice.fit(rows, seed=0)
    want = choice.config.intervals.options()
    got = {k: model.get_params(deep=False)[k] for k in want}
    assert repr(got) == repr(want), protocol  # ForwardFolds compare by their repr
    assert model.estimator.named_steps["model"].__class__.__name__  # the preset's model, built by training


def test_model_override_says_the_settings_were_not_selected():
    assert presets.choose("gpperf-paper").selected_on.startswith("5-fold cross-validation over the 2,076 training rows")
    other = presets.choose("gpperf-paper", "lightgbm")
    assert other.name == "lightgbm" and other.params == {} and other.selected_on.startswith("none: --model lightgbm")
    assert other.config.intervals == presets.choose("gpperf-paper").config.intervals


def _ncpp_root(data_root: Path, tmp_path: Path, with_test: bool) -> Path:
    src = data_root / "perfcastdb-sample"
    dst = tmp_path / "root" / "perfcastdb-sample"
    if with_test:  # NCPP's own layout: a test file beside the training file (here the last 30 rows moved there)
        benchmark_script("bigger_root").write_ncpp(src, dst, test_rows=30)
    else:
        shutil.copytree(src, dst)
    return dst.parent


def test_ncpp_paper_without_a_test_set_says_so_instead_of_a_score(data_root: Path, tmp_path: Path):
    root = _ncpp_root(data_root, tmp_path, with_test=False)
    with workspace(root) as ws:
        [row] = ncpp_paper(ws, RunConfig(root))
    assert row.ours is None and row.n == 0 and "no NCPP test set" in row.notes[0]
    doc = row.as_json()
    assert doc["value"] is None and doc["goal_met"] is None and doc["beats_ref"] is None


def test_ncpp_paper_scores_ncpps_own_split_when_test_data_is_present(data_root: Path, tmp_path: Path):
    root = _ncpp_root(data_root, tmp_path, with_test=True)
    with workspace(root) as ws:
        [row] = ncpp_paper(ws, RunConfig(root, model="lightgbm"))
        test = ws.records("perfcastdb-sample", "cpu_bench")
    held = int((test["x_split"] == "test").sum())
    assert row.ours is not None and row.ours > 0 and row.coverage is not None and "NCPP's own split" in row.notes[0]
    # scored on the held-out rows the workload-mean baseline also covers; the note counts the others
    assert 0 < row.n <= held and (row.n == held or f"of {held} test rows left out" in " ".join(row.notes))
