"""FlashAttention-2/3 (the ``flash-attn`` package) as a varkit kernel (VAR Sec. 3.2).

flash-attn takes no arbitrary mask, but VAR's block-causal mask has a special shape: the queries of scale k see
exactly the key prefix of scales <= k. Training therefore runs one non-causal call per scale over its prefix
(exact, see :func:`~varkit.attention.base.per_scale_attention`); KV-cached sampling needs no mask at all.

The package is imported on first use, so ``import varkit`` never needs it; a missing package is a clear error
with the install command. CUDA and fp16/bf16 only, which the kernel declares.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from varkit.attention.base import KernelBase, per_scale_attention
from varkit.contracts import BlockCausalMask, KernelCapabilities
from varkit.registry import ATTENTION_KERNELS

__all__ = ["FlashAttention", "FlashAttentionUnavailable", "flash_attn_available"]

# FA2 ships as ``flash_attn``; FA3 (Hopper) as ``flash_attn_interface`` from the same repository's hopper build.
_MODULES = {2: "flash_attn", 3: "flash_attn_interface"}


class FlashAttentionUnavailable(ImportError):
    """The ``flash-attn`` package (or the requested major version) is not installed."""


def flash_attn_available(version: int = 2) -> bool:
    """Whether the flash-attn module for ``version`` can be imported (does not import it)."""
    return importlib.util.find_spec(_MODULES[version]) is not None


def _load(version: int) -> Callable[..., Any]:
    module_name = _MODULES[version]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        hint = (
            "pip install varkit[flash]  (or: pip install flash-attn --no-build-isolation)"
            if version == 2
            else "build FlashAttention-3 from the flash-attention repository's hopper/ directory"
        )
        raise FlashAttentionUnavailable(
            f"attention kernel 'flash' (FlashAttention-{version}) needs the {module_name!r} module, "
            f"which is not importable ({err}). Install it with: {hint}; or pick attention=sdpa."
        ) from err
    return module.flash_attn_func


@ATTENTION_KERNELS.register("flash")
class FlashAttention(KernelBase):
    """FlashAttention-2 (``version=2``) or -3 (``version=3``); block-causal training by per-scale prefix calls."""

    name = "flash"
    capabilities = KernelCapabilities(
        mask=True, backward=True, dropout=True, dtypes=(torch.bfloat16, torch.float16), devices=("cuda",)
    )

    def __init__(self, version: Literal[2, 3] = 2) -> None:
        if version not in _MODULES:
            raise ValueError(f"flash version must be 2 or 3, got {version!r}")
        self.version = version
        if version == 3:
            # FA3's public interface has no dropout.
            self.capabilities = self._narrow(self.capabilities, dropout=False)
        self._func: Callable[..., Any] | None = None

    def available(self) -> bool:
        return flash_attn_available(self.version)

    def _flash(self) -> Callable[..., Any]:
        if self._func is None:
            self._func = _load(self.version)
        return self._func

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float, scale: float | None) -> Tensor:
        """One mask-free call; converts (b, h, l, d) to flash's (b, l, h, d) and back."""
        func = self._flash()
        kwargs: dict[str, Any] = {"softmax_scale": scale, "causal": False}
        if self.version == 2:
            kwargs["dropout_p"] = dropout_p
        out = func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), **kwargs)
        if isinstance(out, tuple):  # some FA3 releases also return the log-sum-exp
            out = out[0]
        return out.transpose(1, 2)

    def compute(
        self, q: Tensor, k: Tensor, v: Tensor, mask: BlockCausalMask | None, dropout_p: float, scale: float | None
    ) -> Tensor:
        if mask is None:
            return self._attend(q, k, v, dropout_p, scale)
        return per_scale_attention(lambda qs, ks, vs: self._attend(qs, ks, vs, dropout_p, scale), q, k, v, mask.scales)

    def __repr__(self) -> str:
        return f"FlashAttention(version={self.version})"
