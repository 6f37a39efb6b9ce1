"""Inference linears on the CPU through oneDNN (same float32 math, faster GEMMs).

``F.linear`` on a CPU calls the BLAS sgemm PyTorch was built with (MKL). On some CPUs that library takes a slow
code path: on an AMD EPYC (AVX-512) measured here it ran VAR-d16's GEMMs at 60–85 GFLOP/s on one thread where
oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``, what PyTorch's own compiler emits for CPU linears) ran
the same products at 150–200 GFLOP/s; oneDNN is also what PyTorch already uses for every convolution. The result
is the same float32 product up to summation order (relative difference ~1e-6), so the exact sampler stays exact;
only inference (no autograd) uses it. Sampling one VAR-d16 image: 9.4 s -> 4.8 s of transformer time on that
machine (``benchmarks/speedups.py`` measures the whole sampler beside the reference).

Backends (``VARKIT_CPU_LINEAR`` or :func:`set_cpu_linear_backend`):

* ``auto`` (default): ``onednn_packed`` where this PyTorch build has oneDNN, else ``aten``;
* ``onednn_packed``: oneDNN on weights reordered once into its blocked layout and cached. The small products of
  the coarse scales (2 to 72 rows at batch 1) read every weight for little arithmetic, and the blocked layout reads
  them ~1.5x faster (VAR-d16 block linears at 2 rows: 2.9 -> 1.8 ms). The cache is a second copy of the linear
  weights, bounded by ``VARKIT_PACKED_CACHE_MB`` (default 2048 MiB; VAR-d16 in float32 needs 805 MiB). Entries
  are keyed to the weight tensor and invalidated by its version counter (an optimizer step or
  ``load_state_dict`` never serves stale weights), and forgotten when the weight is freed. A full cache evicts
  nothing: weights that do not fit run unpacked (evicting would re-pack every weight on every scale of a model
  larger than the cache). The first call with new weights pays the reordering (a copy of the weights);
* ``onednn``: oneDNN on the weights as they are (no extra memory);
* ``aten``: plain ``F.linear``.

Training (:class:`Linear`, the ``nn.Linear`` of varkit's transformer blocks and head) has its own switch,
``VARKIT_TRAIN_LINEAR`` / :func:`set_train_linear_backend`: ``onednn`` computes the float32 forward product and the
input gradient through oneDNN (an autograd function; the weight gradient stays a BLAS ``mm``), ``aten`` is
``F.linear``, and ``auto`` (default) times both once on a transformer-sized product and keeps ``onednn`` only where
it is at least 1.2x faster (it is 2.1-2.4x on the AMD EPYC above; where the BLAS is as fast, ``aten`` stays).
Under autocast, under ``torch.compile`` (which lowers linears itself), off the CPU, or for other dtypes it is
always ``F.linear``. The probe runs once per process; pin the backend when runs must match bit for bit across
processes or machines (a resumed run against an uninterrupted one: the two backends round differently).
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "InferenceLinear",
    "Linear",
    "clear_packed_cache",
    "cpu_linear_backend",
    "linear",
    "onednn_linear_available",
    "packed_cache_bytes",
    "set_cpu_linear_backend",
    "set_packed_cache_limit",
    "set_train_linear_backend",
    "train_linear_backend",
]

_BACKENDS = ("auto", "onednn", "onednn_packed", "aten")
_requested = os.environ.get("VARKIT_CPU_LINEAR", "auto").strip().lower() or "auto"
if _requested not in _BACKENDS:
    raise ValueError(f"VARKIT_CPU_LINEAR={_requested!r} is not one of {', '.join(_BACKENDS)}")
_CACHE_LIMIT = int(float(os.environ.get("VARKIT_PACKED_CACHE_MB", "2048")) * 2**20)
#: the row count oneDNN is told to expect when reordering (a mid-size scale; measured insensitive from 16 to 512)
_ROWS_HINT = 64


def onednn_linear_available() -> bool:
    """Whether this PyTorch build offers oneDNN's packed linear (CPU builds with mkldnn)."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_linear_pointwise")
        and hasattr(ops, "_reorder_linear_weight")
    )


def _resolve(name: str) -> str:
    """``auto`` -> ``onednn_packed`` where available, else ``aten``; the other names as they are."""
    if name == "auto":
        return "onednn_packed" if onednn_linear_available() else "aten"
    return name


#: the backend in effect, resolved once (not on every product of the sampling loop)
_backend = _resolve(_requested)


def set_cpu_linear_backend(name: str) -> None:
    """``auto`` | ``onednn`` | ``onednn_packed`` | ``aten`` for the CPU inference linears (module docstring)."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown CPU linear backend {name!r}; choose one of {', '.join(_BACKENDS)}")
    if name.startswith("onednn") and not onednn_linear_available():
        raise RuntimeError("this PyTorch build has no oneDNN packed linear (torch.backends.mkldnn is unavailable)")
    _backend = _resolve(name)


def cpu_linear_backend() -> str:
    """The backend in effect: ``onednn``, ``onednn_packed`` or ``aten`` (``auto`` resolved)."""
    return _backend


class _PackedCache:
    """Reordered weights keyed by ``id(weight)``, valid while the weight's version, storage and dtype match."""

    def __init__(self, limit: int) -> None:
        self.entries: dict[int, tuple[weakref.ref[Tensor], int, int, torch.dtype, Tensor, int]] = {}
        self.bytes = 0
        self.limit = limit

    def get(self, weight: Tensor, dtype: torch.dtype) -> Tensor | None:
        """The reordered weight, packing it on first use; ``None`` when it does not fit (use the plain weight)."""
        key = id(weight)
        entry = self.entries.get(key)
        if entry is not None:
            ref, version, pointer, kind, packed, _ = entry
            if ref() is weight and version == weight._version and pointer == weight.data_ptr() and kind == dtype:
                return packed
            self._drop(key)  # stale: the weight changed in place, moved, or is asked for in another dtype
        size = weight.numel() * dtype.itemsize
        if self.bytes + size > self.limit:
            return None  # full: no eviction (sampling cycles through every weight once per scale)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), _ROWS_HINT)
        self.entries[key] = (weakref.ref(weight, self._forget(key)), weight._version, weight.data_ptr(), dtype,
                             packed, size)  # fmt: skip
        self.bytes += size
        return packed

    def _forget(self, key: int) -> Callable[[object], None]:
        cache = weakref.ref(self)

        def forget(_: object) -> None:
            owner = cache()
            if owner is not None and key in owner.entries and owner.entries[key][0]() is None:
                owner._drop(key)

        return forget

    def _drop(self, key: int) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[5]

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0


_CACHE = _PackedCache(_CACHE_LIMIT)


def clear_packed_cache() -> None:
    """Free every cached reordered weight."""
    _CACHE.clear()


def set_packed_cache_limit(megabytes: float) -> None:
    """Bound the reordered-weight cache (``VARKIT_PACKED_CACHE_MB``); entries over a lower bound are dropped."""
    if megabytes < 0:
        raise ValueError(f"the packed-weight cache limit must be >= 0 MiB, got {megabytes}")
    _CACHE.limit = int(megabytes * 2**20)
    while _CACHE.entries and _CACHE.bytes > _CACHE.limit:
        _CACHE._drop(next(reversed(_CACHE.entries)))  # the latest entries first: the earliest stay useful


def packed_cache_bytes() -> int:
    """Bytes held by the reordered-weight cache."""
    return _CACHE.bytes


class InferenceLinear:
    """``activation(x @ weight.T + bias)`` for inference, through oneDNN on the CPU when the backend allows it.

    ``activation``: ``none`` or ``gelu_tanh`` (fused into the GEMM by oneDNN; ``F.gelu(..., approximate="tanh")``
    otherwise). ``bias`` may be a tensor computed once per call (e.g. a fused QKV bias). Falls back to
    ``F.linear`` off the CPU, under autograd, for dtypes oneDNN does not pack here, or with backend ``aten``.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, activation: str = "none") -> None:
        if activation not in ("none", "gelu_tanh"):
            raise ValueError(f"unknown activation {activation!r}; use none or gelu_tanh")
        self.weight, self.bias, self.activation = weight, bias, activation

    def _onednn_dtype(self, x: Tensor) -> torch.dtype | None:
        if _backend == "aten" or x.device.type != "cpu" or torch.is_grad_enabled():
            return None
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        if dtype not in (torch.float32, torch.bfloat16) or self.weight.device.type != "cpu":
            return None
        if not torch.is_autocast_enabled("cpu") and self.weight.dtype != dtype:
            return None
        return dtype

    def __call__(self, x: Tensor) -> Tensor:
        dtype = self._onednn_dtype(x)
        if dtype is None:
            out = F.linear(x, self.weight, self.bias)
            return F.gelu(out, approximate="tanh") if self.activation == "gelu_tanh" else out
        packed = _CACHE.get(self.weight, dtype) if _backend == "onednn_packed" else None
        weight = self.weight.to(dtype) if packed is None else packed
        bias = None if self.bias is None else self.bias.to(dtype)
        rows = x.reshape(-1, x.shape[-1]).to(dtype).contiguous()
        if self.activation == "gelu_tanh":
            out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "gelu", [], "tanh")
        else:
            out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])


# -- training ----------------------------------------------------------------------------------------------------
_TRAIN_BACKENDS = ("auto", "onednn", "aten")
_train_requested = os.environ.get("VARKIT_TRAIN_LINEAR", "auto").strip().lower() or "auto"
if _train_requested not in _TRAIN_BACKENDS:
    raise ValueError(f"VARKIT_TRAIN_LINEAR={_train_requested!r} is not one of {', '.join(_TRAIN_BACKENDS)}")
_train_backend: str | None = None if _train_requested == "auto" else _train_requested
#: ``auto`` keeps oneDNN only when it is at least this much faster than F.linear on the probe product
_TRAIN_MIN_GAIN = 1.2


def _best_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _probe_train_backend() -> str:
    """Time F.linear against oneDNN once on a (1024 x 384) @ (384 x 1536) product; ``onednn`` if >= 1.2x faster."""
    if not onednn_linear_available():
        return "aten"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 384, generator=generator)
    weight = torch.randn(1536, 384, generator=generator)
    with torch.no_grad():
        blas = _best_seconds(lambda: F.linear(x, weight))
        onednn = _best_seconds(lambda: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], ""))
    return "onednn" if blas >= _TRAIN_MIN_GAIN * onednn else "aten"


def train_linear_backend() -> str:
    """The training linear backend in effect, ``onednn`` or ``aten`` (``auto`` is probed on first use)."""
    global _train_backend
    if _train_backend is None:
        _train_backend = _probe_train_backend()
        logging.getLogger(__name__).info(
            "training linears on the CPU: %s (VARKIT_TRAIN_LINEAR=auto probed F.linear against oneDNN; set it to "
            "onednn or aten to pin the choice)",
            _train_backend,
        )
    return _train_backend


def set_train_linear_backend(name: str) -> None:
    """``auto`` | ``onednn`` | ``aten`` for :class:`Linear` / :func:`linear` (module docstring)."""
    global _train_backend
    if name not in _TRAIN_BACKENDS:
        raise ValueError(f"unknown training linear backend {name!r}; choose one of {', '.join(_TRAIN_BACKENDS)}")
    if name == "onednn" and not onednn_linear_available():
        raise RuntimeError("this PyTorch build has no oneDNN linear (torch.backends.mkldnn is unavailable)")
    _train_backend = None if name == "auto" else name


class _OneDNNLinear(torch.autograd.Function):
    """``x @ weight.T + bias`` on 2-D float32 rows: forward and input gradient through oneDNN, weight gradient mm."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # grad @ weight is a linear with the transposed weight (out, in) -> (in, out)
            grad_x = torch.ops.mkldnn._linear_pointwise(grad, weight.t().contiguous(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            grad_w = grad.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear``, through oneDNN for float32 CPU products when the training backend is ``onednn``."""
    if (
        x.dtype is not torch.float32
        or weight.dtype is not torch.float32
        or x.device.type != "cpu"
        or weight.device.type != "cpu"
        or torch.is_autocast_enabled("cpu")
        or torch.compiler.is_compiling()  # the compiler lowers F.linear to its own oneDNN products
        or x.dim() < 2
        or (bias is not None and bias.dtype is not torch.float32)
        or train_linear_backend() != "onednn"
    ):
        return F.linear(x, weight, bias)
    out = _OneDNNLinear.apply(x.reshape(-1, x.shape[-1]).contiguous(), weight, bias)
    return out.view(*x.shape[:-1], out.shape[-1])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) whose float32 CPU products may run through oneDNN."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
