"""The ``grow_trees`` option (every shape term's tree budget grows with the rows it is fitted on,
:func:`~perfcast.models.estimators.adapt_correction.tree_budget`) and the aiconfigurator-adapt preset's settings
that offer it to the leave-one-GPU-out choice (benchmarks/ANALYSIS_adapt.md, round 14a)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from perfcast.experiments.adapt_bench import adapter_of
from perfcast.models.estimators.adapt_correction import GROW_ROWS, SMALL_TREES, shape_params
from tests.test_adapt_smooth import planned_gemm_rows

PRESET = Path(__file__).resolve().parents[1] / "configs" / "aiconfigurator_adapt.toml"
#: each growing-budget setting of the preset and the full setting it is a copy of (GEMM only: round 14a)
GROW_OF = {"krige_grow": "krige"}


def _options() -> dict:
    return tomllib.loads(PRESET.read_text(encoding="utf-8"))["benchmark"]["options"]


def _tree_counts(adaptation) -> list[int]:
    """Trees of every shape term the adaptation keeps (its phases' own too)."""
    texts = [adaptation.correction.shape_text, *adaptation.correction.more_shapes.values()]
    counts = [t.count("\nTree=") for t in texts if t]
    return counts + [n for own in adaptation.phases.values() for n in _tree_counts(own)]


def test_the_budget_grows_from_the_small_one_to_the_full_one_and_changes_nothing_else():
    low, high = GROW_ROWS
    for mode in ("shape", "fine", "smooth"):
        full = shape_params(high, 0, mode)
        trees = [shape_params(n, 0, mode, grow_trees=True)["n_estimators"] for n in (low // 2, low, 64, 100, high)]
        assert trees[:2] == [SMALL_TREES["n_estimators"]] * 2, (mode, trees)
        assert trees[1] < trees[2] < trees[3] < trees[4] == full["n_estimators"], (mode, trees)
        rates = [shape_params(n, 0, mode, grow_trees=True)["learning_rate"] for n in (low, 64, 10 * high)]
        assert rates[0] == SMALL_TREES["learning_rate"] > rates[1] > rates[2] == full["learning_rate"], (mode, rates)
        assert shape_params(10 * high, 0, mode, grow_trees=True) == shape_params(10 * high, 0, mode)
        grown = shape_params(64, 0, mode, grow_trees=True)
        assert {k: v for k, v in grown.items() if k not in SMALL_TREES} == \
               {k: v for k, v in shape_params(64, 0, mode).items() if k not in SMALL_TREES}


def test_the_grid_offers_each_growing_setting_after_its_full_one():
    """The leave-one-GPU-out grid has ``krige_grow``: the full setting's every option plus ``grow_trees``, for
    GEMM only (its attention copies failed round 14a's criterion), after it in the grid (a tie keeps the full one),
    and the benchmark's adapter of it grows the budget while the full one's does not."""
    options = _options()
    grid = options["settings"]
    names = list(grid)
    for grow, full in GROW_OF.items():
        assert grid[grow] == {**grid[full], "grow_trees": True, "tasks": ["gemm"]}
        assert names.index(grow) > names.index(full)
        assert adapter_of(None, grid[grow], options, "gemm", 0, None).grow_trees
        assert not adapter_of(None, grid[full], options, "gemm", 0, None).grow_trees
    assert not any(c.get("grow_trees") for n, c in grid.items() if n not in GROW_OF)


def test_few_real_rows_get_the_small_budget_and_many_the_full_one(data_root):
    """The preset's ``krige_grow`` through the benchmark's adapter on planned real H100 GEMMs (a small base on three
    other GPUs, no donors): on 32 rows the guard still keeps a shape term and every one has the small budget's
    trees; on 160 rows (past the full budget's rows) every shape term has as many trees as ``krige``'s."""
    options = _options()
    counts = {}
    for k in (GROW_ROWS[0], 160):
        base, revealed, _ = planned_gemm_rows(data_root, ["a100_sxm", "b300_sxm", "l40s"], "h100_sxm",
                                              ["bfloat16", "fp8"], k)
        for name in ("krige_grow", "krige"):
            adapter = adapter_of(base, options["settings"][name], options, "gemm", 0, None).fit(revealed)
            assert "smooth" in adapter.adaptation_.cv_error, name  # the smooth term was offered
            counts[name, k] = _tree_counts(adapter.adaptation_)
    assert counts["krige_grow", GROW_ROWS[0]], counts
    assert set(counts["krige_grow", GROW_ROWS[0]]) == {SMALL_TREES["n_estimators"]}, counts
    assert max(counts["krige", GROW_ROWS[0]]) > SMALL_TREES["n_estimators"], counts
    assert counts["krige_grow", 160] == counts["krige", 160], counts
