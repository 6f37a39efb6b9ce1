"""PyTorch's fused ``scaled_dot_product_attention`` as a varkit kernel (VAR Sec. 3.2 block-causal mask).

Two ways to honour the block-causal structure:

* ``mask_strategy="dense"`` — one call with the cached boolean ``(len_q, len_k)`` mask (what the reference does
  with its additive bias);
* ``mask_strategy="per_scale"`` — one mask-free call per scale over its key prefix (exact; lets mask-free
  backends such as FlashAttention train VAR). On CPU it is slower (forward ~1.2x, forward+backward ~2-3x at
  VAR-d16 shapes, ``benchmarks/attention.py``), hence not the default.

``backend`` pins one SDPA backend through :func:`torch.nn.attention.sdpa_kernel`; ``None`` lets PyTorch choose.
A pinned backend declares what it can do, so an impossible request is a :class:`CapabilityError` up front instead
of PyTorch's "no available kernel" deep inside the call.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from varkit.attention.base import KernelBase, dense_mask, per_scale_attention
from varkit.contracts import BlockCausalMask, KernelCapabilities
from varkit.registry import ATTENTION_KERNELS

__all__ = ["SDPAAttention"]

Backend = Literal["math", "flash", "efficient", "cudnn"]
MaskStrategy = Literal["dense", "per_scale"]

_BACKENDS: dict[str, SDPBackend] = {
    "math": SDPBackend.MATH,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}
_HALF = (torch.bfloat16, torch.float16)
_ALL = (torch.float32, torch.bfloat16, torch.float16)

# What each pinned backend accepts, per device type: (mask, dropout, dtypes). CUDA flash/cuDNN take no arbitrary
# mask and only half precision; CPU "flash" is PyTorch's own tiled kernel: any float dtype and a mask, no dropout.
_BACKEND_CAPS: dict[str | None, dict[str, tuple[bool, bool, tuple[torch.dtype, ...]]]] = {
    None: {"cpu": (True, True, _ALL), "cuda": (True, True, _ALL)},
    "math": {"cpu": (True, True, _ALL), "cuda": (True, True, _ALL)},
    "flash": {"cpu": (True, False, _ALL), "cuda": (False, True, _HALF)},
    "efficient": {"cuda": (True, True, _ALL)},
    "cudnn": {"cuda": (False, True, _HALF)},
}


@ATTENTION_KERNELS.register("sdpa")
class SDPAAttention(KernelBase):
    """``torch.nn.functional.scaled_dot_product_attention``, optionally pinned to one backend."""

    name = "sdpa"

    def __init__(self, backend: Backend | None = None, mask_strategy: MaskStrategy = "dense") -> None:
        if backend is not None and backend not in _BACKENDS:
            raise ValueError(f"sdpa backend must be one of {sorted(_BACKENDS)} or None, got {backend!r}")
        if mask_strategy not in ("dense", "per_scale"):
            raise ValueError(f"sdpa mask_strategy must be 'dense' or 'per_scale', got {mask_strategy!r}")
        self.backend = backend
        self.mask_strategy = mask_strategy
        per_device = _BACKEND_CAPS[backend]
        dtypes = tuple(d for d in _ALL if any(d in dt for _, _, dt in per_device.values()))
        self.capabilities = KernelCapabilities(
            mask=any(m for m, _, _ in per_device.values()) or mask_strategy == "per_scale",
            backward=True,
            dropout=any(dp for _, dp, _ in per_device.values()),
            dtypes=dtypes,
            devices=tuple(per_device),
        )

    def capabilities_on(self, device: torch.device | str) -> KernelCapabilities:
        kind = torch.device(device).type
        if kind not in self.capabilities.devices:
            return self.capabilities
        mask, dropout, dtypes = _BACKEND_CAPS[self.backend][kind]
        return self._narrow(
            self.capabilities, mask=mask or self.mask_strategy == "per_scale", dropout=dropout, dtypes=dtypes
        )

    def _pinned(self) -> contextlib.AbstractContextManager[None]:
        if self.backend is None:
            return contextlib.nullcontext()
        return sdpa_kernel([_BACKENDS[self.backend]])

    def compute(
        self, q: Tensor, k: Tensor, v: Tensor, mask: BlockCausalMask | None, dropout_p: float, scale: float | None
    ) -> Tensor:
        with self._pinned():
            if mask is None:
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
            if self.mask_strategy == "per_scale":
                return per_scale_attention(
                    lambda qs, ks, vs: F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout_p, scale=scale),
                    q,
                    k,
                    v,
                    mask.scales,
                )
            allowed = dense_mask(mask, q.shape[-2], k.shape[-2], q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale)

    def __repr__(self) -> str:
        return f"SDPAAttention(backend={self.backend!r}, mask_strategy={self.mask_strategy!r})"
