"""Every command in README.md, run exactly as printed (in order, in one temporary working directory beside a
``shared/datasets`` link, as a reader would), except the few listed in :data:`NOT_RUN_HERE` with the reason."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: README lines not run here (matched by prefix), and why
NOT_RUN_HERE: dict[str, str] = {
    "pip install": "installs packages into the environment: CI's set-up step runs exactly this line",
    "perfcast quickstart --quick": "tests/test_quickstart.py runs exactly this command (with a busy neighbour)",
    "perfcast probe all --budget 10m": "a 10-minute sweep; tests/test_sweep.py covers budgets and resuming",
    "mlflow server --backend-store-uri postgresql://": "a team's database server: tests/test_scale_tracking.py "
                                                        "runs tracking, registry and tuning on a local PostgreSQL",
    "perfcast train configs/neusight_ood_hybrid.toml --tune 40 --workers 2": "the same: tests/test_scale_tracking.py",
    "perfcast probe all --quick --ray HEAD": "a Ray cluster: tests/test_scale_fleet.py probes through a local Ray",
    "python benchmarks/accuracy.py --ray local": "every protocol (tens of minutes): tests/test_scale_benchmark.py "
                                                 "compares Ray and in-process rows on two protocols",
    "perfcast probe gemm --plan adapt": "128 configurations take minutes: tests/test_affordable.py runs this line and "
                                        "the next on this machine with a budget of 6",
    "perfcast adapt builtin:gemm": "tests/test_affordable.py (after the plan above) and tests/test_adapt_builtin.py "
                                   "(on a store of real rows) run it",
    "adapted = Predictor.builtin(\"gemm\").adapt": "tests/test_adapt_builtin.py runs Predictor.builtin('gemm').adapt "
                                                   "on real rows",
    "perfcast data import aiconfigurator-power": "413k rows (minutes): tests/test_power_import.py imports real rows",
    "perfcast train configs/aiconfigurator_power_unseen_shape.toml": "tests/test_power_config.py trains it on a slice",
    "python examples/scheduler.py models:/aiconfigurator-gemm-power/1": "needs the model above: "
                                                                         "tests/test_example_scheduler.py runs --objective",
}
#: long-running servers: started in the background, their page fetched, then stopped
SERVERS: dict[str, str] = {"mlflow ui": "/", "mlflow models serve": "/ping"}
STARTUP_S = 240


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced bash or python block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(bash|python)\n(.*?)```", text, re.S)]


def _port(line: str) -> int:
    argv = shlex.split(line)
    return int(argv[argv.index("--port") + 1]) if "--port" in argv else 5000


def shell_script(code: str) -> str:
    """The block as a bash script: `perfcast`/`python` are this interpreter; servers run in the background."""
    out = ["set -euo pipefail", f'perfcast() {{ "{sys.executable}" -m perfcast.cli "$@"; }}',
           f'python() {{ "{sys.executable}" "$@"; }}', "export -f perfcast python", "servers=()",
           'trap \'for p in "${servers[@]}"; do kill -- -"$p" 2>/dev/null || true; done\' EXIT']
    for line in code.splitlines():
        command = line.split("  #")[0].strip()
        if not command:
            continue
        if any(command.startswith(p) for p in NOT_RUN_HERE):
            out.append(f": not run here: {shlex.quote(command)}")
            continue
        server = next((path for prefix, path in SERVERS.items() if command.startswith(prefix)), None)
        if server is None:
            out.append(command)
            continue
        url = f"http://127.0.0.1:{_port(command)}{server}"
        out += [f"setsid {command} > server-{len(out)}.log 2>&1 &", "servers+=($!)",
                f"for i in $(seq {STARTUP_S}); do curl -sf -o /dev/null {url} && break; sleep 1; done",
                f"curl -sf -o /dev/null {url}"]
    return "\n".join(out) + "\n"


def test_readme_lists_only_commands_it_has() -> None:
    text = README.read_text()
    for prefix in NOT_RUN_HERE:
        assert prefix in text, f"NOT_RUN_HERE names {prefix!r}, which README.md no longer has"
    first_screen = text.split("---", 1)[0]
    for command in ("pip install", "perfcast predict --set m=4096", "perfcast quickstart"):
        assert command in first_screen, command


@pytest.mark.slow
def test_every_readme_command_runs_as_printed(data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "datasets").symlink_to(data_root)
    work = tmp_path / "work"
    work.mkdir()
    for name in ("configs", "examples"):
        (work / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PERFCAST_HW_SPECS")}
    env.update(PERFCAST_STORE=str(tmp_path / "store"), PERFCAST_DATA_ROOT=str(data_root), COLUMNS="160",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    outputs = []
    for i, (lang, code) in enumerate(blocks(README.read_text())):
        if lang == "python" and any(code.startswith(p) for p in NOT_RUN_HERE):
            continue
        if lang == "python":
            argv = [sys.executable, "-c", code]
        else:
            script = work / f"block{i}.sh"
            script.write_text(shell_script(code))
            argv = ["bash", str(script)]
        run = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, f"README block {i} ({lang}) failed:\n{code}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        outputs.append(run.stdout)
    text = "\n".join(outputs)
    assert "runtime_ms_lo" in text and "'in_distribution': True" in text
    assert "gpperf-cutlass" in text and "rank" in text
    assert (work / "predictions.csv").read_text().count("\n") == 3
    assert '"predictions"' in text or "runtime_ms" in text  # the served model answered the curl request
    assert "h100_sxm" in text and "assign" in text.lower()
