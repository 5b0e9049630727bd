"""The accuracy report's header names the library versions and thread counts the numbers were measured with."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_header_names_every_numeric_library_version_and_the_thread_pools():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import accuracy
    import numpy  # noqa: F401  (loads the BLAS pool the header must report)

    head = accuracy.header(["--protocol", "aiconfigurator-adapt"], 1.0)
    line = next(x for x in head.splitlines() if x.startswith("- libraries: "))
    for name in accuracy.NUMERIC_LIBRARIES:
        try:
            expected = f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            expected = f"{name} not installed"
        assert expected in line
    assert re.search(r"; threads: .*\bblas \S+[^,]*: \d+", line), line
