"""Output heads of the VAR transformer: the usual softmax over the vocabulary, or bit-wise prediction.

* Softmax head (VAR, Sec. 3.2): ``nn.Linear(width, V)``, cross-entropy. With per-scale vocabularies (a tokenizer
  whose scale ``k`` uses only codes ``[0, V_k)``) the logits of codes ``>= V_k`` are masked to ``-inf`` at the
  positions of scale ``k`` (:func:`mask_vocabulary`), so neither the loss nor sampling can pick them.
* Bit-wise head (Infinity, Han et al. 2024, Sec. 3.2 "bitwise modeling", for BSQ tokenizers with ``2^bits``
  implicit codes): ``nn.Linear(width, bits)`` predicts ``bits`` independent logits per token, one per sign of the
  BSQ code; the loss is the sum over bits of binary cross-entropies (:func:`bitwise_loss`); the token id is the
  bit pattern. Nothing of width ``2^bits`` is ever built: with 32 bits a softmax head would need 4 billion logits
  per token. The transformer's *input* needs no table either: VAR feeds the accumulated code latent through a
  linear layer (``word_embedding``), which for BSQ is the linear map of the bit vector (Infinity's input
  embedding), so any ``bits`` works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bits_to_indices",
    "bitwise_loss",
    "bitwise_predictions",
    "indices_to_bits",
    "mask_vocabulary",
    "token_vocabularies",
    "vocabulary_cross_entropy",
]


def indices_to_bits(indices: Tensor, bits: int) -> Tensor:
    """int64 ids ``(...)`` -> ``(..., bits)`` float 0/1 targets (bit ``i`` of the id; BSQ's sign ``i`` is +1)."""
    shifts = torch.arange(bits, device=indices.device, dtype=torch.int64)
    return ((indices.long().unsqueeze(-1) >> shifts) & 1).float()


def bits_to_indices(bits: Tensor) -> Tensor:
    """``(..., n)`` booleans -> int64 ids ``sum_i bits_i 2^i``."""
    weights = torch.pow(2, torch.arange(bits.shape[-1], device=bits.device, dtype=torch.int64))
    return (bits.long() * weights).sum(-1)


def bitwise_loss(bit_logits: Tensor, targets: Tensor) -> Tensor:
    """Per-token loss ``(b, L)``: the sum over bits of ``BCE(bit_logits[..., i], bit i of targets)``.

    ``bit_logits`` ``(b, L, bits)``; ``targets`` ``(b, L)`` int64 token ids.
    """
    bits = bit_logits.shape[-1]
    per_bit = F.binary_cross_entropy_with_logits(bit_logits.float(), indices_to_bits(targets, bits), reduction="none")
    return per_bit.sum(-1)


def bitwise_predictions(bit_logits: Tensor) -> Tensor:
    """The most likely token of each position: every bit on the side of its logit's sign."""
    return bits_to_indices(bit_logits > 0)


def token_vocabularies(vocabulary_sizes: Sequence[int], token_counts: Sequence[int]) -> Tensor:
    """``(L,)`` int64: the vocabulary size of every token position (scale ``k``'s size repeated ``h_k w_k`` times)."""
    return torch.repeat_interleave(
        torch.tensor([int(v) for v in vocabulary_sizes]), torch.tensor([int(c) for c in token_counts])
    )


def mask_vocabulary(logits: Tensor, vocabularies: Tensor) -> Tensor:
    """Set the logits of codes outside each position's vocabulary to ``-inf``.

    ``logits`` ``(b, l, V)``; ``vocabularies`` ``(l,)`` (the entries of :func:`token_vocabularies` for these
    positions).
    """
    codes = torch.arange(logits.shape[-1], device=logits.device)
    outside = codes[None, :] >= vocabularies.to(logits.device)[:, None]
    return logits.masked_fill(outside[None], float("-inf"))


def vocabulary_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Per-token cross-entropy ``(b, L)`` of logits ``(b, L, V)``; masked (``-inf``) codes are outside the vocabulary.

    Label smoothing spreads its mass over each position's *own* vocabulary (the finite logits), so masked codes
    never turn the loss infinite; without masking this equals ``F.cross_entropy(..., label_smoothing=eps)``.
    """
    if label_smoothing == 0.0:
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    log_probs = F.log_softmax(logits.float(), dim=-1)
    inside = torch.isfinite(logits)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    uniform = -log_probs.masked_fill(~inside, 0.0).sum(-1) / inside.sum(-1).clamp_min(1)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform
