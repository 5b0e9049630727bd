"""Training config: the shipped configs load, paths resolve, and every mistake names its file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfcast.training.config import ConfigError, expand_env, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))

MINIMAL = """
task = "gemm"
targets = ["runtime_ms"]
[[data.imports]]
dataset = "gpperf-ada-matmul"
path = "data/ada"
[model]
name = "rf"
"""


def write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    return msg


def test_repository_has_a_config_per_shared_dataset():
    datasets = {load_config(p).data.imports[0].dataset for p in CONFIGS}
    assert {"gpperf-cutlass", "neusight", "aiconfigurator", "spec-cpu2017", "perfcastdb-sample"} <= datasets


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_resolves_to_the_shared_datasets(path, data_root, monkeypatch):
    monkeypatch.delenv("PERFCAST_DATA_ROOT", raising=False)
    cfg = load_config(path)
    assert cfg.name == path.stem
    for spec in cfg.data.imports:
        assert spec.path.parent == data_root.resolve()
        assert spec.path.is_dir(), spec.path
    assert cfg.tune.space, "every shipped config can be tuned"


def test_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFCAST_DATA_ROOT", str(tmp_path / "elsewhere"))
    cfg = load_config(CONFIGS[0])
    assert cfg.data.imports[0].path.parent == tmp_path / "elsewhere"


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    cfg = load_config(write(sub, MINIMAL))
    assert cfg.data.imports[0].path == sub / "data" / "ada"
    assert cfg.data.store is None
    assert cfg.name == "cfg" and cfg.registered_model_name == "cfg" and cfg.study_name == "cfg"


def test_env_expansion():
    assert expand_env("${PERFCAST_TEST_UNSET_VAR:-a/b}/c") == "a/b/c"
    with pytest.raises(ValueError, match="PERFCAST_TEST_UNSET_VAR is not set"):
        expand_env("${PERFCAST_TEST_UNSET_VAR}/c")


def test_unset_variable_names_the_field(tmp_path):
    msg = config_error(tmp_path, MINIMAL.replace('"data/ada"', '"${PERFCAST_TEST_UNSET_VAR}/ada"'))
    assert "data.imports.0.path" in msg and "PERFCAST_TEST_UNSET_VAR is not set" in msg


def test_unknown_key_is_named_with_the_allowed_keys(tmp_path):
    msg = config_error(tmp_path, MINIMAL.replace('name = "rf"', 'name = "rf"\nparamz = {}'))
    assert "model.paramz: unknown key" in msg
    assert "allowed here: name, params" in msg


def test_unknown_key_inside_a_search_space(tmp_path):
    text = MINIMAL + '[tune.space]\nmax_depth = { type = "int", low = 2, hihg = 8 }\n'
    msg = config_error(tmp_path, text)
    assert "tune.space.max_depth.int.hihg: unknown key" in msg
    assert "high" in msg and "low" in msg


def test_negative_trials(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "[tune]\nn_trials = -3\n")
    assert "tune.n_trials" in msg and "greater than 0" in msg


def test_unknown_model(tmp_path):
    msg = config_error(tmp_path, MINIMAL.replace('"rf"', '"random_forest"'))
    assert "model.name: unknown model 'random_forest'" in msg and "lightgbm" in msg


def test_unknown_protocol_and_option(tmp_path):
    msg = config_error(tmp_path, MINIMAL + '[eval]\nprotocol = "leave-one-out"\n')
    assert "eval.protocol: unknown protocol 'leave-one-out'" in msg and "unseen-hardware" in msg
    msg = config_error(tmp_path, MINIMAL + '[eval]\nprotocol = "random"\noptions = { test_sise = 0.3 }\n')
    assert "eval:" in msg and "['test_sise']" in msg and "test_size" in msg


def test_unknown_task_target_and_dataset(tmp_path):
    assert "task: unknown task 'matmul'" in config_error(tmp_path, MINIMAL.replace('"gemm"', '"matmul"'))
    assert "targets: unknown target(s) ['latency']" in config_error(
        tmp_path, MINIMAL.replace('["runtime_ms"]', '["runtime_ms", "latency"]'))
    assert "data.imports.0.dataset: unknown dataset 'gpperf'" in config_error(
        tmp_path, MINIMAL.replace('"gpperf-ada-matmul"', '"gpperf"'))


def test_search_space_ranges(tmp_path):
    msg = config_error(tmp_path, MINIMAL + '[tune.space]\nlr = { type = "float", low = 0.0, high = 1.0, log = true }\n')
    assert "tune.space.lr.float" in msg and "must be positive when log = true" in msg
    msg = config_error(tmp_path, MINIMAL + '[tune.space]\nk = { type = "int", low = 5, high = 5 }\n')
    assert "low (5) must be below high (5)" in msg
    msg = config_error(tmp_path, MINIMAL + '[tune.space]\nk = { type = "uniform", low = 1, high = 5 }\n')
    assert "tune.space.k" in msg and "'float', 'int', 'categorical'" in msg
    msg = config_error(tmp_path, MINIMAL + "[tune]\nprune_at = [0.5, 0.25]\n")
    assert "tune.prune_at" in msg and "strictly increasing" in msg


def test_empty_filter_list(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "[data.filters]\ndevice_id = []\n")
    assert "data.filters" in msg and "['device_id']" in msg


def test_every_problem_is_reported_at_once(tmp_path):
    msg = config_error(tmp_path, "seed = -1\n" + MINIMAL.replace('"rf"', '"nope"') + "[tune]\nn_trials = 0\n")
    assert "seed:" in msg and "model.name:" in msg and "tune.n_trials:" in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml")
    msg = config_error(tmp_path, "task = \n")
    assert "not valid TOML" in msg


def test_intervals_section_is_validated_and_builds_the_calibration(tmp_path):
    msg = config_error(tmp_path, MINIMAL + "[intervals]\nlevel = 1.5\nforward_years = 0\nn_split = 3\n")
    assert "intervals.level" in msg and "intervals.forward_years" in msg and "intervals.n_split" in msg
    cfg = load_config(write(tmp_path, MINIMAL + "[intervals]\nscale = true\nforward_years = 2\n", "ok.toml"))
    options = cfg.intervals.options()
    assert options["scale"] is True and options["cv"].n_folds == 2 and options["level"] == 0.9


def test_zero_shot_interval_rule_names_the_field_and_the_allowed_values(tmp_path):
    msg = config_error(tmp_path, MINIMAL + '[intervals]\nzero_shot = { width = "wiggly" }\n')
    assert "intervals.zero_shot.width" in msg and "linear" in msg, msg
    msg = config_error(tmp_path, MINIMAL + '[intervals]\nzero_shot = { width = "linear", groupz = "kind" }\n')
    assert "groupz" in msg and "vendor_matched" in msg, msg
