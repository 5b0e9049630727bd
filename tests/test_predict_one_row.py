"""One configuration as a dict is predicted on a path of its own (NumPy feature rows, no DataFrame: pandas' fixed
costs are most of a small request); it must give the DataFrame path's answer in every bit, for a one-row frame and
for one batch of all the configurations: value, interval bounds, OOD flag and reason. Checked on real
aiconfigurator GEMM and attention configurations on several GPUs and dtypes, out-of-distribution ones included,
with the built-in models and an adapted bundle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from perfcast import Predictor
from perfcast.datasets.importers import get_importer
from perfcast.models.persistence.adapted import save_adapted
from tests.test_adapt_donors import adapted as donor_adapted, gemm  # noqa: F401  (fixtures: a donor-adapted model)

GEMM_KEYS = ["m", "n", "k", "dtype", "device_id"]
ATTENTION_KEYS = ["phase", "batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "dtype", "kv_dtype",
                  "device_id"]
#: GPUs the real configurations come from, and one with a spec sheet that no built-in model measured
DEVICES = ["h100_sxm", "l40s", "gb200"]
UNSEEN = "mi250"


def _real(root: Path, kind: str, keys: list[str], per_group: int) -> pd.DataFrame:
    """``per_group`` real rows of each (device, dtype) of aiconfigurator's ``kind`` tables on :data:`DEVICES`."""
    imp, data = get_importer("aiconfigurator"), root / "aiconfigurator"
    units = [u for u in imp.units(data) if f"/{kind}/" in u.as_posix() and u.parts[-5] in DEVICES]
    df = pd.concat([imp.load(data, u)[kind] for u in units], ignore_index=True)
    return df.groupby(["device_id", "dtype"]).sample(n=per_group, random_state=0)[keys + ["runtime_ms"]]


def _configs(rows: pd.DataFrame, keys: list[str], size: str) -> list[dict[str, Any]]:
    """The rows as requests (missing fields left out), plus out-of-distribution ones: an unmeasured GPU and a
    size far beyond every training row."""
    configs = [{k: v for k, v in c.items() if not pd.isna(v)} for c in rows[keys].to_dict("records")]
    return configs + [{**configs[0], "device_id": UNSEEN}, {**configs[1], size: 2 ** 40}]


def _bits(v: Any) -> Any:
    return np.float64(v).view(np.uint64) if isinstance(v, float) else v


def assert_same_as_frame(p: Predictor, configs: list[dict[str, Any]]) -> None:
    """Each config's one-row answer equals, in every bit, its row of a one-row frame and of one batch of all."""
    flagged = 0
    batch = p.predict(pd.DataFrame(configs))
    for i, config in enumerate(configs):
        assert p._one_row(config)[1], f"{config} did not take the one-row path"  # the check compares two paths
        one = p.predict(config)
        for ref in (p.predict(pd.DataFrame([config])).iloc[0].to_dict(), batch.iloc[i].to_dict()):
            assert list(one) == list(ref)
            assert {k: _bits(v) for k, v in one.items()} == {k: _bits(v) for k, v in ref.items()}, config
        flagged += not one["in_distribution"]
    assert flagged >= 2  # the unmeasured GPU and the huge size at least


@pytest.fixture(scope="module")
def gemm_rows(data_root: Path) -> pd.DataFrame:
    return _real(data_root, "gemm", GEMM_KEYS, per_group=4)


def test_gemm_one_row_path_equals_the_frame_path_in_every_bit(gemm_rows):
    assert gemm_rows["dtype"].nunique() >= 3 and gemm_rows["device_id"].nunique() == len(DEVICES)
    assert_same_as_frame(Predictor.builtin("gemm"), _configs(gemm_rows, GEMM_KEYS, "m"))


def test_attention_one_row_path_equals_the_frame_path_in_every_bit(data_root):
    rows = _real(data_root, "attention", ATTENTION_KEYS, per_group=6)
    assert set(rows["phase"]) == {"prefill", "decode"}
    assert_same_as_frame(Predictor.builtin("attention"), _configs(rows, ATTENTION_KEYS, "seq_kv"))


def test_an_adapted_bundle_one_row_path_equals_the_frame_path(data_root, gemm_rows, tmp_path):
    measured = _real(data_root, "gemm", GEMM_KEYS, per_group=30).query("device_id == 'l40s'")  # the L40S's rows
    adapted = Predictor.load(save_adapted(Predictor.builtin("gemm").adapt(measured).model, tmp_path / "adapted"))
    assert adapted.metadata["adaptation"]["base_model"]
    assert_same_as_frame(adapted, _configs(gemm_rows, GEMM_KEYS, "m"))


def test_a_donor_adapted_bundle_one_row_path_equals_the_frame_path(donor_adapted, tmp_path):
    """An adapted bundle whose correction reads donors' measurements (the donor tables take a frame of the row)."""
    _, model, _, unrevealed = donor_adapted
    loaded = Predictor.load(save_adapted(model.model, tmp_path / "adapted"))
    assert loaded.model.heads[0].donors is not None
    assert_same_as_frame(loaded, _configs(unrevealed.head(24), GEMM_KEYS, "m"))


def test_a_requests_configuration_key_is_pandas_row_hash(gemm_rows):
    """The sibling table is looked up by pandas' row hash; a request computes it in Python integers."""
    from perfcast.models.estimators.transfer import hash_rows

    p = Predictor.builtin("gemm")
    F = p.model.features.transform(p._records(gemm_rows[GEMM_KEYS].reset_index(drop=True)))
    cols = p.model.heads[0].config_columns
    want = pd.util.hash_pandas_object(F[cols], index=False).to_numpy()
    A = F[cols].to_numpy(dtype="float64")
    assert np.array_equal(hash_rows(A), want)
    assert [int(hash_rows(A[i:i + 1])[0]) for i in range(len(A))] == want.tolist()


@pytest.mark.parametrize("kernels", [False, True], ids=["python", "numba"])
def test_one_rows_key_in_python_integers_is_pandas_hash_at_nan_signed_zero_and_infinity(gemm_rows, kernels,
                                                                                         monkeypatch):
    """A one-row key is hashed value by value in Python integers, or by one Numba call once the process has the
    kernels; pandas canonicalises NaN (any payload or sign) and -0.0 before mixing, so those and the infinities
    must hash as pandas hashes them too, on both paths."""
    import perfcast.models.persistence.kernels as compiled_kernels
    from perfcast.models.estimators.transfer import hash_rows

    if not kernels:
        monkeypatch.delitem(sys.modules, compiled_kernels.__name__)

    p = Predictor.builtin("gemm")
    F = p.model.features.transform(p._records(gemm_rows[GEMM_KEYS].reset_index(drop=True)))
    A = F[p.model.heads[0].config_columns].to_numpy(dtype="float64")[:6].copy()
    odd_nan = np.array([0x7FF8000000000001 | (1 << 63)], dtype=np.uint64).view(np.float64)[0]
    signalling = np.array([0x7FF0000000000001], dtype=np.uint64).view(np.float64)[0]
    A[1, 0], A[2, -1], A[3, 1], A[4, 0], A[5, :] = np.nan, -0.0, np.inf, odd_nan, -np.inf
    A[0, 2], A[3, 0] = signalling, 5e-324
    want = pd.util.hash_pandas_object(pd.DataFrame(A), index=False).to_numpy()
    assert [int(hash_rows(A[i:i + 1])[0]) for i in range(len(A))] == want.tolist()
    assert len(set(want.tolist())) == len(A)


def test_a_request_at_and_past_every_domain_edge_gets_the_frame_paths_flag_and_reason(gemm_rows):
    """A request found in distribution skips the guard's general path (Python comparisons and memos): at and
    just past each size's training range, an unseen dtype and work below the training minimum, its flag and
    reason must still be the DataFrame path's."""
    p = Predictor.builtin("gemm")
    guard = p.model.domain
    base = _configs(gemm_rows, GEMM_KEYS, "m")[0]
    edges = []
    for c in ("m", "n", "k"):
        lo, hi = guard.sizes[c]
        edges += [{**base, c: hi}, {**base, c: hi + 1}, {**base, c: lo}, {**base, c: lo * 0.5}]
    unseen = next(d for d in ("fp64", "tf32", "fp16", "int8") if d not in guard.categories["dtype"])
    tiny = next(s for s in range(2, 64) if np.log10(2.0 * s ** 3) > guard.hardware["log10_flops"][0])
    edges += [{**base, "dtype": unseen}, {**base, "m": tiny, "n": tiny, "k": tiny},
              {**base, "m": tiny - 1, "n": tiny - 1, "k": tiny - 1}]
    for _ in range(2):  # the second pass finds every device and value in the guard's memos
        assert_same_as_frame(p, edges)
    flags = [p.predict(c)["in_distribution"] for c in edges]
    assert flags.count(True) >= 6 and flags.count(False) >= 7, flags


def test_a_requests_alignment_flags_are_the_batchs(gemm_rows):
    """A request's m/n/k alignment flags are computed in Python floats; they must be the batch's, at and beside
    every multiple (and on the real sizes)."""
    from perfcast.features.gemm import aligned

    real = gemm_rows[["m", "n", "k"]].to_numpy(dtype="float64").ravel()
    edges = np.asarray([a * j + d for a in (8, 64, 128) for j in (1, 2, 3, 1000, 2**40) for d in (-1, -0.5, 0, 0.5, 1)])
    values = np.concatenate([real, edges, [1.0, 2.0 ** 53, 2.0 ** 53 - 1, np.inf, np.nan]])
    with np.errstate(invalid="ignore"):
        batch = aligned(np.stack([values, values[::-1], values * 2]))
    for i in range(len(values)):
        one = aligned(np.stack([values[i:i + 1], values[::-1][i:i + 1], values[i:i + 1] * 2]))
        for a, flags in batch.items():
            np.testing.assert_array_equal(one[a][:, 0], flags[:, i])
    assert batch[128][0].sum() > 0 and batch[8][0].sum() < len(values)
    from perfcast.features.gemm import align_columns

    with np.errstate(invalid="ignore"):
        columns = align_columns(values, values[::-1], values * 2)
    for i in range(len(values)):
        one = align_columns(values[i:i + 1], values[::-1][i:i + 1], values[i:i + 1] * 2)
        assert list(one) == list(columns)
        for name, flags in columns.items():
            np.testing.assert_array_equal(one[name], flags[i:i + 1])


def test_a_requests_attended_pairs_are_the_batchs(data_root):
    """A request's (query, key) pair count takes its branch in Python floats; it must be the batch's, for real
    attention shapes with and without a causal mask and sliding windows below, inside and above the ranges."""
    from perfcast.features.attention import attended_pairs

    rows = _real(data_root, "attention", ATTENTION_KEYS, per_group=6)
    seq_q = rows["seq_q"].to_numpy(dtype="float64")
    seq_kv = rows["seq_kv"].to_numpy(dtype="float64")
    n = len(seq_q)
    for window in (0.0, 1.0, 7.0, 129.0, 4096.0, float(2**40), np.nan):
        for causal in (np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.arange(n) % 2 == 0):
            w = np.full(n, window)
            batch = attended_pairs(seq_q, seq_kv, causal, w)
            one = [attended_pairs(seq_q[i:i + 1], seq_kv[i:i + 1], causal[i:i + 1], w[i:i + 1])[0] for i in range(n)]
            np.testing.assert_array_equal(np.asarray(one), batch)
    assert (seq_q > 1).any() and (seq_q == 1).any()  # prefill and decode shapes


def test_a_requests_work_and_wave_terms_are_the_batchs(gemm_rows):
    """A request's roofline and wave terms are taken in Python floats with their logarithms in one call; they
    must be the batch's, also where a spec number is zero, unknown or infinite (NumPy's inf and NaN)."""
    from perfcast.features.kernels import wave_features, work_features

    p = Predictor.builtin("gemm")
    F = p.model.features.transform(p._records(gemm_rows[GEMM_KEYS].reset_index(drop=True)))
    flops, nbytes = 10.0 ** F["log10_flops"].to_numpy(), 10.0 ** F["log10_bytes"].to_numpy()
    peak, bw = F["peak_tflops"].to_numpy().copy(), F["mem_bw_gbs"].to_numpy().copy()
    ctas = 2.0 ** F["log2_ctas"].to_numpy()
    units = F["sm_count"].to_numpy().copy()
    peak[:3], bw[3:6], units[:2], units[2:4] = [0.0, np.nan, np.inf], [0.0, np.nan, np.inf], 0.0, np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        work, waves = work_features(flops, nbytes, peak, bw), wave_features(ctas, units)
        for i in range(len(flops)):
            one = work_features(flops[i:i + 1], nbytes[i:i + 1], peak[i:i + 1], bw[i:i + 1])
            one |= wave_features(ctas[i:i + 1], units[i:i + 1])
            floats = work_features(flops[i].item(), nbytes[i].item(), peak[i:i + 1], bw[i:i + 1])  # as the
            floats |= wave_features(ctas[i].item(), units[i:i + 1])  # one-row feature paths give them
            assert list(one) == list(floats) == list(work) + list(waves)
            for c, v in one.items():
                np.testing.assert_array_equal(v, (work | waves)[c][i:i + 1], err_msg=c)
                assert floats[c].shape == (1,) and floats[c].tobytes() == v.tobytes(), c


def test_a_requests_gemm_work_and_size_logarithms_are_the_batchs(gemm_rows):
    """A request's FLOPs and bytes are taken in Python floats and its size logarithms in one call; they must be
    the batch's on real sizes and dtypes, with and without beta (NaN, zero, non-zero) and at huge sizes."""
    from perfcast.features.base import log2_columns
    from perfcast.features.gemm import gemm_work
    from perfcast.features.roofline import canonical_dtypes, element_bytes

    rows = gemm_rows.reset_index(drop=True)
    m, n, k = (rows[c].to_numpy(dtype="float64") for c in "mnk")
    m[:2] = [2.0 ** 52, 3.0]
    batch = np.resize([1.0, 4.0, 2.0 ** 30], len(m))
    beta = np.resize([0.0, 1.0, np.nan, -0.5], len(m))
    sizes = element_bytes(canonical_dtypes(rows["dtype"].to_numpy(dtype=object), "dtype"))
    with np.errstate(over="ignore"):
        flops, nbytes = gemm_work(m, n, k, batch, beta, sizes)
        logs = log2_columns({"m": m, "n": n, "k": k, "batch": batch})
        for i in range(len(m)):
            one = gemm_work(m[i:i + 1], n[i:i + 1], k[i:i + 1], batch[i:i + 1], beta[i:i + 1],
                            {o: s[i:i + 1] for o, s in sizes.items()})
            np.testing.assert_array_equal(one[0], flops[i:i + 1])
            np.testing.assert_array_equal(one[1], nbytes[i:i + 1])
            one_logs = log2_columns({"m": m[i:i + 1], "n": n[i:i + 1], "k": k[i:i + 1], "batch": batch[i:i + 1]})
            for c, v in one_logs.items():
                np.testing.assert_array_equal(v, logs[c][i:i + 1], err_msg=c)
    assert len(set(nbytes.tolist())) > 10


def test_a_requests_gemm_thread_blocks_are_the_batchs(gemm_rows):
    """A request's thread blocks (batch x ceil(m / tile_m) x ceil(n / tile_n)) and its FLOPs and bytes are taken
    in Python floats; every feature of a row must be the batch's in every bit, with given tiles (zero and
    missing among them), batches and a huge size."""
    from perfcast.features.gemm import GemmFeatures
    from perfcast.features.records import Records

    rows = gemm_rows[GEMM_KEYS].reset_index(drop=True).copy()
    rows["tile_m"] = np.resize([64.0, 128.0, 0.0, np.nan, 256.0], len(rows))
    rows["tile_n"] = np.resize([128.0, np.nan, 64.0, 0.0], len(rows))
    rows["batch"] = np.resize([1.0, 3.0, 2.0 ** 30], len(rows))
    rows.loc[0, "m"] = 2.0 ** 52
    t = GemmFeatures().fit(rows)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        batch = t.transform_array(rows)
        for i, row in enumerate(rows.to_dict("records")):
            one = t.transform_array(Records({c: np.array([v], dtype=object if isinstance(v, str) else "float64")
                                             for c, v in row.items()}))
            assert one.shape == (1, batch.shape[1]) and one.tobytes() == batch[i:i + 1].tobytes(), row
    assert np.isinf(batch).any() and np.isnan(batch).any()  # the zero tiles' infinite blocks reach the features


def test_a_requests_interval_bounds_are_the_arrays():
    """A request's bounds are taken in Python floats (one target from its four numbers, several target by
    target); they must be the array path's in every bit for one and three targets, with the noise known, unknown
    (NaN, read as 0) and large enough to clip the lower bound at 0; anything not finite is left to the arrays."""
    from perfcast.models.uncertainty.calibration import _bounds_one

    rng, q = np.random.default_rng(0), 1.6448536269514722
    for targets in (1, 3):
        for _ in range(300):
            pred, half = rng.lognormal(size=(1, targets)), rng.uniform(0.0, 3.0, (1, targets))
            shrink, grow = np.exp(-half), np.exp(half)
            noise = rng.choice([np.nan, 0.0, 0.05, 0.9, 1.5], (1, targets))
            lo, hi = _bounds_one(pred, shrink, grow, noise, q)
            floor = q * np.nan_to_num(noise, nan=0.0)  # IntervalCalibration.bounds' array steps
            assert lo.tobytes() == (pred * np.clip(np.minimum(shrink, 1.0 - floor), 0.0, None)).tobytes()
            assert hi.tobytes() == (pred * np.maximum(grow, 1.0 + floor)).tobytes()
            assert lo.shape == hi.shape == (1, targets)
        assert _bounds_one(pred, shrink * np.inf, grow, noise, q) is None


def test_a_request_asks_for_the_spec_catalog_once(monkeypatch):
    """The predictor checks a request's device against the spec catalog and hands that catalog to the features
    with the row (each ask stats the spec files): one ask per ``predict(dict)``, the same answer."""
    import perfcast.features.hardware as hardware
    import perfcast.predictor as predictor
    from perfcast.records.hardware_specs import catalog

    p = Predictor.builtin("gemm")
    config = {"m": 4096, "n": 1000, "k": 4096, "dtype": "bfloat16", "device_id": "h100_sxm"}
    expected, asks = p.predict(config), []

    def counted(*args: Any) -> Any:
        asks.append(args)
        return catalog(*args)

    monkeypatch.setattr(predictor, "catalog", counted)
    monkeypatch.setattr(hardware, "catalog", counted)
    assert p.predict(config) == expected and len(asks) == 1
    assert p.predict(pd.DataFrame([config])).iloc[0].to_dict() == expected and len(asks) > 1  # a frame asks again


def test_a_requests_text_map_is_the_batchs():
    """A request's text (phase, layout) is mapped without codes; it must be the batch's, missing values included."""
    from perfcast.features.base import text_map

    values = np.array(["Prefill", "decode", None, np.nan, pd.NA, "TN", ""], dtype=object)
    batch = text_map(values, str.lower)
    assert batch.tolist() == ["prefill", "decode", None, None, None, "tn", ""]
    for i in range(len(values)):
        one = text_map(values[i:i + 1], str.lower)
        assert one.dtype == object and one.tolist() == batch[i:i + 1].tolist()


def test_a_requests_attention_features_are_the_batchs(data_root):
    """A request's attention FLOPs, bytes, KV read and thread blocks are taken in Python floats; every feature of
    a row must be the batch's, for real shapes with sliding windows, beams, GQA and an unknown kv_heads."""
    from perfcast.features.attention import AttentionFeatures
    from perfcast.features.records import Records

    rows = _real(data_root, "attention", ATTENTION_KEYS, per_group=4).reset_index(drop=True)
    n = len(rows)
    rows["window"] = np.resize([0.0, 1.0, 129.0, 4096.0, float(2**40)], n)
    rows["beam_width"] = np.resize([1.0, 4.0], n)
    rows.loc[rows.index % 7 == 3, "kv_heads"] = np.nan
    features = AttentionFeatures().fit(rows)
    batch = features.transform_array(Records.of(rows))
    for i in range(n):
        one = features.transform_array(Records.of(rows.iloc[i:i + 1].reset_index(drop=True)))
        np.testing.assert_array_equal(one, batch[i:i + 1], err_msg=str(rows.iloc[i].to_dict()))
    assert (rows["phase"] == "decode").any() and (rows["phase"] == "prefill").any()
