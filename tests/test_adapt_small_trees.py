"""The ``small_trees`` option (every shape term of an adaptation within
:data:`~perfcast.models.estimators.adapt_correction.SMALL_TREES`) and the aiconfigurator-adapt preset's settings
that offer it to the leave-one-GPU-out choice (benchmarks/ANALYSIS_adapt.md, round 13a)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from perfcast.experiments.adapt_bench import adapter_of
from perfcast.models.estimators.adapt_correction import SMALL_TREES, shape_params
from tests.test_adapt_smooth import planned_gemm_rows

PRESET = Path(__file__).resolve().parents[1] / "configs" / "aiconfigurator_adapt.toml"
#: each small-tree setting of the preset and the full setting it is a copy of
SMALL_OF = {"krige_small": "krige", "krige_phase_small": "krige_phase"}


def _options() -> dict:
    return tomllib.loads(PRESET.read_text(encoding="utf-8"))["benchmark"]["options"]


def _tree_counts(adaptation) -> list[int]:
    """Trees of every shape term the adaptation keeps (its phases' own too)."""
    texts = [adaptation.correction.shape_text, *adaptation.correction.more_shapes.values()]
    counts = [t.count("\nTree=") for t in texts if t]
    return counts + [n for own in adaptation.phases.values() for n in _tree_counts(own)]


def test_small_trees_change_only_the_tree_budget_whatever_the_mode():
    for mode in ("shape", "fine", "smooth"):
        full, small = shape_params(512, 0, mode), shape_params(512, 0, mode, small_trees=True)
        assert small["n_estimators"] == SMALL_TREES["n_estimators"] < full["n_estimators"]
        assert {k: v for k, v in small.items() if k not in SMALL_TREES} == \
               {k: v for k, v in full.items() if k not in SMALL_TREES}


def test_the_grid_offers_each_small_tree_setting_beside_its_full_one():
    """The leave-one-GPU-out grid has ``krige_small`` (and, for attention, ``krige_phase_small``): the full
    setting's every option plus ``small_trees``, after it in the grid (a tie keeps the full one), and the
    benchmark's adapter of it caps the trees while the full one's does not."""
    options = _options()
    grid = options["settings"]
    names = list(grid)
    for small, full in SMALL_OF.items():
        assert grid[small] == {**grid[full], "small_trees": True}
        assert names.index(small) > names.index(full)
        task = grid[small].get("tasks", ["gemm"])[0]
        assert adapter_of(None, grid[small], options, task, 0, None).small_trees
        assert not adapter_of(None, grid[full], options, task, 0, None).small_trees
    assert not any(c.get("small_trees") for n, c in grid.items() if n not in SMALL_OF)


def test_the_small_tree_setting_caps_the_shape_terms_on_real_rows(data_root):
    """The preset's ``krige_small`` and ``krige`` settings through the benchmark's adapter on 128 planned real
    H100 GEMMs (a small base on three other GPUs, no donors): with ``krige_small`` the guard still keeps a shape
    term and every one has at most :data:`SMALL_TREES`' trees; the full setting's has more (so the cap is what
    differs)."""
    options = _options()
    base, revealed, _ = planned_gemm_rows(data_root, ["a100_sxm", "b300_sxm", "l40s"], "h100_sxm",
                                          ["bfloat16", "fp8"], 128)
    counts = {}
    for name in ("krige_small", "krige"):
        adapter = adapter_of(base, options["settings"][name], options, "gemm", 0, None).fit(revealed)
        assert "smooth" in adapter.adaptation_.cv_error, name  # the smooth term was offered
        counts[name] = _tree_counts(adapter.adaptation_)
    assert counts["krige_small"] and max(counts["krige_small"]) <= SMALL_TREES["n_estimators"], counts
    assert counts["krige"] and max(counts["krige"]) > SMALL_TREES["n_estimators"], counts
