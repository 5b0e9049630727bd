"""Judge a model on a named protocol: metrics per target, breakdowns, plots, a Markdown report, an MLflow run.

Why refit by default: a protocol is a split, and a model is judged on it by fitting on its training side
and scoring its test side. A registered model was fitted on *some* split; scoring it as it is on another
protocol's test rows would test it on rows it may have trained on. So :func:`evaluate_model` clones the
model (same estimator, same hyperparameters, same seeds; a saved perfcast bundle is rebuilt from the recipe
its metadata records), fits the clone on the protocol's training rows and scores the test rows;
``refit=False`` scores the model as fitted, for test data it cannot have seen (and the report says so). A cross-validated protocol (one that says it is one fold of several) is run on
every fold and the test predictions pooled, so each row is scored once by a model that did not see it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import ValidationError
from sklearn.base import clone

from perfcast.eval import metrics, plots
from perfcast.eval.protocols import N_FOLDS, NOTE
from perfcast.experiments.saved import EvalError, SavedModel, columns_of, load_model, model_task_targets
from perfcast.training import tracking
from perfcast.training.config import DEFAULT_EXPERIMENT, EvalConfig
from perfcast.training.train import (
    Progress,
    Split,
    model_input,
    no_progress,
    split_records,
)

#: the record column naming what ran, per task (broken down like the device and the size)
WORKLOAD_COLUMN: dict[str, str] = {"gemm": "op", "attention": "phase", "cpu_bench": "benchmark"}
SIZE_BUCKET = "size_bucket"
N_SIZE_BUCKETS = 4
#: an error CDF draws one curve per group when the grouping has at most this many groups
MAX_CDF_GROUPS = 8
REPORT_FILE = "report.md"
#: metric -> column header in tables; the fractions among them are shown in percent
HEADERS: dict[str, str] = {"mape": "MAPE %", "median_ape": "MdAPE %", "p90_ape": "P90 APE %", "r2": "R²",
                           "spearman": "Spearman ρ", "coverage": "coverage %", "mean_width": "width %"}
PERCENT = frozenset({"mape", "median_ape", "p90_ape", "coverage", "mean_width"})


def _fmt(metric: str, value: float) -> str:
    """A metric as a table shows it: fractions in percent (2 decimals), others to 3 decimals, — if undefined."""
    if np.isposinf(value):
        return "∞"
    if not np.isfinite(value):
        return "—"
    return f"{100 * value:.2f}" if metric in PERCENT else f"{value:.3f}"


@dataclass
class EvalReport:
    """What one evaluation found: per-target metrics and breakdowns, the figures, and how it was run."""

    model: str
    task: str
    targets: list[str]
    protocol: str
    seed: int
    options: dict[str, Any]
    refit: bool
    #: what the protocol said about its split (held-out shapes, fallbacks, folds), one line per fold
    notes: list[str]
    #: (training rows, test rows) of each fold; one entry unless the protocol cross-validates
    folds: list[tuple[int, int]]
    #: target -> :func:`perfcast.eval.metrics.summary` (``{"n": 0}`` when no test row measured it)
    metrics: dict[str, dict[str, float | bool]]
    #: target -> :func:`perfcast.eval.metrics.breakdown` frame
    breakdowns: dict[str, pd.DataFrame]
    #: the test rows: ids, breakdown columns, fold, and per target the truth, ``_pred`` (``_lo``, ``_hi``)
    predictions: pd.DataFrame
    has_intervals: bool
    size_unit: str | None
    #: the intervals' nominal level, when the model says (drawn on the coverage plot)
    level: float | None = None
    #: file name (PNG) -> figure
    figures: dict[str, Figure] = field(default_factory=dict)

    @property
    def n_test(self) -> int:
        return len(self.predictions)

    def flat_metrics(self) -> dict[str, float]:
        """``test_{target}_{metric}`` in the key scheme training logs (:func:`perfcast.eval.metrics.flatten`)."""
        return {"test_n": float(self.n_test)} | metrics.flatten(self.metrics, "test_")

    def summary_frame(self) -> pd.DataFrame:
        """One formatted row per target (APEs, coverage and width in percent): the report's headline table."""
        shown = [m for m in HEADERS if self.has_intervals or m not in ("coverage", "mean_width")]
        rows = []
        for target, s in self.metrics.items():
            row = {"target": target, "n": f"{int(s['n'])}"}
            for m in shown:
                row[HEADERS[m]] = _fmt(m, s.get(m, np.nan))
                if m == "r2":
                    row["R² on"] = "—" if "r2" not in s else "log" if s["r2_log_scale"] else "linear"
            rows.append(row)
        return pd.DataFrame(rows)

    def to_markdown(self, out_dir: str | Path) -> Path:
        """Write ``report.md``, the PNG figures, ``predictions.csv`` and one breakdown CSV per target into
        ``out_dir``; returns the report's path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in self.figures.items():
            plots.save_png(fig, out / name)
        self.predictions.to_csv(out / "predictions.csv", index=False)
        lines = [f"# Evaluation of `{self.model}` on protocol `{self.protocol}`", ""]
        how = ("refitted on each fold's training rows" if self.refit and len(self.folds) > 1
               else "refitted on the training rows" if self.refit
               else "scored as fitted (not refitted: the training rows were not used)")
        facts = {
            "model": f"`{self.model}` ({how})",
            "task / targets": f"{self.task} / {', '.join(self.targets)}",
            "protocol": f"`{self.protocol}`, seed {self.seed}"
                        + (f", options `{json.dumps(self.options, default=str)}`" if self.options else ""),
            "rows": f"{self.folds[0][0]} train, n = {self.n_test} test" if len(self.folds) == 1 else
                    f"{' / '.join(str(a) for a, _ in self.folds)} train per fold, n = {self.n_test} test "
                    f"(pooled over {len(self.folds)} folds)",
            "intervals": "yes (coverage and mean relative width reported)" if self.has_intervals else "none",
        }
        lines += _md_table(pd.DataFrame({"": list(facts), " ": list(facts.values())})) + [""]
        for note in dict.fromkeys(self.notes):  # folds repeat the protocol's note: keep each once
            lines.append(f"> {note}")
        lines += ["", "## Metrics on the test rows", ""]
        lines += _md_table(self.summary_frame())
        lines += ["", ("APE = |predicted − measured| / measured. R² is on log values where the measured values span "
                       f"more than {metrics.LOG_R2_DECADES:g} decades (column 'R² on').")]
        for target in self.targets:
            lines += ["", f"## {target}", ""]
            lines += [f"![{name}]({name})" for name in self.figures if name.endswith(f"_{target}.png")]
            table = self.breakdowns.get(target)
            if table is None:
                lines += ["", "No test row measured this target."]
                continue
            table.to_csv(out / f"breakdown_{target}.csv", index=False)
            for col, part in table.groupby("by", sort=False):
                shown = part.drop(columns="by").rename(columns={"group": col})
                for m in PERCENT & set(shown.columns):
                    shown[m] = shown[m].map(lambda v, m=m: _fmt(m, v))
                lines += ["", f"### {target} by {col}", ""] + _md_table(shown.rename(columns=HEADERS))
        path = out / REPORT_FILE
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def _md_table(df: pd.DataFrame) -> list[str]:
    """A frame as GitHub-flavoured Markdown table lines (cells as text, pipes escaped)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return [head, rule] + ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]


# -------------------------------------------------------------------------------------------- evaluation
def work_size(records: pd.DataFrame, task: str) -> tuple[pd.Series, str] | None:
    """Each record's work (FLOPs for kernels, working-set bytes for CPU benchmarks) as the task's feature
    transformer computes it, with its unit; None when no record has one."""
    return tracking.work_size(model_input(records, task), task)


def _device_column(test: pd.DataFrame) -> str | None:
    """The column that names a test row's device: the spec-sheet id where known, else the reported name."""
    for c in ("device_id", "device_name"):
        if c in test.columns and test[c].notna().any():
            return c
    return None


def _splits(records: pd.DataFrame, protocol: str, options: dict[str, Any], seed: int, targets: list[str]
            ) -> list[Split]:
    """The protocol's split, or every fold of it when it cross-validates and no ``fold`` was asked for."""
    def one(opts: dict[str, Any]) -> Split:
        try:
            config = EvalConfig(protocol=protocol, options=opts)
        except ValidationError as err:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise EvalError(f"protocol {protocol!r}: {problems}") from None
        return split_records(records, config, seed, targets)

    first = one(dict(options))
    n_folds = int(first.test.attrs.get(N_FOLDS, 1))
    if n_folds == 1 or "fold" in options:
        return [first]
    return [first, *(one({**options, "fold": f}) for f in range(1, n_folds))]


def evaluate_model(
    model_or_uri: Any,
    records: pd.DataFrame,
    protocol: str,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    refit: bool = True,
    task: str | None = None,
    targets: Sequence[str] | None = None,
    name: str | None = None,
    progress: Progress = no_progress,
) -> EvalReport:
    """Split ``records`` by ``protocol`` (seeded), fit a clone of the model on the training rows (unless
    ``refit`` is False), predict the test rows and judge them: metrics, breakdowns, figures.

    ``model_or_uri`` is a fitted model or a URI for :func:`load_model`. ``task`` defaults to what the model
    says it predicts; ``targets`` (default: all the model predicts) choose which of its outputs are scored,
    or name them for a model that does not say. When the model has ``predict_interval(X) -> (lo, hi)``, interval
    coverage and width are reported too. ``name`` is how the report names the model (default: the URI, or
    the model's class).
    """
    options = dict(options or {})
    if isinstance(model_or_uri, (str, Path)):
        progress(f"loading {model_or_uri}")
        model = load_model(str(model_or_uri))
    else:
        model = model_or_uri
    name = name or (str(model_or_uri) if isinstance(model_or_uri, (str, Path)) else type(model).__name__)
    try:
        known_task, outputs = model_task_targets(model)
    except EvalError:
        if task is None or not targets:
            raise
        known_task, outputs = task, list(targets)
    task = task or known_task
    targets = list(targets or outputs)
    unknown = [t for t in targets if t not in outputs]
    if unknown:
        raise EvalError(f"the model predicts {', '.join(outputs)}; it cannot be scored on {', '.join(unknown)}")
    if refit:
        if isinstance(model, SavedModel):
            unfitted = model.recipe()
        elif hasattr(model, "get_params"):
            unfitted = clone(model)
        else:
            raise EvalError(f"cannot refit a {type(model).__name__} (not a scikit-learn estimator); "
                            f"score it as fitted with refit=False (CLI: --no-refit)")

    progress(f"splitting {len(records)} records by {protocol}")
    splits = _splits(records, protocol, options, seed, outputs)
    scored = [outputs.index(t) for t in targets]  # the model's output columns that are scored
    tests, preds, los, his = [], [], [], []
    for i, split in enumerate(splits):
        fold = f" (fold {i + 1} of {len(splits)})" if len(splits) > 1 else ""
        fitted = model
        if refit:
            progress(f"fitting on {len(split.train)} training rows{fold}")
            fitted = clone(unfitted).fit(model_input(split.train, task), split.train[outputs].astype("float64"))
        progress(f"predicting {len(split.test)} test rows{fold}")
        X = model_input(split.test, task)
        preds.append(columns_of(fitted.predict(X), len(X), len(outputs), "prediction")[:, scored])
        if hasattr(fitted, "predict_interval"):
            lo, hi = fitted.predict_interval(X)
            los.append(columns_of(lo, len(X), len(outputs), "interval lower bound")[:, scored])
            his.append(columns_of(hi, len(X), len(outputs), "interval upper bound")[:, scored])
        tests.append(split.test.assign(fold=i))
    test = pd.concat(tests, ignore_index=True)
    pred = np.vstack(preds)
    has_intervals = len(los) == len(splits)
    lo_all, hi_all = (np.vstack(los), np.vstack(his)) if has_intervals else (None, None)

    progress("scoring")
    predictions = _prediction_frame(test, task, targets, pred, lo_all, hi_all)
    sized = work_size(test, task)
    if sized is not None:
        predictions["size"] = sized[0].to_numpy()
        predictions[SIZE_BUCKET] = metrics.size_buckets(predictions["size"], N_SIZE_BUCKETS, sized[1])
    by = [c for c in (_device_column(test), WORKLOAD_COLUMN.get(task)) if c and c in predictions.columns]
    by += [SIZE_BUCKET] if sized is not None else []
    report = EvalReport(
        model=name, task=task, targets=targets, protocol=protocol, seed=seed, options=options, refit=refit,
        notes=[s.test.attrs[NOTE] for s in splits if NOTE in s.test.attrs],
        folds=[(len(s.train), len(s.test)) for s in splits], metrics={}, breakdowns={},
        predictions=predictions, has_intervals=has_intervals, size_unit=sized[1] if sized else None,
        level=getattr(getattr(model, "predictor", model), "level", None) if has_intervals else None,
    )
    for target in targets:
        _score_target(report, target, by)
    return report


def _prediction_frame(test: pd.DataFrame, task: str, targets: list[str], pred: np.ndarray,
                      lo: np.ndarray | None, hi: np.ndarray | None) -> pd.DataFrame:
    """The test rows' identity and breakdown columns with truth, prediction and interval per target."""
    keep = [c for c in ("record_id", "device_id", "device_name", WORKLOAD_COLUMN.get(task), "dtype", "fold")
            if c and c in test.columns]
    out = test[keep].copy()
    for j, t in enumerate(targets):
        out[t] = test[t].astype("float64")
        out[f"{t}_pred"] = pred[:, j]
        if lo is not None and hi is not None:
            out[f"{t}_lo"], out[f"{t}_hi"] = lo[:, j], hi[:, j]
    return out


def _score_target(report: EvalReport, target: str, by: list[str]) -> None:
    """Fill ``report``'s metrics, breakdown and figures for one target."""
    df = report.predictions
    y, p = df[target].to_numpy(), df[f"{target}_pred"].to_numpy()
    measured = ~np.isnan(y)
    if not measured.any():
        report.metrics[target] = {"n": 0.0}
        return
    lo, hi = (df[f"{target}_lo"].to_numpy(), df[f"{target}_hi"].to_numpy()) if report.has_intervals else (None, None)
    report.metrics[target] = metrics.summary(y, p, lo, hi)
    report.breakdowns[target] = metrics.breakdown(df, y, p, by, lo, hi)
    title = f"{report.model}: {report.protocol}, n={int(measured.sum())}"
    report.figures |= plots.evaluation_figures(
        y, p, target=target, title=title, lo=lo, hi=hi, level=report.level,
        size=df["size"].to_numpy() if "size" in df.columns else None, size_unit=report.size_unit or "",
        groups={c: df[c].to_numpy() for c in tracking.GROUP_COLUMNS if c in df.columns})
    errors = pd.Series(np.full(len(df), np.nan))
    errors[measured] = metrics.ape(y, p)
    curves = {"all": errors[measured].to_numpy()}
    for col in by:
        if col != SIZE_BUCKET and 2 <= df.loc[measured, col].nunique() <= MAX_CDF_GROUPS:
            curves |= {str(g): e.to_numpy() for g, e in errors[measured].groupby(df.loc[measured, col].to_numpy())}
            break
    report.figures[f"error_cdf_{target}.png"] = plots.error_cdf(curves, title=f"{target} error CDF ({title})")


# ----------------------------------------------------------------------------------------------- mlflow
def log_report(report: EvalReport, out_dir: str | Path, *, tracking_uri: str | None = None,
               experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None) -> str:
    """Write the report into ``out_dir`` and log it as an MLflow run: params (model, protocol, seed, options,
    rows), the test metrics under training's names, and the report directory as artifacts under
    ``report/``. Returns the run id."""
    tracking.start(tracking.tracking_uri(tracking_uri), experiment)
    with mlflow.start_run(run_name=run_name or f"eval {report.protocol}") as run:
        mlflow.set_tags({"perfcast.kind": "eval", "perfcast.task": report.task, "perfcast.protocol": report.protocol,
                         "perfcast.model": report.model})
        params: dict[str, Any] = {
            "model": report.model, "task": report.task, "targets": report.targets, "refit": report.refit,
            "eval": {"protocol": report.protocol, "seed": report.seed, "options": report.options,
                     "n_folds": len(report.folds)},
            "data": {"rows_train": sum(a for a, _ in report.folds), "rows_test": report.n_test},
        }
        if "record_id" in report.predictions.columns:
            params["data"]["test_sha256"] = tracking.content_hash(report.predictions[["record_id"]])
        tracking.log_params(params)
        mlflow.log_metrics(report.flat_metrics())
        report.to_markdown(out_dir)
        mlflow.log_artifacts(str(out_dir), artifact_path="report")
        return run.info.run_id
