"""Attention probe: ``torch.nn.functional.scaled_dot_product_attention`` in prefill and decode phases.

Axes: batch, heads, kv heads (grouped-query attention via ``enable_gqa``), query and key/value lengths,
head dim, causal mask, dtype, threads. Prefill runs queries as long as the keys; decode runs one query
token against a KV cache (never causal: the new token sees the whole cache).

Which kernel torch ran is recorded, not assumed: the dispatcher picks among math / flash (CPU has a flash
kernel too) / memory-efficient / cuDNN by shape, dtype and device, and a model must know which one a
runtime belongs to. It is read from the aten ops one call dispatched (a ``TorchDispatchMode`` records
them: exactly the ops that executed, without the profiler's start/stop log lines on every config). A configuration may also force a backend (``backend`` in the config) via ``sdpa_kernel``.
Each first run is checked against a float64 reference written out with matmul and softmax, as GEMMs are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from perfcast.perf_probe.base import DeviceProbe, KernelCheckError
from perfcast.perf_probe.gemm import TOLERANCE, TORCH_DTYPE
from perfcast.perf_probe.power import power_meter
from perfcast.perf_probe.space import grid, log_uniform_sample, thread_counts
from perfcast.perf_probe.timing import measure, one_call_ms, threads

#: backend names (the schema's) <-> torch's enum, for forcing one
BACKENDS = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
#: aten op that runs each backend (as the profiler names it); order matters: most specific first
_OP_BACKEND = (("_scaled_dot_product_flash_attention", "flash"), ("_scaled_dot_product_efficient_attention", "efficient"),
               ("_scaled_dot_product_cudnn_attention", "cudnn"), ("_scaled_dot_product_attention_math", "math"),
               ("_efficient_attention_forward", "efficient"), ("_flash_attention_forward", "flash"))


def attention_flops(batch: Any, heads: Any, seq_q: Any, seq_kv: Any, head_dim: Any, causal: Any) -> Any:
    """FLOPs of attention (QK^T and PV, 2 each per multiply-add) over the (query, key) pairs it attends.

    Causal masks in torch are aligned top-left, so query i sees keys 0..i: seq_q (seq_q + 1) / 2 pairs.
    Works on scalars or arrays/Series (vectorised).
    """
    sq, skv = np.asarray(seq_q, dtype=float), np.asarray(seq_kv, dtype=float)
    pairs = np.where(np.asarray(causal, dtype=bool), sq * (np.minimum(sq, skv) + 1) / 2, sq * skv)
    return 4.0 * np.asarray(batch, dtype=float) * np.asarray(heads, dtype=float) * np.asarray(head_dim, dtype=float) * pairs


def backend_of_op(op_names: list[str]) -> tuple[str, str]:
    """(backend, kernel op) from the aten op names one sdpa call produced; ValueError if none matches.

    A fused kernel names itself; the math backend is a composite that reaches dispatch as its parts
    (bmm + softmax), so that pattern means math.
    """
    for name in op_names:
        for fragment, backend in _OP_BACKEND:
            if fragment in name:
                return backend, name
    short = {n.split("::")[-1] for n in op_names}
    if "bmm" in short and short & {"_softmax", "_safe_softmax", "softmax"}:
        return "math", "math(aten::bmm+softmax)"
    raise ValueError(f"could not tell which attention backend ran from the ops {op_names}; "
                     "torch renamed its kernels: extend _OP_BACKEND")


class _OpRecorder(TorchDispatchMode):
    """Records the name of every aten op dispatched inside the ``with`` block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(f"aten::{func.overloadpacket.__name__}")
        return func(*args, **(kwargs or {}))


def detect_backend(call: Any) -> tuple[str, str]:
    """Run ``call`` once and name the attention backend it dispatched to."""
    with _OpRecorder() as rec:
        call()
    return backend_of_op(rec.ops)


def _tensors(cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dev, dt = torch.device(cfg["device"]), TORCH_DTYPE[cfg["dtype"]]
    gen = torch.Generator(device=dev).manual_seed(0)
    b, d = cfg["batch"], cfg["head_dim"]
    q = torch.randn(b, cfg["heads"], cfg["seq_q"], d, device=dev, dtype=dt, generator=gen)
    k = torch.randn(b, cfg["kv_heads"], cfg["seq_kv"], d, device=dev, dtype=dt, generator=gen)
    v = torch.randn(b, cfg["kv_heads"], cfg["seq_kv"], d, device=dev, dtype=dt, generator=gen)
    return q, k, v


#: query rows checked against the reference (evenly spaced, first and last included): enough to catch a
#: wrong kernel, small enough that a float64 score matrix of a long-context config fits in memory
CHECK_ROWS = 16


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                        rows: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d + mask) v in float64 for batch 0 and query ``rows``, written out (independent
    of any sdpa kernel); GQA by repeating kv heads."""
    rep = q.shape[1] // k.shape[1]
    q64 = q[0][:, rows].detach().to("cpu", torch.float64)
    k64, v64 = (t[0].detach().to("cpu", torch.float64).repeat_interleave(rep, 0) for t in (k, v))
    scores = q64 @ k64.mT / q64.shape[-1] ** 0.5
    if causal:  # torch's causal mask is top-left aligned: query i sees keys 0..i
        keep = torch.arange(k64.shape[-2])[None, :] <= rows.cpu()[:, None]
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v64


def check_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, causal: bool,
                    dtype: str) -> float:
    """Relative error of ``out`` (on sampled rows) against :func:`reference_attention`; KernelCheckError
    past tolerance."""
    n = q.shape[-2]
    rows = torch.unique(torch.linspace(0, n - 1, min(n, CHECK_ROWS)).round().long())
    ref = reference_attention(q, k, v, causal, rows)
    got = out[0][:, rows].to("cpu", torch.float64)
    err = float(torch.linalg.vector_norm(got - ref) / torch.linalg.vector_norm(ref))
    if not err <= TOLERANCE[dtype]:
        raise KernelCheckError(
            f"attention q{tuple(q.shape)} kv{tuple(k.shape)} causal={causal} in {dtype} is wrong: relative "
            f"error {err:.3g} against the float64 reference exceeds {TOLERANCE[dtype]:g}; not timing it"
        )
    return err


class AttentionProbe(DeviceProbe):
    """Scaled-dot-product attention runtimes: prefill and decode, MHA and GQA, per dtype and backend."""

    name = "attention"
    task = "attention"
    shape_keys = ("batch", "heads", "kv_heads", "gqa_group", "seq_q", "seq_kv", "head_dim")

    def device_space(self, device: str, quick: bool) -> list[dict[str, Any]]:
        return _space(device, quick)

    def run(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        with _kernel(config) as (cfg, call, (q, k, v)):
            dev = cfg["device"]
            sig = tuple(sorted((key, val) for key, val in cfg.items() if key != "n_threads"))
            if sig not in self._checked:
                check_attention(q, k, v, call(), cfg["causal"], cfg["dtype"])
                self._checked.add(sig)
            backend, kernel = detect_backend(call)
            timing = measure(call, device=dev, meter=power_meter(dev), **self.measure_kw)
        rec = {key: cfg[key] for key in ("phase", "batch", "heads", "kv_heads", "seq_q", "seq_kv", "head_dim",
                                         "causal", "dtype")}
        rec.update(backend=backend, kernel=kernel)
        if dev == "cpu":
            rec["n_threads"] = timing.threads
        return [{**rec, **timing.to_record()}]

    def work(self, config: dict[str, Any]) -> float:
        return float(attention_flops(config["batch"], config["heads"], config["seq_q"], config["seq_kv"],
                                     config["head_dim"], config["causal"]))

    def call_ms(self, config: dict[str, Any]) -> float:
        with _kernel(config) as (cfg, call, _):
            return one_call_ms(call, device=cfg["device"])


@contextmanager
def _kernel(config: dict[str, Any]) -> Iterator[tuple[dict[str, Any], Callable[[], Any], tuple[Any, Any, Any]]]:
    """The checked configuration, its kernel and q, k, v, inside its backend and thread count."""
    cfg = {"backend": "auto", "n_threads": None, **config}
    _check_config(cfg)
    q, k, v = _tensors(cfg)
    gqa = cfg["kv_heads"] != cfg["heads"]

    def call() -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=cfg["causal"], enable_gqa=gqa)

    force = nullcontext() if cfg["backend"] == "auto" else sdpa_kernel([BACKENDS[cfg["backend"]]])
    with force, threads(cfg["n_threads"] or torch.get_num_threads()):
        yield cfg, call, (q, k, v)


def _check_config(cfg: dict[str, Any]) -> None:
    """Reject a configuration that cannot run as labelled, naming the field and what is allowed."""
    problems = []
    if cfg["backend"] not in ("auto", *BACKENDS):
        problems.append(f"backend {cfg['backend']!r} (use 'auto' or one of {list(BACKENDS)})")
    if cfg["dtype"] not in ("float32", "float64", "float16", "bfloat16"):
        problems.append(f"dtype {cfg['dtype']!r} (use float32, float64, float16 or bfloat16)")
    if cfg["heads"] % cfg["kv_heads"]:
        problems.append(f"heads={cfg['heads']} is not a multiple of kv_heads={cfg['kv_heads']}")
    if cfg["phase"] == "decode" and (cfg["seq_q"] != 1 or cfg["causal"]):
        problems.append("decode needs seq_q=1 and causal=False (the new token attends the whole cache)")
    if cfg["phase"] == "prefill" and cfg["seq_q"] != cfg["seq_kv"]:
        problems.append(f"prefill needs seq_q == seq_kv, got {cfg['seq_q']} and {cfg['seq_kv']}")
    if problems:
        raise ValueError(f"attention config {cfg} cannot run: " + "; ".join(problems))


def _prefill(cfgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**c, "phase": "prefill", "seq_q": c["seq_kv"]} for c in cfgs]


def _decode(cfgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**c, "phase": "decode", "seq_q": 1, "causal": False} for c in cfgs]


def _space(dev: str, quick: bool) -> list[dict[str, Any]]:
    """Prefill and decode grids (MHA and GQA) plus, in full sweeps, a Sobol sample over log-sizes."""
    base = {"device": dev, "batch": 1, "heads": 8, "kv_heads": 8, "head_dim": 64, "backend": "auto"}
    if dev == "cpu":
        tmax = thread_counts()[-1]
        base["n_threads"] = tmax
        dtypes = ["float32", "bfloat16"]
    else:
        dtypes = ["float16", "bfloat16"]
    if quick:
        seqs = [128, 512, 1024] if dev == "cpu" else [512, 2048, 8192]
        cfgs = _prefill(grid(base, seq_kv=seqs, causal=[True, False], dtype=dtypes))
        cfgs += _prefill(grid({**base, "kv_heads": 2, "head_dim": 128}, seq_kv=[seqs[1]], causal=[True], dtype=dtypes))
        cfgs += _decode(grid({**base, "batch": 4, "head_dim": 128}, seq_kv=[256, 1024, 4096], kv_heads=[8, 2],
                             dtype=dtypes[:1]))
        cfgs += _decode(grid({**base, "batch": 4, "head_dim": 128}, seq_kv=[4096], dtype=dtypes[1:]))
        cfgs += _prefill(grid({**base, "backend": "math"}, seq_kv=[seqs[1]], causal=[True], dtype=dtypes[:1]))
        cfgs += _decode(grid({**base, "backend": "math", "head_dim": 128}, seq_kv=[1024], dtype=dtypes[:1]))
        if dev == "cpu" and tmax > 1:
            cfgs += _prefill(grid({**base, "n_threads": 1}, seq_kv=[512], causal=[True], dtype=["float32"]))
            cfgs += _decode(grid({**base, "n_threads": 1, "head_dim": 128}, seq_kv=[1024], dtype=["float32"]))
        if dev == "cpu":  # a spread of small shapes: cheap to time, they carry the shape effects
            small = log_uniform_sample(48, {"seq_kv": (16, 384), "heads": (1, 8), "head_dim": (16, 128)},
                                       base={**base, "kv_heads": 1},
                                       choices={"causal": [True, False], "dtype": ["float32"]}, seed=0)
            cfgs += _prefill([{**c, "kv_heads": c["heads"]} for c in small[:32]])
            cfgs += _decode([{**c, "batch": 4} for c in small[32:]])
        return cfgs
    seqs = [64, 128, 256, 512, 1024, 2048, 4096] if dev == "cpu" else [128, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    heads = [(8, 8), (8, 2), (32, 8), (32, 32)]
    cfgs = []
    for h, kvh in heads:
        hb = {**base, "heads": h, "kv_heads": kvh}
        cfgs += _prefill(grid(hb, seq_kv=seqs, causal=[True, False], head_dim=[64, 128], dtype=dtypes))
        cfgs += _decode(grid(hb, seq_kv=seqs, batch=[1, 8, 32], head_dim=[64, 128], dtype=dtypes))
    extra = {"n_threads": thread_counts()} if dev == "cpu" else {}
    max_seq = seqs[-1]
    sampled = log_uniform_sample(256, {"batch": (1, 32), "seq_kv": (16, max_seq)}, base=base, seed=3,
                                 choices={"head_dim": [64, 96, 128], "heads": [8, 16, 32], "dtype": dtypes,
                                          "phase": ["prefill", "decode"], "causal": [True, False],
                                          "gqa_group": [1, 4], **extra})
    for c in sampled:
        c = {**c, "kv_heads": c["heads"] // c.pop("gqa_group")}
        cfgs += _prefill([c]) if c["phase"] == "prefill" else _decode([c])
    return cfgs
