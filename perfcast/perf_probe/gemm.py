"""GEMM probe: ``torch.matmul`` (CPU and CUDA) and NumPy's BLAS over shapes, dtypes, layouts, threads.

Each configuration's result is first checked against a float64 reference, so a wrong kernel (a broken
build, a silently mis-dispatched dtype) raises instead of being timed: a fast wrong answer is not a
measurement. The check is Freivalds' test — ``C x`` against ``A (B x)`` for random ``x``, both in
float64 — which costs O(n²) instead of the O(n³) of recomputing the product, and whose relative error
matches the product's relative Frobenius error for a random ``x``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch

from perfcast.perf_probe.base import DeviceProbe, KernelCheckError
from perfcast.perf_probe.power import power_meter
from perfcast.perf_probe.space import grid, log_uniform_sample, thread_counts
from perfcast.perf_probe.timing import measure, one_call_ms, threads

#: relative error allowed against the float64 reference, by dtype (output rounding x a safety factor)
TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "tf32": 5e-3, "float16": 5e-3, "bfloat16": 3e-2,
             "float8_e4m3fn": 1e-1}
TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32, "tf32": torch.float32,
               "float16": torch.float16, "bfloat16": torch.bfloat16, "float8_e4m3fn": torch.float8_e4m3fn}
CPU_DTYPES = ("float32", "float64", "bfloat16")
NUMPY_DTYPES = ("float32", "float64")
LAYOUTS = ("nn", "nt", "tn", "tt")


def gemm_flops(m: int, n: int, k: int, batch: int = 1) -> int:
    """Floating-point operations of a (batched) GEMM: one multiply and one add per inner-product term."""
    return 2 * m * n * k * batch


def cuda_dtypes(capability: tuple[int, int]) -> tuple[str, ...]:
    """GEMM dtypes a CUDA device of this compute capability runs natively (tf32/bf16 from 8.0, fp8 from 8.9)."""
    out = ["float32", "float16"]
    if capability >= (8, 0):
        out += ["tf32", "bfloat16"]
    if capability >= (8, 9):
        out.append("float8_e4m3fn")
    return tuple(out)


def _mv64(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``t @ y`` in float64 on t's device, converting ``t`` a block of rows at a time (a float64 copy of a
    large operand would not fit in memory)."""
    if t.dim() > 2:
        return torch.stack([_mv64(t[i], y[i] if y.dim() > 2 else y) for i in range(t.shape[0])])
    step = max(1, (1 << 22) // t.shape[-1])
    return torch.cat([t[i:i + step].to(torch.float64) @ y for i in range(0, t.shape[0], step)])


def check_product(a: Any, b: Any, c: Any, dtype: str, seed: int = 0) -> float:
    """Relative error of ``c`` as ``a @ b`` (torch tensors or numpy arrays), raising KernelCheckError past tolerance."""
    a, b, c = (torch.from_numpy(t) if isinstance(t, np.ndarray) else t for t in (a, b, c))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b.shape[-1], 2, dtype=torch.float64, generator=gen).to(b.device)
    ref = _mv64(a, _mv64(b, x))
    err = float(torch.linalg.vector_norm(_mv64(c, x) - ref) / torch.linalg.vector_norm(ref))
    if not err <= TOLERANCE[dtype]:  # also catches NaN
        raise KernelCheckError(
            f"GEMM {tuple(a.shape)} x {tuple(b.shape)} in {dtype} is wrong: relative error {err:.3g} "
            f"against the float64 reference exceeds {TOLERANCE[dtype]:g}; not timing a broken kernel "
            "(check the torch/BLAS build and the dtype dispatch)"
        )
    return err


def _operands(cfg: dict[str, Any], make: Callable[[tuple[int, ...]], Any], swap: Callable[[Any], Any]) -> tuple[Any, Any]:
    """A (batch,m,k) and B (batch,k,n) stored per ``layout``: 't' means stored transposed, passed as a view."""
    m, n, k, batch, layout = cfg["m"], cfg["n"], cfg["k"], cfg["batch"], cfg["layout"]
    lead = (batch,) if batch > 1 else ()
    a = swap(make((*lead, k, m))) if layout[0] == "t" else make((*lead, m, k))
    b = swap(make((*lead, n, k))) if layout[1] == "t" else make((*lead, k, n))
    return a, b


def _torch_kernel(cfg: dict[str, Any]) -> tuple[Callable[[], Any], Any, Any, Any]:
    """(call, a, b, out) for torch: matmul into a preallocated output, or ``_scaled_mm`` for fp8."""
    dev, dtype = torch.device(cfg["device"]), cfg["dtype"]
    gen = torch.Generator(device=dev).manual_seed(0)
    if dtype == "float8_e4m3fn":
        if cfg["batch"] != 1 or cfg["layout"] != "nt":
            raise ValueError(f"fp8 GEMM runs only unbatched with layout 'nt' (cuBLASLt needs B column-major), got {cfg}")
        a, b = _operands(cfg, lambda s: torch.randn(s, device=dev, generator=gen).to(torch.float8_e4m3fn), lambda t: t.mT)
        one = torch.ones((), device=dev)
        out = torch.empty(cfg["m"], cfg["n"], device=dev, dtype=torch.bfloat16)
        return (lambda: torch._scaled_mm(a, b, one, one, out_dtype=torch.bfloat16, out=out)), a, b, out
    tdt = TORCH_DTYPE[dtype]
    a, b = _operands(cfg, lambda s: torch.randn(s, device=dev, dtype=tdt, generator=gen), lambda t: t.mT)
    out = torch.empty(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (cfg["m"], cfg["n"]), device=dev, dtype=tdt)
    return (lambda: torch.matmul(a, b, out=out)), a, b, out


def _numpy_kernel(cfg: dict[str, Any]) -> tuple[Callable[[], Any], Any, Any, Any]:
    rng = np.random.default_rng(0)
    dt = np.dtype(cfg["dtype"])
    a, b = _operands(cfg, lambda s: rng.standard_normal(s, dtype=dt), lambda x: np.swapaxes(x, -1, -2))
    out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (cfg["m"], cfg["n"]), dtype=dt)
    return (lambda: np.matmul(a, b, out=out)), a, b, out


class GemmProbe(DeviceProbe):
    """Dense GEMM throughput of this machine: torch on CPU (and CUDA when present), NumPy's BLAS on CPU."""

    name = "gemm"
    task = "gemm"
    shape_keys = ("m", "n", "k", "batch", "layout")

    def device_space(self, device: str, quick: bool) -> list[dict[str, Any]]:
        return self._cpu_space(quick) if device == "cpu" else self._cuda_space(device, quick)

    @staticmethod
    def _cpu_space(quick: bool) -> list[dict[str, Any]]:
        """Square powers of two and odd sizes, dtypes, layouts, rectangles, batches, 1 vs all threads."""
        base = {"op": "matmul", "batch": 1, "layout": "nn", "backend": "torch", "device": "cpu"}
        tmax = thread_counts()[-1]
        if quick:
            sq = [64, 97, 128, 256, 333, 512, 1000, 1024]
            cfgs = grid(base, size=sq, dtype=["float32"], n_threads=[tmax])
            cfgs += grid(base, size=[256, 1024], dtype=["float64"], n_threads=[tmax])
            # a CPU without native bf16 runs it an order of magnitude slower than float32 (seconds per 1024^3 call)
            cfgs += grid(base, size=[256, 512], dtype=["bfloat16"], n_threads=[tmax])
            cfgs += grid(base, size=[256, 1000], dtype=["float32"], n_threads=[1])
            cfgs += grid(base, size=[512], dtype=["float32"], layout=["nt", "tn", "tt"], n_threads=[tmax])
            cfgs += grid({**base, "backend": "numpy"}, size=[256, 1024], dtype=["float32"], n_threads=[tmax])
            cfgs += grid({**base, "backend": "numpy"}, size=[512], dtype=["float64"], n_threads=[tmax])
            cfgs = [_square(c) for c in cfgs]
            cfgs += grid(base, mnk=[(2048, 64, 512), (64, 2048, 1024), (1, 4096, 1024), (1536, 768, 333)],
                         dtype=["float32"], n_threads=[tmax])
            cfgs += grid({**base, "op": "bmm"}, mnk=[(128, 128, 128), (64, 256, 64)], batch=[8, 16],
                         dtype=["float32"], n_threads=[tmax])
            # a spread of small odd shapes: cheap to time, and they carry the shape effects a model learns
            small = log_uniform_sample(64, {"m": (8, 384), "n": (8, 384), "k": (8, 384)}, base=base,
                                       choices={"dtype": ["float32", "bfloat16"], "layout": LAYOUTS,
                                                "n_threads": [tmax]}, seed=0)
            return [_split_mnk(c) for c in cfgs] + small
        tc = thread_counts()
        sq = [64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
        cfgs = [_square(c) for c in grid(base, size=sq, dtype=list(CPU_DTYPES), n_threads=tc)]
        cfgs += [_square(c) for c in grid({**base, "backend": "numpy"}, size=sq, dtype=list(NUMPY_DTYPES), n_threads=tc)]
        cfgs += log_uniform_sample(512, {"m": (1, 8192), "n": (16, 8192), "k": (16, 8192)}, base=base,
                                   choices={"dtype": CPU_DTYPES, "layout": LAYOUTS, "n_threads": tc}, seed=1)
        cfgs += [_split_mnk(c) for c in grid({**base, "op": "bmm"}, mnk=[(64, 64, 64), (128, 128, 64), (256, 256, 128)],
                                               batch=[4, 16, 64], dtype=["float32", "bfloat16"], n_threads=tc)]
        return cfgs

    @staticmethod
    def _cuda_space(dev: str, quick: bool) -> list[dict[str, Any]]:
        dtypes = cuda_dtypes(torch.cuda.get_device_capability(torch.device(dev)))
        base = {"op": "matmul", "batch": 1, "backend": "torch", "device": dev}
        sizes = [256, 1024, 4096] if quick else [128, 256, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384]
        cfgs = []
        for dt in dtypes:
            layouts = ["nt"] if dt == "float8_e4m3fn" else (["nn"] if quick else list(LAYOUTS))
            cfgs += [_square(c) for c in grid(base, size=sizes, dtype=[dt], layout=layouts)]
        if not quick:
            cfgs += [_fp8_shape(c) for c in log_uniform_sample(
                512, {"m": (1, 32768), "n": (64, 32768), "k": (64, 32768)}, base=base,
                choices={"dtype": dtypes, "layout": LAYOUTS}, seed=2)]
        return cfgs

    def run(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        with _kernel(config) as (cfg, call, (a, b, out)):
            dev = cfg["device"]
            sig = tuple(sorted((k, v) for k, v in cfg.items() if k != "n_threads"))
            if sig not in self._checked:
                call()
                check_product(a, b, out, cfg["dtype"])
                self._checked.add(sig)
            timing = measure(call, device=dev, meter=power_meter(dev), **self.measure_kw)
        rec = {k: cfg[k] for k in ("op", "m", "n", "k", "batch", "dtype", "layout", "backend")}
        if dev == "cpu":
            rec["n_threads"] = timing.threads
        return [{**rec, **timing.to_record()}]

    def work(self, config: dict[str, Any]) -> float:
        return float(gemm_flops(config["m"], config["n"], config["k"], config.get("batch", 1)))

    def call_ms(self, config: dict[str, Any]) -> float:
        with _kernel(config) as (cfg, call, _):
            return one_call_ms(call, device=cfg["device"])


@contextmanager
def _kernel(config: dict[str, Any]) -> Iterator[tuple[dict[str, Any], Callable[[], Any], tuple[Any, Any, Any]]]:
    """The checked configuration, its kernel and operands, inside its thread count (and TF32 mode)."""
    cfg = {"n_threads": None, **config}
    _check_config(cfg)
    call, a, b, out = _numpy_kernel(cfg) if cfg["backend"] == "numpy" else _torch_kernel(cfg)
    with _tf32(cfg["dtype"] == "tf32" and cfg["device"] != "cpu"), threads(cfg["n_threads"] or torch.get_num_threads()):
        yield cfg, call, (a, b, out)


def _check_config(cfg: dict[str, Any]) -> None:
    """Reject a configuration this probe cannot run as labelled, naming the field and the valid values."""
    on_cpu = cfg["device"] == "cpu"
    dtypes = {"numpy": NUMPY_DTYPES, "torch": tuple(TORCH_DTYPE) if not on_cpu else CPU_DTYPES + ("float16",)}
    if cfg["backend"] not in dtypes or (cfg["backend"] == "numpy" and not on_cpu):
        raise ValueError(f"GEMM backend {cfg['backend']!r} on {cfg['device']!r}: use 'torch' (cpu, cuda) or 'numpy' (cpu)")
    if cfg["dtype"] not in dtypes[cfg["backend"]]:
        raise ValueError(f"GEMM dtype {cfg['dtype']!r} is not available for backend {cfg['backend']!r} on "
                         f"{cfg['device']!r}; use one of {list(dtypes[cfg['backend']])}")
    if cfg["layout"] not in LAYOUTS:
        raise ValueError(f"GEMM layout {cfg['layout']!r}: use one of {list(LAYOUTS)}")


@contextmanager
def _tf32(on: bool) -> Iterator[None]:
    """Allow TF32 tensor cores for float32 matmul inside the block (the 'tf32' dtype), restoring after."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _fp8_shape(cfg: dict[str, Any]) -> dict[str, Any]:
    """fp8 GEMMs need layout 'nt' and n, k multiples of 16 (cuBLASLt): round a sampled fp8 config to that."""
    if cfg["dtype"] != "float8_e4m3fn":
        return cfg
    return {**cfg, "layout": "nt", "n": -(-cfg["n"] // 16) * 16, "k": -(-cfg["k"] // 16) * 16}


def _square(cfg: dict[str, Any]) -> dict[str, Any]:
    size = cfg.pop("size")
    return {**cfg, "m": size, "n": size, "k": size}


def _split_mnk(cfg: dict[str, Any]) -> dict[str, Any]:
    if "mnk" not in cfg:
        return cfg
    m, n, k = cfg.pop("mnk")
    return {**cfg, "m": m, "n": n, "k": k}
