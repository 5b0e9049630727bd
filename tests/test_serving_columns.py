"""The output schema MLflow logs with a model names exactly what the Predictor answers, in its order."""

from __future__ import annotations

from perfcast import Predictor
from perfcast.models.outputs import answer_columns, derived_outputs


def test_logged_answer_columns_are_the_predictors_columns() -> None:
    for task, config in (("gemm", {"m": 4096, "n": 4096, "k": 4096, "dtype": "bf16", "device": "h100_sxm"}),
                         ("attention", {"phase": "prefill", "batch": 1, "heads": 32, "seq_q": 2048, "seq_kv": 2048,
                                        "head_dim": 128, "dtype": "bf16", "device": "h100_sxm"})):
        predictor = Predictor.builtin(task)
        assert answer_columns(predictor.targets) == list(predictor.predict(config)), task


def test_energy_is_derived_only_from_both_runtime_and_power() -> None:
    assert derived_outputs(["runtime_ms", "power_w"]) == ["energy_j"]
    assert derived_outputs(["runtime_ms", "power_w", "energy_j"]) == []
    assert derived_outputs(["runtime_ms"]) == []
    assert answer_columns(["runtime_ms", "power_w"])[-5:] == ["energy_j", "energy_j_lo", "energy_j_hi",
                                                              "in_distribution", "ood_reason"]
