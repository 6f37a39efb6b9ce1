"""``msvq``: VAR's multi-scale residual vector quantizer (VAR paper, Sec. 3.3, Algorithm 1).

One codebook shared by all scales; each scale picks, per position, the code nearest to the area-downsampled
residual (Euclidean, or cosine with ``normalize_codes=True``), and its upsampled, φ-refined code map is added to the
accumulated latent. Loads the weights of the released VQVAE (see :mod:`varkit.checkpoint.vqvae`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.quantizers.residual import MultiScaleResidualQuantizer
from varkit.registry import QUANTIZERS

__all__ = ["MultiScaleVQ"]


@QUANTIZERS.register("msvq")
class MultiScaleVQ(MultiScaleResidualQuantizer):
    """VAR's multi-scale residual VQ with one shared codebook and residual convolutions φ.

    Args:
        codebook_size: number of codes V.
        code_dim: code (latent) dimension.
        beta: commitment weight (0.25 in the released models).
        normalize_codes: nearest code by cosine similarity instead of Euclidean distance.
        phi_ratio: φ mixing ratio ``r`` in ``(1 - r) h + r conv(h)`` (0.5 released; 0 = no φ).
        phi_count: 1 = shared φ, N >= 2 = N partially shared (4 released), 0 = one φ per scale.
        num_scales: number of scales, required only with ``phi_count=0``.

    The codebook is the ``nn.Embedding`` :attr:`codebook` (dead-code restarts may rewrite its rows).

    >>> from varkit.contracts import Scales
    >>> q = MultiScaleVQ(codebook_size=16, code_dim=4)
    >>> out = q(torch.randn(2, 4, 3, 3), Scales.of([1, 2, 3]))
    >>> [tuple(i.shape) for i in out.indices], tuple(out.code_counts.shape)
    ([(2, 1), (2, 4), (2, 9)], (3, 16))
    """

    def __init__(
        self,
        codebook_size: int = 4096,
        code_dim: int = 32,
        beta: float = 0.25,
        normalize_codes: bool = False,
        phi_ratio: float = 0.5,
        phi_count: int = 4,
        num_scales: int | None = None,
    ) -> None:
        super().__init__(code_dim=code_dim, beta=beta, phi_ratio=phi_ratio, phi_count=phi_count, num_scales=num_scales)
        self.codebook_size = int(codebook_size)
        self.normalize_codes = bool(normalize_codes)
        self.codebook = nn.Embedding(self.codebook_size, self.code_dim)
        # uniform in +-1/V as in taming-transformers (VAR's `eini < 0` option): small codes keep early choices diverse
        nn.init.uniform_(self.codebook.weight, -1.0 / self.codebook_size, 1.0 / self.codebook_size)

    def _codebook_float(self) -> Tensor:
        return self.codebook.weight.float()

    @torch.no_grad()
    def nearest_codes(self, vectors: Tensor) -> Tensor:
        """Index of the nearest code for each row of ``vectors`` ``(n, d)``, computed in float32."""
        vectors = vectors.float()
        weight = self._codebook_float().detach()
        if self.normalize_codes:
            return torch.argmax(F.normalize(vectors, dim=-1) @ F.normalize(weight.T, dim=0), dim=1)
        # |z|^2 + |e|^2 - 2 z.e, accumulated in this order so ties break exactly as in the released code
        squared = vectors.square().sum(dim=1, keepdim=True) + weight.square().sum(dim=1)
        return torch.argmin(torch.addmm(squared, vectors, weight.T, beta=1, alpha=-2), dim=1)

    def quantize_map(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        batch, dim, height, width = residual.shape
        flat = residual.permute(0, 2, 3, 1).reshape(-1, dim)
        indices = self.nearest_codes(flat).view(batch, height * width)
        return self.lookup_map(indices, (height, width)), indices

    def lookup(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self._codebook_float())

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, beta={self.beta}, " + (
            f"normalize_codes={self.normalize_codes}"
        )
