"""A few requests look their sibling residuals up device by device in the sorted tables a bundle stores, instead
of building the residual matrix a fresh process would pay for first (issues 16 and 18): the same numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfcast.builtin import bundle_path
from perfcast.models.estimators.transfer import FEW_KEYS, SiblingTransfer
from perfcast.models.persistence.bundle import PerfcastModel


def _transfer(task: str) -> SiblingTransfer:
    (head,) = PerfcastModel.load(bundle_path(task)).heads
    assert isinstance(head, SiblingTransfer)
    return head


def _matrix_lookup(t: SiblingTransfer, keys: np.ndarray) -> np.ndarray:
    configs, table = t._residual_matrix()
    at = np.minimum(np.searchsorted(configs, keys), len(configs) - 1)
    return np.where((configs[at] == keys)[:, None], table[at], np.nan)


@pytest.mark.parametrize("task", ["gemm", "attention"])
def test_shipped_tables_are_sorted_and_a_few_keys_read_what_the_matrix_holds(task: str) -> None:
    t = _transfer(task)
    assert t._sorted_runs() is not None  # the bundle stores each device's table sorted
    rng = np.random.default_rng(0)
    known = np.concatenate([t.residuals_[d].index.to_numpy(dtype=np.uint64) for d in t.devices_])
    for _ in range(20):
        keys = np.concatenate([rng.choice(known, rng.integers(0, FEW_KEYS)),
                               rng.integers(0, 2**63, 1, dtype=np.uint64)])[:FEW_KEYS]
        np.testing.assert_array_equal(t._residuals_at(keys), _matrix_lookup(t, keys))
    many = rng.choice(known, FEW_KEYS + 1)
    np.testing.assert_array_equal(t._residuals_at(many), _matrix_lookup(t, many))


def test_an_unsorted_table_falls_back_to_the_matrix() -> None:
    t = _transfer("gemm")
    t.residuals_ = {d: s.iloc[::-1] for d, s in t.residuals_.items()}  # as bundles written before sorting
    assert t._sorted_runs() is None
    keys = t.residuals_[t.devices_[0]].index.to_numpy(dtype=np.uint64)[:5]
    got = t._residuals_at(keys)
    assert np.isfinite(got[:, 0]).all()
    np.testing.assert_array_equal(got, _matrix_lookup(t, keys))
    saved, arrays = t.to_state()
    again = SiblingTransfer.from_state(saved, arrays)
    assert again._sorted_runs() is not None  # saving sorts the tables again
    assert all(pd.Series.equals(again.residuals_[d].sort_index(), t.residuals_[d].sort_index()) for d in t.devices_)


@pytest.mark.parametrize("task", ["gemm", "attention"])
def test_one_keys_residuals_read_with_or_without_the_numba_kernels_are_the_matrix_row(task: str, monkeypatch) -> None:
    """A request's one key is looked up with ``searchsorted`` per device before the process loads the Numba
    kernels and with one kernel call after: both give the matrix's row (measured keys, the first and last of
    each device's run, and keys no device measured)."""
    import perfcast.models.estimators.transfer as transfer
    import perfcast.models.persistence.kernels  # noqa: F401 - the kernels loaded, as a long-lived process has them

    t = _transfer(task)
    runs = t._sorted_runs()
    rng = np.random.default_rng(1)
    known = np.concatenate([k for k, _ in runs])
    edges = np.concatenate([[k[0], k[-1]] for k, _ in runs if len(k)])
    keys = np.concatenate([rng.choice(known, 30), edges, rng.integers(0, 2**63, 5, dtype=np.uint64),
                           np.asarray([0, 2**64 - 1], dtype=np.uint64)])
    with_kernels = [t._residual_row(np.uint64(k), runs) for k in keys]
    monkeypatch.setattr(transfer, "KERNELS", "perfcast.not_loaded")
    without = [t._residual_row(np.uint64(k), runs) for k in keys]
    want = _matrix_lookup(t, keys)
    np.testing.assert_array_equal(np.asarray(with_kernels), want)
    np.testing.assert_array_equal(np.asarray(without), want)
    assert np.isfinite(want[:30]).any(axis=1).all() and np.isnan(want[-2:]).all()
