"""Codebook health for multi-scale VQ training: usage/perplexity accounting and dead-code restarts.

VAR's tokenizer shares one codebook across all scales (VAR paper, Sec. 3.3). A VQ codebook trained by gradient
descent tends to collapse: codes that are never chosen get no gradient and stay dead. Two tools:

* :class:`CodeUsage` accumulates per-scale hit counts (already reduced across ranks by the caller) over a window
  and reports, per scale, the fraction of codes hit and the perplexity ``exp(H(p))`` of the code distribution.
* :func:`restart_dead_codes` re-initialises codes unused at every scale from *recent encoder outputs* (the
  residual vectors each scale actually quantizes; Dhariwal et al. 2020 / Zeghidour et al. 2021 "codebook
  restarts"), and :func:`reset_optimizer_rows` clears their Adam moments so stale momentum does not drag the
  fresh codes away.

Everything here is plain torch; cross-rank reductions happen in the LightningModule, never in ``forward``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from varkit.contracts import Scales
from varkit.quantizers.residual import MultiScaleResidualQuantizer

__all__ = [
    "CodeUsage",
    "codebook_health",
    "codebook_of",
    "reset_optimizer_rows",
    "restart_dead_codes",
    "scale_residuals",
    "vocabulary_sizes_of",
]

logger = logging.getLogger(__name__)


class CodeUsage:
    """Per-scale code hit counts accumulated since the last :meth:`reset`.

    >>> usage = CodeUsage(num_scales=2, codebook_size=4)
    >>> usage.update(torch.tensor([[3, 0, 0, 1], [1, 1, 1, 1]]))
    >>> usage.usage().tolist(), [round(p, 3) for p in usage.perplexity().tolist()]
    ([0.5, 1.0], [1.755, 4.0])
    """

    def __init__(self, num_scales: int, codebook_size: int) -> None:
        self.counts = torch.zeros(num_scales, codebook_size, dtype=torch.float64)
        self.steps = 0

    def update(self, counts: Tensor) -> None:
        """Add one step's ``(K, V)`` hit counts."""
        if counts.shape != self.counts.shape:
            raise ValueError(f"expected code counts of shape {tuple(self.counts.shape)}, got {tuple(counts.shape)}")
        self.counts += counts.detach().to("cpu", torch.float64)
        self.steps += 1

    def reset(self) -> None:
        self.counts.zero_()
        self.steps = 0

    def usage(self) -> Tensor:
        """``(K,)`` fraction of the codebook hit at least once, per scale."""
        return (self.counts > 0).double().mean(dim=1)

    def perplexity(self) -> Tensor:
        """``(K,)`` ``exp(entropy)`` of each scale's code distribution (V = uniform use of all codes)."""
        probs = self.counts / self.counts.sum(dim=1, keepdim=True).clamp_min(1.0)
        entropy = -(probs * probs.clamp_min(1e-30).log()).sum(dim=1)
        return entropy.exp()

    def dead_codes(self, threshold: float = 1.0) -> Tensor:
        """``(V,)`` boolean: codes hit fewer than ``threshold`` times over all scales."""
        return self.counts.sum(dim=0) < threshold

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"counts": self.counts.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        counts = state["counts"]
        if counts.shape == self.counts.shape:
            self.counts = counts.to(torch.float64).clone()
            self.steps = int(state["steps"])
        else:
            logger.warning("ignoring saved code counts of shape %s (expected %s)", counts.shape, self.counts.shape)


def vocabulary_sizes_of(quantizer: object, scales: Scales) -> list[int]:
    """Each scale's vocabulary size: the quantizer's ``vocabulary_sizes`` if it has one, else ``codebook_size``."""
    method = getattr(quantizer, "vocabulary_sizes", None)
    if method is not None:
        return [int(v) for v in method(len(scales))]
    return [int(quantizer.codebook_size)] * len(scales)  # type: ignore[attr-defined]


def codebook_health(
    counts: Tensor, vocabulary_sizes: Sequence[int] | None = None, images: int | None = None
) -> dict[str, list[float] | list[int] | float | int | None]:
    """Per-scale codebook health of ``(K, V)`` hit counts, as plain JSON-ready lists.

    * ``codes``: the vocabulary of each scale (``vocabulary_sizes``, default ``V`` everywhere);
    * ``used``: distinct codes hit; ``dead``: codes of the scale's vocabulary never hit;
    * ``usage``: ``used / codes``;
    * ``reachable``: the most codes the scale could have used, ``min(codes, positions)`` where ``positions`` is the
      number of tokens counted (the 1x1 map over N images can use at most N codes);
      ``usage_of_reachable``: ``used / reachable``;
    * ``perplexity``: ``exp(H)`` of the scale's code distribution (``codes`` for perfectly uniform use).

    >>> h = codebook_health(torch.tensor([[3, 0, 0, 0], [1, 1, 1, 0]]), images=3)
    >>> h["used"], h["usage"], h["usage_of_reachable"], h["dead"]
    ([1, 3], [0.25, 0.75], [0.3333333333333333, 1.0], [3, 1])
    """
    counts = counts.detach().to("cpu", torch.float64)
    num_scales, width = counts.shape
    sizes = [int(v) for v in vocabulary_sizes] if vocabulary_sizes is not None else [width] * num_scales
    used = [int((counts[k, : sizes[k]] > 0).sum()) for k in range(num_scales)]
    positions = [int(counts[k].sum()) for k in range(num_scales)]
    reachable = [max(1, min(sizes[k], positions[k])) for k in range(num_scales)]
    probs = counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)
    perplexity = (-(probs * probs.clamp_min(1e-30).log()).sum(dim=1)).exp()
    return {
        "codes": sizes,
        "positions": positions,
        "images": images,
        "used": used,
        "dead": [sizes[k] - used[k] for k in range(num_scales)],
        "usage": [used[k] / sizes[k] for k in range(num_scales)],
        "reachable": reachable,
        "usage_of_reachable": [used[k] / reachable[k] for k in range(num_scales)],
        "perplexity": [float(p) for p in perplexity],
        "usage_all": float((counts.sum(0) > 0).double().mean()),
    }


def codebook_of(quantizer: nn.Module) -> nn.Embedding | None:
    """The quantizer's learned codebook (``msvq``), or ``None`` for codebook-free quantizers (``msfsq``)."""
    codebook = getattr(quantizer, "codebook", None)
    return codebook if isinstance(codebook, nn.Embedding) else None


@torch.no_grad()
def scale_residuals(quantizer: MultiScaleResidualQuantizer, latents: Tensor, scales: Scales) -> list[Tensor]:
    """The vectors each scale quantizes: ``area_downsample(f - f̂_{k-1}, (h_k, w_k))`` as ``(n_k, d)`` rows.

    ``f̂_{k-1}`` is the latent accumulated over the previous scales (VAR Algorithm 1); the vectors are taken from
    the quantizer's own residual loop (:meth:`MultiScaleResidualQuantizer.residual_steps`), so they are exactly what
    its code choice saw. These are the "recent encoder outputs" that dead codes restart from.
    """
    return [
        step.inputs.permute(0, 2, 3, 1).reshape(-1, step.inputs.shape[1])
        for step in quantizer.residual_steps(latents, scales)
    ]


@torch.no_grad()
def restart_dead_codes(
    codebook: nn.Embedding,
    dead: Tensor,
    candidates: Sequence[Tensor],
    generator: torch.Generator,
    noise: float = 0.0,
) -> Tensor:
    """Overwrite the rows of ``codebook`` flagged in ``dead`` ``(V,)`` with vectors drawn from ``candidates``.

    ``candidates`` is one ``(n_k, d)`` pool per scale; each dead code first draws a scale uniformly (so the few
    coarse-scale vectors are as likely as the many fine-scale ones), then a vector of that scale, plus optional
    Gaussian noise scaled by the vector's norm. Returns the restarted indices (int64, on the codebook's device).
    """
    pools = [c for c in candidates if c.numel()]
    indices = torch.nonzero(dead.to(codebook.weight.device), as_tuple=False).flatten()
    if indices.numel() == 0 or not pools:
        return indices[:0]
    count = indices.numel()
    choice = torch.randint(len(pools), (count,), generator=generator)
    rows = []
    for i in range(count):
        pool = pools[int(choice[i])]
        rows.append(pool[int(torch.randint(pool.shape[0], (1,), generator=generator))])
    new = torch.stack(rows).to(codebook.weight.device, torch.float32)
    if noise > 0:
        jitter = torch.randn(new.shape, generator=generator).to(new.device)
        new = new + noise * new.norm(dim=1, keepdim=True) / new.shape[1] ** 0.5 * jitter
    codebook.weight.data[indices] = new.to(codebook.weight.dtype)
    return indices


@torch.no_grad()
def reset_optimizer_rows(optimizer: torch.optim.Optimizer, parameter: Tensor, rows: Tensor) -> None:
    """Zero the per-parameter optimizer state (Adam moments) of ``rows`` of ``parameter``."""
    state = optimizer.state.get(parameter)
    if not state or rows.numel() == 0:
        return
    for value in state.values():
        if isinstance(value, Tensor) and value.shape == parameter.shape:
            value[rows] = 0
