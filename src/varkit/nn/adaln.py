"""Adaptive layer normalisation: class-conditioned scale/shift/gate (VAR paper, Sec. 4; DiT-style adaLN).

A VAR block normalises its input without learned affine parameters and modulates it with six per-sample vectors
derived from the class embedding: ``(gamma1, gamma2, scale1, scale2, shift1, shift2)`` — gates, scales and shifts
of the attention and feed-forward branches. Two ways to produce them:

* per block (:class:`AdaLNModulation` with ``shared=False``): ``Linear(SiLU(cond))`` of each block;
* shared (``shared_adaln``, used by VAR-d36): one ``Linear(SiLU(cond))`` for the whole network
  (:class:`SharedAdaLN`), plus a learned per-block offset ``block_offset`` (:class:`AdaLNModulation` with
  ``shared=True``; the reference calls it ``ada_gss``).

Since the condition is constant while sampling one image, the modulation is computed once per call of
:meth:`varkit.models.var.VAR.generate` rather than once per scale.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AdaLNModulation", "HeadAdaLN", "SharedAdaLN", "modulated_layer_norm"]

NUM_MODULATIONS = 6


def modulated_layer_norm(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> Tensor:
    """``LayerNorm(x) * (1 + scale) + shift`` with no learned affine (``scale``/``shift`` broadcast over length)."""
    normed = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return torch.addcmul(shift, normed, scale + 1.0)


class SharedAdaLN(nn.Module):
    """One ``Linear(SiLU(cond))`` producing the six modulation vectors for every block (``shared_adaln``)."""

    def __init__(self, cond_dim: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.linear = nn.Linear(cond_dim, NUM_MODULATIONS * width)

    def forward(self, cond: Tensor) -> Tensor:
        """``(b, cond_dim) -> (b, 1, 6, width)``."""
        return self.linear(F.silu(cond)).view(-1, 1, NUM_MODULATIONS, self.width)


class AdaLNModulation(nn.Module):
    """A block's six modulation vectors, ``(b, 1, 6, width)``, from its conditioning input.

    ``shared=False``: the input is the class embedding ``(b, cond_dim)`` and a per-block ``Linear(SiLU(.))`` maps
    it. ``shared=True``: the input is :class:`SharedAdaLN`'s output and a learned per-block offset
    ``block_offset`` ``(1, 1, 6, width)`` is added (the reference's ``ada_gss``).
    """

    def __init__(self, cond_dim: int, width: int, *, shared: bool) -> None:
        super().__init__()
        self.width = width
        self.shared = shared
        if shared:
            self.block_offset = nn.Parameter(torch.randn(1, 1, NUM_MODULATIONS, width) / width**0.5)
        else:
            self.linear = nn.Linear(cond_dim, NUM_MODULATIONS * width)

    def forward(self, cond: Tensor) -> Tensor:
        if self.shared:
            return self.block_offset + cond
        return self.linear(F.silu(cond)).view(-1, 1, NUM_MODULATIONS, self.width)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # varkit checkpoints written before the rename hold ``<prefix>gss``: load them under the new name
        if prefix + "gss" in state_dict and prefix + "block_offset" not in state_dict:
            state_dict[prefix + "block_offset"] = state_dict.pop(prefix + "gss")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"shared={self.shared}"


class HeadAdaLN(nn.Module):
    """The adaptive norm before the output head: ``LN(x) * (1 + scale) + shift`` with ``(scale, shift)`` from cond."""

    def __init__(self, cond_dim: int, width: int, eps: float) -> None:
        super().__init__()
        self.width = width
        self.eps = eps
        self.linear = nn.Linear(cond_dim, 2 * width)

    def modulation(self, cond: Tensor) -> Tensor:
        """``(b, cond_dim) -> (b, 1, 2, width)``: (scale, shift), reusable across calls with the same cond."""
        return self.linear(F.silu(cond)).view(-1, 1, 2, self.width)

    def forward(self, x: Tensor, cond: Tensor | None = None, *, modulation: Tensor | None = None) -> Tensor:
        mod = self.modulation(cond) if modulation is None else modulation  # type: ignore[arg-type]
        scale, shift = mod.unbind(2)
        return modulated_layer_norm(x, scale, shift, self.eps)
