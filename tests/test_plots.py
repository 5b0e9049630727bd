"""The evaluation figures (error by size and dtype, interval coverage) on real GEMMs: what they draw is what
the rows say, and ``perfcast eval`` writes them beside its report, as a training run logs them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from perfcast.datasets.importers import get_importer
from perfcast.records.store import RecordStore
from perfcast.eval import plots
from perfcast.cli.bench import eval_app
from perfcast.models import make_model
from perfcast.models.persistence.bundle import save_model
from perfcast.models.uncertainty.intervals import ConformalRegressor
from perfcast.training.train import model_input

DTYPES = ["bfloat16", "fp8", "fp8_block"]


@pytest.fixture(scope="module")
def h100(data_root: Path) -> pd.DataFrame:
    """1,200 H100 GEMMs of three dtypes from aiconfigurator (seeded sample)."""
    imp, root = get_importer("aiconfigurator"), data_root / "aiconfigurator"
    unit = next(u for u in imp.units(root) if u.match("h100_sxm/gemm/trtllm/*/gemm_perf.parquet"))
    df = imp.load(root, unit)["gemm"]
    df = df[df["dtype"].isin(DTYPES)]
    return df.groupby("dtype").sample(n=400, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(h100):
    """A small LightGBM with 80% intervals fitted on the even rows; (model, test rows, prediction, lo, hi)."""
    train, test = h100.iloc[::2], h100.iloc[1::2].reset_index(drop=True)
    model = ConformalRegressor(make_model("lightgbm", "gemm", ["runtime_ms"], {"n_estimators": 30}), level=0.8)
    model.fit(model_input(train, "gemm"), train[["runtime_ms"]])
    X = model_input(test, "gemm")
    lo, hi = model.predict_interval(X)
    return model, test, np.asarray(model.estimator_.predict(X)).ravel(), lo.ravel(), hi.ravel()


def test_figures_show_error_by_dtype_and_coverage_per_group(fitted):
    _, test, pred, lo, hi = fitted
    y = test["runtime_ms"].to_numpy(float)
    size = (2 * test["m"] * test["n"] * test["k"]).to_numpy(float)
    figs = plots.evaluation_figures(y, pred, target="runtime_ms", title="h100", lo=lo, hi=hi, level=0.8, size=size,
                                    size_unit="FLOP", groups={"dtype": test["dtype"], "device_id": test["device_id"]})
    assert set(figs) == {"pred_vs_measured_runtime_ms.png", "error_vs_size_runtime_ms.png",
                         "error_by_dtype_runtime_ms.png", "interval_coverage_runtime_ms.png"}  # one device: no panel

    ape = np.abs(pred - y) / y
    labels = [t.get_text() for t in figs["error_by_dtype_runtime_ms.png"].axes[0].get_xticklabels()]
    for dtype, label in zip(pd.unique(test["dtype"]), labels):
        rows = (test["dtype"] == dtype).to_numpy()
        assert label == f"{dtype}\nn={rows.sum()}, mean {100 * ape[rows].mean():.1f}%"

    size_ax, dtype_ax = figs["interval_coverage_runtime_ms.png"].axes
    inside = (lo <= y) & (y <= hi)
    heights = [bar.get_height() for bar in dtype_ax.patches]
    expected = [inside[(test["dtype"] == d).to_numpy()].mean() for d in sorted(pd.unique(test["dtype"]))]
    assert heights == pytest.approx(expected)
    size_labels = [t.get_text() for t in size_ax.get_xticklabels()]
    assert sum(int(t.split("n=")[1]) for t in size_labels) == len(y)
    lows = [float(t.split("–")[0].rstrip("kMGT")) * {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(t.split("–")[0][-1], 1)
            for t in size_labels]
    assert lows == sorted(lows)  # size buckets smallest first
    assert [line.get_ydata()[0] for line in dtype_ax.get_lines()] == [0.8]  # the nominal level


def test_unmeasured_rows_are_left_out_and_one_group_draws_no_breakdown():
    y = np.array([1.0, 2.0, np.nan, 4.0])
    hi = y * np.array([1.2, 0.95, 1.0, 0.95])  # only the first measured value lies inside its interval
    figs = plots.evaluation_figures(y, y * 1.1, target="power_w", title="t", lo=y * 0.9, hi=hi,
                                    groups={"dtype": ["a", "a", "b", "a"]})
    # the measured rows hold one dtype: no error-by-dtype plot, and coverage over all rows in one panel
    assert set(figs) == {"pred_vs_measured_power_w.png", "interval_coverage_power_w.png"}
    (panel,) = figs["interval_coverage_power_w.png"].axes
    assert [bar.get_height() for bar in panel.patches] == pytest.approx([1 / 3])
    with pytest.raises(ValueError, match="at least one group"):
        plots.error_by_group({"a": [np.nan]}, by="dtype")


def test_perfcast_eval_writes_the_plots_beside_its_report(fitted, h100, tmp_path, monkeypatch, new_mlflow_db):
    model, *_ = fitted
    recipe = {"name": "h100", "model": {"name": "lightgbm", "params": {"n_estimators": 30}}}  # so eval can refit it
    bundle = save_model(model, "gemm", model_input(h100.iloc[::2], "gemm"), tmp_path / "model", recipe)
    store = RecordStore(tmp_path / "store")
    store.append(h100, "gemm")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    out = tmp_path / "report"
    try:
        res = CliRunner().invoke(eval_app, [str(bundle), "--protocol", "random", "--store", str(store.root), "--out",
                                            str(out), "--tracking-uri", new_mlflow_db(tmp_path)])
    finally:
        mlflow.set_tracking_uri(before)
    assert res.exit_code == 0, res.output
    text = (out / "report.md").read_text()
    for name in ("pred_vs_measured", "error_vs_size", "error_by_dtype", "interval_coverage", "error_cdf"):
        png = out / f"{name}_runtime_ms.png"
        assert f"]({png.name})" in text and matplotlib.image.imread(png).shape[0] > 300
