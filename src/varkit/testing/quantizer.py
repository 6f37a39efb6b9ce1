"""Conformance kit for multi-scale quantizers (VAR Sec. 3.3; the :class:`~varkit.contracts.MultiScaleQuantizer`
contract).

:func:`check_quantizer` runs a quantizer on random latents and checks what the tokenizer, the transformer and
the sampler rely on: shapes and dtypes, index ranges and code counts, the straight-through gradient, a trainable
loss, ``encode``/``decode`` consistency with ``forward``, teacher-forcing inputs equal to the chain of
``next_scale_input`` steps (training sees exactly what sampling will build), and token ids that do not change
under bf16 autocast.

>>> from varkit import QUANTIZERS, Scales
>>> q = QUANTIZERS.build({"name": "msvq", "codebook_size": 32, "code_dim": 8})
>>> out = check_quantizer(q, Scales.of([1, 2, 4]))
>>> out.code_counts.shape
torch.Size([3, 32])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from varkit.contracts import MultiScaleQuantizer, QuantizerOutput, Scales

__all__ = ["check_quantizer"]


def _fail(message: str) -> None:
    raise AssertionError(message)


def _codes_map(quantizer: MultiScaleQuantizer, indices: Tensor, size: tuple[int, int]) -> Tensor:
    codes = quantizer.lookup(indices)
    return codes.transpose(1, 2).reshape(codes.shape[0], quantizer.code_dim, size[0], size[1])


def _check_indices(indices: Sequence[Tensor], scales: Scales, batch: int, vocabulary: int, what: str) -> None:
    if len(indices) != len(scales):
        _fail(f"{what}: {len(indices)} index maps for {len(scales)} scales")
    for k, (idx, count) in enumerate(zip(indices, scales.token_counts)):
        if idx.dtype != torch.int64:
            _fail(f"{what}: indices of scale {k} must be int64, got {idx.dtype}")
        if tuple(idx.shape) != (batch, count):
            _fail(f"{what}: indices of scale {k} must be {(batch, count)}, got {tuple(idx.shape)}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocabulary):
            _fail(f"{what}: indices of scale {k} outside [0, {vocabulary})")


def check_quantizer(
    quantizer: MultiScaleQuantizer,
    scales: Scales,
    *,
    batch_size: int = 2,
    generator: torch.Generator | None = None,
    atol: float = 1e-5,
    device: torch.device | str = "cpu",
) -> QuantizerOutput:
    """Check ``quantizer`` against the multi-scale quantizer contract on ``scales``; returns the forward output.

    Raises ``AssertionError`` naming the first violated property. ``atol`` bounds float differences between
    code paths that compute the same quantity (decode vs forward, teacher forcing vs sampling steps).
    """
    scales = Scales.of(scales)
    if not isinstance(quantizer, MultiScaleQuantizer):
        _fail(f"{type(quantizer).__name__} does not implement the MultiScaleQuantizer protocol")
    vocabulary, dim = int(quantizer.codebook_size), int(quantizer.code_dim)
    if vocabulary < 1 or dim < 1:
        _fail(f"codebook_size and code_dim must be positive, got {vocabulary}, {dim}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    height, width = scales.last
    latents = torch.randn(batch_size, dim, height, width, generator=generator).to(device).requires_grad_(True)
    num_scales = len(scales)

    # -- forward: shapes, counts, loss, gradients ---------------------------------------------------------------
    out = quantizer.forward(latents, scales)
    if not isinstance(out, QuantizerOutput):
        _fail(f"forward must return a QuantizerOutput, got {type(out).__name__}")
    if out.quantized.shape != latents.shape or out.quantized.dtype != torch.float32:
        _fail(
            f"quantized must be float32 {tuple(latents.shape)}, got {out.quantized.dtype} {tuple(out.quantized.shape)}"
        )
    _check_indices(out.indices, scales, batch_size, vocabulary, "forward")
    if tuple(out.code_counts.shape) != (num_scales, vocabulary):
        _fail(
            f"code_counts must be (num_scales, codebook_size) = {(num_scales, vocabulary)}, "
            f"got {tuple(out.code_counts.shape)}"
        )
    for k, idx in enumerate(out.indices):
        expected = torch.bincount(idx.flatten(), minlength=vocabulary).to(out.code_counts.dtype)
        if not torch.equal(out.code_counts[k].cpu(), expected.cpu()):
            _fail(f"code_counts[{k}] is not the histogram of the indices of scale {k}")
    if out.loss.ndim != 0 or not torch.isfinite(out.loss) or not out.loss.requires_grad:
        _fail(f"loss must be a finite differentiable scalar, got {out.loss}")

    weights = torch.randn(latents.shape, generator=generator).to(device)
    (gradient,) = torch.autograd.grad((out.quantized * weights).sum(), latents, retain_graph=True)
    if not torch.allclose(gradient, weights, atol=atol):
        _fail("the quantized output must pass gradients straight through to the latents (identity Jacobian)")
    if isinstance(quantizer, nn.Module):
        params = [p for p in quantizer.parameters() if p.requires_grad]
        if params:
            grads = torch.autograd.grad(out.loss, params, allow_unused=True)
            if not any(g is not None and bool(g.abs().sum() > 0) for g in grads):
                _fail("the loss trains none of the quantizer's parameters")
            if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
                _fail("the loss gives non-finite parameter gradients")

    # -- tokenizing: encode = forward's indices, decode = forward's value ---------------------------------------
    frozen = latents.detach()
    indices = quantizer.encode(frozen, scales)
    _check_indices(indices, scales, batch_size, vocabulary, "encode")
    for k, (a, b) in enumerate(zip(indices, out.indices)):
        if not torch.equal(a, b):
            _fail(f"encode and forward disagree on the indices of scale {k}")
    if any(not torch.equal(a, b) for a, b in zip(indices, quantizer.encode(frozen, scales))):
        _fail("encode is not deterministic")
    decoded = quantizer.decode(indices, scales)
    if decoded.shape != latents.shape or not torch.allclose(decoded, out.quantized.detach(), atol=atol):
        _fail("decode(encode(latents)) differs from forward's quantized latents")
    previews = quantizer.decode_per_scale(indices, scales)
    if len(previews) != num_scales or not torch.allclose(previews[-1], decoded, atol=atol):
        _fail("decode_per_scale must give K latents, the last equal to decode")
    encoded, encoded_latents = quantizer.encode_per_scale(frozen, scales)
    if any(not torch.equal(a, b) for a, b in zip(encoded, indices)) or len(encoded_latents) != num_scales:
        _fail("encode_per_scale must give encode's indices and K accumulated latents")
    if any(not torch.allclose(a, b, atol=atol) for a, b in zip(encoded_latents, previews)):
        _fail("encode_per_scale's accumulated latents must equal decode_per_scale of its indices")

    # -- the transformer's view: teacher forcing = chained sampling steps ---------------------------------------
    for k, idx in enumerate(indices):
        codes = quantizer.lookup(idx)
        if tuple(codes.shape) != (batch_size, scales.token_counts[k], dim) or not torch.isfinite(codes).all():
            _fail(
                f"lookup of scale {k} must be finite {(batch_size, scales.token_counts[k], dim)}, "
                f"got {tuple(codes.shape)}"
            )
    teacher = quantizer.teacher_forcing_inputs(indices, scales)
    expected_len = scales.total_tokens - scales.first_tokens
    if tuple(teacher.shape) != (batch_size, expected_len, dim):
        _fail(f"teacher_forcing_inputs must be {(batch_size, expected_len, dim)}, got {tuple(teacher.shape)}")
    accumulated = torch.zeros(batch_size, dim, height, width, device=decoded.device)
    for k, idx in enumerate(indices):
        accumulated, following = quantizer.next_scale_input(
            k, accumulated, _codes_map(quantizer, idx, scales.sizes[k]), scales
        )
        if k + 1 < num_scales:
            if tuple(following.shape[-2:]) != scales.sizes[k + 1]:
                _fail(f"next_scale_input({k}) must return the next input at {scales.sizes[k + 1]}")
            step = following.flatten(2).transpose(1, 2)
            section = slice(scales.offsets[k + 1] - scales.first_tokens, scales.offsets[k + 2] - scales.first_tokens)
            if not torch.allclose(step, teacher[:, section], atol=atol):
                _fail(f"teacher-forcing inputs of scale {k + 1} differ from the sampling step next_scale_input({k})")
    if not torch.allclose(accumulated, decoded, atol=atol):
        _fail("chaining next_scale_input over all scales must give decode(indices)")

    # -- precision: token ids must not depend on autocast -------------------------------------------------------
    device_type = torch.device(device).type
    with torch.autocast(device_type, dtype=torch.bfloat16):
        mixed = quantizer.forward(frozen, scales)
    if mixed.quantized.dtype != torch.float32:
        _fail(f"under bf16 autocast the quantized latents must stay float32, got {mixed.quantized.dtype}")
    for k, (a, b) in enumerate(zip(mixed.indices, indices)):
        if not torch.equal(a, b):
            _fail(f"bf16 autocast changed the indices of scale {k}: quantization must run in float32")
    return out
