"""VAR's self-attention layer and its pre-allocated KV cache (VAR paper, Sec. 3.2 and 4).

* Fused QKV projection with learned query and value biases and a fixed zero key bias (a key bias only adds a
  per-query constant to the attention logits, which softmax ignores).
* Optional QK-L2 normalisation ("cosine attention"): queries and keys are unit-normalised and the logits scaled by
  a learned per-head temperature ``exp(min(log_scale, log 100))`` — this keeps large VAR models stable.
* The attention itself is a registered kernel (:data:`varkit.ATTENTION_KERNELS`), canonical layout
  ``(batch, heads, length, head_dim)``.
* :class:`KVCache` holds the keys and values of every token generated so far in buffers sized for the whole
  sequence, written in place scale by scale: no re-concatenation (and re-allocation) per scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.contracts import AttentionKernel, BlockCausalMask
from varkit.nn.cpu_linear import Linear
from varkit.registry import ATTENTION_KERNELS

__all__ = ["KVCache", "SelfAttention"]

MAX_LOG_SCALE = math.log(100.0)
KernelSpec = str | Mapping[str, Any] | AttentionKernel


class KVCache:
    """Keys and values of one attention layer, pre-allocated for ``capacity`` positions.

    ``append`` writes the new keys/values at the current length and returns views of everything cached so far.
    """

    def __init__(
        self,
        batch: int,
        num_heads: int,
        capacity: int,
        head_dim: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        self.keys = torch.empty(batch, num_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = torch.empty_like(self.keys)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def reset(self) -> None:
        self.length = 0

    def keep_rows(self, rows: int) -> None:
        """Keep only the first ``rows`` batch rows (e.g. the conditional half once guidance is switched off)."""
        self.keys, self.values = self.keys[:rows], self.values[:rows]

    def observe(self, queries: Tensor, scale: float) -> None:
        """Called with the current queries after each :meth:`append`; a no-op here (a cache that evicts by
        attention importance overrides it)."""

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``(b, heads, n, head_dim)`` keys/values after the cached ones; return all ``length + n`` of them."""
        start, stop = self.length, self.length + keys.shape[2]
        if stop > self.capacity:
            raise ValueError(f"KV cache overflow: {stop} positions requested, capacity {self.capacity}")
        self.keys[:, :, start:stop].copy_(keys)
        self.values[:, :, start:stop].copy_(values)
        self.length = stop
        return self.keys[:, :, :stop], self.values[:, :, :stop]


class SelfAttention(nn.Module):
    """Multi-head self-attention with fused QKV, q/v biases, optional QK-L2 norm, and an optional KV cache."""

    zero_k_bias: Tensor

    def __init__(
        self,
        width: int,
        num_heads: int,
        *,
        qk_l2_norm: bool = True,
        attention_dropout: float = 0.0,
        dropout: float = 0.0,
        kernel: KernelSpec = "sdpa",
    ) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.width, self.num_heads, self.head_dim = width, num_heads, width // num_heads
        self.qk_l2_norm = qk_l2_norm
        if qk_l2_norm:
            # Learned per-head log temperature, initialised at log(4) like the reference; logits are cos * exp(.)
            self.log_scale = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
            self.softmax_scale = 1.0
        else:
            # The reference's fixed temperature for plain dot-product attention (smaller than 1/sqrt(d)).
            self.softmax_scale = 0.25 / math.sqrt(self.head_dim)
        self.qkv = Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width), persistent=False)
        self.proj = Linear(width, width)
        self.attention_dropout = float(attention_dropout)
        self.dropout = float(dropout)
        self.kernel = ATTENTION_KERNELS.resolve(kernel)

    def qkv_bias(self) -> Tensor:
        return torch.cat((self.q_bias, self.zero_k_bias.to(self.q_bias.dtype), self.v_bias))

    def forward(self, x: Tensor, *, mask: BlockCausalMask | None = None, cache: KVCache | None = None) -> Tensor:
        """``(b, n, width) -> (b, n, width)``.

        Teacher forcing passes the block-causal ``mask`` over the whole sequence; KV-cached sampling passes one
        scale's tokens at a time with ``cache`` and no mask (each scale sees every earlier token and itself).
        """
        b, n, _ = x.shape
        # the module call (not F.linear on its weight) so that adapters wrapping `qkv` (LoRA, varkit.training.finetune)
        # take part; the bias is added outside (the key bias is a fixed zero), in the output's dtype under autocast
        qkv = self.qkv(x)
        qkv = (qkv + self.qkv_bias().to(qkv.dtype)).view(b, n, 3, self.num_heads, self.head_dim)
        v = qkv[:, :, 2].transpose(1, 2)
        if self.qk_l2_norm:
            # one normalisation pass over queries and keys together (fewer small ops per layer while sampling);
            # it runs in float32 under autocast, so cast back to share the kernel's dtype with v
            qk = F.normalize(qkv[:, :, :2], dim=-1).to(v.dtype)
            temperature = self.log_scale.clamp(max=MAX_LOG_SCALE).exp().to(v.dtype)
            q = qk[:, :, 0].transpose(1, 2) * temperature
            k = qk[:, :, 1].transpose(1, 2)
        else:
            q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        if cache is not None:
            k, v = cache.append(k, v)
            cache.observe(q, self.softmax_scale)
        dropout_p = self.attention_dropout if self.training else 0.0
        out = self.kernel(q, k, v, mask=mask, dropout_p=dropout_p, scale=self.softmax_scale)
        out = self.proj(out.transpose(1, 2).reshape(b, n, self.width))
        return F.dropout(out, self.dropout, self.training) if self.dropout > 0.0 else out

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, qk_l2_norm={self.qk_l2_norm}, kernel={self.kernel!r}"
