"""Token sampling from VAR's per-scale logits (VAR paper, Sec. 4 and App.: top-k / top-p sampling, CFG).

Pure functions over ``(..., vocab)`` logits; every random draw takes an explicit ``generator``. None of them
mutates its input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from varkit.nn.heads import bits_to_indices

__all__ = [
    "apply_temperature",
    "filter_logits",
    "filter_top_k",
    "filter_top_p",
    "guided_logits",
    "gumbel_softmax",
    "sample_tokens",
    "smooth_temperature",
]


def guided_logits(cond: Tensor, uncond: Tensor, weight: float) -> Tensor:
    """Classifier-free guidance: ``(1 + t) * cond - t * uncond`` (Ho & Salimans, 2022)."""
    if weight == 0.0:
        return cond
    return cond * (1.0 + weight) - uncond * weight


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature``; temperature 1 returns the input unchanged."""
    if temperature <= 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use top_k=1 for greedy decoding)")
    return logits if temperature == 1.0 else logits / temperature


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits (and ties with the k-th) per row; the rest become ``-inf``. ``k <= 0``: all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of tokens whose probability reaches ``p``.

    As in the reference, a token is dropped when the cumulative probability of it and every less likely token is
    at most ``1 - p``; the most likely token always survives. ``p <= 0``: no filtering.
    """
    if p <= 0.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    drop_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1.0 - p)
    drop_sorted[..., -1] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: Tensor, *, top_k: int = 0, top_p: float = 0.0, temperature: float = 1.0) -> Tensor:
    """Temperature, then top-k, then top-p filtering of float32 logits (filtered entries are ``-inf``)."""
    return filter_top_p(filter_top_k(apply_temperature(logits.float(), temperature), top_k), top_p)


def sample_tokens(
    logits: Tensor,
    *,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row of ``(..., vocab)`` logits; returns ``(...)`` int64.

    ``top_k=1`` is greedy decoding (arg-max, no random draw).
    """
    if top_k == 1:
        return logits.argmax(dim=-1)
    if 0 < top_k < logits.shape[-1]:
        return _sample_among_top_k(logits, top_k, top_p, temperature, generator)
    filtered = filter_logits(logits, top_k=top_k, top_p=top_p, temperature=temperature)
    probs = filtered.softmax(dim=-1).reshape(-1, logits.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])


def _sample_among_top_k(
    logits: Tensor, top_k: int, top_p: float, temperature: float, generator: torch.Generator | None
) -> Tensor:
    """:func:`sample_tokens` restricted to the ``top_k`` candidates: the same filters, without sorting the vocab.

    Tokens outside the top k have probability 0 after :func:`filter_top_k`, so nucleus filtering and the draw only
    need the k survivors (ties with the k-th logit, a measure-zero event for float logits, keep exactly k).
    """
    values, candidates = apply_temperature(logits.float(), temperature).topk(top_k, dim=-1)  # descending
    if top_p > 0.0:
        # reference rule on the ascending order: drop a token when it and all less likely ones hold <= 1 - p
        ascending = values.flip(-1)
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= (1.0 - top_p)
        drop[..., -1] = False
        values = values.masked_fill(drop.flip(-1), float("-inf"))
    probs = values.softmax(dim=-1).reshape(-1, top_k)
    choice = torch.multinomial(probs, 1, generator=generator).view(*logits.shape[:-1], 1)
    return candidates.gather(-1, choice).squeeze(-1)


def gumbel_softmax(logits: Tensor, tau: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Soft Gumbel-softmax sample ``softmax((logits + g) / tau)`` with ``g ~ Gumbel(0, 1)`` (Jang et al., 2017)."""
    gumbels = -torch.empty_like(logits, dtype=torch.float32).exponential_(generator=generator).log()
    return ((logits.float() + gumbels) / tau).softmax(dim=-1)


def smooth_temperature(progress: float) -> float:
    """The reference's Gumbel temperature for "more smooth" sampling at scale progress ``k / (K - 1)``.

    Starts at 0.27 and anneals towards 0.0135 at the finest scale (following MaskGIT), never below 0.005.
    """
    return max(0.27 * (1.0 - progress * 0.95), 0.005)


def sample_bits(
    bit_logits: Tensor,
    *,
    top_k: int = 0,
    top_p: float = 0.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample token ids ``(b, l)`` from a bit-wise head's logits ``(b, l, bits)``, each bit independently.

    Bit ``i`` is 1 with probability ``sigmoid(logit_i / temperature)``. The filters, defined for a choice between
    two values (the per-bit analogue of the usual definitions):

    * ``top_k``: ``1`` keeps only the more likely value of every bit (greedy); ``0`` or ``>= 2`` keeps both.
    * ``top_p``: the nucleus of a two-value distribution is the more likely value alone when its probability
      reaches ``top_p``, else both values; so a bit whose more likely value has probability ``>= top_p`` is set
      greedily and the others are sampled. ``0`` (or ``>= 1``) disables it.

    Guidance is applied before this, per bit, on the logits (:func:`guided_logits` is elementwise).
    """
    logits = bit_logits.float()
    greedy = logits > 0
    if top_k == 1 or temperature <= 0:
        return bits_to_indices(greedy)
    probs = torch.sigmoid(logits / temperature)
    draws = torch.rand(probs.shape, device=probs.device, generator=generator) < probs
    if 0.0 < top_p < 1.0:
        confident = torch.maximum(probs, 1 - probs) >= top_p
        draws = torch.where(confident, greedy, draws)
    return bits_to_indices(draws)
