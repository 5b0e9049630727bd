"""Hardware novelty on real spec sheets and processors: seen hardware is at 0, siblings are near, outliers far."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfcast.datasets.importers import get_importer
from perfcast.features import feature_transformer
from perfcast.models.uncertainty.novelty import HardwareNovelty, hardware_columns


@pytest.fixture(scope="module")
def gpus(data_root: Path) -> pd.DataFrame:
    """Gemm features of 40 bf16 GEMMs on each of aiconfigurator's 8 GPUs (TensorRT-LLM; vLLM on the B60)."""
    imp = get_importer("aiconfigurator")
    root = data_root / "aiconfigurator"
    units = [u for u in imp.units(root) if "/gemm/" in u.as_posix() and "sglang" not in u.as_posix()]
    df = pd.concat([imp.load(root, u)["gemm"] for u in units], ignore_index=True)
    df = df[df["dtype"] == "bfloat16"].groupby("device_id").sample(n=40, random_state=0).reset_index(drop=True)
    F = feature_transformer("gemm").fit(df).transform(df).reset_index(drop=True)
    return F.assign(device_id=df["device_id"].astype(str).to_numpy())


def _distance(F: pd.DataFrame, dev: str) -> float:
    """Distance of ``dev`` to the nearest of the other GPUs (novelty fitted on all, measured among the others)."""
    nov = HardwareNovelty.fit(F, hardware_columns("gemm"))
    held = F["device_id"] == dev
    d = nov.distance(F[held], among=F[~held])
    assert np.ptp(d) == pytest.approx(0.0)          # bf16 rows of one device share one description
    return float(d[0])


def test_seen_hardware_is_at_zero_and_siblings_are_nearer_than_outliers(gpus):
    nov = HardwareNovelty.fit(gpus, hardware_columns("gemm"))
    assert (nov.distance(gpus) == 0).all()
    assert len(nov.reference) == gpus["device_id"].nunique()
    gb300, b300, b60 = (_distance(gpus, d) for d in ("gb300", "b300_sxm", "b60"))
    # B300 / GB200 / GB300 are near-copies; the Intel B60 is unlike every NVIDIA part
    assert 0 < gb300 < 1.0 and 0 < b300 < 1.0
    assert b60 > 2 * max(gb300, b300)


def test_round_trip_and_bad_input(gpus):
    nov = HardwareNovelty.fit(gpus, hardware_columns("gemm"))
    back = HardwareNovelty.from_json(nov.to_json())
    moved = gpus.assign(mem_bw_gbs=gpus["mem_bw_gbs"] * 1.5)        # same GPUs with faster memory
    assert np.allclose(back.distance(moved), nov.distance(moved)) and (nov.distance(moved) > 0).all()
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['mem_bw_gbs'\]"):
        nov.distance(gpus.drop(columns="mem_bw_gbs"))
    with pytest.raises(ValueError, match="no hardware description for task 'vision'"):
        hardware_columns("vision")


def test_processors_of_a_new_year_are_further_than_seen_ones(data_root):
    """SPEC CPU2017: rows of processors already published are at 0, new processors further away."""
    imp = get_importer("spec-cpu2017")
    root = data_root / "spec-cpu2017"
    df = pd.concat([imp.load(root, u)["cpu_bench"] for u in imp.units(root)], ignore_index=True)
    df = df[df["variant"] == "base"].sample(4000, random_state=0).reset_index(drop=True)
    year = pd.to_datetime(df["published_at"], utc=True).dt.year
    F = feature_transformer("cpu_bench").fit(df).transform(df).reset_index(drop=True)
    old, new = (year < 2023).to_numpy(), (year >= 2023).to_numpy()
    d = HardwareNovelty.fit(F[old], hardware_columns("cpu_bench")).distance(F[new])
    known = df.loc[new, "device_name"].isin(set(df.loc[old, "device_name"])).to_numpy()
    assert np.median(d[~known]) > np.median(d[known]) >= 0
