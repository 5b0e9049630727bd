"""Out-of-distribution flags on real data: sizes beyond training, unseen dtypes, devices outside the spec hull."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.eval.protocols import neusight_ood_split
from perfcast.features import GemmFeatures
from perfcast.models.uncertainty.domain import DomainGuard


def _gemm(root: Path, dataset: str, keep, n: int) -> pd.DataFrame:
    imp = get_importer(dataset)
    frames = [imp.load(root / dataset, u)["gemm"] for u in imp.units(root / dataset) if keep(u)]
    return pd.concat([f.sample(min(n, len(f)), random_state=0) for f in frames], ignore_index=True)


@pytest.fixture(scope="module")
def neusight(data_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NeuSight bmm: small training shapes on five GPUs; large test shapes on the unseen A100 80GB PCIe."""
    return neusight_ood_split(_gemm(data_root, "neusight", lambda u: "bmm" in u.as_posix(), 800))


@pytest.fixture(scope="module")
def aic(data_root: Path) -> pd.DataFrame:
    """aiconfigurator GEMMs (bf16, fp8, ...) on every GPU of the copy."""
    return _gemm(data_root, "aiconfigurator",
                 lambda u: "/gemm/" in u.as_posix() and "sglang" not in u.as_posix(), 3000)


def _guard(train: pd.DataFrame) -> tuple[DomainGuard, GemmFeatures]:
    features = GemmFeatures().fit(train)
    return DomainGuard("gemm").fit(train, features.transform(train)), features


def test_training_rows_are_in_distribution_and_larger_unseen_gpu_rows_are_not(neusight):
    train, test = neusight
    guard, features = _guard(train)
    ok, reasons = guard.check(train, features.transform(train))
    assert ok.all() and set(reasons) == {""}
    ok, reasons = guard.check(test, features.transform(test))
    assert len(reasons) == len(test) and (~ok).mean() > 0.5        # NeuSight tests on far larger shapes
    assert all(r == "" for r, good in zip(reasons, ok, strict=True) if good) and all(r for r, good in zip(reasons, ok, strict=True) if not good)
    m_max = guard.sizes["m"][1]
    big = (test["m"] > m_max).to_numpy()
    assert big.any() and not ok[big].any()
    first = int(np.flatnonzero(big)[0])
    assert f"m={test['m'].iloc[first]:g} above training max {m_max:g}" in reasons[first]
    # the A100 80GB PCIe has more bandwidth than any trained GPU (the A100 40GB's 1555 GB/s)
    assert all("device 'a100_pcie' spec outside the training hull: mem_bw_gbs 1935 > max 1555" in r for r in reasons)


def test_unseen_gpu_inside_the_hull_is_in_distribution_but_outside_and_unseen_dtypes_are_not(aic):
    bf16 = aic[aic["dtype"] == "bfloat16"]
    train = bf16[bf16["device_id"].isin(["a100_sxm", "h100_sxm", "b300_sxm"])].reset_index(drop=True)
    guard, features = _guard(train)
    assert guard.devices == ["a100_sxm", "b300_sxm", "h100_sxm"] and guard.categories["dtype"] == ["bf16"]

    # the H100's configurations asked of an H200 (known only by its spec sheet, which lies inside the box)
    h200 = train[train["device_id"] == "h100_sxm"].assign(device_id="h200_sxm", device_name="NVIDIA H200")
    ok, reasons = guard.check(h200, features.transform(h200))
    assert len(h200) > 100 and ok.all(), reasons[0]
    gb200 = bf16[bf16["device_id"] == "gb200"].head(20)          # its 1200 W board limit is above any trained
    ok, reasons = guard.check(gb200, features.transform(gb200))
    assert not ok.any() and all("device 'gb200' spec outside the training hull: tdp_w 1200 > max 1100" in r
                                for r in reasons)

    b60 = bf16[bf16["device_id"] == "b60"].head(50)
    ok, reasons = guard.check(b60, features.transform(b60))
    assert not ok.any()
    assert all("device 'b60' spec outside the training hull: mem_bw_gbs 456 < min 2039" in r for r in reasons)

    fp8 = aic[(aic["dtype"] == "fp8") & (aic["device_id"] == "h100_sxm")].head(20)
    ok, reasons = guard.check(fp8, features.transform(fp8))
    assert not ok.any() and all("dtype 'fp8' never seen in training (seen: bf16)" in r for r in reasons)


def test_an_unseen_dtype_is_predicted_as_its_seen_stand_in_and_still_flagged(aic):
    """A model that saw bf16 but no fp16: its fp16 rows are featurised as bf16 (same width, same tensor cores),
    flagged out of distribution with the stand-in named; fp8 has no stand-in and keeps its own features."""
    train = aic[(aic["dtype"] == "bfloat16") & aic["device_id"].isin(["a100_sxm", "h100_sxm"])].reset_index(drop=True)
    guard, features = _guard(train)
    rows = train.head(4).assign(dtype=["float16", "bf16", "fp8", "half"])
    swapped = guard.stand_in(rows)
    assert list(swapped.text("dtype")) == ["bf16", "bf16", "fp8", "bf16"]
    assert list(rows["dtype"]) == ["float16", "bf16", "fp8", "half"]  # the caller's records are not changed
    F = features.transform(swapped.frame())
    assert F.iloc[0].equals(features.transform(train.head(1)).iloc[0])  # exactly the bf16 row's features
    ok, reasons = guard.check(rows, F)
    assert ok.tolist() == [False, True, False, False]
    assert reasons[0] == ("dtype 'float16' never seen in training (seen: bf16); predicted as bf16 (the same width, "
                          "run at the same rate)")
    assert "predicted as" not in reasons[2]
    assert guard.stand_in(train.head(3)).text("dtype").tolist() == train.head(3)["dtype"].tolist()  # nothing unseen
    both = DomainGuard("gemm").fit(rows, features.transform(rows))  # a model that saw fp16: no stand-in
    assert both.stand_in(rows).text("dtype").tolist() == rows["dtype"].tolist()


def test_several_reasons_are_joined_and_missing_values_are_not_flagged(neusight):
    train, _ = neusight
    guard, features = _guard(train)
    row = train.head(3).copy()
    row["m"] = [1e6, row["m"].iloc[1], row["m"].iloc[2]]
    row["dtype"] = ["fp16", "fp16", row["dtype"].iloc[2]]
    row["batch"] = [row["batch"].iloc[0], np.nan, row["batch"].iloc[2]]
    ok, reasons = guard.check(row, features.transform(row))
    assert ok.tolist() == [False, False, True]
    first = reasons[0].split("; ")
    assert first[0] == f"m=1e+06 above training max {guard.sizes['m'][1]:g}"
    assert first[1] == "dtype 'fp16' never seen in training (seen: fp32)"
    assert "batch" not in reasons[1]


def test_state_is_plain_json_and_round_trips(neusight):
    train, test = neusight
    guard, features = _guard(train)
    doc = json.loads(json.dumps(guard.to_json()))
    again = DomainGuard.from_json(doc)
    F = features.transform(test)
    a, b = guard.check(test, F), again.check(test, F)
    assert (a[0] == b[0]).all() and a[1] == b[1]
