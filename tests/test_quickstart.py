"""`perfcast quickstart --quick` end to end on a machine kept busy by another process: it measures its fixed plan,
fits, compares before/after with the noise beside the error, logs to the default MLflow store, prints nothing
foreign, and the commands and snippet it prints work when pasted."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

#: what libraries print when their output is not routed to quickstart's log
FOREIGN = ("Warning", "warnings.warn", "Successfully registered", "Created version", "Downloading artifacts",
           "INFO ", "Traceback", "it/s]")


def _command(line: str) -> tuple[dict[str, str], list[str]]:
    """A printed shell line as (its leading VAR=value assignments, argv); `perfcast` runs as this interpreter's
    `-m perfcast.cli` (the worktree's copy)."""
    argv = shlex.split(line)
    assigned = {}
    while "=" in argv[0] and argv[0].split("=", 1)[0].isupper():
        key, value = argv.pop(0).split("=", 1)
        assigned[key] = value
    return assigned, [sys.executable, "-m", "perfcast.cli", *argv[1:]] if argv[0] == "perfcast" else argv


def _section(out: str, start: str, stop: str | None) -> list[str]:
    block = out.split(start, 1)[1]
    block = block.split(stop, 1)[0] if stop else block
    return [line for line in block.splitlines()[1:] if line.strip()]


@pytest.mark.slow
def test_quickstart_on_a_busy_machine_trains_reports_and_prints_working_next_steps(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PERFCAST_HW_SPECS")}
    env.update(PERFCAST_STORE=str(tmp_path / "home" / "store"), COLUMNS="100",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        run = subprocess.run([sys.executable, "-m", "perfcast.cli", "quickstart", "--quick"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=900)
    finally:
        busy.kill()
        busy.wait()
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    # 1: built-in predictions with intervals, and the shipped unseen-GPU accuracy
    assert "built-in models (no training)" in out and "h100_sxm" in out and "b200_sxm (sheet" in out
    assert "GPUs they never trained on" in out
    # 2: the full fixed plan measured (a count, not a time budget), before/after with the noise beside it
    assert "measured 36 GEMM configurations" in out
    assert "shapes this machine measured but the fit never saw" in out and "noise (cv)" in out
    assert "mean APE on unmeasured shapes: built-in model" in out
    # nothing foreign in perfcast's output; it went to the log
    assert not [w for w in FOREIGN if w in out], [w for w in FOREIGN if w in out]
    assert (tmp_path / "home" / "quickstart.log").stat().st_size > 0
    # 3: the printed next steps, pasted as printed, find what quickstart made
    shell = _section(out, "Next (run from this directory", "Python:")
    python = _section(out, "Python:", "quickstart took")
    assert shell[0] == "mlflow ui --backend-store-uri sqlite:///mlflow.db" and len(python) == 3
    assert (tmp_path / "perfcast-next-steps.txt").read_text().count("perfcast predict") == 2
    for line in shell[1:]:
        assigned, argv = _command(line)
        done = subprocess.run(argv, cwd=tmp_path, env={**env, **assigned}, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        if "predict" in line:
            assert "runtime_ms_lo" in done.stdout, done.stdout
        else:
            assert "probe" in done.stdout and "gemm" in done.stdout, done.stdout
    snippet = subprocess.run([sys.executable, "-c", "\n".join(python)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert snippet.returncode == 0, snippet.stderr
    assert "'runtime_ms_lo'" in snippet.stdout and "'in_distribution'" in snippet.stdout
