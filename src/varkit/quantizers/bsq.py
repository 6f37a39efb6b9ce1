"""``msbsq``: binary spherical quantization (BSQ) in VAR's multi-scale residual scheme (Infinity's tokenizer).

Zhao et al., "Image and Video Tokenization with Binary Spherical Quantization" (BSQ), Sec. 3.2-3.3: project each
latent vector to ``bits`` dimensions, L2-normalise it onto the unit sphere (``u = v / |v|``) and quantize every
coordinate to its sign, scaled so that the code is a unit vector too::

    q = sign(u) / sqrt(bits)          # straight-through: the gradient of u

The implicit codebook is the ``2^bits`` corners of the hypercube on the sphere; there are no codebook parameters
and no dead rows to restart. A token's id is its bit pattern, ``index = sum_i [q_i > 0] 2^i``; the projection
back to ``code_dim`` gives the code vector the residual scheme accumulates (Infinity, Sec. 3.1, uses exactly this
multi-scale residual BSQ).

Entropy regularisation (BSQ Sec. 3.3, after MAGVIT-v2's lookup-free quantization): minimise the per-sample entropy
``H(q(c|u))`` (each vector commits to one code) and maximise the codebook entropy ``H(E_u q(c|u))`` (all codes are
used). With ``q(c|u)`` the softmax of ``-|u - c|^2 / tau`` over the ``2^bits`` corners, both factorise over bits:
``|u - c|^2`` is a sum over coordinates, so bit ``i`` is +1 with probability ``sigmoid(4 u_i / (sqrt(bits) tau))``
independently. The per-sample entropy is then a sum of ``bits`` binary entropies (exact), and the codebook entropy
is approximated, as in the paper's factorised estimate, by the sum over bits of the entropy of the batch-averaged
bit probability — never a ``2^bits``-wide tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.contracts import QuantizerOutput, Scales
from varkit.quantizers.residual import MultiScaleResidualQuantizer
from varkit.registry import QUANTIZERS

__all__ = ["MultiScaleBSQ", "binary_entropy", "bits_to_indices", "indices_to_bits"]


def binary_entropy(p: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(``p``), elementwise, finite at 0 and 1."""
    return -(p * p.clamp_min(1e-12).log() + (1 - p) * (1 - p).clamp_min(1e-12).log())


def bits_to_indices(bits: Tensor) -> Tensor:
    """``(..., n)`` booleans (True = +1) -> int64 ids ``sum_i bits_i 2^i``."""
    weights = torch.pow(2, torch.arange(bits.shape[-1], device=bits.device, dtype=torch.int64))
    return (bits.long() * weights).sum(-1)


def indices_to_bits(indices: Tensor, bits: int) -> Tensor:
    """int64 ids ``(...)`` -> ``(..., bits)`` booleans, the inverse of :func:`bits_to_indices`."""
    shifts = torch.arange(bits, device=indices.device, dtype=torch.int64)
    return (indices.unsqueeze(-1) >> shifts) & 1 == 1


@QUANTIZERS.register("msbsq")
class MultiScaleBSQ(MultiScaleResidualQuantizer):
    """Multi-scale residual BSQ with a ``code_dim -> bits -> code_dim`` projection.

    Args:
        bits: bits per token; the implicit vocabulary is ``2^bits`` (at most 62 bits: ids are int64).
        code_dim: latent dimension.
        beta: commitment weight of the base loss (which also trains the projections and φ).
        entropy_weight: weight of the entropy regularisation (BSQ's zeta).
        entropy_temperature: tau of ``q(c|u)``.
        codebook_entropy_weight: weight of the codebook-entropy term relative to the per-sample term (gamma).
        phi_ratio, phi_count, num_scales: the residual convolutions φ, as in ``msvq``.

    ``bitwise = True`` tells the transformer to predict tokens bit by bit (:mod:`varkit.nn.heads`).

    >>> from varkit.contracts import Scales
    >>> q = MultiScaleBSQ(bits=4, code_dim=6)
    >>> q.codebook_size, q.bitwise
    (16, True)
    >>> z = torch.randn(2, 6, 3, 3)
    >>> torch.equal(q.decode(q.encode(z, Scales.of([1, 3])), Scales.of([1, 3])), q(z, Scales.of([1, 3])).quantized)
    True
    """

    bitwise = True

    def __init__(
        self,
        bits: int = 9,
        code_dim: int = 32,
        beta: float = 0.25,
        entropy_weight: float = 0.1,
        entropy_temperature: float = 0.1,
        codebook_entropy_weight: float = 1.0,
        phi_ratio: float = 0.5,
        phi_count: int = 4,
        num_scales: int | None = None,
    ) -> None:
        super().__init__(code_dim=code_dim, beta=beta, phi_ratio=phi_ratio, phi_count=phi_count, num_scales=num_scales)
        if not 1 <= int(bits) <= 62:
            raise ValueError(f"bits must be in [1, 62] (token ids are int64), got {bits}")
        self.bits = int(bits)
        self.codebook_size = 2**self.bits
        self.entropy_weight = float(entropy_weight)
        self.entropy_temperature = float(entropy_temperature)
        self.codebook_entropy_weight = float(codebook_entropy_weight)
        self.project_in = nn.Linear(self.code_dim, self.bits)
        self.project_out = nn.Linear(self.bits, self.code_dim)
        self._entropy_terms: list[tuple[Tensor, Tensor]] | None = None

    # -- bits <-> code vectors ------------------------------------------------------------------------------------
    def bits_to_codes(self, bits: Tensor) -> Tensor:
        """``(..., bits)`` booleans or ±1 values -> code vectors ``(..., code_dim)`` float32."""
        signs = bits.float() * 2 - 1 if bits.dtype == torch.bool else bits.float().sign()
        return self._project_out(signs / math.sqrt(self.bits))

    def _project_out(self, corners: Tensor) -> Tensor:
        return F.linear(corners, self.project_out.weight.float(), self.project_out.bias.float())

    # -- MultiScaleResidualQuantizer ------------------------------------------------------------------------------
    def quantize_map(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        batch, dim, height, width = residual.shape
        flat = residual.permute(0, 2, 3, 1).reshape(batch, height * width, dim).float()
        projected = F.linear(flat, self.project_in.weight.float(), self.project_in.bias.float())
        unit = F.normalize(projected, dim=-1)
        positive = unit.detach() >= 0  # sign(0) counts as +1 so every vector gets a corner
        corners = (positive.float() * 2 - 1) / math.sqrt(self.bits)
        # straight-through: the corner's value, the gradient of u (adding an exact zero keeps decode bit-identical)
        quantized = corners + (unit - unit.detach())
        if self._entropy_terms is not None:
            self._entropy_terms.append(self._entropy(unit))
        codes = self._project_out(quantized)
        return codes.transpose(1, 2).reshape(batch, self.code_dim, height, width), bits_to_indices(positive)

    def _entropy(self, unit: Tensor) -> tuple[Tensor, Tensor]:
        """(per-sample entropy, factorised codebook entropy) of ``q(c|u)`` for unit vectors ``(..., bits)``."""
        probs = torch.sigmoid(4 * unit.reshape(-1, self.bits) / (math.sqrt(self.bits) * self.entropy_temperature))
        per_sample = binary_entropy(probs).sum(-1).mean()
        codebook = binary_entropy(probs.mean(0)).sum()
        return per_sample, codebook

    def forward(self, latents: Tensor, scales: Scales) -> QuantizerOutput:
        self._entropy_terms = []
        try:
            out = super().forward(latents, scales)
            terms = self._entropy_terms
        finally:
            self._entropy_terms = None
        per_sample = torch.stack([t[0] for t in terms]).mean()
        codebook = torch.stack([t[1] for t in terms]).mean()
        entropy = per_sample - self.codebook_entropy_weight * codebook
        out.loss = out.loss + self.entropy_weight * entropy
        out.extras["per_sample_entropy"] = per_sample.detach()
        out.extras["codebook_entropy"] = codebook.detach()
        return out

    def lookup(self, indices: Tensor) -> Tensor:
        return self.bits_to_codes(indices_to_bits(indices, self.bits))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, codebook_size=2^{self.bits}, code_dim={self.code_dim}, beta={self.beta}"
