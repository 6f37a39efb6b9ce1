"""``mssimvq``: SimVQ in VAR's multi-scale residual scheme.

Zhu et al., "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer" (SimVQ), Sec. 4:
reparameterise the codebook as ``C W`` — a *frozen* random basis ``C`` ``(V, d)`` times one learned linear map
``W`` ``(d, d)``. The nearest-code search and the VQ loss are the usual ones, but the codebook loss now trains
``W``, which moves the whole latent space of the codebook at once instead of only the selected rows, so unused
codes follow the encoder and do not die (Sec. 4.2 of the paper: the gradient update of ``W`` rotates and
stretches all of ``C W``).

``C`` is drawn from ``N(0, 1/d)`` at construction and stored as a persistent buffer (it is part of the tokenizer's
weights: a reloaded tokenizer must use the same basis). Per-scale vocabularies (``codebook_sizes``): scale ``k``
searches the first ``codebook_sizes[k]`` codes only, as in ``msibq``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.quantizers.ibq import check_codebook_sizes
from varkit.quantizers.residual import MultiScaleResidualQuantizer
from varkit.registry import QUANTIZERS

__all__ = ["MultiScaleSimVQ"]


@QUANTIZERS.register("mssimvq")
class MultiScaleSimVQ(MultiScaleResidualQuantizer):
    """Multi-scale residual SimVQ: codebook ``basis @ projection.weight.T`` with a frozen ``basis``.

    Args:
        codebook_size: number of codes V (the largest per-scale vocabulary when ``codebook_sizes`` is given).
        code_dim: code (latent) dimension.
        beta: commitment weight.
        codebook_sizes: optional per-scale vocabulary sizes (scale k uses codes ``0 .. codebook_sizes[k] - 1``).
        phi_ratio, phi_count, num_scales: the residual convolutions φ, as in ``msvq``.

    >>> from varkit.contracts import Scales
    >>> q = MultiScaleSimVQ(codebook_size=16, code_dim=4)
    >>> [p for p, _ in q.named_parameters() if not p.startswith("phi")], q.basis.requires_grad
    (['projection.weight'], False)
    """

    basis: Tensor

    def __init__(
        self,
        codebook_size: int = 4096,
        code_dim: int = 32,
        beta: float = 0.25,
        codebook_sizes: Sequence[int] | None = None,
        phi_ratio: float = 0.5,
        phi_count: int = 4,
        num_scales: int | None = None,
    ) -> None:
        super().__init__(code_dim=code_dim, beta=beta, phi_ratio=phi_ratio, phi_count=phi_count, num_scales=num_scales)
        self.codebook_size = int(codebook_size)
        self.codebook_sizes = check_codebook_sizes(codebook_sizes, self.codebook_size)
        self.register_buffer("basis", torch.randn(self.codebook_size, self.code_dim) * self.code_dim**-0.5)
        # W, the only trained codebook parameter; no bias: the paper's codebook is exactly C W
        self.projection = nn.Linear(self.code_dim, self.code_dim, bias=False)

    def codebook_vectors(self) -> Tensor:
        """The effective codebook ``C W`` ``(V, d)`` float32 (differentiable in ``W``)."""
        return F.linear(self.basis.float(), self.projection.weight.float())

    def quantize_map(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        return self.quantize_scale(residual, None)  # the whole codebook

    def quantize_scale(self, residual: Tensor, k: int | None) -> tuple[Tensor, Tensor]:
        batch, dim, height, width = residual.shape
        vocabulary = self.codebook_size if self.codebook_sizes is None or k is None else self.codebook_sizes[k]
        weight = self.codebook_vectors()[:vocabulary]
        flat = residual.permute(0, 2, 3, 1).reshape(-1, dim).float()
        with torch.no_grad():
            frozen = weight.detach()
            squared = flat.square().sum(dim=1, keepdim=True) + frozen.square().sum(dim=1)
            indices = torch.argmin(torch.addmm(squared, flat, frozen.T, beta=1, alpha=-2), dim=1)
        codes = F.embedding(indices, weight)  # the base class's codebook loss trains W through these rows
        codes = codes.view(batch, height * width, dim).transpose(1, 2).reshape(batch, dim, height, width)
        return codes, indices.view(batch, height * width)

    def lookup(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.codebook_vectors())

    def extra_repr(self) -> str:
        sizes = f", codebook_sizes={self.codebook_sizes}" if self.codebook_sizes else ""
        return f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, beta={self.beta}{sizes}"
