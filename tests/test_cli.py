"""The command line on real data: import, ls, show, schema, and clear errors that store nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from perfcast.cli import app
from perfcast.cli.common import parse_duration
from perfcast.records.store import RecordStore

runner = CliRunner()


def _run(*args: str) -> str:
    res = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res.output


def test_help_lists_commands() -> None:
    out = _run("--help")
    for cmd in ("hw", "data", "probe"):
        assert cmd in out


def test_import_ls_show_on_real_data(data_root: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    out = _run("data", "import", "gpperf-ada-matmul", str(data_root / "gpperf-ada-matmul"), "--store", store)
    assert "new records" in out
    out = _run("data", "import", "uci-computer-hardware", str(data_root / "uci-computer-hardware"), "--store", store)
    stored = RecordStore(store)
    n_gemm = len(stored.read("gemm"))
    n_cpu = len(stored.read("cpu_bench"))
    assert n_cpu == 209 and n_gemm > 300
    # importing again adds nothing and says so
    out = _run("data", "import", "uci-computer-hardware", str(data_root / "uci-computer-hardware"), "--store", store)
    assert len(RecordStore(store).read("cpu_bench")) == 209 and "209" in out
    out = _run("data", "ls", "--store", store)
    assert "gpperf-ada-matmul" in out and "NVIDIA GeForce RTX 4070" in out and f"{n_gemm:,}" in out
    assert "uci_computer_hardware" in out and "more devices" in out  # 209 machines: listed top-N + rest
    out = _run("data", "show", "gemm", "--limit", "2", "--store", store)
    assert "runtime_ms" in out and f"{n_gemm:,} records" in out
    raw = pd.read_csv(data_root / "uci-computer-hardware" / "machine.data", header=None)
    out = _run("data", "show", "cpu_bench", "--columns", "device_name,score", "--limit", "1", "--store", store)
    assert str(raw.iloc[0, 8]) in out  # the first machine's published PRP


def test_errors_are_clear_and_store_nothing(data_root: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    res = runner.invoke(app, ["data", "import", "no-such-set", str(data_root), "--store", str(store)])
    assert res.exit_code == 2 and "unknown dataset 'no-such-set'" in res.output and "aiconfigurator" in res.output
    res = runner.invoke(app, ["data", "import", "neusight", str(data_root / "uci-computer-hardware"),
                              "--store", str(store)])
    assert res.exit_code == 2 and "neusight" in res.output
    assert not RecordStore(store).parts("gemm")
    res = runner.invoke(app, ["data", "show", "gemmm", "--store", str(store)])
    assert res.exit_code == 2 and "unknown task 'gemmm'" in res.output
    res = runner.invoke(app, ["probe", "gpu-magic", "--store", str(store)])
    assert res.exit_code == 2 and "unknown probe 'gpu-magic'" in res.output


def test_schema_command_and_durations() -> None:
    out = _run("data", "schema", "attention")
    assert "seq_kv" in out and "runtime_ms" in out
    assert parse_duration("10m") == 600 and parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    res = runner.invoke(app, ["probe", "gemm", "--budget", "soon"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "--budget" in res.output and "'soon' is not a positive duration" in res.output
    res = runner.invoke(app, ["probe", "gemm", "--max-time", "0s"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "--max-time" in res.output and "'0s' is not a positive duration" in res.output
