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
