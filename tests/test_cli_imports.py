"""Starting the ``perfcast`` command imports no data or model library (issues 16 and 18): every command
group is mounted at start-up, so a group that imports pandas, pydantic or MLflow at module level makes
``perfcast predict`` and ``perfcast --help`` pay for it on every call."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("numpy", "pandas", "pyarrow", "pydantic", "mlflow", "sklearn", "lightgbm", "numba", "torch")


def test_mounting_every_command_group_imports_no_heavy_library():
    script = ("import json, sys\nimport perfcast.cli.main\n"
              "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "perfcast.cli.main" in loaded
    assert not set(HEAVY) & loaded, sorted(set(HEAVY) & loaded)


def test_help_lists_every_command_group():
    out = subprocess.run([sys.executable, "-m", "perfcast.cli", "--help"], check=True, capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "200"}).stdout
    for command in ("predict", "adapt", "train", "probe", "quickstart", "data"):
        assert command in out


def test_the_readme_predict_line_answers_without_pandas():
    """A configuration given with ``--set`` is a dict request: the built-in model answers it from NumPy arrays,
    and importing pandas (with pyarrow) would be most of the command's time (benchmarks/load_speed.py)."""
    script = ("import json, sys\nfrom perfcast.cli import app\n"
              "try:\n    app(['predict', '--set', 'm=4096', '--set', 'n=4096', '--set', 'k=4096', '--set', 'dtype=bf16',"
              " '--set', 'device=h100_sxm', '--format', 'json'])\nexcept SystemExit as done:\n"
              "    assert done.code == 0, done.code\nprint(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    *printed, modules = out.stdout.strip().splitlines()
    row = json.loads("\n".join(printed))[0]
    assert row["m"] == 4096 and 0 < row["runtime_ms_lo"] < row["runtime_ms"] < row["runtime_ms_hi"]
    loaded = set(json.loads(modules))
    assert "numpy" in loaded and not {"pandas", "pyarrow"} & loaded, sorted({"pandas", "pyarrow"} & loaded)
