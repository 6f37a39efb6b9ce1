"""Residual convolutions φ of VAR's multi-scale quantizer (VAR paper, Sec. 3.3 and Algorithms 1-2).

After a token map is upsampled to the latent size it passes through φ_k before it is accumulated, so that the
coarse maps' upsampling blur can be corrected: ``φ(h) = (1 - r) * h + r * conv3x3(h)`` with mixing ratio ``r``.

How many distinct convolutions exist (``count``):

* ``1`` — one φ shared by every scale;
* ``N >= 2`` — N partially shared convolutions; scale ``k`` of ``K`` uses the one whose *tick* is nearest to its
  relative position ``k / (K - 1)`` (the released models use N = 4);
* ``0`` — one per scale (``num_scales`` convolutions), chosen by the same nearest-tick rule.

All computation runs in float32, whatever the parameters' dtype or an enclosing autocast, because the quantizer's
arithmetic has to be exactly reproducible (token ids must not depend on precision).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PhiConv", "ResidualPhi", "phi_ticks"]

#: below this magnitude the mixing ratio counts as zero and φ is the identity (no parameters)
_ZERO_RATIO = 1e-6


class PhiConv(nn.Module):
    """``h -> (1 - ratio) * h + ratio * conv3x3(h)``, computed in float32."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        self.ratio = abs(float(ratio))
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        self.bias = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv2d's default initialisation (VAR's φ is a plain Conv2d): kaiming-uniform(a=sqrt(5)), bias in
        # +-1/sqrt(fan_in)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.weight[0].numel())
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, codes: Tensor) -> Tensor:
        codes = codes.float()
        mixed = F.conv2d(codes, self.weight.float(), self.bias.float(), padding=1)
        return codes.mul(1.0 - self.ratio) + mixed.mul_(self.ratio)

    def extra_repr(self) -> str:
        return f"channels={self.weight.shape[0]}, ratio={self.ratio}"


def phi_ticks(count: int) -> np.ndarray:
    """Relative positions in [0, 1] that the ``count`` convolutions stand for (VAR's released rule)."""
    if count == 4:
        return np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count)
    return np.linspace(1 / 2 / count, 1 - 1 / 2 / count, count)


class ResidualPhi(nn.Module):
    """The set of φ convolutions of a multi-scale quantizer and the rule choosing one per scale.

    Args:
        channels: latent (code) dimension.
        ratio: mixing ratio ``r``; 0 makes every φ the identity.
        count: 1 = shared, N >= 2 = partially shared, 0 = one per scale (needs ``num_scales``).
        num_scales: number of scales, only used (and required) when ``count == 0``.
    """

    def __init__(self, channels: int, ratio: float = 0.5, count: int = 4, num_scales: int | None = None) -> None:
        super().__init__()
        if count < 0:
            raise ValueError(
                f"phi_count must be >= 0 (0 = one per scale, 1 = shared, N = partially shared), got {count}"
            )
        if count == 0:
            if num_scales is None or num_scales < 1:
                raise ValueError(
                    "phi_count=0 (one φ per scale) needs num_scales, the number of scales of the schedule; "
                    f"got num_scales={num_scales!r}"
                )
            count = num_scales
        self.ratio = float(ratio)
        self.count = count
        identity = abs(self.ratio) < _ZERO_RATIO
        self.convs = nn.ModuleList(nn.Identity() if identity else PhiConv(channels, ratio) for _ in range(count))
        self._ticks = phi_ticks(count)

    def index_for(self, k: int, num_scales: int) -> int:
        """Which convolution scale ``k`` (0-based) of ``num_scales`` uses."""
        position = k / (num_scales - 1) if num_scales > 1 else 0.0
        return int(np.argmin(np.abs(self._ticks - position)))

    def forward(self, codes: Tensor, k: int, num_scales: int) -> Tensor:
        """Apply scale ``k``'s φ to upsampled codes ``(b, d, H, W)``; the result is float32."""
        return self.convs[self.index_for(k, num_scales)](codes.float())

    def extra_repr(self) -> str:
        return f"count={self.count}, ratio={self.ratio}, ticks={np.round(self._ticks, 4).tolist()}"
