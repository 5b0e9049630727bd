"""Shared fixtures: where the real public datasets live (beside the checkout, as in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared datasets directory; tests that need it fail loudly (not skip) if it is absent."""
    assert DATA_ROOT.is_dir(), f"shared datasets not found at {DATA_ROOT}"
    return DATA_ROOT


@pytest.fixture()
def store(tmp_path: Path):
    """An empty record store in a temporary directory."""
    from perfcast.datasets.store import RecordStore

    return RecordStore(tmp_path / "store")
