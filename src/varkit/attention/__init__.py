"""Attention kernels behind one contract (VAR paper, Sec. 3.2: block-causal attention over token maps).

Every kernel takes ``(batch, heads, length, head_dim)`` tensors and an optional
:class:`~varkit.contracts.BlockCausalMask`, declares :class:`~varkit.contracts.KernelCapabilities`, and raises
:class:`~varkit.contracts.CapabilityError` when asked for something it cannot do. Build one by name::

    >>> from varkit import ATTENTION_KERNELS
    >>> kernel = ATTENTION_KERNELS.build({"name": "sdpa"})
    >>> kernel.name
    'sdpa'
"""

from varkit.attention.auto import AutoAttention
from varkit.attention.base import KernelBase, additive_mask, dense_mask, needs_backward, per_scale_attention
from varkit.attention.eager import EagerAttention
from varkit.attention.flash import FlashAttention, FlashAttentionUnavailable, flash_attn_available
from varkit.attention.flex import FlexAttention, block_causal_block_mask
from varkit.attention.sdpa import SDPAAttention

__all__ = [
    "AutoAttention",
    "EagerAttention",
    "FlashAttention",
    "FlashAttentionUnavailable",
    "FlexAttention",
    "KernelBase",
    "SDPAAttention",
    "additive_mask",
    "block_causal_block_mask",
    "dense_mask",
    "flash_attn_available",
    "needs_backward",
    "per_scale_attention",
]
