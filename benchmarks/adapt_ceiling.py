"""How low can adaptation go? The error of models trained on the target GPU's own rows, and the data's noise floor.

    nice -n 10 python benchmarks/adapt_ceiling.py [--data-root ../shared/datasets] [--test-rows 3000]
        [--devices h100_sxm l40s] [--tasks gemm attention] [--out benchmarks/ADAPT_CEILING.md]

Why: the aiconfigurator-adapt goals (K = 512: GEMM 3.8%, attention 4.5%) are missed on GPUs without a family sibling.
Whether they are reachable from that GPU's data at all is a question of how well *any* model learns the GPU from N of
its rows, and of how reproducible the measurements are. Per left-out GPU and part (gemm, context, generation), on the
protocol's own test rows (``perfcast.experiments.adapt_bench``: the same base model, plan, donors and seeded test
sample, of which ``--test-rows`` are scored, restricted as the protocol is to rows the nearest-GPU baseline covers):

* (a) the adapted model at K = 128 / 512, read from ``--adapted`` (the protocol's json, on its 20,000 test rows);
* (b) a LightGBM model of ``log(measured / base)`` over the base model's features, ``log(base)`` and every donor's
  log latency over the base (the shape term's inputs, with more rows and leaves), fitted on N rows of the GPU
  itself, drawn by the probe plan or at random from the rows not scored, N in ``--rows`` (the plan up to
  :data:`PLAN_MAX`) and all of them (at most ``--max-rows``, drawn at random, for the run time; ``--resume`` keeps
  the GPUs and tasks already in ``--json``);
* (c) the noise floor: mean APE between two measurements of the same configuration of one GPU (two framework
  versions' tables, or one table's repeated rows), from the raw tables of ``aiconfigurator`` and
  ``aiconfigurator-power``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perfcast.eval.protocols import unseen_hardware_split
from perfcast.experiments.adapt_bench import donor_table
from perfcast.experiments.baselines import CONFIG_KEYS, PHASE_LABEL, copy_from_devices, nearest_devices
from perfcast.experiments.presets import budget_rows, choose
from perfcast.experiments.results import workspace
from perfcast.models.estimators.adapt import AdaptedModel
from perfcast.models.estimators.adapt_correction import shape_columns
from perfcast.perf_probe.plan import adaptation_plan
from perfcast.training.config import IntervalsConfig
from perfcast.training.train import fit_conformal

PROTOCOL = "aiconfigurator-adapt"
PARTS = {"gemm": ("gemm",), "attention": ("context", "generation")}
#: the ceiling model's LightGBM parameters: more leaves and trees as the rows grow (at least 5 rows per leaf)
BASE_PARAMS: dict[str, Any] = {"learning_rate": 0.05, "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8,
                               "reg_lambda": 1.0, "min_child_samples": 5, "verbose": -1, "n_jobs": 2}
#: the largest plan drawn: the plan's k-means scores every candidate against every centre (memory ~ rows x N)
PLAN_MAX = 2000
#: raw configuration columns of the aiconfigurator tables (a repeat: the same values of these on one GPU)
RAW_KEYS = {"gemm": ["op_name", "kernel_source", "gemm_dtype", "m", "n", "k"],
            "context": ["op_name", "kernel_source", "batch_size", "isl", "num_heads", "num_key_value_heads",
                        "head_dim", "window_size", "beam_width", "attn_dtype", "kv_cache_dtype", "step"]}
RAW_KEYS["generation"] = RAW_KEYS["context"]
TABLES = {"gemm": "gemm/*/*/gemm_perf.parquet", "context": "attention/*/*/context_attention_perf.parquet",
          "generation": "attention/*/*/generation_attention_perf.parquet"}


def ceiling_params(n: int) -> dict[str, Any]:
    """More capacity for more rows: 8 leaves / 300 trees at 512 rows up to 63 leaves / 400 faster trees from 10,000."""
    leaves, trees, rate = (8, 300, 0.05) if n <= 600 else (16, 500, 0.05) if n <= 2500 else \
        (31, 400, 0.1) if n <= 10000 else (63, 400, 0.1)
    return {**BASE_PARAMS, "num_leaves": leaves, "n_estimators": trees, "learning_rate": rate}


def ceiling_fit_predict(X: np.ndarray, r: np.ndarray, X_test: np.ndarray, seed: int) -> np.ndarray:
    """A LightGBM model of the log residual ``r`` on rows ``X``, predicted on ``X_test``."""
    import lightgbm as lgb

    model = lgb.LGBMRegressor(**ceiling_params(len(r)), random_state=seed).fit(X, r)
    return np.asarray(model.predict(X_test), dtype="float64")


def ape(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(p - y) / y))


def device_ceiling(task: str, base: Any, train: pd.DataFrame, test: pd.DataFrame, options: dict[str, Any],
                   sizes: list[int], test_rows: int, seed: int, max_rows: int) -> list[dict[str, Any]]:
    """(b) for one left-out device: per part and (N, draw) the mean APE on the protocol's K = 512 test rows."""
    test = test.reset_index(drop=True)
    dev = str(test["device_id"].iloc[0])
    keys = CONFIG_KEYS[task]
    candidates = test.drop(columns=["runtime_ms"])
    picked = test.index.isin(adaptation_plan(candidates, task, 512))
    rest = ~picked
    if rest.sum() > int(options["test_rows"]):  # the protocol's seeded sample of the unrevealed rows
        keep = np.random.default_rng(seed).choice(np.flatnonzero(rest), int(options["test_rows"]), replace=False)
        rest = np.isin(np.arange(len(test)), keep)
    donors = nearest_devices(dev, sorted(train["device_id"].dropna().unique()))
    covered = np.isfinite(copy_from_devices(train, test, donors, keys))  # the protocol scores these rows only
    scored = np.flatnonzero(rest & covered)
    scored = np.random.default_rng(seed + 1).choice(scored, min(test_rows, len(scored)), replace=False)
    rng = np.random.default_rng(seed + 2)
    # the rows outside the scored ones (a sample of the protocol's test set): at most max_rows, the K = 512 plan's kept
    pool = np.setdiff1d(np.arange(len(test)), scored)
    if len(pool) > max_rows:
        others = np.setdiff1d(pool, np.flatnonzero(picked))
        pool = np.concatenate([np.flatnonzero(picked), rng.choice(others, max_rows - picked.sum(), replace=False)])
    used = np.concatenate([scored, pool])  # only these rows' features, base predictions and donors are computed
    F, base_pred = AdaptedModel(base).parts(test.iloc[used])
    table = donor_table(base, train, test.iloc[used], donors, keys, task, errors=False)
    X = np.column_stack([F[shape_columns(F, task)].to_numpy(dtype="float64"), np.log(base_pred),
                         table.latencies(F, np.log(base_pred))])
    y = test["runtime_ms"].to_numpy(dtype="float64")[used]
    r = np.log(y / base_pred)
    parts = (test["phase"].map(PHASE_LABEL).fillna(test["phase"]).astype(str).to_numpy() if task == "attention"
             else np.full(len(test), "gemm"))[used]
    scored, pool = np.arange(len(scored)), len(scored) + np.arange(len(pool))  # positions in ``used``
    draws: dict[tuple[str, int], np.ndarray] = {}
    for n in sizes:
        if n >= len(pool):
            continue
        draws[("random", n)] = rng.choice(pool, n, replace=False)
        if n > PLAN_MAX:
            continue
        draws[("plan", n)] = np.flatnonzero(np.isin(used, np.flatnonzero(picked))) if n == 512 else \
            pool[np.isin(used[pool], adaptation_plan(candidates.iloc[used[pool]], task, n))]
    draws[("all", len(pool))] = pool
    out = [{"device": dev, "part": part, "rows": 0, "draw": "base model", "n_test": int((parts[scored] == part).sum()),
            "mape": ape(y[scored][parts[scored] == part], base_pred[scored][parts[scored] == part])}
           for part in PARTS[task]]
    for (draw, n), rows in draws.items():
        start = time.perf_counter()
        ok = np.isfinite(r[rows])
        pred = base_pred[scored] * np.exp(ceiling_fit_predict(X[rows][ok], r[rows][ok], X[scored], seed))
        for part in PARTS[task]:
            sel = parts[scored] == part
            out.append({"device": dev, "part": part, "rows": int(n), "draw": draw, "n_test": int(sel.sum()),
                        "mape": ape(y[scored][sel], pred[sel]), "fit_s": round(time.perf_counter() - start, 1)})
        print(f"  {dev} {task} {draw} N={n}: " + ", ".join(f"{o['part']} {100 * o['mape']:.2f}%"
                                                         for o in out[-len(PARTS[task]):]), flush=True)
    return out


def noise_floor(root: Path) -> list[dict[str, Any]]:
    """(c) Mean APE between two measurements of one configuration on one GPU: every pair of tables (framework /
    version) of a GPU in ``aiconfigurator`` and ``aiconfigurator-power`` joined on the raw configuration columns,
    and each table's repeated configurations against their first measurement."""
    tables: dict[tuple[str, str], list[tuple[str, pd.DataFrame]]] = {}
    for dataset in ("aiconfigurator", "aiconfigurator-power"):
        for part, pattern in TABLES.items():
            for path in sorted((root / dataset).glob(f"*/{pattern}")):
                gpu = path.relative_to(root / dataset).parts[0]
                label = f"{dataset}/{'/'.join(path.relative_to(root / dataset).parts[1:-1])}"
                tables.setdefault((gpu, part), []).append((label, pd.read_parquet(path)))
    out = []
    for (gpu, part), found in sorted(tables.items()):
        for i, (label, df) in enumerate(found):
            keys = [c for c in RAW_KEYS[part] if c in df.columns]
            first = df.groupby(keys, dropna=False)["latency"].transform("first")
            dup = df.duplicated(keys, keep="first").to_numpy()
            out.append({"gpu": gpu, "part": part, "a": label, "b": "(repeats within the table)",
                        "pairs": int(dup.sum()),
                        "mape": ape(first[dup].to_numpy(), df["latency"][dup].to_numpy()) if dup.any() else None})
            for other, df2 in found[i + 1:]:
                keys = [c for c in RAW_KEYS[part] if c in df.columns and c in df2.columns]
                if "kernel_source" in keys and not set(df["kernel_source"]) & set(df2["kernel_source"]):
                    keys.remove("kernel_source")  # another framework's library for the same shapes
                a = df.groupby(keys, dropna=False)["latency"].mean().rename("a")
                b = df2.groupby(keys, dropna=False)["latency"].mean().rename("b")
                j = pd.concat([a, b], axis=1, join="inner")
                j = j[(j["a"] > 0) & (j["b"] > 0)]
                # a version's systematic shift per dtype is not noise: divide it out (the median ratio per dtype)
                dtype = j.index.get_level_values([c for c in keys if "dtype" in c][0])
                ratio = j["b"] / j["a"]
                shifted = ratio / ratio.groupby(dtype).transform("median")
                out.append({"gpu": gpu, "part": part, "a": label, "b": other, "pairs": len(j),
                            "mape": ape(j["a"].to_numpy(), j["b"].to_numpy()) if len(j) else None,
                            "median_ape": float(np.median(np.abs(j["b"] / j["a"] - 1))) if len(j) else None,
                            "level_corrected_mape": float(np.mean(np.abs(shifted - 1))) if len(j) else None})
    return out


def adapted_rows(path: Path) -> dict[tuple[str, str, int], float]:
    """(a) the adapted model's mean APE per (device, part, K) from the protocol's json."""
    out = {}
    for r in json.loads(path.read_text(encoding="utf-8")):
        if r["protocol"] != PROTOCOL or r["probe_budget"] not in (128, 512):
            continue
        part = r["target"].split("(")[1].split(")")[0] if "(" in r["target"] else "gemm"
        out[(r["device"], part, int(r["probe_budget"]))] = r["value"]
    return out


def render(rows: list[dict[str, Any]], noise: list[dict[str, Any]], adapted: dict[tuple[str, str, int], float],
           command: str) -> str:
    """The markdown report."""
    lines = ["# The adaptation ceiling: models trained on the target GPU's own rows, and the noise floor", "",
             f"`{command}` (each GPU's seconds in the json, `device_s`). Script: "
             "[adapt_ceiling.py](adapt_ceiling.py); json beside this file. Columns (mean APE, %, on the protocol's "
             "K = 512 test rows, subsampled; `adapted`: the protocol's own run, RESULTS_adapt.md, on its 20,000):",
             "",
             "- `adapted 128 / 512`: the adapted model (the preset's, as RESULTS_adapt.md reports it) at K = 128 / 512;",
             "- `plan N` / `random N`: LightGBM of log(measured / base) over the shape term's inputs (base features, "
             "log base, every donor's log latency), fitted on N rows of the GPU itself, drawn by the probe plan or "
             "at random from the GPU's rows not scored; `all`: every such row (at most `--max-rows`, drawn at "
             "random; N in brackets);",
             "- `base`: the base model (K = 0) on the same rows.", ""]
    frame = pd.DataFrame(rows)
    columns = sorted({(n, d) for d, n in zip(frame["draw"], frame["rows"]) if d in ("plan", "random")})
    head = ["GPU", "part", "base", "adapted 128", "adapted 512",
            *[f"{d} {n}" for n, d in columns], "all (N)", "goal 512"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    goal = {"gemm": 3.8, "context": 4.5, "generation": 4.5}
    for (dev, part), g in frame.groupby(["device", "part"], sort=True):
        at = {(d, n): v for d, n, v in zip(g["draw"], g["rows"], g["mape"])}
        cells = [dev, part, f"{100 * at[('base model', 0)]:.2f}",
                 *[f"{100 * adapted[(dev, part, k)]:.2f}" if (dev, part, k) in adapted else "—" for k in (128, 512)],
                 *[f"{100 * at[(d, n)]:.2f}" if (d, n) in at else "—" for n, d in columns]]
        full = g[g["draw"] == "all"]
        cells.append(f"{100 * full['mape'].iloc[0]:.2f} ({int(full['rows'].iloc[0]):,})" if len(full) else "—")
        cells.append(f"{goal[part]}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *mean_table(frame, adapted, columns)]
    lines += ["", "## Noise floor: two measurements of one configuration on one GPU", "",
              "Mean APE of one table's latency against the other's for the same raw configuration (op, kernel "
              "source where both tables share one, dtype, shape); `repeats within the table`: rows repeating a "
              "configuration against its first row. Only pairs found are listed.", "",
              "| GPU | part | table a | table b | pairs | mean APE | median APE | mean APE, dtype shift divided out |",
              "|---|---|---|---|---|---|---|---|"]
    for n in noise:
        if n["pairs"]:
            more = [n.get("median_ape"), n.get("level_corrected_mape")]
            lines.append(f"| {n['gpu']} | {n['part']} | {n['a']} | {n['b']} | {n['pairs']:,} | {100 * n['mape']:.2f} | "
                         + " | ".join("—" if v is None else f"{100 * v:.2f}" for v in more) + " |")
    no_pairs = sorted({f"{n['gpu']} {n['part']}" for n in noise if not n["pairs"] and n["b"].startswith("(")})
    lines += ["", f"Tables with no repeated configuration: {', '.join(no_pairs) or 'none'}.", ""]
    return "\n".join(lines)


def mean_table(frame: pd.DataFrame, adapted: dict[tuple[str, str, int], float],
               columns: list[tuple[int, str]]) -> list[str]:
    """Each column's mean over the GPUs, per part: what the issue's goals (means over the GPUs left out) compare with.
    A column some GPU lacks (a table too small for the draw) is averaged over the GPUs that have it, their count
    beside it."""
    goals = {"gemm": (5.0, 3.8), "context": (6.0, 4.5), "generation": (6.0, 4.5)}
    head = ["part", "GPUs", "base", "adapted 128", "adapted 512", *[f"{d} {n}" for n, d in columns], "all",
            "goal 128", "goal 512"]
    lines = ["Mean over the GPUs (mean APE, %; the goals are means over the GPUs left out):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for part, g in frame.groupby("part", sort=True):
        devices = sorted(g["device"].unique())
        values = {"base": {r.device: r.mape for r in g[g["draw"] == "base model"].itertuples()},
                  "all": {r.device: r.mape for r in g[g["draw"] == "all"].itertuples()}}
        for k in (128, 512):
            values[f"adapted {k}"] = {d: adapted[(d, part, k)] for d in devices if (d, part, k) in adapted}
        for n, d in columns:
            values[f"{d} {n}"] = {r.device: r.mape for r in g[(g["draw"] == d) & (g["rows"] == n)].itertuples()}

        def cell(v: dict[str, float]) -> str:
            if not v:
                return "—"
            mean = f"{100 * np.mean(list(v.values())):.2f}"
            return mean if len(v) == len(devices) else f"{mean} ({len(v)} GPUs)"
        cells = [part, str(len(devices)), cell(values["base"]), cell(values["adapted 128"]),
                 cell(values["adapted 512"]), *[cell(values[f"{d} {n}"]) for n, d in columns], cell(values["all"]),
                 *[f"{v}" for v in goals[part]]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    parser.add_argument("--data-root", type=Path, default=here.parents[1] / "shared" / "datasets")
    parser.add_argument("--test-rows", type=int, default=3000)
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 2000, 8000])
    parser.add_argument("--devices", nargs="*", default=None)
    parser.add_argument("--tasks", nargs="+", default=["gemm", "attention"])
    parser.add_argument("--adapted", type=Path, default=here / "results_adapt.json")
    parser.add_argument("--out", type=Path, default=here / "ADAPT_CEILING.md")
    parser.add_argument("--json", type=Path, default=here / "adapt_ceiling.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rows", type=int, default=30000, help="the `all` draw's cap (run time)")
    parser.add_argument("--resume", action="store_true", help="keep --json's rows and skip their GPUs and tasks")
    parser.add_argument("--render-only", action="store_true", help="fit nothing: the noise floor and the report of "
                        "the rows in --json (with --resume) and --merge")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="other runs' json (e.g. --tasks attention run beside this one): their rows count as done")
    args = parser.parse_args()
    choice = choose(PROTOCOL)
    rows: list[dict[str, Any]] = json.loads(args.json.read_text(encoding="utf-8"))["ceiling"] \
        if args.resume and args.json.exists() else []
    rows += [r for path in args.merge for r in json.loads(path.read_text(encoding="utf-8"))["ceiling"]]
    done = {(r["device"], r["part"]) for r in rows}
    with workspace(args.data_root.resolve()) as ws:
        for task in [] if args.render_only else args.tasks:
            intervals = choice.config.intervals if task == choice.config.task else IntervalsConfig(
                **choice.options.get(f"{task}_intervals", {}))
            config = choice.config.model_copy(update={"task": task, "intervals": intervals})
            records = ws.records("aiconfigurator", task)
            for dev in args.devices or sorted(records["device_id"].dropna().unique()):
                if (dev, PARTS[task][0]) in done:
                    continue
                start = time.perf_counter()
                train, test = unseen_hardware_split(records, test_devices=[dev])
                fit_rows, fit_params, _ = budget_rows(choice.name, choice.params, train, choice.train_rows, args.seed)
                base = fit_conformal(config, fit_rows, fit_params, seed=args.seed)
                found = device_ceiling(task, base, train, test, choice.options, args.rows, args.test_rows, args.seed,
                                       args.max_rows)
                rows += [{**r, "device_s": round(time.perf_counter() - start, 1)} for r in found]
                args.json.write_text(json.dumps({"ceiling": rows}, indent=1), encoding="utf-8")  # partial results
    noise = noise_floor(args.data_root.resolve())
    command = "nice -n 10 python benchmarks/adapt_ceiling.py" + " --render-only" * args.render_only + \
        " --resume" * args.resume + (
        f" --devices {' '.join(args.devices)}" if args.devices else "") + (
        f" --tasks {' '.join(args.tasks)}" if args.tasks != ["gemm", "attention"] else "") + (
        f" --test-rows {args.test_rows}" if args.test_rows != 3000 else "") + "".join(
        f" --merge {p.name}" for p in args.merge)
    args.json.write_text(json.dumps({"ceiling": rows, "noise": noise}, indent=1), encoding="utf-8")
    gpus = sorted(p.name for p in (args.data_root / "aiconfigurator").iterdir() if p.is_dir() and p.name != "systems")
    missing = [f"{g} {part}" for g in gpus for t in args.tasks for part in PARTS[t]
               if not any(r["device"] == g and r["part"] == part for r in rows)]
    text = render(rows, noise, adapted_rows(args.adapted), command)
    if missing:
        text = text.replace("\n\n| GPU |", f"\n\nNot measured (the run was stopped for time): {', '.join(missing)}."
                            "\n\n| GPU |", 1)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
