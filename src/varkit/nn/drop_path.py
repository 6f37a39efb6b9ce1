"""Stochastic depth (Huang et al., 2016), as used by VAR's transformer blocks (VAR paper, Sec. 4 / App.).

Each residual branch is dropped for a whole sample with probability ``p`` during training and rescaled by
``1 / (1 - p)`` so the expected residual is unchanged; at evaluation it is the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DropPath", "drop_path"]


def drop_path(x: Tensor, p: float, training: bool, *, generator: torch.Generator | None = None) -> Tensor:
    """Zero whole samples of ``x`` (shape ``(b, ...)``) with probability ``p``, rescaling the survivors."""
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    survivors = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep, generator=generator)
    return x * survivors.div_(keep) if keep > 0.0 else x * survivors


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; ``p`` is the per-sample drop probability."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"
