"""Records read a DataFrame and a dict of one-row arrays alike: the features of a request match the batch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.features import GemmFeatures
from perfcast.features.records import Records


@pytest.fixture(scope="module")
def gemm(data_root: Path) -> pd.DataFrame:
    imp, data = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    unit = next(u for u in imp.units(data) if u.match("*/gemm/*/*/gemm_perf.parquet"))
    return imp.load(data, unit)["gemm"].sample(50, random_state=0).reset_index(drop=True)


def test_a_dict_row_reads_as_the_frame_row_does(gemm):
    frame = gemm.assign(m=gemm["m"].astype("Int64").astype(object), note=None)
    frame.loc[3, "m"] = pd.NA
    frame.loc[4, "dtype"] = None
    batch = Records.of(frame)
    for i in (0, 3, 4):
        one = Records({c: np.array([frame.at[i, c]], dtype=object) for c in frame.columns})
        for c in ("m", "n", "k", "runtime_ms"):
            np.testing.assert_array_equal(one.number(c), batch.number(c)[i:i + 1])
            np.testing.assert_array_equal(one.missing(c), batch.missing(c)[i:i + 1])
        for c in ("dtype", "device_id", "note"):
            assert list(one.text(c)) == list(batch.text(c)[i:i + 1])
    assert batch.missing("m")[3] and batch.text("dtype")[4] is None and batch.text("note")[0] is None
    assert Records.of(batch) is batch and len(batch) == len(frame) and batch.frame() is frame


def test_absent_columns_read_as_missing_or_default(gemm):
    r = Records.of(gemm)
    assert np.isnan(r.number("tile_m")).all() and (r.number("batch_x", 1.0) == 1.0).all()
    assert r.missing("tile_m").all() and all(v is None for v in r.text("layout"))


def test_features_of_dict_rows_equal_the_batch_features(gemm):
    t = GemmFeatures().fit(gemm)
    config = gemm[["m", "n", "k", "dtype", "device_id"]]
    batch = t.transform(config)
    for i in (0, 17, 49):
        row = {"m": np.array([float(config.at[i, "m"])]), "n": np.array([float(config.at[i, "n"])]),
               "k": np.array([float(config.at[i, "k"])]), "dtype": np.array([config.at[i, "dtype"]], dtype=object),
               "device_id": np.array([config.at[i, "device_id"]], dtype=object)}
        one = t.transform(Records(row))
        np.testing.assert_array_equal(one.to_numpy(), batch.iloc[[i]].to_numpy())
        assert list(one.columns) == list(batch.columns)


def test_unequal_columns_and_bad_input_are_refused():
    with pytest.raises(ValueError, match=r"differ in length: \[1, 2\]"):
        Records({"m": np.array([1.0]), "n": np.array([1.0, 2.0])})
    with pytest.raises(TypeError, match="either columns"):
        Records()
    with pytest.raises(TypeError, match="GemmFeatures: expected a DataFrame of gemm records, got list"):
        GemmFeatures().fit([{"m": 1}])
