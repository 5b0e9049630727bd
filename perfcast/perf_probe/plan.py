"""Which configurations to measure on a new device so a trained model adapts best from few measurements.

Why space-filling: an adaptation (:mod:`perfcast.models.estimators.adapt`) learns a per-kernel-kind level and a
correction over shapes, so the K measurements should cover every kernel kind (each gets a share of the
budget growing with the square root of its candidates) and spread over the shapes that will be asked
about. Within each kind (dtype; attention phase, dtype and KV dtype) the shapes are the centres of a
k-means clustering of the candidates in standardised log sizes (the candidate nearest each centre), which
spreads the points over the shape range in proportion to where the candidates lie. Pure maximin
(farthest-point) selection measured worse: it spends the budget on the corners of the range (the smallest and
largest shapes), whose errors are unlike the typical shape's, so both the correction and the intervals
calibrated on them fit the typical shape worse (:doc:`benchmarks/ANALYSIS_adapt.md`). When the caller gives
each candidate's predicted interval width, a share of each kind's budget then goes to the widest intervals
(where the model is least sure), each as far as possible from the shapes already chosen. With a ``random_share``,
that share of the budget is drawn at random (seeded) from the candidates left: the centres over-represent sparse
regions and small kinds relative to the list of shapes a user asks about, and a random draw follows that list's
density (benchmarks/ANALYSIS_adapt.md, round 7).

The plan reads only configuration columns (:data:`SIZE_COLUMNS`, :data:`KIND_COLUMNS`): a candidate table
that carries measured latencies gets the same plan as one whose latencies are NaN. It imports nothing from
the later stages; the interval widths come from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

#: per task, the size columns the plan spreads over (log-scaled; constant or absent ones are ignored)
SIZE_COLUMNS: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k", "batch"),
    "attention": ("batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim", "window", "beam_width"),
}
#: per task, the columns naming a kernel kind (each kind gets its own share of the budget)
KIND_COLUMNS: dict[str, tuple[str, ...]] = {
    "gemm": ("op", "dtype", "n_threads"),
    "attention": ("phase", "dtype", "kv_dtype", "n_threads"),
}
#: budget of ``perfcast probe --plan adapt`` when it is given as a duration rather than a count
DEFAULT_BUDGET = 128
#: share of a kind's budget chosen by interval width (when widths are given), after the space-filling part
WIDTH_SHARE = 0.25
#: distinct candidate shapes per kind the k-means step clusters at most (a seeded sample beyond that)
MAX_CLUSTERED = 5_000


def _kinds(candidates: pd.DataFrame, task: str) -> pd.Series:
    cols = [c for c in KIND_COLUMNS[task] if c in candidates.columns]
    if not cols:
        return pd.Series("all", index=candidates.index)
    text = [candidates[c].astype("string").fillna("-") for c in cols]
    out = text[0]
    for t in text[1:]:
        out = out + "/" + t
    return out


def _coordinates(candidates: pd.DataFrame, task: str) -> np.ndarray:
    """(rows, d) standardised log sizes (missing or non-positive sizes count as 1)."""
    cols = [c for c in SIZE_COLUMNS[task] if c in candidates.columns]
    if not cols:
        return np.zeros((len(candidates), 1))
    x = candidates[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    x = np.log2(np.where(np.isfinite(x) & (x > 0), x, 1.0))
    spread = x.std(axis=0)
    keep = spread > 0
    if not keep.any():
        return np.zeros((len(candidates), 1))
    return (x[:, keep] - x[:, keep].mean(axis=0)) / spread[keep]


def allocate(sizes: pd.Series, budget: int) -> pd.Series:
    """Budget per kind: proportional to the square root of its candidate count (so rare kinds are measured
    too), at least one each while the budget lasts, never more than a kind has; largest remainders first."""
    sizes = sizes[sizes > 0]
    budget = min(int(budget), int(sizes.sum()))
    share = pd.Series(0, index=sizes.index, dtype="int64")
    while share.sum() < budget:
        room = sizes - share
        open_ = room[room > 0].index
        want = np.sqrt(sizes[open_].astype("float64"))
        ideal = want / want.sum() * (budget - share.sum())
        step = np.floor(ideal).astype("int64").clip(upper=room[open_])
        if step.sum() == 0:  # hand out the remainders one at a time, largest first (ties: kind order)
            order = (ideal - np.floor(ideal)).sort_values(ascending=False, kind="stable").index
            step[order[: budget - share.sum()]] = 1
        share[open_] += step
    return share


def _distance(x: np.ndarray, i: int) -> np.ndarray:
    """Euclidean distance of every row of ``x`` to row ``i``."""
    d = x - x[i]
    return np.sqrt(np.einsum("ij,ij->i", d, d))


def farthest_points(x: np.ndarray, count: int, chosen: Sequence[int] = (), weight: np.ndarray | None = None
                    ) -> list[int]:
    """Greedy maximin: ``count`` more row positions of ``x``, each the farthest from those already chosen
    (times ``weight`` when given); the first, with none chosen, is the row nearest the centre."""
    picked = list(chosen)
    if count <= 0 or len(x) == 0:
        return []
    dist = np.full(len(x), np.inf)
    for i in picked:
        dist = np.minimum(dist, _distance(x, i))
    w = np.ones(len(x)) if weight is None else weight
    new = []
    for _ in range(min(count, len(x) - len(picked))):
        if not picked:
            i = int(np.argmin(((x - x.mean(axis=0)) ** 2).sum(axis=1)))
        else:
            score = np.where(dist > 0, dist * w, -1.0)
            i = int(np.argmax(score))
            if score[i] < 0:  # every remaining row duplicates a chosen one
                break
        picked.append(i)
        new.append(i)
        dist = np.minimum(dist, _distance(x, i))
    return new


def centres(x: np.ndarray, count: int, seed: int = 0) -> list[int]:
    """Row positions of ``count`` distinct rows of ``x``: the row nearest each k-means centre (clustered on at
    most :data:`MAX_CLUSTERED` rows drawn with ``seed``), a centre whose nearest row is taken moving to its next."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    count = min(count, len(x))
    if count <= 0:
        return []
    if count == len(x):
        return list(range(len(x)))
    rng = np.random.default_rng(seed)
    fit_on = x if len(x) <= MAX_CLUSTERED else x[rng.choice(len(x), MAX_CLUSTERED, replace=False)]
    with threadpool_limits(1):  # a few thousand points: OpenMP threads only wait on each other (and on a busy machine)
        km = KMeans(n_clusters=count, random_state=seed, n_init=1, max_iter=50).fit(fit_on)
    order = np.argsort(km.transform(x), axis=0)
    chosen: list[int] = []
    taken = set()
    for c in range(count):
        i = next(int(r) for r in order[:, c] if int(r) not in taken)
        taken.add(i)
        chosen.append(i)
    return chosen


def random_share_for(share: float | Mapping[str, float] | None, task: str, option: str = "random_share") -> float:
    """The share of ``task``'s plan drawn at random: ``share`` is one float for every kernel family or a table
    per family (a family it does not name: 0). ``option`` names the setting in the error, so a bad preset value
    says where it came from."""
    if share is None:
        return 0.0
    if isinstance(share, Mapping):
        unknown = sorted(set(share) - set(SIZE_COLUMNS))
        if unknown:
            raise ValueError(f"{option}: unknown kernel families {unknown}; known: {', '.join(SIZE_COLUMNS)}")
        share = share.get(task, 0.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ValueError(f"{option} must be a share within [0, 1] or a table of them per kernel family "
                         f"(e.g. {{ gemm = 0.5 }}), got {share!r} for {task}")
    return float(share)


def adaptation_plan(candidates: pd.DataFrame, task: str, budget: int, width: np.ndarray | None = None,
                    seed: int = 0, random_share: float = 0.0) -> pd.Index:
    """The index labels of the ``budget`` candidates to measure (see the module docstring).

    ``candidates``: the configurations the probe can run on the device (records-like rows; only the
    configuration columns are read). ``width``: optional predicted relative interval width per candidate.
    ``seed`` fixes the clustering, so the same candidates always give the same plan. ``random_share``: the share
    of the budget drawn at random (with ``seed``) from the candidates the space-filling part left.
    """
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be within [0, 1], got {random_share}")
    drawn = int(round(budget * random_share))
    if drawn:
        first = adaptation_plan(candidates, task, budget - drawn, width, seed)
        left = np.flatnonzero(~candidates.index.isin(first))
        extra = np.random.default_rng(seed).choice(left, min(drawn, len(left)), replace=False)
        return candidates.index[np.sort(np.concatenate([candidates.index.get_indexer(first), extra]))]
    if task not in SIZE_COLUMNS:
        raise ValueError(f"no adaptation plan for task {task!r}; known: {', '.join(SIZE_COLUMNS)}")
    if budget <= 0 or candidates.empty:
        return candidates.index[:0]
    x = _coordinates(candidates, task)
    kinds = _kinds(candidates, task)
    share = allocate(kinds.value_counts(sort=False).sort_index(), budget)
    w = None if width is None else np.asarray(width, dtype="float64")
    if w is not None and (len(w) != len(candidates) or not np.isfinite(w).any() or np.nanstd(w) == 0):
        w = None  # a constant (or missing) width says nothing about where the model is unsure
    out: list[int] = []
    codes = kinds.to_numpy()
    for kind, n in share.items():
        # one candidate per distinct point (repeats of a configuration add nothing to measure), first seen kept
        in_kind = np.flatnonzero(codes == kind)
        _, first_seen = np.unique(x[in_kind], axis=0, return_index=True)
        rows = in_kind[np.sort(first_seen)]
        by_width = int(round(n * WIDTH_SHARE)) if w is not None else 0
        first = centres(x[rows], n - by_width, seed)
        if by_width:
            rel = np.nan_to_num(w[rows], nan=0.0)
            rel = rel / rel.max() if rel.max() > 0 else np.ones(len(rows))
            first += farthest_points(x[rows], by_width, chosen=first, weight=rel ** 2)
        out.extend(rows[first].tolist())
    return candidates.index[np.sort(np.asarray(out, dtype=np.int64))]


def plan_configs(configs: Sequence[dict], task: str, budget: int, width: np.ndarray | None = None, seed: int = 0
                 ) -> list[dict]:
    """The probe configurations (dicts of a probe's ``space()``) :func:`adaptation_plan` picks, ``budget`` of them per
    device (a model is adapted to one device: a GPU's plan must not be shared with the host CPU's), in their order.
    ``width``: per configuration, as :func:`adaptation_plan` takes it."""
    configs = list(configs)
    devices = np.asarray([str(c.get("device", "cpu")) for c in configs])
    picked: list[int] = []
    for device in dict.fromkeys(devices):
        rows = np.flatnonzero(devices == device)
        own = None if width is None else np.asarray(width, dtype="float64")[rows]
        picked += [int(rows[i]) for i in adaptation_plan(pd.DataFrame([configs[i] for i in rows]), task, budget, own,
                                                         seed)]
    return [configs[i] for i in picked]


def represented(candidates: pd.DataFrame, planned: pd.DataFrame, task: str) -> np.ndarray:
    """Per row of ``planned`` (the configurations measured), how many of the ``candidates`` (the shapes the probe
    can run) it stands for: those nearer to it than to any other planned row of their kind, in the plan's
    standardised log sizes (a kind with no planned row: the nearest planned row of any kind). Why: the plan
    over-represents sparse regions and small kinds, so its rows are not drawn like the candidates; each row's count
    is, up to a constant, the density ratio candidates / plan by which weighted split-conformal intervals
    (:mod:`perfcast.models.uncertainty.weighted_conformal`) correct for that shift. Configuration columns only."""
    if len(planned) == 0:
        return np.zeros(0)
    both = pd.concat([candidates, planned], ignore_index=True)
    x = _coordinates(both, task)
    codes = _kinds(both, task).to_numpy()
    at = np.arange(len(candidates), len(both))
    counts = np.zeros(len(at))
    for kind in pd.unique(codes[: len(candidates)]):
        rows = np.flatnonzero(codes[: len(candidates)] == kind)
        own = np.flatnonzero(codes[at] == kind)
        own = own if len(own) else np.arange(len(at))
        for chunk in np.array_split(rows, max(1, len(rows) // 2_000)):
            d = ((x[chunk, None, :] - x[at[own]][None, :, :]) ** 2).sum(axis=2)
            counts += np.bincount(own[np.argmin(d, axis=1)], minlength=len(at))
    return counts
