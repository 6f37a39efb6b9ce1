"""``msibq``: index backpropagation quantization (IBQ) in VAR's multi-scale residual scheme.

Shi et al., "Taming Scalable Visual Tokenizer for Autoregressive Image Generation" (IBQ), Sec. 3.2: a plain VQ
only updates the codes it selects, so most of a large codebook never moves and dies. IBQ scores every code by its
inner product with the latent, ``logits = z · E^T``, takes the ``argmax`` as the index and replaces the one-hot
selection by a straight-through estimator over the categorical distribution of *all* codes::

    one_hot_st = one_hot(argmax) - sg(softmax(logits)) + softmax(logits)
    z_q        = one_hot_st @ E

The value is exactly the selected code; the gradient reaches every row of ``E`` through the softmax at every step,
so the codebook moves as a whole with the encoder and codes do not die. The "double quantization" loss of Sec. 3.2
trains both views: the soft straight-through codes (``|z_q - z|^2``, here the base class's codebook term on the
accumulated latent, plus the same term per scale) and the hard selected code (``|E[idx] - sg(z)|^2`` per scale,
weighted by ``beta`` as in a VQ commitment pair); the encoder's commitment term is the base class's.

Per-scale vocabularies (``codebook_sizes``): scale ``k`` scores only the first ``codebook_sizes[k]`` codes of the
one shared codebook, so token ids of scale ``k`` lie in ``[0, codebook_sizes[k])`` and ``lookup`` needs no scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.contracts import QuantizerOutput, Scales
from varkit.quantizers.residual import MultiScaleResidualQuantizer
from varkit.registry import QUANTIZERS

__all__ = ["MultiScaleIBQ", "check_codebook_sizes"]


def check_codebook_sizes(codebook_sizes: Sequence[int] | None, codebook_size: int) -> list[int] | None:
    """Validate per-scale vocabularies: positive, at most ``codebook_size``; None stays None."""
    if codebook_sizes is None:
        return None
    sizes = [int(v) for v in codebook_sizes]
    if not sizes or any(v < 1 or v > codebook_size for v in sizes):
        raise ValueError(f"codebook_sizes must be a non-empty list of integers in [1, {codebook_size}], got {sizes}")
    return sizes


@QUANTIZERS.register("msibq")
class MultiScaleIBQ(MultiScaleResidualQuantizer):
    """Multi-scale residual IBQ: argmax of inner products, straight-through over the softmax of all codes.

    Args:
        codebook_size: number of codes V (the largest per-scale vocabulary when ``codebook_sizes`` is given).
        code_dim: code (latent) dimension.
        beta: commitment weight of the base loss and weight of the hard-code term of the double quantization loss.
        double_weight: weight of the per-scale double quantization loss (0 keeps only the base class's loss).
        codebook_sizes: optional per-scale vocabulary sizes (scale k uses codes ``0 .. codebook_sizes[k] - 1``).
        phi_ratio, phi_count, num_scales: the residual convolutions φ, as in ``msvq``.

    >>> from varkit.contracts import Scales
    >>> q = MultiScaleIBQ(codebook_size=16, code_dim=4, codebook_sizes=[4, 16])
    >>> out = q(torch.randn(2, 4, 3, 3), Scales.of([1, 3]))
    >>> int(out.indices[0].max()) < 4, tuple(out.code_counts.shape)
    (True, (2, 16))
    """

    def __init__(
        self,
        codebook_size: int = 4096,
        code_dim: int = 32,
        beta: float = 0.25,
        double_weight: float = 1.0,
        codebook_sizes: Sequence[int] | None = None,
        phi_ratio: float = 0.5,
        phi_count: int = 4,
        num_scales: int | None = None,
    ) -> None:
        super().__init__(code_dim=code_dim, beta=beta, phi_ratio=phi_ratio, phi_count=phi_count, num_scales=num_scales)
        self.codebook_size = int(codebook_size)
        self.codebook_sizes = check_codebook_sizes(codebook_sizes, self.codebook_size)
        self.double_weight = float(double_weight)
        self.codebook = nn.Embedding(self.codebook_size, self.code_dim)
        # unit-variance logits at the start: |e| ~ 1, so z·e has the spread of z (the IBQ reference uses N(0, 1)
        # codes on unit-scale latents)
        nn.init.normal_(self.codebook.weight, std=self.code_dim**-0.5)
        self._double_terms: list[Tensor] | None = None

    def _vocabulary(self, k: int | None) -> int:
        return self.codebook_size if self.codebook_sizes is None or k is None else self.codebook_sizes[k]

    def quantize_map(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        return self.quantize_scale(residual, None)  # the whole codebook

    def quantize_scale(self, residual: Tensor, k: int | None) -> tuple[Tensor, Tensor]:
        batch, dim, height, width = residual.shape
        flat = residual.permute(0, 2, 3, 1).reshape(-1, dim).float()
        weight = self.codebook.weight.float()[: self._vocabulary(k)]
        logits = flat @ weight.T
        indices = torch.argmax(logits.detach(), dim=1)
        hard = F.embedding(indices, weight)
        if torch.is_grad_enabled() and weight.requires_grad:
            # one_hot - sg(p) + p, times E; written as E[idx] + (pE - sg(pE)) so the value is bit-identical to
            # lookup (the one-hot form rounds (1 - p) + p) while the gradient is the same linear map
            soft = F.softmax(logits, dim=1) @ weight
            codes = hard + (soft - soft.detach())
            if self._double_terms is not None:
                self._double_terms.append(
                    F.mse_loss(codes, flat.detach()) + self.beta * F.mse_loss(hard, flat.detach())
                )
        else:
            codes = hard
        codes = codes.view(batch, height * width, dim).transpose(1, 2).reshape(batch, dim, height, width)
        return codes, indices.view(batch, height * width)

    def forward(self, latents: Tensor, scales: Scales) -> QuantizerOutput:
        self._double_terms = []
        try:
            out = super().forward(latents, scales)
            terms = self._double_terms
        finally:
            self._double_terms = None
        if terms:
            double = torch.stack(terms).mean()
            out.loss = out.loss + self.double_weight * double
            out.extras["double_quantization_loss"] = double.detach()
        return out

    def lookup(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.codebook.weight.float())

    def extra_repr(self) -> str:
        sizes = f", codebook_sizes={self.codebook_sizes}" if self.codebook_sizes else ""
        return f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, beta={self.beta}{sizes}"
