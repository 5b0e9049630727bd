"""Physical corrections of the roofline that the hybrid may use as its base: a power limit, wave quantisation, L2.

Why: a tree repeats its last step beyond the training range, so whatever the base leaves to the trees is
extrapolated flat. Two effects of a large GEMM on a new GPU are physics, not quirks, and can be carried by
the base instead:

* **power limit.** A board sustains at most its TDP, so a long compute-bound kernel runs at most
  ``TDP x E`` FLOP/s, where ``E`` (FLOP/s per watt) is the energy efficiency of the silicon; a 70-75 W card
  whose peak needs more power than that runs below its roofline on large shapes. ``E`` is fitted on the
  training devices' largest shapes, either one value (``"global"``) or log-linear in compute capability
  (``"generation"``: newer silicon does more work per joule). The slowdown this gives is never extrapolated
  beyond the largest one seen in training (the fit cannot know how a board that far outside the training
  devices' power budgets clocks down). The ``"-dvfs"`` kinds say how instead: dynamic power grows about as
  the cube of the clock (the voltage follows it), so a board needing ``r`` times its TDP at full clock runs at
  ``r^(-1/3)`` of it, and the slowdown ``r^(1/3)`` is carried past the training range unclipped.
* **wave quantisation** (as NeuSight itself models it): the compute time is that of the launched waves of
  thread blocks, ``compute / wave_efficiency``.
* **tiles** (NeuSight's whole formulation, ASPLOS'25): the output is cut into CTA tiles, one tile per SM per
  wave; a wave lasts one tile's time at the SM's share of the dtype's peak *and* of the memory bandwidth (the
  tile reads its A and B panels over the whole reduction), ``runtime = waves x max(tile compute, tile memory)``.
  A bmm's batch multiplies the tiles, so its batch dimension runs as more waves. The learned ratio over this
  base is NeuSight's per-tile utilisation, which physics says never falls as the waves grow (more waves
  amortise the fill and drain): the hybrid's ``monotone`` may say so on ``log2_waves``.
* **size trend** (beyond the trees' range): a tree is flat past the largest FLOPs it was fitted on, but a
  kernel keeps filling its pipelines better as it grows. The within-device slope of log(measured / base) over
  log FLOPs on each training device's largest shapes (never positive: more work never lowers the efficiency)
  continues the learned ratio past the training maximum, per operand layout (``"op"``: NeuSight's bmm and
  linear) or pooled; it never takes a prediction below the plain roofline.
* **L2 residency.** A benchmark repeats its launch, so a kernel whose bytes fit in the L2 finds its operands there
  and moves them at the L2 rate, not the DRAM rate (a 96 MB L2 in front of 864 GB/s GDDR holds most of a mid-sized
  GEMM's weights). The sheet gives the L2 size, not its rate; on-chip bandwidth scales with the SMs and their
  clock, so the rate is ``b x SMs x clock`` with ``b`` (bytes per SM per clock) fitted on the training rows. An
  attention model may apply it to the decode rows alone (``"decode"``): a decode kernel is bound by its KV-cache
  read, which a repeated launch finds in the L2 when it fits, while prefill is bound by its tensor FLOPs.
* **softmax exponentials** (attention). Each (query, key) pair of each head costs one exponential on the SM's
  special-function units, which do not scale with the tensor cores: on a GPU whose tensor peak is high for its SM
  count and clock (H100, FP8) they, not the matrix products, bound a prefill kernel. Their time is
  ``pairs x heads x batch / (e x SMs x clock)``, the compute term the larger of it and the tensor time, with
  ``e`` (exponentials per SM per clock; the hardware issues 16) fitted on the training rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from perfcast.lazy import pandas as pd

from perfcast.features.base import column_positions
from perfcast.features.roofline import l2_resident_memory_ms
from perfcast.models.estimators.layout_split import layout_rows

#: kinds of power limit the hybrid accepts
POWER_LIMITS: tuple[str, ...] = ("global", "generation", "global-dvfs", "generation-dvfs")
#: exponent of the power ratio in the slowdown of a ``-dvfs`` kind: the clock that fits the TDP when power grows
#: as its cube
DVFS_EXPONENT = 1.0 / 3.0
#: share of each device's rows, by FLOPs, whose sustained FLOP/s the power fit reads (its long kernels)
LARGEST = 0.25
#: compute capability the generation slope is centred on (its intercept is E at this capability)
CC_CENTRE = 8.0
#: the fit's grids: the efficiency cap (share of peak a kernel reaches when power does not bind), log10 E
#: (TFLOP/s per watt) at :data:`CC_CENTRE`, and the slope of log10 E per compute-capability unit
_CAPS = np.linspace(0.5, 1.0, 26)
_LOG_E = np.linspace(-2.5, 0.5, 121)[::-1]  # descending: among equal fits, the weakest power limit wins
_SLOPES = np.linspace(-0.2, 0.6, 41)
#: feature columns the corrections read
COLUMNS: tuple[str, ...] = ("log10_compute_ms", "log10_memory_ms", "peak_tflops", "tdp_w", "compute_capability",
                            "wave_efficiency", "log10_flops")
#: kinds of size trend the hybrid accepts: one slope for every row, or one per operand layout
SIZE_TRENDS: tuple[str, ...] = ("pooled", "op")
#: feature columns the tile formulation reads (shape, the assumed CTA tile, operand bytes, spec sheet)
TILE_COLUMNS: tuple[str, ...] = ("log2_m", "log2_n", "log2_k", "log2_batch", "tile_m", "tile_n", "a_bytes", "b_bytes",
                                 "c_bytes", "sm_count", "peak_tflops", "mem_bw_gbs")

#: feature columns the L2-resident memory time reads
L2_COLUMNS: tuple[str, ...] = ("log10_bytes", "mem_bw_gbs", "l2_mb", "sm_count", "max_clock_mhz")
#: the L2 rate's grid, bytes per SM per clock (0: no L2 term, the plain roofline's memory time)
L2_BYTES_PER_CLOCK: tuple[float, ...] = (0.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0, 128.0)
#: feature columns the softmax term reads (an attention row's exponentials are its FLOPs over 4 x head_dim)
SOFTMAX_COLUMNS: tuple[str, ...] = ("log10_flops", "log2_head_dim", "sm_count", "max_clock_mhz")
#: the softmax term's grid, exponentials per SM per clock (0: no term); the SFU issues 16, the grid spans 4x
#: either side of it for the ops around each exponential (max, subtract, scale) and dual issue
EXP_PER_CLOCK: tuple[float, ...] = (0.0, 4.0, 8.0, 16.0, 32.0, 64.0)
#: the row subsets the L2-resident memory time may apply to
L2_ROWS: tuple[str, ...] = ("all", "decode")
#: spec columns that tell the training devices apart for the L2 fit (its loss is level-free per device)
_DEVICE_KEY: tuple[str, ...] = ("mem_bw_gbs", "sm_count", "l2_mb")


def device_rates(X: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """Per device (rows sharing peak, TDP and compute capability), the median sustained TFLOP/s of its largest
    shapes (the top :data:`LARGEST` of its FLOPs) with its peak, TDP and compute capability; devices lacking
    one of them are left out."""
    frame = X[["peak_tflops", "tdp_w", "compute_capability", "log10_flops"]].astype("float64").copy()
    frame["rate"] = 10.0 ** frame["log10_flops"] / (np.asarray(y, dtype="float64") * 1e-3) / 1e12
    frame = frame.dropna()
    keys = ["peak_tflops", "tdp_w", "compute_capability"]
    cut = frame.groupby(keys)["log10_flops"].transform(lambda s: s.quantile(1.0 - LARGEST))
    large = frame[frame["log10_flops"] > cut]
    return large.groupby(keys)["rate"].median().reset_index()


def fit_power_limit(X: pd.DataFrame, y: np.ndarray, kind: str) -> dict[str, float]:
    """The power limit ``kind`` (:data:`POWER_LIMITS`) fitted to the training rows: least squares in log rate of
    ``min(cap x peak, TDP x E(cc))`` over the devices' largest shapes, on a grid (robust with five devices).
    Returns the cap, log10 E at :data:`CC_CENTRE`, the slope, the exponent of the slowdown, and (linear
    kinds) the largest slowdown seen in training.

    Raises a ValueError for an unknown kind or when fewer than two devices have the spec numbers it needs."""
    if kind not in POWER_LIMITS:
        raise ValueError(f"hybrid: power_limit must be one of {POWER_LIMITS} or None, got {kind!r}")
    dev = device_rates(X, y)
    if len(dev) < 2:
        raise ValueError(f"hybrid: power_limit needs the peak, TDP and compute capability of at least two "
                         f"training devices; {len(dev)} have them")
    rate, peak, tdp = (np.log10(dev[c].to_numpy()) for c in ("rate", "peak_tflops", "tdp_w"))
    cc = dev["compute_capability"].to_numpy() - CC_CENTRE
    slopes = _SLOPES if kind.startswith("generation") else np.zeros(1)
    exponent = DVFS_EXPONENT if kind.endswith("-dvfs") else 1.0
    cap, log_e, slope = np.meshgrid(np.log10(_CAPS), _LOG_E, slopes, indexing="ij")
    full = cap[..., None] + peak  # log rate at full clock; power over the limit lowers it by the exponent
    model = full - exponent * np.maximum(full - (log_e[..., None] + slope[..., None] * cc + tdp), 0.0)
    loss = ((rate - model) ** 2).sum(axis=-1) + 1e-4 * slope ** 2  # a weak pull of an unidentified slope to 0
    i, j, k = np.unravel_index(int(np.argmin(loss)), loss.shape)
    params = {"cap": float(_CAPS[i]), "log10_e": float(_LOG_E[j]), "slope": float(slopes[k])}
    if exponent != 1.0:
        params["exponent"] = exponent
    else:  # the linear law is not carried past the training devices' largest slowdown
        params["max_slowdown"] = float(power_slowdown(dev["peak_tflops"].to_numpy(), dev["tdp_w"].to_numpy(),
                                                      dev["compute_capability"].to_numpy(), params).max())
    return params


def power_slowdown(peak: np.ndarray, tdp: np.ndarray, cc: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """How many times longer a compute-bound kernel runs than at ``cap x peak`` because of the board's power:
    ``max(1, cap x peak / (TDP x E(cc)))`` to the power ``params["exponent"]`` (1 when absent), clipped at
    ``params["max_slowdown"]`` (a ``-dvfs`` fit has none); 1 where a number is missing."""
    log_e = params["log10_e"] + params["slope"] * (np.asarray(cc, dtype="float64") - CC_CENTRE)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = params["cap"] * np.asarray(peak, dtype="float64") / (np.asarray(tdp, dtype="float64") * 10.0 ** log_e)
    ratio = np.clip(np.maximum(ratio, 1.0) ** params.get("exponent", 1.0), 1.0, params.get("max_slowdown", np.inf))
    return np.where(np.isfinite(ratio), ratio, 1.0)


def tile_times(A: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(compute ms, memory ms) of feature rows ``A`` (columns ``names``) in NeuSight's tile formulation: the
    launched waves (``ceil(batch x ceil(m/tile_m) x ceil(n/tile_n) / SMs)``) times one tile's FLOPs at the SM's
    share of the peak, and times one tile's bytes (its A and B panels and its C block) at the SM's share of the
    bandwidth. A tile is no larger than the matrix (a small GEMM gets a small kernel). NaN where a number is
    missing."""
    v = dict(zip(TILE_COLUMNS, (A[:, j] for j in column_positions(names, TILE_COLUMNS)), strict=True))
    m, n, k, batch = (np.rint(2.0 ** v[f"log2_{d}"]) for d in ("m", "n", "k", "batch"))
    tm, tn, sms = np.minimum(v["tile_m"], m), np.minimum(v["tile_n"], n), v["sm_count"]
    with np.errstate(invalid="ignore", divide="ignore"):
        waves = np.ceil(batch * np.ceil(m / tm) * np.ceil(n / tn) / sms)
        compute = waves * 2.0 * tm * tn * k / (v["peak_tflops"] * 1e9 / sms)
        memory = waves * (v["a_bytes"] * tm * k + v["b_bytes"] * k * tn + v["c_bytes"] * tm * tn) / (
            v["mem_bw_gbs"] * 1e6 / sms)
    return compute, memory


def l2_memory_ms(A: np.ndarray, names: tuple[str, ...], bytes_per_clock: float) -> np.ndarray:
    """Memory time (ms) of feature rows ``A`` (columns ``names``) whose bytes stay in the L2 when they fit
    (:func:`~perfcast.features.roofline.l2_resident_memory_ms`), the L2 rate ``bytes_per_clock x SMs x clock``."""
    v = dict(zip(L2_COLUMNS, (A[:, j] for j in column_positions(names, L2_COLUMNS)), strict=True))
    l2_gbs = bytes_per_clock * v["sm_count"] * v["max_clock_mhz"] * 1e-3  # bytes/clock x SMs x GHz = GB/s
    return l2_resident_memory_ms(10.0 ** v["log10_bytes"], v["mem_bw_gbs"], v["l2_mb"], l2_gbs)


def l2_speedup(A: np.ndarray, names: tuple[str, ...], bytes_per_clock: float) -> np.ndarray:
    """log10(DRAM memory time / L2-resident memory time) of feature rows ``A`` (columns ``names``): how much the
    L2 term shortened each row's memory time (:func:`l2_memory_ms`); 0 where it is inactive (bytes beyond the L2,
    an L2 rate below the DRAM rate, no L2 on the sheet, ``bytes_per_clock`` 0). Lets the trees tell the rows whose
    base moved apart from the rest."""
    if bytes_per_clock <= 0:
        return np.zeros(len(A))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.log10(l2_memory_ms(A, names, 0.0) / l2_memory_ms(A, names, bytes_per_clock))
    return np.where(np.isfinite(ratio), ratio, 0.0)


def softmax_ms(A: np.ndarray, names: tuple[str, ...], exps_per_clock: float) -> np.ndarray:
    """Time (ms) of attention feature rows ``A``' (columns ``names``) softmax exponentials, one per attended (query,
    key) pair per head (the FLOPs are 4 x head_dim per pair), at ``exps_per_clock x SMs x clock``; NaN where the
    sheet lacks the SM count or clock."""
    v = dict(zip(SOFTMAX_COLUMNS, (A[:, j] for j in column_positions(names, SOFTMAX_COLUMNS)), strict=True))
    exps = 10.0 ** v["log10_flops"] / (4.0 * 2.0 ** v["log2_head_dim"])
    return exps / (exps_per_clock * v["sm_count"] * v["max_clock_mhz"] * 1e3)  # per clock x SMs x MHz x 1e3 = per ms


def decode_rows(A: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Which feature rows are attention decode rows (none for a task without the ``is_decode`` column)."""
    if "is_decode" not in names:
        return np.zeros(len(A), dtype=bool)
    return A[:, column_positions(names, ("is_decode",))[0]] > 0.5


def fit_rate(X: pd.DataFrame, y: np.ndarray, base: Callable[[float], np.ndarray], grid: tuple[float, ...],
             rows: np.ndarray | None = None) -> float:
    """The rate of ``grid`` (0 first: the term off) whose runtime baseline ``base(rate)`` leaves the least
    within-device variance of log(y / base) on the training rows (``rows``: only those): the level of each device
    is the trees' job, the shape of its curve the baseline's. The L2 rate and the softmax rate are fitted so."""
    keep = np.ones(len(X), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    device = X[list(_DEVICE_KEY)].astype("float64").groupby(list(_DEVICE_KEY), dropna=False).ngroup().to_numpy()[keep]
    log_y = np.log(np.asarray(y, dtype="float64"))[keep]

    def loss(rate: float) -> float:
        r = pd.Series(log_y - np.log(base(rate)[keep]))
        return float((r - r.groupby(device).transform("mean")).pow(2).sum())

    return min(grid, key=loss)  # ties: the first, the weakest term


def physical_roofline(A: np.ndarray, names: tuple[str, ...], power: dict[str, Any] | None,
                      waves: bool, tiles: bool = False, l2_bytes_per_clock: float = 0.0, l2_rows: str = "all",
                      exps_per_clock: float = 0.0) -> np.ndarray:
    """The roofline time (ms) of feature rows ``A`` (columns ``names``) with its compute term slowed by the power
    limit ``power`` (None: none) and, if ``waves``, by the partly empty last wave; with ``tiles`` both terms are
    :func:`tile_times` (which quantise the waves themselves), the plain roofline's where a number is missing.
    A positive ``l2_bytes_per_clock`` moves the bytes of a kernel that fits in the L2 at the L2 rate
    (:func:`l2_memory_ms`; ``l2_rows="decode"``: of an attention decode row alone). A positive ``exps_per_clock``
    makes an attention row's compute time the larger of its tensor time and its softmax time (:func:`softmax_ms`,
    where the sheet has the SM count and clock)."""
    at = dict(zip(COLUMNS, column_positions(names, COLUMNS), strict=True))
    compute = 10.0 ** A[:, at["log10_compute_ms"]]
    memory = 10.0 ** A[:, at["log10_memory_ms"]]
    if tiles:
        tile_compute, tile_memory = tile_times(A, names)
        known = np.isfinite(tile_compute) & np.isfinite(tile_memory) & (tile_compute > 0)
        compute, memory = np.where(known, tile_compute, compute), np.where(known, tile_memory, memory)
        waves = False
    elif l2_bytes_per_clock > 0:
        if l2_rows not in L2_ROWS:
            raise ValueError(f"hybrid: l2_rows must be one of {L2_ROWS}, got {l2_rows!r}")
        l2 = np.minimum(memory, l2_memory_ms(A, names, l2_bytes_per_clock))
        memory = l2 if l2_rows == "all" else np.where(decode_rows(A, names), l2, memory)
    if exps_per_clock > 0:
        softmax = softmax_ms(A, names, exps_per_clock)
        compute = np.where(np.isfinite(softmax), np.maximum(compute, softmax), compute)
    if power is not None:
        compute = compute * power_slowdown(A[:, at["peak_tflops"]], A[:, at["tdp_w"]],
                                           A[:, at["compute_capability"]], power)
    if waves:
        eff = A[:, at["wave_efficiency"]]
        compute = compute / np.where(np.isfinite(eff) & (eff > 0), eff, 1.0)
    return np.maximum(compute, memory)


def layout_keys(A: np.ndarray, names: tuple[str, ...], kind: str) -> list[str]:
    """Each row's size-trend group: its operand layout (``"op"``: :func:`layout_rows`) or "all"."""
    return ["all"] * len(A) if kind == "pooled" else list(layout_rows(A, names))


def fit_size_trend(X: pd.DataFrame, log_ratio: np.ndarray, kind: str) -> dict[str, dict[str, float]]:
    """Per group (:func:`layout_keys`), the slope of ``log_ratio`` (log measured / base) over log10 FLOPs within
    each training device's largest shapes (its top :data:`LARGEST` of FLOPs in the group; devices told apart
    by their peak, SM count and bandwidth), clipped at 0, and the largest log10 FLOPs the fit saw (where the
    trend starts). Raises a ValueError for an unknown kind."""
    if kind not in SIZE_TRENDS:
        raise ValueError(f"hybrid: size_trend must be one of {SIZE_TRENDS} or None, got {kind!r}")
    names = tuple(X.columns)
    frame = X[["peak_tflops", "sm_count", "mem_bw_gbs", "log10_flops"]].astype("float64").copy()
    frame["group"] = layout_keys(X.to_numpy(dtype="float64"), names, kind)
    frame["r"] = np.asarray(log_ratio, dtype="float64")
    frame = frame.dropna()
    out: dict[str, dict[str, float]] = {}
    for group, rows in frame.groupby("group"):
        device = ["peak_tflops", "sm_count", "mem_bw_gbs"]
        cut = rows.groupby(device)["log10_flops"].transform(lambda s: s.quantile(1.0 - LARGEST))
        top = rows[rows["log10_flops"] > cut]
        centred = top[["log10_flops", "r"]] - top.groupby(device)[["log10_flops", "r"]].transform("mean")
        spread = float((centred["log10_flops"] ** 2).sum())
        slope = float((centred["log10_flops"] * centred["r"]).sum() / spread) if spread > 0 else 0.0
        out[str(group)] = {"slope": min(slope, 0.0), "start": float(rows["log10_flops"].max())}
    return out


def size_trend_factor(A: np.ndarray, names: tuple[str, ...], kind: str,
                      trend: dict[str, dict[str, float]]) -> np.ndarray:
    """exp(slope x (log10 FLOPs - start)) past each row's group start, 1 before it and where a group or a
    number is unknown: the multiplier :func:`fit_size_trend`'s trend puts on a prediction."""
    flops = A[:, column_positions(names, ("log10_flops",))[0]]
    slope, start = np.zeros(len(A)), np.full(len(A), np.inf)
    for i, key in enumerate(layout_keys(A, names, kind)):
        if key in trend:
            slope[i], start[i] = trend[key]["slope"], trend[key]["start"]
    beyond = np.where(np.isfinite(flops), np.maximum(flops - start, 0.0), 0.0)
    return np.exp(slope * beyond)
