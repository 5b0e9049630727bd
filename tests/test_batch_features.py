"""A batch's features are each row's features: the vectorised paths (one remainder for every alignment, the
dtype grouped once, the frame built column by column) give, bit for bit, what each row alone gives, on real
aiconfigurator rows of several GPUs and dtypes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.features import AttentionFeatures, GemmFeatures
from perfcast.features.gemm import ALIGNMENTS, aligned


def _rows(data_root: Path, task: str, per_unit: int) -> pd.DataFrame:
    imp, data = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    units = [u for u in imp.units(data) if f"/{task}/" in u.as_posix()][::2]
    return pd.concat([imp.load(data, u)[task].sample(per_unit, random_state=0, replace=True) for u in units],
                     ignore_index=True)


def test_alignment_flags_are_the_remainders_of_each_alignment():
    """Edge values included: fractions, negatives, subnormals, the largest exact integers, +-inf and NaN."""
    rng = np.random.default_rng(0)
    v = np.concatenate([
        np.arange(-300, 300, dtype="float64"), rng.integers(1, 2**40, 2000).astype("float64") * 8,
        rng.uniform(0, 1e6, 500), [0.5, 7.999999999999999, 8.000000000000002, 63.5, 64.0, 2.0**53, 2.0**53 - 8,
                                   2.0**60, 1e300, 5e-324, 1e-310, -0.0, np.inf, -np.inf, np.nan]])
    with np.errstate(invalid="ignore"):  # inf % a is NaN, for both
        flags = aligned(v)
        assert list(flags) == list(ALIGNMENTS)
        for a in ALIGNMENTS:
            np.testing.assert_array_equal(flags[a], (v % a == 0).astype("float64"), err_msg=f"alignment {a}")


@pytest.mark.parametrize("task, features", [("gemm", GemmFeatures), ("attention", AttentionFeatures)])
def test_a_batch_gets_each_rows_own_features_bit_for_bit(task, features, data_root):
    records = _rows(data_root, task, 40)
    assert records["device_id"].nunique() >= 3 and records["dtype"].nunique() >= 2
    f = features().fit(records)
    batch = f.transform(records)
    alone = pd.concat([f.transform(records.iloc[[i]]) for i in range(0, len(records), 7)])
    assert list(batch.columns) == list(f.get_feature_names_out())
    np.testing.assert_array_equal(batch.iloc[::7].to_numpy().view(np.uint64), alone.to_numpy().view(np.uint64))
