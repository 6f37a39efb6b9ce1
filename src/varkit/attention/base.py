"""Shared machinery of the attention kernels (VAR paper, Sec. 3.2: block-causal attention over token maps).

* :class:`KernelBase` — declares capabilities (possibly per device) and refuses, loudly, calls that need one it
  lacks: a :class:`~varkit.contracts.CapabilityError` naming the kernel and the capability.
* :func:`dense_mask` / :func:`additive_mask` — the block-causal mask for a chunk of queries, built once per
  (scales, lengths, device, dtype) and cached: rebuilding a 680x680 mask per layer per step is pure waste.
* :func:`per_scale_attention` — the exact mask-free decomposition of block-causal attention: the queries of
  scale k attend, without any mask, to the key prefix of scales <= k. Any mask-free kernel can train VAR this way.

Canonical layout everywhere: ``(batch, heads, length, head_dim)``; queries may be a suffix chunk of the keys
(the last ``len_q`` positions), which is how KV-cached sampling and chunked evaluation call a kernel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from varkit.contracts import BlockCausalMask, CapabilityError, KernelCapabilities, Scales

__all__ = [
    "KernelBase",
    "additive_mask",
    "default_scale",
    "dense_mask",
    "needs_backward",
    "per_scale_attention",
    "query_spans",
]

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def default_scale(head_dim: int) -> float:
    """The softmax temperature of Vaswani et al.: ``1 / sqrt(head_dim)``."""
    return 1.0 / math.sqrt(head_dim)


def needs_backward(*tensors: Tensor) -> bool:
    """True when autograd will record this call (grad mode on and some input requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _check_lengths(scales: Scales, len_q: int, len_k: int) -> None:
    total = scales.total_tokens
    if not 0 < len_q <= len_k <= total:
        raise ValueError(
            f"a block-causal mask over {scales.describe()} ({total} tokens) needs 0 < len_q <= len_k <= {total}, "
            f"got len_q={len_q}, len_k={len_k} (queries are the last len_q of the len_k key positions)"
        )


@functools.lru_cache(maxsize=128)
def _dense_cached(scales: Scales, len_q: int, len_k: int, device: torch.device) -> Tensor:
    # Built outside inference mode so the cached tensor can also enter autograd graphs later (an inference
    # tensor saved for backward is an error).
    with torch.inference_mode(False), torch.no_grad():
        levels = scales.level_ids(device)[:len_k]
        return levels[len_k - len_q :, None] >= levels[None, :]


@functools.lru_cache(maxsize=128)
def _additive_cached(scales: Scales, len_q: int, len_k: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():
        allowed = _dense_cached(scales, len_q, len_k, device)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return bias.masked_fill_(~allowed, float("-inf"))


def dense_mask(mask: BlockCausalMask, len_q: int, len_k: int, device: torch.device | str) -> Tensor:
    """``(len_q, len_k)`` boolean (True = may attend) for queries that are the last ``len_q`` key positions.

    Cached and shared: treat the result as read-only.
    """
    _check_lengths(mask.scales, len_q, len_k)
    return _dense_cached(mask.scales, len_q, len_k, torch.device(device))


def additive_mask(
    mask: BlockCausalMask, len_q: int, len_k: int, device: torch.device | str, dtype: torch.dtype
) -> Tensor:
    """``(len_q, len_k)`` additive bias (0 allowed, -inf masked) in ``dtype``; cached, read-only."""
    _check_lengths(mask.scales, len_q, len_k)
    return _additive_cached(mask.scales, len_q, len_k, torch.device(device), dtype)


def query_spans(scales: Scales, len_q: int, len_k: int) -> list[tuple[int, int, int]]:
    """``(q_start, q_stop, k_stop)`` per scale touched by the query chunk, in query-chunk coordinates.

    Rows ``q_start:q_stop`` of the chunk belong to one scale and see keys ``0:k_stop`` (that scale's prefix).
    """
    _check_lengths(scales, len_q, len_k)
    first = len_k - len_q
    spans = []
    offsets = scales.offsets
    for k in range(scales.num_scales):
        lo, hi = max(offsets[k], first), min(offsets[k + 1], len_k)
        if lo < hi:
            spans.append((lo - first, hi - first, offsets[k + 1]))
    return spans


def per_scale_attention(
    attend: Callable[[Tensor, Tensor, Tensor], Tensor], q: Tensor, k: Tensor, v: Tensor, scales: Scales
) -> Tensor:
    """Block-causal attention as one mask-free ``attend(q_k, k_prefix, v_prefix)`` call per scale.

    Exact, because a query of scale k sees precisely the keys of scales <= k, a prefix of the sequence.
    The cost is one kernel launch per scale and re-reading the prefix, in exchange for no mask at all.
    """
    len_q, len_k = q.shape[-2], k.shape[-2]
    outputs = [
        attend(q[..., qa:qb, :], k[..., :kb, :], v[..., :kb, :]) for qa, qb, kb in query_spans(scales, len_q, len_k)
    ]
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-2)


class KernelBase:
    """Capability bookkeeping common to the built-in kernels.

    ``capabilities`` is what the kernel can do on its best device; :meth:`capabilities_on` narrows it per device
    type (e.g. FlexAttention has no CPU backward). :meth:`check` raises before any work is done.
    """

    name: str = "?"
    capabilities: KernelCapabilities = KernelCapabilities()

    def capabilities_on(self, device: torch.device | str) -> KernelCapabilities:
        """Capabilities on one device type; by default the same everywhere."""
        return self.capabilities

    def available(self) -> bool:
        """Whether the kernel's implementation can run in this environment (optional packages present)."""
        return True

    def _refuse(self, what: str) -> CapabilityError:
        return CapabilityError(f"attention kernel {self.name!r} does not support {what}")

    def check(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: BlockCausalMask | None = None,
        dropout_p: float = 0.0,
    ) -> None:
        """Raise :class:`CapabilityError` if this call needs a capability the kernel lacks here."""
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            raise ValueError(
                f"attention kernel {self.name!r} takes (batch, heads, length, head_dim) tensors, "
                f"got q{tuple(q.shape)}, k{tuple(k.shape)}, v{tuple(v.shape)}"
            )
        if q.shape[-2] > k.shape[-2]:
            raise ValueError(f"queries must be a suffix of the keys: len_q={q.shape[-2]} > len_k={k.shape[-2]}")
        device = q.device
        if device.type not in self.capabilities.devices:
            raise self._refuse(f"device {device.type!r} (supports: {', '.join(self.capabilities.devices)})")
        caps = self.capabilities_on(device)
        if q.dtype not in caps.dtypes or k.dtype != q.dtype or v.dtype != q.dtype:
            supported = ", ".join(_dtype_name(d) for d in caps.dtypes)
            got = "/".join(sorted({_dtype_name(t.dtype) for t in (q, k, v)}))
            raise self._refuse(f"dtype {got} on {device.type} (supports: {supported})")
        if mask is not None and not caps.mask:
            raise self._refuse(f"a block-causal mask on {device.type}")
        if dropout_p > 0.0 and not caps.dropout:
            raise self._refuse(f"dropout (dropout_p={dropout_p}) on {device.type}")
        if needs_backward(q, k, v) and not caps.backward:
            raise self._refuse(
                f"backward on {device.type} (inputs require grad under grad mode; "
                "run it under torch.no_grad() or pick another kernel)"
            )

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: BlockCausalMask | None = None,
        dropout_p: float = 0.0,
        scale: float | None = None,
    ) -> Tensor:
        """Check the call against the kernel's capabilities (one clear error, never a fallback), then compute."""
        self.check(q, k, v, mask=mask, dropout_p=dropout_p)
        return self.compute(q, k, v, mask, dropout_p, scale)

    def compute(
        self, q: Tensor, k: Tensor, v: Tensor, mask: BlockCausalMask | None, dropout_p: float, scale: float | None
    ) -> Tensor:
        """The attention itself, on inputs :meth:`check` accepted; what each kernel implements."""
        raise NotImplementedError

    @staticmethod
    def _narrow(caps: KernelCapabilities, **changes: object) -> KernelCapabilities:
        return replace(caps, **changes)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
