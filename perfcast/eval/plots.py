"""Evaluation plots: predicted vs measured (log-log), error CDFs per group, error against work size, error
per group (dtype, device) and interval coverage per size and group.

Why these: runtimes span decades, so agreement is judged on log axes against the y = x line with
relative-error bands; a CDF shows the whole error distribution (a mean hides a long tail) and how groups
(devices, ops) differ; error against size shows where a model stops extrapolating; error per dtype shows
which kernels it has not learnt; coverage per size and group shows where the intervals promise more than
they keep (a 90 % interval that holds on 60 % of the large GEMMs). :func:`evaluation_figures` builds the set
a training run logs to MLflow and ``perfcast eval`` writes beside its report. Figures are built with
matplotlib's object API on the Agg canvas (``Figure()``, not pyplot): no global figure state, no window,
nothing to close, so they are safe in servers, tests and MLflow runs alike. Layout is "constrained", worked
out when a figure is drawn, so building one costs little until it is saved. Each function returns the
Figure; :func:`save_png` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from perfcast.eval.metrics import size_buckets

#: relative-error bands drawn around y = x
BANDS: tuple[float, ...] = (0.10, 0.25)
#: log-axis tick labels as plain numbers (30, not 3 x 10^1)
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")
#: APEs below this (fraction) are drawn at it: a log axis cannot show an exact prediction
APE_FLOOR = 1e-4


def _finite_positive(*arrays: Any) -> tuple[np.ndarray, ...]:
    """The arrays as float, restricted to rows where every one is finite and positive."""
    arrs = [np.asarray(a, dtype="float64").ravel() for a in arrays]
    if len({a.size for a in arrs}) > 1:
        raise ValueError(f"arrays to plot have different lengths: {[a.size for a in arrs]}")
    ok = np.logical_and.reduce([np.isfinite(a) & (a > 0) for a in arrs])
    return tuple(a[ok] for a in arrs)


def pred_vs_measured(measured: Any, predicted: Any, *, target: str = "value", title: str = "") -> Figure:
    """Log-log scatter of predicted against measured with the y = x line and ±10 % / ±25 % bands.

    The legend says what fraction of points each band holds; rows that cannot be drawn on log axes
    (unmeasured, non-positive) are counted in the title.
    """
    t_all = np.asarray(measured, dtype="float64").ravel()
    t, p = _finite_positive(measured, predicted)
    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(t, p, s=6, alpha=0.5, linewidths=0)
    if len(t):
        line = np.geomspace(min(t.min(), p.min()), max(t.max(), p.max()), 50)
        ax.plot(line, line, "k-", lw=1, label="y = x")
        ratio = p / t
        for band, shade in zip(BANDS, (0.25, 0.12)):
            inside = float(np.mean((ratio >= 1 - band) & (ratio <= 1 + band)))
            ax.fill_between(line, line * (1 - band), line * (1 + band), color="tab:green", alpha=shade,
                            linewidth=0, label=f"±{band:.0%} ({inside:.0%} of points)")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"measured {target}")
    ax.set_ylabel(f"predicted {target}")
    hidden = len(t_all) - len(t)
    ax.set_title(title + (f"\n({hidden} unmeasured or non-positive points not shown)" if hidden else ""),
                 fontsize=10)
    return fig


def error_cdf(ape_by_group: Mapping[str, Any], *, title: str = "") -> Figure:
    """Empirical CDF of the absolute percentage error (fractions in, percent on a log axis) per group."""
    if not ape_by_group:
        raise ValueError("error_cdf needs at least one group of errors")
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, values in ape_by_group.items():
        e = np.asarray(values, dtype="float64").ravel()
        e = np.sort(e[np.isfinite(e)])
        if not len(e):
            continue
        frac = np.arange(1, len(e) + 1) / len(e)
        ax.step(100 * np.maximum(e, APE_FLOOR), frac, where="post", label=f"{name} (n={len(e)})")
    for band in BANDS:
        ax.axvline(100 * band, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("absolute percentage error (%)")
    ax.set_ylabel("fraction of rows with smaller error")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def error_vs_size(size: Any, ape: Any, *, unit: str = "", title: str = "", n_bins: int = 10) -> Figure:
    """APE (percent) against work size, both log, with the median APE of each size-quantile bin."""
    s_all = np.asarray(size, dtype="float64").ravel()
    e_all = np.asarray(ape, dtype="float64").ravel()
    if s_all.shape != e_all.shape:
        raise ValueError(f"size has {s_all.size} values but ape has {e_all.size}")
    ok = np.isfinite(s_all) & (s_all > 0) & np.isfinite(e_all)
    s, e = s_all[ok], np.maximum(e_all[ok], APE_FLOOR) * 100
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(s, e, s=6, alpha=0.4, linewidths=0)
    if len(s) > 1:
        bins = pd.qcut(s, n_bins, labels=False, duplicates="drop")
        med = pd.DataFrame({"size": s, "ape": e}).groupby(bins).median()
        ax.plot(med["size"], med["ape"], "k.-", lw=1.2, label="median per size bin")
        ax.legend(loc="upper right", fontsize=8)
    for band in BANDS:
        ax.axhline(100 * band, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"work size{f' ({unit})' if unit else ''}")
    ax.set_ylabel("absolute percentage error (%)")
    hidden = int((~ok).sum())
    ax.set_title(title + (f"\n({hidden} rows without a size or error not shown)" if hidden else ""), fontsize=10)
    return fig


def error_by_group(ape_by_group: Mapping[str, Any], *, by: str, target: str = "value", title: str = "") -> Figure:
    """Box plot of the APE (percent, log axis) per group (``by`` names the grouping: dtype, device), groups
    in the given order, each labelled with its row count and mean APE."""
    groups = {str(g): np.asarray(v, dtype="float64") for g, v in ape_by_group.items()}
    groups = {g: v[np.isfinite(v)] for g, v in groups.items() if np.isfinite(v).any()}
    if not groups:
        raise ValueError("error_by_group needs at least one group with a finite error")
    fig = Figure(figsize=(max(5.0, 0.8 * len(groups) + 2.5), 4.5), layout="constrained")
    ax = fig.subplots()
    ax.boxplot([100 * np.maximum(v, APE_FLOOR) for v in groups.values()], showfliers=False, whis=(5, 95))
    ax.set_xticks(range(1, len(groups) + 1),
                  [f"{g}\nn={len(v)}, mean {100 * v.mean():.1f}%" for g, v in groups.items()], fontsize=8)
    for band in BANDS:
        ax.axhline(100 * band, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PLAIN)
    ax.set_xlabel(f"{by} (boxes: quartiles, whiskers: 5th-95th percentile)")
    ax.set_ylabel(f"{target} absolute percentage error (%)")
    ax.set_title(f"{target} error by {by}" + (f"\n{title}" if title else ""), fontsize=10)
    return fig


def interval_coverage(measured: Any, lo: Any, hi: Any, by: Mapping[str, Any], *, level: float | None = None,
                      target: str = "value", title: str = "") -> Figure:
    """Fraction of measured values inside their interval, one panel per grouping in ``by`` (name -> one label
    per row, e.g. size bucket and dtype), with the nominal ``level`` as a dashed line."""
    t = np.asarray(measured, dtype="float64").ravel()
    a, b = np.asarray(lo, dtype="float64").ravel(), np.asarray(hi, dtype="float64").ravel()
    if not (t.shape == a.shape == b.shape):
        raise ValueError(f"measured ({t.size}), lo ({a.size}) and hi ({b.size}) differ in length")
    if not by:
        raise ValueError("interval_coverage needs at least one grouping")
    seen = ~np.isnan(t)
    inside = pd.Series((t >= a) & (t <= b))[seen]  # groups in their own order: size buckets smallest first
    fig = Figure(figsize=(max(6.5, 4.5 * len(by)), 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(by), sharey=True))
    for ax, (name, labels) in zip(axes, by.items()):
        keys = pd.Series(labels).reset_index(drop=True)[seen]
        rate = inside.groupby(keys, sort=True, observed=True).agg(["mean", "size"])
        ax.bar(range(len(rate)), rate["mean"], color="tab:blue", alpha=0.7)
        ax.set_xticks(range(len(rate)), [f"{g}\nn={n}" for g, n in zip(rate.index, rate["size"])], fontsize=8,
                      rotation=25 if len(rate) > 2 else 0, ha="right" if len(rate) > 2 else "center")
        if level is not None:
            ax.axhline(level, color="k", ls="--", lw=1, label=f"nominal {level:.0%}")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(name)
    axes[0].set_ylabel(f"{target}: fraction inside the interval")
    head = f"{target}: {inside.mean():.1%} of measured values inside the interval"
    fig.suptitle(head + (f"\n{title}" if title else ""), fontsize=10)
    return fig


def evaluation_figures(measured: Any, predicted: Any, *, target: str, title: str, lo: Any = None, hi: Any = None,
                       level: float | None = None, size: Any = None, size_unit: str = "",
                       groups: Mapping[str, Any] | None = None, max_groups: int = 12) -> dict[str, Figure]:
    """The figures a model is judged by on one target, by file name: predicted vs measured, error against
    size (when ``size`` is given), error per group of ``groups`` (name -> one label per row; groupings with
    one group or more than ``max_groups`` are skipped), and interval coverage per size bucket and group (when
    ``lo``/``hi`` are given; over all rows when there is nothing to group by). Rows whose target was not
    measured are left out."""
    t = np.asarray(measured, dtype="float64").ravel()
    p = np.asarray(predicted, dtype="float64").ravel()
    seen = ~np.isnan(t)
    figs = {f"pred_vs_measured_{target}.png": pred_vs_measured(t[seen], p[seen], target=target, title=title)}
    if not seen.any():
        return figs
    ape = np.abs(p[seen] - t[seen]) / t[seen]
    splits: dict[str, np.ndarray] = {}
    if size is not None:
        s = np.asarray(size, dtype="float64").ravel()
        figs[f"error_vs_size_{target}.png"] = error_vs_size(s[seen], ape, unit=size_unit, title=f"{target}: {title}")
        if np.isfinite(s[seen]).any():
            splits["size"] = size_buckets(s, 4, size_unit)
    for name, labels in (groups or {}).items():
        lab = pd.Series(np.asarray(labels, dtype=object)).astype("string").fillna("(none)").to_numpy(dtype=object)
        if 2 <= len(set(lab[seen])) <= max_groups:
            splits[name] = pd.Series(lab)
            order = pd.unique(lab[seen])
            figs[f"error_by_{name}_{target}.png"] = error_by_group(
                {g: ape[lab[seen] == g] for g in order}, by=name, target=target, title=title)
    if lo is not None and hi is not None:
        splits = splits or {"all rows": pd.Series(np.full(len(t), "all"))}
        figs[f"interval_coverage_{target}.png"] = interval_coverage(t, lo, hi, splits, level=level, target=target,
                                                                    title=title)
    return figs


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path
