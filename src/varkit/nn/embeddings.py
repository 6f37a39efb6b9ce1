"""Input embeddings of the VAR transformer (VAR paper, Sec. 4).

Every position gets an absolute position embedding plus a level embedding saying which scale (token map) it
belongs to, like GPT's segment embedding. The first scale's tokens are a learned start embedding plus the class
embedding; later scales embed the (upsampled-then-downsampled) accumulated latent through a linear map.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from varkit.contracts import Scales

__all__ = ["ScalePositionEmbedding"]


class ScalePositionEmbedding(nn.Module):
    """Absolute position embedding over all ``L`` tokens plus a per-scale level embedding: ``(1, L, width)``."""

    def __init__(self, scales: Scales, width: int, init_std: float | None = None) -> None:
        super().__init__()
        std = math.sqrt(1.0 / width / 3.0) if init_std is None else init_std
        self.positions = nn.Parameter(torch.empty(1, scales.total_tokens, width))
        nn.init.trunc_normal_(self.positions, mean=0.0, std=std)
        self.levels = nn.Embedding(scales.num_scales, width)
        nn.init.trunc_normal_(self.levels.weight, mean=0.0, std=std)
        self.register_buffer("level_ids", scales.level_ids(), persistent=False)

    def forward(self) -> Tensor:
        """The summed embedding ``(1, L, width)``; callers slice the positions they need."""
        return self.positions + self.levels(self.level_ids)[None]
