"""FlexAttention (``torch.nn.attention.flex_attention``) with VAR's block-causal mask as a BlockMask (Sec. 3.2).

The mask is a ``mask_mod`` over scale ids: a query at position i may attend to key j when
``level[i] >= level[j]``. The :class:`BlockMask` (which tiles are full, partial or empty) is built once per
(scales, lengths, device) and cached. Fused kernels come from ``torch.compile``; on CPU the backward pass is not
implemented by PyTorch, which this kernel declares instead of failing deep inside autograd.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from varkit.attention.base import KernelBase, _check_lengths
from varkit.contracts import BlockCausalMask, KernelCapabilities, Scales
from varkit.registry import ATTENTION_KERNELS

__all__ = ["FlexAttention", "block_causal_block_mask"]


@functools.lru_cache(maxsize=64)
def _block_mask_cached(scales: Scales, len_q: int, len_k: int, device: torch.device) -> BlockMask:
    with torch.inference_mode(False), torch.no_grad():
        levels = scales.level_ids(device)[:len_k]
        query_offset = len_k - len_q

        def same_or_coarser(batch: Tensor, head: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return levels[q_idx + query_offset] >= levels[kv_idx]

        return create_block_mask(same_or_coarser, None, None, len_q, len_k, device=device)


def block_causal_block_mask(mask: BlockCausalMask, len_q: int, len_k: int, device: torch.device | str) -> BlockMask:
    """The cached FlexAttention :class:`BlockMask` for queries that are the last ``len_q`` of ``len_k`` keys."""
    _check_lengths(mask.scales, len_q, len_k)
    return _block_mask_cached(mask.scales, len_q, len_k, torch.device(device))


@functools.cache
def _compiled_flex() -> Callable[..., Any]:
    # One compiled callable per process: torch.compile caches its graphs per shape/mask signature.
    return torch.compile(flex_attention, dynamic=False)


@ATTENTION_KERNELS.register("flex")
class FlexAttention(KernelBase):
    """FlexAttention with a cached block-causal BlockMask.

    ``compile``: ``True`` always runs the ``torch.compile``-d kernel, ``False`` never (PyTorch's unfused
    reference path), ``None`` compiles on CUDA only — on CPU compilation costs tens of seconds per shape for a
    forward-only kernel.
    """

    name = "flex"
    capabilities = KernelCapabilities(mask=True, backward=True, dropout=False)

    def __init__(self, compile: bool | None = None) -> None:
        self.compile = compile

    def capabilities_on(self, device: torch.device | str) -> KernelCapabilities:
        if torch.device(device).type == "cpu":
            # torch raises NotImplementedError for FlexAttention's backward on CPU (torch 2.13).
            return self._narrow(self.capabilities, backward=False)
        return self.capabilities

    def _function(self, device: torch.device) -> Callable[..., Any]:
        use_compiled = self.compile if self.compile is not None else device.type == "cuda"
        return _compiled_flex() if use_compiled else cast(Callable[..., Any], flex_attention)

    def compute(
        self, q: Tensor, k: Tensor, v: Tensor, mask: BlockCausalMask | None, dropout_p: float, scale: float | None
    ) -> Tensor:
        if not torch.is_grad_enabled() and q.device.type == "cpu":
            # torch's CPU check looks at requires_grad alone; under no_grad nothing is recorded, so detaching is exact
            q, k, v = q.detach(), k.detach(), v.detach()
        block_mask = None if mask is None else block_causal_block_mask(mask, q.shape[-2], k.shape[-2], q.device)
        return self._function(q.device)(q, k, v, block_mask=block_mask, scale=scale)

    def __repr__(self) -> str:
        return f"FlexAttention(compile={self.compile!r})"
