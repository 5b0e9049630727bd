"""A probed machine's spec sheet (perfcast.perf_probe.peaks) from GEMMs this machine measures in the test."""

from __future__ import annotations

import pytest

from perfcast.records.store import RecordStore
from perfcast.perf_probe.gemm import GemmProbe, gemm_flops
from perfcast.perf_probe.peaks import probed_spec
from perfcast.perf_probe.sweep import run_sweep

FAST = {"max_time_s": 0.05, "warmup_s": 0.01}


def config(m: int, n: int, k: int) -> dict:
    return {"op": "matmul", "m": m, "n": n, "k": k, "batch": 1, "dtype": "float32", "layout": "nn",
            "backend": "torch", "device": "cpu", "n_threads": 1}


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[RecordStore, str, list[dict]]:
    store = RecordStore(tmp_path_factory.mktemp("peaks") / "store")
    configs = [config(8, 8, 8), config(96, 96, 96), config(160, 128, 96)]
    res = run_sweep(GemmProbe(devices=("cpu",), **FAST), store, configs=configs, progress=False)
    assert res.measured == 3
    return store, res.hw_ids.pop(), configs


def test_the_sheet_drawn_from_chosen_configurations_ignores_the_machine_s_other_gemms(measured) -> None:
    store, hw_id, configs = measured
    rows = store.read("gemm", filters={"hw_id": hw_id}).set_index("params_json")
    tflops = {key: gemm_flops(c["m"], c["n"], c["k"], 1) / rows.loc[key, "runtime_min_ms"] / 1e9
              for key, c in ((GemmProbe.key(c), c) for c in configs)}
    everything = probed_spec(store, hw_id, timing="runtime_min_ms")
    assert everything["peak_tflops_fp32"] == pytest.approx(max(tflops.values()), abs=1e-6)  # the sheet keeps 6 decimals
    tiny = GemmProbe.key(configs[0])  # the slowest rate: call overhead, not the machine's peak
    chosen = probed_spec(store, hw_id, timing="runtime_min_ms", keys={tiny})
    assert chosen["peak_tflops_fp32"] == pytest.approx(tflops[tiny], abs=1e-6)
    assert chosen["peak_tflops_fp32"] < everything["peak_tflops_fp32"]
    assert chosen["device_name"] == everything["device_name"]


def test_configurations_the_store_never_measured_are_refused_by_count(measured) -> None:
    store, hw_id, _ = measured
    with pytest.raises(ValueError, match="no probe GEMM records of the 1 configurations asked for"):
        probed_spec(store, hw_id, keys={GemmProbe.key(config(7, 7, 7))})
