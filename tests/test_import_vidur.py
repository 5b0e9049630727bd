"""Vidur's LLM-layer profiles as GEMM records (real files of the shared copy), and the built-in model on them."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pandas as pd
import pytest

from perfcast.datasets.importers.base import DatasetLayoutError
from perfcast.datasets.importers.vidur import PROJECTIONS, VidurImporter
from perfcast.records.store import RecordStore

REPO = Path(__file__).resolve().parents[1]
#: one small file of the GPU the built-in model never saw, one large model on a training GPU
FILES = ("a40/microsoft/phi-2", "h100/meta-llama/Llama-2-70b-hf")


def _root(data_root: Path, dest: Path, files: tuple[str, ...] = FILES) -> Path:
    for rel in files:
        (dest / "profiling" / "compute" / rel).mkdir(parents=True)
        (dest / "profiling" / "compute" / rel / "mlp.csv.gz").symlink_to(
            data_root / "vidur" / "profiling" / "compute" / rel / "mlp.csv.gz")
    return dest


@pytest.fixture(scope="module")
def imported(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """(raw file per GPU directory, the records the importer stored)."""
    root = _root(data_root, tmp_path_factory.mktemp("vidur"))
    store = RecordStore(tmp_path_factory.mktemp("store"))
    VidurImporter().run(root, store)
    raw = {rel.split("/")[0]: pd.read_csv(root / "profiling" / "compute" / rel / "mlp.csv.gz") for rel in FILES}
    return raw, store.read("gemm")


def test_every_row_gives_its_four_projections_with_vidurs_shapes(imported) -> None:
    raw, recs = imported
    assert len(recs) == 4 * sum(len(r) for r in raw.values())
    assert set(recs["device_id"]) == {"a40", "h100_sxm"} and set(recs["dtype"]) == {"float16"}
    assert set(recs["x_projection"]) == set(PROJECTIONS) and (recs["op"] == "linear").all()
    assert (recs["runtime_min_ms"] <= recs["runtime_ms"]).all() and (recs["runtime_cv"] >= 0).all()
    # Llama-2-70B (64 heads, 8 KV heads, 8192 wide, gated MLP of 28672) split over 2 GPUs, 4096 tokens
    h100 = raw["h100"]
    row = h100[(h100["num_tensor_parallel_workers"] == 2) & (h100["num_tokens"] == 4096)].iloc[0]
    assert (row["n_head"], row["n_kv_head"], row["n_embd"], row["n_expanded_embd"]) == (64, 8, 8192, 28672)
    mine = recs[(recs["device_id"] == "h100_sxm") & (recs["x_tp"] == 2) & (recs["m"] == 4096)]
    shapes = {p: (g["n"].iloc[0], g["k"].iloc[0]) for p, g in mine.groupby("x_projection")}
    assert shapes == {"attn_pre_proj": (80 * 128 // 2, 8192), "attn_post_proj": (8192, 4096),
                      "mlp_up_proj": (2 * 28672 // 2, 8192), "mlp_down_proj": (8192, 28672 // 2)}
    up = mine[mine["x_projection"] == "mlp_up_proj"]["runtime_ms"]
    assert row["time_stats.mlp_up_proj.median"] in set(up)  # the median of Vidur's repeats, in ms


def test_a_copy_without_profiles_or_with_a_damaged_file_is_refused_naming_it(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="no per-model layer profiles"):
        VidurImporter().run(tmp_path, RecordStore(tmp_path / "store"))
    raw = pd.read_csv(data_root / "vidur" / "profiling" / "compute" / FILES[0] / "mlp.csv.gz")
    for name, frame, says in (("nocol", raw.drop(columns=["n_kv_head"]), "lacks column"),
                              ("gated", raw.assign(use_gated_mlp="maybe"), "use_gated_mlp='maybe'")):
        unit = tmp_path / name / "profiling" / "compute" / "a40" / "org" / "model" / "mlp.csv.gz"
        unit.parent.mkdir(parents=True)
        with gzip.open(unit, "wt") as f:
            frame.to_csv(f, index=False)
        store = RecordStore(tmp_path / f"store-{name}")
        with pytest.raises(DatasetLayoutError, match=says) as err:
            VidurImporter().run(tmp_path / name, store)
        assert str(unit) in str(err.value) + "".join(getattr(err.value, "__notes__", []))
        assert not store.parts("gemm")  # nothing of the damaged file stored


def test_the_builtin_model_predicts_vidurs_fp16_gemms_better_as_bf16(imported) -> None:
    """Asked for fp16 (which it never saw), the built-in model answers with its bf16 stand-in: on Vidur's
    measurements (another framework) that beats fp16's own features on the unseen A40 and on the H100."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import builtin_on_vidur

    _, recs = imported
    sample = pd.concat([g.sample(min(len(g), 400), random_state=0) for _, g in recs.groupby("device_id")])
    table = builtin_on_vidur.score(sample).set_index("device")
    assert table.loc["a40", "trained_on"] == False and table.loc["h100_sxm", "trained_on"] == True  # noqa: E712
    assert (table["mape"] < table["mape_fp16_features"]).all(), table
    assert table["coverage"].between(0, 1).all() and (table["rows"] == 400).all()
    assert builtin_on_vidur.markdown(table.reset_index()).count("\n") == 3


def test_adapting_the_builtin_model_to_the_a40_on_vidurs_rows_beats_it_on_the_rest(imported) -> None:
    """`perfcast adapt`'s flow on a GPU another tool measured: 64 of the A40's records adapt the built-in model,
    and every other A40 record of the slice is predicted better than before."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import builtin_on_vidur

    _, recs = imported
    (row,) = builtin_on_vidur.adapted(recs, "a40", budgets=(64,)).itertuples()
    assert row.test_rows == (recs["device_id"] == "a40").sum() - 64
    assert row.adapted_mape < row.base_mape, row
    assert 0 <= row.adapted_coverage <= 1
    table = builtin_on_vidur.adapted_markdown(pd.DataFrame([row._asdict()]))
    assert f"| a40 | 64 | {row.test_rows:,} |" in table
