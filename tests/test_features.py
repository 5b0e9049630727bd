"""Feature transformers on real records: hand-computed roofline terms, spec-sheet precedence, clear errors."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore
from perfcast.features import (
    AttentionFeatures,
    CpuFeatures,
    GemmFeatures,
    MissingColumnError,
    UnknownDeviceError,
    UnknownDtypeError,
    feature_groups,
    feature_names,
    feature_transformer,
    normalize_dtype,
)
from perfcast.features.attention import attended_pairs
from perfcast.features.roofline import DTYPES

# H100 SXM datasheet (dense): BF16 989 TFLOP/s, FP8 1978 TFLOP/s, HBM3 3.35 TB/s, 132 SMs, 700 W
H100_BF16, H100_FP8, H100_BW, H100_SMS = 989.0e12, 1978.0e12, 3350.0e9, 132


def _records(root: Path, dataset: str, unit_glob: str, task: str, keep, tmp: Path) -> pd.DataFrame:
    """Rows of one importer unit chosen by ``keep(df) -> df``, stored and read back as canonical records."""
    imp = get_importer(dataset)
    unit = next(u for u in imp.units(root / dataset) if u.match(unit_glob))
    rows = keep(imp.load(root / dataset, unit)[task])
    store = RecordStore(tmp)
    store.append(rows, task)
    return store.read(task)


@pytest.fixture(scope="module")
def h100_gemm(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    def keep(df):
        shape = (df["m"] == 768) & (df["n"] == 5120) & (df["k"] == 4096)
        return pd.concat([df[shape], df.sample(300, random_state=0)])

    return _records(data_root, "aiconfigurator", "h100_sxm/gemm/*/*/gemm_perf.parquet", "gemm", keep,
                    tmp_path_factory.mktemp("gemm"))


@pytest.fixture(scope="module")
def h100_attention(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    tmp = tmp_path_factory.mktemp("attention")
    ctx = _records(data_root, "aiconfigurator", "h100_sxm/attention/*/*/context_attention_perf.parquet",
                   "attention", lambda d: d.sample(200, random_state=0), tmp / "ctx")
    gen = _records(data_root, "aiconfigurator", "h100_sxm/attention/*/*/generation_attention_perf.parquet",
                   "attention", lambda d: d.sample(200, random_state=0), tmp / "gen")
    return pd.concat([ctx, gen], ignore_index=True)


@pytest.fixture(scope="module")
def gpperf(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    return _records(data_root, "gpperf-cutlass", "cutlass_*.csv.gz", "gemm", lambda d: d.iloc[::40],
                    tmp_path_factory.mktemp("gpperf"))


@pytest.fixture(scope="module")
def spec_cpu(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    return _records(data_root, "spec-cpu2017", "cpu2017-results*", "cpu_bench", lambda d: d.iloc[::200],
                    tmp_path_factory.mktemp("cpu"))


@pytest.fixture(scope="module")
def perfcastdb(data_root: Path, tmp_path_factory) -> pd.DataFrame:
    return _records(data_root, "perfcastdb-sample", "train_data.csv", "cpu_bench", lambda d: d,
                    tmp_path_factory.mktemp("pcdb"))


# ------------------------------------------------------------------------------------------------ gemm
def test_gemm_roofline_of_a_known_h100_row_matches_hand_computation(h100_gemm):
    row = h100_gemm[(h100_gemm["m"] == 768) & (h100_gemm["n"] == 5120) & (h100_gemm["k"] == 4096)
                    & (h100_gemm["dtype"] == "bfloat16")]
    assert len(row) == 1
    X = GemmFeatures().fit(h100_gemm).transform(row).iloc[0]
    m, n, k = 768, 5120, 4096
    flops = 2 * m * n * k                              # 32.2 GFLOP
    nbytes = 2 * (m * k + k * n) + 2 * m * n           # bf16 A and B read, bf16 C written
    t_compute, t_memory = flops / H100_BF16 * 1e3, nbytes / H100_BW * 1e3
    assert X["log10_flops"] == pytest.approx(math.log10(flops))
    assert X["log10_bytes"] == pytest.approx(math.log10(nbytes))
    assert X["log10_intensity"] == pytest.approx(math.log10(flops / nbytes))
    assert X["log10_roofline_ms"] == pytest.approx(math.log10(max(t_compute, t_memory)))
    assert X["compute_memory_balance"] == pytest.approx(math.log10(t_compute / t_memory))
    # no tile in the record: Hopper's default 128x128 tile -> 6 x 40 = 240 CTAs on 132 SMs
    ctas = math.ceil(m / 128) * math.ceil(n / 128)
    assert X["log2_ctas"] == pytest.approx(math.log2(ctas))
    assert X["last_wave_fill"] == pytest.approx(ctas / H100_SMS - 1)
    assert X["wave_efficiency"] == pytest.approx(ctas / H100_SMS / 2)
    assert (X["m_align128"], X["n_align128"], X["k_align128"]) == (1.0, 1.0, 1.0)
    assert X["dtype_bf16"] == 1.0 and X["dtype_fp8"] == 0.0
    # the measured kernel cannot beat the roofline by much (spec peaks are the boost-clock rates)
    assert row["runtime_ms"].iloc[0] > 10 ** X["log10_roofline_ms"] * 0.95


def test_fp8_gemm_uses_fp8_peak_and_one_byte_operands(h100_gemm):
    row = h100_gemm[(h100_gemm["m"] == 768) & (h100_gemm["n"] == 5120) & (h100_gemm["k"] == 4096)
                    & (h100_gemm["dtype"] == "fp8")]
    X = GemmFeatures().fit(h100_gemm).transform(row).iloc[0]
    assert X["peak_tflops"] == pytest.approx(H100_FP8 / 1e12)
    assert (X["a_bytes"], X["b_bytes"], X["c_bytes"]) == (1.0, 1.0, 2.0)
    nbytes = 768 * 4096 + 4096 * 5120 + 2 * 768 * 5120
    assert X["log10_bytes"] == pytest.approx(math.log10(nbytes))


def test_output_is_the_declared_numeric_frame_and_sklearn_friendly(h100_gemm):
    t = GemmFeatures().set_output(transform="pandas")
    X = t.fit_transform(h100_gemm)
    assert list(X.columns) == feature_names("gemm") == list(t.get_feature_names_out())
    assert (X.dtypes == "float64").all()
    assert X.index.equals(h100_gemm.index)
    assert np.isfinite(X["log10_roofline_ms"]).all()
    again = clone(t).fit(h100_gemm).transform(h100_gemm)
    pd.testing.assert_frame_equal(X, again)


@pytest.mark.parametrize("task", ["gemm", "attention", "cpu_bench"])
def test_every_feature_is_in_exactly_one_group(task):
    groups = feature_groups(task)
    flat = [c for cols in groups.values() for c in cols]
    assert len(flat) == len(set(flat)) == len(feature_names(task))
    assert type(feature_transformer(task)).task == task


def test_tile_from_record_beats_default(gpperf):
    X = GemmFeatures().fit(gpperf).transform(gpperf)
    assert (X["tile_m"] == 128).all() and (X["tile_n"] == 128).all()  # cutlass_simt_sgemm_128x128_...
    assert set(X["trans_a"].unique()) == {0.0, 1.0}                    # layouts from the kernel names
    small = gpperf.assign(tile_m=64, tile_n=64)
    assert (GemmFeatures().fit(small).transform(small)["log2_ctas"] == X["log2_ctas"] + 2).all()


def test_beta_adds_a_read_of_c(gpperf):
    rows = gpperf.iloc[:1]
    X0 = GemmFeatures().fit(rows).transform(rows.assign(beta=0.0)).iloc[0]
    X1 = GemmFeatures().fit(rows).transform(rows.assign(beta=1.0)).iloc[0]
    m, n = int(rows["m"].iloc[0]), int(rows["n"].iloc[0])
    assert 10 ** X1["log10_bytes"] - 10 ** X0["log10_bytes"] == pytest.approx(4 * m * n)


def test_power_per_peak_tflop_and_vendor_describe_the_device(h100_gemm, gpperf):
    t = GemmFeatures().fit(h100_gemm)
    X = t.transform(h100_gemm)
    bf16, fp8 = (h100_gemm["dtype"] == d for d in ("bfloat16", "fp8"))
    # the H100 SXM's 700 W over its dense bf16 and fp8 peaks: the fp8 row has half the power per TFLOP/s
    np.testing.assert_allclose(X.loc[bf16, "log10_watts_per_tflop"], math.log10(700 / 989.0))
    np.testing.assert_allclose(X.loc[fp8, "log10_watts_per_tflop"], math.log10(700 / 1978.0))
    assert (X[["vendor_nvidia", "vendor_amd", "vendor_intel"]] == [1.0, 0.0, 0.0]).all().all()
    b60 = pd.DataFrame({"m": [64], "n": [4096], "k": [4096], "dtype": ["bfloat16"], "device_id": ["b60"]})
    Xb = t.transform(b60).iloc[0]
    assert (Xb["vendor_intel"], Xb["vendor_nvidia"]) == (1.0, 0.0)
    assert Xb["log10_watts_per_tflop"] == pytest.approx(math.log10(200 / 98.304))
    # a device no sheet lists and no record names a vendor for: unknown, not "not NVIDIA"
    own = gpperf.iloc[:3].drop(columns=["vendor", "tdp_w"], errors="ignore").assign(
        device_id=pd.NA, device_name="prototype accelerator", mem_bw_gbs=1000.0, peak_tflops_fp32=50.0)
    Xo = GemmFeatures().fit(gpperf).transform(own)
    assert Xo[["vendor_nvidia", "vendor_intel"]].isna().all().all()
    assert Xo["log10_watts_per_tflop"].isna().all()  # no TDP known


# ------------------------------------------------------------------------------------------------ hardware
def test_spec_sheet_beats_record_hardware_columns(gpperf):
    wrong = gpperf.assign(mem_bw_gbs=1.0, sm_count=1, peak_tflops_fp32=1.0)
    t = GemmFeatures().fit(gpperf)
    pd.testing.assert_frame_equal(t.transform(wrong), t.transform(gpperf))


def test_unseen_device_is_described_by_its_spec_sheet_alone(gpperf):
    hardware = ["sm_count", "mem_bw_gbs", "peak_tflops_fp32", "tdp_w", "l2_mb", "compute_capability", "hw_id"]
    bare = gpperf.drop(columns=[c for c in hardware if c in gpperf.columns]).assign(device_id=pd.NA)
    X = GemmFeatures().fit(gpperf).transform(bare)          # resolved from device_name "NVIDIA GeForce RTX 4070"
    assert (X["sm_count"] == 46).all() and (X["mem_bw_gbs"] == 504).all()
    l4 = bare.assign(device_id="l4", device_name="NVIDIA L4")
    X4 = GemmFeatures().fit(gpperf).transform(l4)
    assert (X4["mem_bw_gbs"] == 300).all() and (X4["sm_count"] == 58).all()


def test_record_columns_fill_what_no_spec_sheet_has(gpperf):
    own = gpperf.drop(columns="tdp_w").assign(device_id=pd.NA, device_name="prototype accelerator", mem_bw_gbs=1000.0,
                        peak_tflops_fp32=50.0, sm_count=100)
    X = GemmFeatures().fit(gpperf).transform(own)
    assert (X["peak_tflops"] == 50.0).all() and (X["sm_count"] == 100).all()
    assert X["tdp_w"].isna().all()


def test_unknown_device_is_a_clear_error(gpperf):
    with pytest.raises(KeyError, match="unknown device 'h100_sxmm'.*closest: h100_sxm"):
        GemmFeatures().fit(gpperf).transform(gpperf.assign(device_id="h100_sxmm"))
    nameless = gpperf.drop(columns=["mem_bw_gbs", "peak_tflops_fp32"]).assign(device_id=pd.NA,
                                                                              device_name="mystery gpu")
    with pytest.raises(UnknownDeviceError, match=r"lack a peak rate for dtype 'fp32'.*\['mystery gpu'\]"):
        GemmFeatures().fit(gpperf).transform(nameless)


def test_unknown_dtype_and_missing_column_are_clear_errors(gpperf):
    t = GemmFeatures().fit(gpperf)
    with pytest.raises(UnknownDtypeError, match=r"unknown dtype value\(s\) \['float12'\]"):
        t.transform(gpperf.assign(dtype="float12"))
    with pytest.raises(MissingColumnError, match=r"lack column\(s\) \['k'\]"):
        t.transform(gpperf.drop(columns="k"))
    with pytest.raises(ValueError, match="'m' must hold positive numbers"):
        t.transform(gpperf.assign(m=0))


def test_dtype_spellings_normalise():
    got = normalize_dtype(pd.Series(["bfloat16", "BF16", "float32", "fp32", "torch.float16", "float8_e4m3fn",
                                     "fp8_block", "nvfp4", "int8_wo", "int4_wo", "sq", "float64", "tf32", None]))
    assert got.tolist()[:-1] == ["bf16", "bf16", "fp32", "fp32", "fp16", "fp8", "fp8_block", "nvfp4",
                                 "int8_wo", "int4_wo", "sq", "fp64", "tf32"]
    assert pd.isna(got.iloc[-1])
    assert set(got.dropna()) <= set(DTYPES)


# ------------------------------------------------------------------------------------------------ attention
def test_attended_pairs_closed_form_matches_enumeration():
    cases = [(sq, skv, causal, w) for sq, skv in itertools.product([1, 3, 8], [8, 13]) if sq <= skv
             for causal in (True, False) for w in (0, 1, 4, 20)]
    seq_q, seq_kv, causal, window = (pd.Series([c[i] for c in cases], dtype="float64") for i in range(4))
    got = attended_pairs(seq_q, seq_kv, causal.astype(bool), window)
    for (sq, skv, c, w), g in zip(cases, got):
        w_eff = w if w > 0 else skv
        want = 0
        for i in range(sq):
            p = skv - sq + i  # query i is the key at position p
            want += sum(1 for j in range(skv) if p - w_eff < j <= p) if c else min(skv, w_eff)
        assert g == want, (sq, skv, c, w)


def test_attention_flops_and_bytes_of_known_h100_rows(h100_attention):
    t = AttentionFeatures().fit(h100_attention)
    X = t.transform(h100_attention)
    assert list(X.columns) == feature_names("attention")
    pre = h100_attention[h100_attention["phase"] == "prefill"].iloc[0]
    Xp = X.loc[pre.name]
    b, h, kvh, s, d = (float(pre[c]) for c in ("batch", "heads", "kv_heads", "seq_q", "head_dim"))
    w = float(pre["window"])
    pairs = s * (s + 1) / 2 if w == 0 or w >= s else w * (w + 1) / 2 + w * (s - w)  # causal, windowed
    assert Xp["log10_flops"] == pytest.approx(math.log10(4 * b * h * d * pairs))
    q_bytes = 1.0 if pre["dtype"] == "fp8" else 2.0
    kv_bytes = 1.0 if pre["kv_dtype"] == "fp8" else 2.0
    assert Xp["log10_bytes"] == pytest.approx(math.log10(2 * b * h * s * d * q_bytes + 2 * b * kvh * s * d * kv_bytes))
    dec = h100_attention[(h100_attention["phase"] == "decode") & (h100_attention["window"] == 0)].iloc[0]
    Xd = X.loc[dec.name]
    b, h, kvh, skv, d = (float(dec[c]) for c in ("batch", "heads", "kv_heads", "seq_kv", "head_dim"))
    kv_bytes = 1.0 if dec["kv_dtype"] == "fp8" else 2.0
    kv_read = 2 * b * kvh * skv * d * kv_bytes                                     # the whole KV cache, once
    assert Xd["log10_kv_bytes"] == pytest.approx(math.log10(kv_read))
    assert Xd["log10_flops"] == pytest.approx(math.log10(4 * b * h * d * skv))
    assert Xd["is_decode"] == 1.0 and Xp["is_decode"] == 0.0
    assert Xd["log2_gqa_ratio"] == pytest.approx(math.log2(h / kvh))
    # decode is bandwidth-bound, and no measured kernel runs faster than its roofline
    assert (X.loc[X["is_decode"] == 1, "compute_memory_balance"] < 0).all()
    assert (h100_attention["runtime_ms"].to_numpy() > 10 ** X["log10_roofline_ms"].to_numpy()).all()


def test_attention_rejects_inverted_causal_rows(h100_attention):
    bad = h100_attention[h100_attention["phase"] == "prefill"].head(3).copy()
    bad["seq_q"] = bad["seq_kv"] + 1
    with pytest.raises(ValueError, match="causal attention needs seq_q <= seq_kv"):
        AttentionFeatures().fit(h100_attention).transform(bad)


# ------------------------------------------------------------------------------------------------ cpu
def test_cpu_features_from_parsed_spec_cpu2017_columns(spec_cpu):
    t = CpuFeatures().fit(spec_cpu)
    X = t.transform(spec_cpu)
    assert list(X.columns) == feature_names("cpu_bench")
    cores = spec_cpu["cores"].astype("float64")
    np.testing.assert_allclose(X["core_ghz"], cores * spec_cpu["clock_mhz"] / 1e3)
    np.testing.assert_allclose(X["l3_mb_per_core"], spec_cpu["l3_mb"].astype("float64") / cores)
    dimm_bw = spec_cpu["mem_dimms"].astype("float64") * spec_cpu["mem_mts"] * 8 / 1e3
    np.testing.assert_allclose(X["mem_channel_bw_gbs"], dimm_bw)
    amd = spec_cpu["device_name"].str.contains("AMD").to_numpy(dtype=bool)
    assert (X.loc[amd, "vendor_amd"] == 1).all() and (X.loc[~amd, "vendor_amd"] == 0).all()
    assert X["workload_code"].notna().all()
    unseen = spec_cpu.assign(benchmark="never-seen-suite")
    assert t.transform(unseen)["workload_code"].isna().all()


def test_cpu_roofline_uses_probed_peaks_when_present(perfcastdb):
    X = CpuFeatures().fit(perfcastdb).transform(perfcastdb)
    # Sapphire Rapids rows list avx512f: cores x base GHz x 32 FP64 FLOPs/cycle
    est = perfcastdb["cores"].astype("float64") * perfcastdb["clock_mhz"] * 32 / 1e3
    np.testing.assert_allclose(X["log10_peak_gflops_fp64"], np.log10(est))
    assert (X[["isa_avx2", "isa_avx512", "isa_amx"]] == 1).all().all()
    probed = perfcastdb.assign(peak_tflops_fp64=2.5, mem_bw_gbs=300.0)
    Xp = CpuFeatures().fit(probed).transform(probed)
    np.testing.assert_allclose(Xp["log10_peak_gflops_fp64"], math.log10(2500.0))
    np.testing.assert_allclose(Xp["log10_mem_bw_gbs"], math.log10(300.0))


def test_cpu_groups_follow_ncpp():
    assert list(feature_groups("cpu_bench")) == ["processor", "caches", "memory", "system", "workload"]


def test_a_plain_user_frame_needs_only_the_config_and_a_device_id():
    plain = pd.DataFrame({"m": [4096], "n": [4096], "k": [4096], "dtype": ["bfloat16"], "device_id": ["h100_sxm"]})
    X = GemmFeatures().fit(plain).transform(plain).iloc[0]
    flops, nbytes = 2 * 4096**3, 3 * 2 * 4096**2
    assert X["log10_roofline_ms"] == pytest.approx(math.log10(max(flops / H100_BF16, nbytes / H100_BW) * 1e3))
    assert np.isnan(X["trans_a"])  # layout unknown stays unknown


def test_numpy_backed_dtypes_give_the_same_features(h100_attention):
    """Served models see plain float/str columns (MLflow signatures), not pandas' nullable dtypes."""
    plain = h100_attention.copy()
    for c in plain.columns:
        s = plain[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s):
            plain[c] = s.astype("float64")
        elif pd.api.types.is_string_dtype(s):
            plain[c] = s.astype("str")
    t = AttentionFeatures().fit(h100_attention)
    pd.testing.assert_frame_equal(t.transform(plain), t.transform(h100_attention))
