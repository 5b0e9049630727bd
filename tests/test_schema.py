"""Schema validation: every problem reported with row and column; canonical dtypes; stable ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perfcast.records.schema import (
    SchemaError,
    columns,
    hardware_ids,
    record_ids,
    validate,
)


def _gemm(**over: object) -> pd.DataFrame:
    base = {
        "source": ["probe", "probe"], "device_name": ["cpu a", "cpu a"], "device_kind": ["cpu", "cpu"],
        "op": ["matmul", "matmul"], "m": [64, 128], "n": [64, 128], "k": [64, 128], "batch": [1, 1],
        "dtype": ["float32", "float32"], "runtime_ms": [0.1, 0.5],
    }
    base.update(over)
    df = pd.DataFrame(base)
    df["hw_id"] = hardware_ids(df)
    return df


def test_valid_batch_gets_canonical_dtypes_and_ids() -> None:
    out = validate(_gemm(), "gemm")
    assert list(out.columns[: len(columns("gemm"))]) == list(columns("gemm"))
    assert str(out["m"].dtype) == "Int64" and out["runtime_ms"].dtype == np.float64
    assert out["record_id"].notna().all() and out["record_id"].nunique() == 2
    assert out["power_w"].isna().all()  # not measured stays missing


def test_every_problem_is_reported_with_row_and_column() -> None:
    df = _gemm(m=[64, -4], n=[64, "abc"], k=[64, 3.5], dtype=["float32", None], runtime_ms=[0.0, 1.0])
    with pytest.raises(SchemaError) as ei:
        validate(df, "gemm")
    msg = str(ei.value)
    for expected in (
        "row 1: m=-4, must be a positive integer",
        "row 1: n='abc', cannot be read as int",
        "row 1: k=3.5, must be an integer",
        "row 1: dtype is missing, it is required",
        "row 0: runtime_ms=0, must be a positive number (a missing measurement is NaN, never 0)",
    ):
        assert expected in msg, msg
    assert len(ei.value.problems) == 5


def test_unknown_columns_rejected_unless_extra_prefixed() -> None:
    with pytest.raises(SchemaError, match="unknown column.*'bogus'.*prefix with 'x_'"):
        validate(_gemm(bogus=[1, 2]), "gemm")
    out = validate(_gemm(x_kernel_regs=[32, 64]), "gemm")
    assert list(out["x_kernel_regs"]) == [32, 64]


def test_choices_and_unknown_task() -> None:
    with pytest.raises(SchemaError, match="device_kind='tpu', must be one of"):
        validate(_gemm(device_kind=["cpu", "tpu"]), "gemm")
    with pytest.raises(ValueError, match="unknown task 'gemmm'"):
        validate(_gemm(), "gemmm")


def test_record_id_is_content_hash() -> None:
    a = validate(_gemm(), "gemm")
    b = validate(_gemm(), "gemm")
    assert list(a["record_id"]) == list(b["record_id"])
    c = validate(_gemm(runtime_ms=[0.1, 0.6]), "gemm")
    assert a["record_id"][0] == c["record_id"][0] and a["record_id"][1] != c["record_id"][1]
    # column order does not matter
    assert list(record_ids(a[a.columns[::-1]])) == list(a["record_id"])


def test_hardware_ids_ignore_config_and_differ_by_hardware() -> None:
    df = _gemm()
    assert df["hw_id"].nunique() == 1
    other = _gemm(device_name=["cpu a", "cpu b"])
    assert other["hw_id"].nunique() == 2
