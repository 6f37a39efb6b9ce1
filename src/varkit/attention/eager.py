"""The reference attention kernel: written out in plain tensor ops (Vaswani et al.; VAR Sec. 3.2 mask).

``softmax(q k^T * scale + mask) v`` with dropout on the attention weights. Slow and memory-hungry (it materialises
the ``len_q x len_k`` weights), but obviously right: every other kernel is tested against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from varkit.attention.base import KernelBase, additive_mask, default_scale
from varkit.contracts import BlockCausalMask, KernelCapabilities
from varkit.registry import ATTENTION_KERNELS

__all__ = ["EagerAttention"]


@ATTENTION_KERNELS.register("eager")
class EagerAttention(KernelBase):
    """Plain PyTorch reference: any mask, backward, dropout, dtype and device."""

    name = "eager"
    capabilities = KernelCapabilities()

    def __init__(self, upcast: bool = True) -> None:
        # Softmax in fp32 for half inputs keeps the reference a reference; set False to mimic a naive bf16 model.
        self.upcast = upcast

    def compute(
        self, q: Tensor, k: Tensor, v: Tensor, mask: BlockCausalMask | None, dropout_p: float, scale: float | None
    ) -> Tensor:
        scale = default_scale(q.shape[-1]) if scale is None else scale
        compute_dtype = torch.float32 if self.upcast else q.dtype
        scores = torch.matmul(q.to(compute_dtype), k.to(compute_dtype).transpose(-2, -1)) * scale
        if mask is not None:
            scores = scores + additive_mask(mask, q.shape[-2], k.shape[-2], q.device, compute_dtype)
        weights = scores.softmax(dim=-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p, training=True)
        return torch.matmul(weights, v.to(compute_dtype)).to(q.dtype)
