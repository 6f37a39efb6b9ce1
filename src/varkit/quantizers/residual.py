"""Multi-scale residual quantization, shared by every VAR-style quantizer (VAR paper, Sec. 3.3, Algorithms 1-2).

Encoding a latent ``f`` of size ``H x W`` into K token maps, coarse to fine::

    residual = f;  accumulated = 0
    for k in 1..K:
        r_k   = quantize(area_downsample(residual, (h_k, w_k)))      # no resampling at the last scale
        z_k   = phi_k(bicubic_upsample(codes(r_k), (H, W)))           # no resampling at the last scale
        accumulated += z_k;  residual -= z_k

A subclass only says how one map is quantized (:meth:`MultiScaleResidualQuantizer.quantize_map`) and how indices
become code vectors (:meth:`lookup`); everything else lives here once. The loop above is written once
(:meth:`~MultiScaleResidualQuantizer.residual_steps`): the training forward, ``encode``/``encode_per_scale`` and the
codebook statistics (:func:`varkit.quantizers.codebook.scale_residuals`) all iterate it. Its inverse, accumulating
``z_k`` from given indices, is also written once (:meth:`~MultiScaleResidualQuantizer.accumulate`): ``decode``,
``decode_per_scale`` and the transformer's teacher-forcing inputs iterate that.

Every method computes in float32 with autocast disabled: token ids must not depend on the precision the caller
happens to run in (the official code crashes under CPU bf16 autocast for exactly this reason).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varkit.contracts import QuantizerOutput, Scales
from varkit.quantizers.phi import ResidualPhi

__all__ = ["MultiScaleResidualQuantizer", "ResidualStep"]


@contextlib.contextmanager
def _full_precision(device: torch.device) -> Iterator[None]:
    """Disable autocast on ``device`` so quantization runs in the float32 the inputs are cast to."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


@dataclass(frozen=True)
class ResidualStep:
    """One scale ``k`` of the residual loop (all float32 ``(b, d, ...)`` maps).

    ``inputs``: what scale k quantizes, ``area_downsample(f - f̂_{k-1}, (h_k, w_k))`` (detached);
    ``indices``: its tokens ``(b, h_k * w_k)``; ``contribution``: ``z_k = φ_k(upsample(codes))`` at the latent size
    (carrying the quantizer's gradient in training); ``accumulated``: ``f̂_k``, the sum of ``z_1..z_k``.
    """

    k: int
    inputs: Tensor
    indices: Tensor
    contribution: Tensor
    accumulated: Tensor


class MultiScaleResidualQuantizer(nn.Module):
    """Base class: the residual multi-scale scheme around a single-map quantizer.

    Args:
        code_dim: channels of the latents (and of the code vectors).
        beta: commitment weight of the loss ``beta * |sg(f_hat) - f|^2 + |f_hat - sg(f)|^2``.
        phi_ratio: mixing ratio of the residual convolutions φ (0 disables them).
        phi_count: 1 = one shared φ, N >= 2 = N partially shared, 0 = one per scale.
        num_scales: number of scales; required only when ``phi_count == 0`` (the builders fill it from the
            schedule), because that is the only case where the parameter count depends on the schedule.
    """

    codebook_size: int
    code_dim: int
    #: per-scale vocabulary sizes (scale k uses codes ``0 .. codebook_sizes[k] - 1``); None: ``codebook_size``
    #: at every scale. Set by quantizers that support it (``msibq``, ``mssimvq``).
    codebook_sizes: list[int] | None = None

    def __init__(
        self,
        code_dim: int,
        beta: float = 0.25,
        phi_ratio: float = 0.5,
        phi_count: int = 4,
        num_scales: int | None = None,
    ) -> None:
        super().__init__()
        self.code_dim = int(code_dim)
        self.beta = float(beta)
        self.phi = ResidualPhi(self.code_dim, ratio=phi_ratio, count=phi_count, num_scales=num_scales)

    # -- what a subclass provides ----------------------------------------------------------------------------
    def quantize_map(self, residual: Tensor) -> tuple[Tensor, Tensor]:
        """Quantize one float32 map ``(b, d, h, w)`` -> (codes ``(b, d, h, w)`` float32, indices ``(b, h*w)``).

        The codes carry whatever gradient the quantizer trains through (codebook, projections); the residual
        itself arrives detached.
        """
        raise NotImplementedError

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors of ``indices`` ``(b, l)`` -> ``(b, l, code_dim)`` float32."""
        raise NotImplementedError

    def quantize_scale(self, residual: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Quantize scale ``k``'s map; the default ignores ``k`` (one vocabulary for all scales)."""
        return self.quantize_map(residual)

    def vocabulary_sizes(self, num_scales: int) -> list[int]:
        """The vocabulary size of each of ``num_scales`` scales (all ``codebook_size`` unless per-scale)."""
        if self.codebook_sizes is None:
            return [int(self.codebook_size)] * num_scales
        if len(self.codebook_sizes) != num_scales:
            raise ValueError(
                f"codebook_sizes {self.codebook_sizes} has {len(self.codebook_sizes)} entries for {num_scales} scales"
            )
        return [int(v) for v in self.codebook_sizes]

    # -- helpers ------------------------------------------------------------------------------------------------
    def lookup_map(self, indices: Tensor, size: tuple[int, int]) -> Tensor:
        """Code vectors of one scale's indices ``(b, h*w)`` as a map ``(b, code_dim, h, w)``."""
        codes = self.lookup(indices)
        return codes.transpose(1, 2).reshape(codes.shape[0], self.code_dim, size[0], size[1])

    def _check(self, latents: Tensor, scales: Scales) -> None:
        self.vocabulary_sizes(len(scales))  # per-scale vocabularies must match the schedule
        if latents.ndim != 4 or latents.shape[1] != self.code_dim:
            raise ValueError(f"expected latents (b, {self.code_dim}, H, W), got {tuple(latents.shape)}")
        if tuple(latents.shape[-2:]) != scales.last:
            raise ValueError(
                f"the last scale {scales.last[0]}x{scales.last[1]} of {scales.describe()} must equal the latent "
                f"size {latents.shape[-2]}x{latents.shape[-1]}"
            )

    def _upsampled_contribution(self, codes: Tensor, k: int, scales: Scales) -> Tensor:
        """φ_k(bicubic-upsample(codes)) at the latent size; the last scale is already at full size."""
        if k != len(scales) - 1:
            codes = F.interpolate(codes.contiguous(), size=scales.last, mode="bicubic")
        return self.phi(codes, k, len(scales))

    @staticmethod
    def _downsample(latents: Tensor, size: tuple[int, int], is_last: bool) -> Tensor:
        return latents if is_last else F.interpolate(latents, size=size, mode="area")

    # -- training -----------------------------------------------------------------------------------------------
    def forward(self, latents: Tensor, scales: Scales) -> QuantizerOutput:
        """Quantize ``latents`` ``(b, d, H, W)``; ``quantized`` has a straight-through gradient to ``latents``."""
        with _full_precision(latents.device):
            target = latents.float()
            frozen = target.detach()
            accumulated = frozen
            indices: list[Tensor] = []
            counts: list[Tensor] = []
            commitment = frozen.new_zeros(())
            codebook = frozen.new_zeros(())
            for step in self.residual_steps(latents, scales):
                accumulated = step.accumulated
                indices.append(step.indices)
                counts.append(torch.bincount(step.indices.flatten(), minlength=self.codebook_size))
                commitment = commitment + F.mse_loss(accumulated.detach(), target)
                codebook = codebook + F.mse_loss(accumulated, frozen)
            commitment = commitment / len(scales)
            codebook = codebook / len(scales)
            loss = self.beta * commitment + codebook
            # straight-through estimator: the value of the quantized latent, the gradient of the identity; adding
            # an exact zero (rather than VAR's `(f_hat - f) + f`) keeps the value bit-identical to `decode`
            quantized = accumulated.detach() + (target - frozen)
        return QuantizerOutput(
            quantized=quantized,
            indices=indices,
            loss=loss,
            code_counts=torch.stack(counts),
            extras={"commitment_loss": commitment.detach(), "codebook_loss": codebook.detach()},
        )

    # -- the residual loop (VAR Algorithm 1), once ---------------------------------------------------------------
    def residual_steps(self, latents: Tensor, scales: Scales) -> Iterator[ResidualStep]:
        """Quantize ``latents`` ``(b, d, H, W)`` scale by scale, coarse to fine, yielding each :class:`ResidualStep`.

        Runs in float32 with autocast off. The residual is detached (it only feeds the non-differentiable code
        choice of the next scales); the contributions keep the quantizer's gradient unless the caller runs under
        ``torch.no_grad()``.
        """
        self._check(latents, scales)
        with _full_precision(latents.device):
            residual = latents.detach().float().clone()
            accumulated = torch.zeros_like(residual)
            last = len(scales) - 1
            for k, size in enumerate(scales.sizes):
                inputs = self._downsample(residual, size, k == last)
                codes, indices = self.quantize_scale(inputs, k)
                contribution = self._upsampled_contribution(codes, k, scales)
                accumulated = accumulated + contribution
                residual = residual - contribution.detach()
                yield ResidualStep(k, inputs, indices, contribution, accumulated)

    # -- tokenizing ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, latents: Tensor, scales: Scales) -> list[Tensor]:
        """Token indices per scale: a list of K int64 tensors ``(b, h_k * w_k)``."""
        return [step.indices for step in self.residual_steps(latents, scales)]

    @torch.no_grad()
    def encode_per_scale(self, latents: Tensor, scales: Scales) -> tuple[list[Tensor], list[Tensor]]:
        """Indices per scale and the accumulated latent after each scale (both lists of length K)."""
        steps = list(self.residual_steps(latents, scales))
        return [step.indices for step in steps], [step.accumulated for step in steps]

    def _check_indices(self, indices: Sequence[Tensor], scales: Scales) -> None:
        if len(indices) != len(scales):
            raise ValueError(f"got {len(indices)} index maps for {len(scales)} scales {scales.describe()}")
        for k, (idx, count) in enumerate(zip(indices, scales.token_counts)):
            if idx.ndim != 2 or idx.shape[1] != count:
                raise ValueError(f"indices of scale {k} must be (b, {count}), got {tuple(idx.shape)}")

    def accumulate(self, indices: Sequence[Tensor], scales: Scales) -> Iterator[Tensor]:
        """The inverse loop: ``f̂_k = f̂_{k-1} + φ_k(upsample(codes of indices[k]))`` for each given scale, yielded
        as float32 ``(b, d, H, W)`` (autocast off). ``indices`` may hold fewer maps than ``scales`` has scales."""
        if not indices:
            return
        batch = indices[0].shape[0]
        device = indices[0].device
        with _full_precision(device):
            accumulated = torch.zeros(batch, self.code_dim, *scales.last, device=device)
            for k, idx in enumerate(indices):
                accumulated = accumulated + self._upsampled_contribution(
                    self.lookup_map(idx, scales.sizes[k]), k, scales
                )
                yield accumulated

    @torch.no_grad()
    def decode_per_scale(self, indices: Sequence[Tensor], scales: Scales) -> list[Tensor]:
        """The accumulated latent ``(b, d, H, W)`` after each scale (coarse-to-fine previews); length K."""
        self._check_indices(indices, scales)
        return list(self.accumulate(indices, scales))

    def decode(self, indices: Sequence[Tensor], scales: Scales) -> Tensor:
        """The accumulated latent ``(b, d, H, W)`` of all K scales."""
        return self.decode_per_scale(indices, scales)[-1]

    # -- the transformer's view ---------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_forcing_inputs(self, indices: Sequence[Tensor], scales: Scales) -> Tensor:
        """Inputs of scales 2..K for teacher forcing: ``(b, L - h_1*w_1, d)`` float32.

        The input of scale k+1 is the latent accumulated over scales 1..k, area-downsampled to (h_{k+1}, w_{k+1})
        (VAR Algorithm 1's ``f_hat`` seen at the next resolution). Returns a ``(b, 0, d)`` tensor when K = 1.
        """
        self._check_indices(indices, scales)
        batch = indices[0].shape[0]
        device = indices[0].device
        inputs: list[Tensor] = [torch.zeros(batch, 0, self.code_dim, device=device)]
        with _full_precision(device):
            for k, accumulated in enumerate(self.accumulate(indices[:-1], scales)):
                following = F.interpolate(accumulated, size=scales.sizes[k + 1], mode="area")
                inputs.append(following.flatten(2).transpose(1, 2))
        return torch.cat(inputs, dim=1)

    @torch.no_grad()
    def next_scale_input(self, k: int, accumulated: Tensor, codes: Tensor, scales: Scales) -> tuple[Tensor, Tensor]:
        """One sampling step: add scale ``k``'s codes ``(b, d, h_k, w_k)`` to ``accumulated`` ``(b, d, H, W)``.

        Start from ``torch.zeros(b, d, H, W)``. Returns the new accumulated latent and the next input: the
        accumulated latent area-downsampled to scale ``k + 1``'s size, or the accumulated latent itself after the
        last scale. ``accumulated`` is not modified in place.
        """
        if not 0 <= k < len(scales):
            raise ValueError(f"scale index {k} out of range for {len(scales)} scales")
        if tuple(codes.shape[-2:]) != scales.sizes[k]:
            raise ValueError(f"codes of scale {k} must be {scales.sizes[k]}, got {tuple(codes.shape[-2:])}")
        with _full_precision(codes.device):
            accumulated = accumulated.float() + self._upsampled_contribution(codes.float(), k, scales)
            if k == len(scales) - 1:
                return accumulated, accumulated
            return accumulated, F.interpolate(accumulated, size=scales.sizes[k + 1], mode="area")
