"""``msfsq``: multi-scale finite scalar quantization in VAR's residual scheme.

Finite scalar quantization (Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple", ICLR 2024, Sec. 3):
project the latent to a few channels, bound channel ``i`` to ``levels[i]`` values with a shifted tanh and round
(straight-through). The implicit codebook is the grid of all level combinations, ``prod(levels)`` codes, with no
codebook parameters, no codebook loss and no dead codes. Here every scale of VAR's residual scheme (Sec. 3.3 of
the VAR paper: area-downsample, quantize, bicubic-upsample, φ, accumulate) is quantized that way; a linear
projection maps ``code_dim`` to ``len(levels)`` channels and back, so ``lookup`` returns code vectors in the
latent space that the transformer consumes like VQ embeddings.

Indices are mixed-radix numbers: ``index = sum_i digit_i * prod(levels[:i])`` with ``digit_i in [0, levels[i])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from varkit.quantizers.residual import MultiScaleResidualQuantizer
from varkit.registry import QUANTIZERS

__all__ = ["MultiScaleFSQ"]

#: keeps the bounded values strictly inside the outermost rounding bins (FSQ's reference implementation)
_BOUND_EPS = 1e-3


@QUANTIZERS.register("msfsq")
class MultiScaleFSQ(MultiScaleResidualQuantizer):
    """Multi-scale residual FSQ with a ``code_dim -> len(levels) -> code_dim`` projection.

    Args:
        levels: quantization levels per FSQ channel, e.g. ``[8, 8, 8, 6, 5]`` (15360 implicit codes).
        code_dim: latent dimension.
        beta: commitment weight of the same loss as ``msvq`` (the second term trains the projections and φ).
        phi_ratio, phi_count, num_scales: the residual convolutions φ, as in ``msvq``.

    >>> from varkit.contracts import Scales
    >>> q = MultiScaleFSQ(levels=[3, 4], code_dim=6)
    >>> q.codebook_size
    12
    >>> z = torch.randn(2, 6, 3, 3)
    >>> torch.equal(q.decode(q.encode(z, Scales.of([1, 3])), Scales.of([1, 3])), q(z, Scales.of([1, 3])).quantized)
    True
    """

    _levels: Tensor
    _half_span: Tensor
    _offset: Tensor
    _shift: Tensor
    _half_width: Tensor
    _radix: Tensor

    def __init__(
        self,
        levels: Sequence[int] = (8, 8, 8, 6, 5),
        code_dim: int = 32,
        beta: float = 0.25,
        phi_ratio: float = 0.5,
        phi_count: int = 4,
        num_scales: int | None = None,
    ) -> None:
        super().__init__(code_dim=code_dim, beta=beta, phi_ratio=phi_ratio, phi_count=phi_count, num_scales=num_scales)
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        self.levels = levels
        self.codebook_size = math.prod(levels)
        level_tensor = torch.tensor(levels, dtype=torch.float64)
        half_span = (level_tensor - 1) * (1 + _BOUND_EPS) / 2
        offset = torch.where(torch.tensor(levels) % 2 == 0, 0.5, 0.0).double()
        radix = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.int64), dim=0)
        # constants of the grid, kept as buffers so they follow .to(device); not part of the state dict
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("_half_span", half_span.float(), persistent=False)
        self.register_buffer("_offset", offset.float(), persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half_span).float(), persistent=False)
        self.register_buffer(
            "_half_width", torch.tensor([v // 2 for v in levels], dtype=torch.float32), persistent=False
        )
        self.register_buffer("_radix", radix, persistent=False)
        self.project_in = nn.Linear(self.code_dim, len(levels))
        self.project_out = nn.Linear(len(levels), self.code_dim)

    # -- the scalar grid ------------------------------------------------------------------------------------------
    def _digits_to_grid(self, digits: Tensor) -> Tensor:
        """Digits ``(..., n)`` int64 -> grid values in [-1, 1] (float32)."""
        return (digits.float() - self._half_width) / self._half_width

    def indices_to_grid(self, indices: Tensor) -> Tensor:
        """Mixed-radix indices ``(...)`` -> normalized grid points ``(..., len(levels))`` in [-1, 1]."""
        digits = torch.div(indices.unsqueeze(-1), self._radix, rounding_mode="floor") % self._levels
        return self._digits_to_grid(digits)

    def _project_out(self, grid: Tensor) -> Tensor:
        return nn.functional.linear(grid, self.project_out.weight.float(), self.project_out.bias.float())

    # -- MultiScaleResidualQuantizer ------------------------------------------------------------------------------
    def quantize_map(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        batch, dim, height, width = residual.shape
        flat = residual.permute(0, 2, 3, 1).reshape(batch, height * width, dim)
        projected = nn.functional.linear(flat, self.project_in.weight.float(), self.project_in.bias.float())
        bounded = torch.tanh(projected + self._shift) * self._half_span - self._offset
        rounded = torch.round(bounded.detach())
        digits = (rounded + self._half_width).long()
        indices = (digits * self._radix).sum(-1)
        # straight-through rounding; adding an exact zero keeps the value bit-identical to the decode path
        soft = bounded / self._half_width
        grid = self._digits_to_grid(digits) + (soft - soft.detach())
        codes = self._project_out(grid)
        return codes.transpose(1, 2).reshape(batch, self.code_dim, height, width), indices

    def lookup(self, indices: Tensor) -> Tensor:
        return self._project_out(self.indices_to_grid(indices))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, codebook_size={self.codebook_size}, code_dim={self.code_dim}, beta={self.beta}"
