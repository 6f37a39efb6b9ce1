"""Typed contracts shared by every swappable component (VAR paper, Sec. 3: multi-scale token maps r_1..r_K).

* :class:`Scales` — the token-map sizes, coarse to fine: the single source of truth for the tokenizer, the
  transformer, the attention mask and the data pipeline.
* :class:`QuantizerOutput` / :class:`MultiScaleQuantizer` — what a multi-scale quantizer returns and offers.
* :class:`BlockCausalMask`, :class:`KernelCapabilities` / :class:`AttentionKernel` — the attention contract,
  canonical layout ``(batch, heads, length, head_dim)``.
* :class:`GuidanceSchedule` — classifier-free guidance weight per scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "AttentionKernel",
    "BlockCausalMask",
    "CapabilityError",
    "GuidanceSchedule",
    "InvalidScalesError",
    "KernelCapabilities",
    "MultiScaleQuantizer",
    "QuantizerOutput",
    "Scales",
]


class InvalidScalesError(ValueError):
    """A scale schedule that cannot work (empty, not increasing, not ending at the latent size, ...)."""


@dataclass(frozen=True)
class Scales:
    """Token-map sizes ``(h_k, w_k)`` for k = 1..K, coarse to fine.

    >>> s = Scales.of([1, 2, 3])
    >>> s.token_counts, s.total_tokens, s.slice(2)
    ((1, 4, 9), 14, slice(5, 14, None))
    """

    sizes: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        sizes = self.sizes
        if not sizes:
            raise InvalidScalesError("a scale schedule needs at least one scale, got an empty list")
        for hw in sizes:
            if len(hw) != 2 or any((not isinstance(v, int)) or isinstance(v, bool) or v < 1 for v in hw):
                raise InvalidScalesError(f"every scale must be a positive int or an (h, w) pair of them, got {hw!r}")
        for (h0, w0), (h1, w1) in itertools.pairwise(sizes):
            if h1 < h0 or w1 < w0 or (h1, w1) == (h0, w0):
                raise InvalidScalesError(
                    f"scales must grow strictly from coarse to fine; {h0}x{w0} is followed by {h1}x{w1} "
                    f"in {self.describe()}"
                )

    @classmethod
    def of(cls, sizes: Sequence[int | Sequence[int]] | Scales) -> Scales:
        """Build from ``[1, 2, 3]`` (square) or ``[(1, 2), (2, 4)]`` pairs (or return a ``Scales`` as is)."""
        if isinstance(sizes, Scales):
            return sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise InvalidScalesError(f"a scale schedule is a list of sizes, got {sizes!r}")
        pairs: list[tuple[int, int]] = []
        for s in sizes:
            if isinstance(s, int) and not isinstance(s, bool):
                pairs.append((s, s))
            elif isinstance(s, Sequence) and not isinstance(s, str) and len(s) == 2:
                pairs.append((s[0], s[1]))  # checked in __post_init__
            else:
                raise InvalidScalesError(f"every scale must be a positive int or an (h, w) pair, got {s!r}")
        return cls(tuple(pairs))

    # -- derived quantities ------------------------------------------------------------------------------------
    @property
    def num_scales(self) -> int:
        return len(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)

    @cached_property
    def token_counts(self) -> tuple[int, ...]:
        return tuple(h * w for h, w in self.sizes)

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)

    @property
    def first_tokens(self) -> int:
        """Tokens of the first (coarsest) map: they are the start tokens of the transformer."""
        return self.token_counts[0]

    @property
    def last(self) -> tuple[int, int]:
        """The finest map's size, which equals the tokenizer's latent size."""
        return self.sizes[-1]

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each scale in the flattened sequence, plus the total at the end (length K + 1)."""
        out = [0]
        for n in self.token_counts:
            out.append(out[-1] + n)
        return tuple(out)

    def slice(self, k: int) -> slice:
        """Positions of scale ``k`` (0-based) in the flattened token sequence."""
        return slice(self.offsets[k], self.offsets[k + 1])

    def level_ids(self, device: torch.device | str | None = None) -> Tensor:
        """``(L,)`` int64 tensor: the scale index of every position."""
        return torch.repeat_interleave(
            torch.arange(self.num_scales, device=device), torch.tensor(self.token_counts, device=device)
        )

    def is_square(self) -> bool:
        return all(h == w for h, w in self.sizes)

    def describe(self) -> str:
        return "(" + ", ".join(str(h) if h == w else f"{h}x{w}" for h, w in self.sizes) + ")"

    def validate_for_latent(self, latent_size: tuple[int, int] | int) -> Scales:
        """Refuse a schedule whose last scale is not the tokenizer's latent size; returns ``self``."""
        lat = (latent_size, latent_size) if isinstance(latent_size, int) else tuple(latent_size)
        if self.last != lat:
            raise InvalidScalesError(
                f"the last scale {self.last[0]}x{self.last[1]} of {self.describe()} must equal the tokenizer's "
                f"latent size {lat[0]}x{lat[1]} (image size / downsampling factor)"
            )
        return self

    def as_list(self) -> list[int] | list[list[int]]:
        """Plain-data form for configs and checkpoints: ints when square, ``[h, w]`` pairs otherwise."""
        if self.is_square():
            return [h for h, _ in self.sizes]
        return [[h, w] for h, w in self.sizes]


@dataclass
class QuantizerOutput:
    """What a multi-scale quantizer returns in training.

    ``quantized`` is the accumulated latent with a straight-through gradient to the encoder output;
    ``indices[k]`` is ``(batch, h_k*w_k)``; ``loss`` the (commitment + codebook) loss; ``code_counts`` the
    ``(K, codebook_size)`` code hit counts per scale of this batch (reductions across ranks happen outside).
    """

    quantized: Tensor
    indices: list[Tensor]
    loss: Tensor
    code_counts: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class MultiScaleQuantizer(Protocol):
    """A quantizer of latents ``(b, code_dim, H, W)`` into token maps following :class:`Scales`."""

    codebook_size: int
    code_dim: int

    def forward(self, latents: Tensor, scales: Scales) -> QuantizerOutput:
        """Training: the quantized latent (straight-through), indices, loss and code counts."""
        ...

    def encode(self, latents: Tensor, scales: Scales) -> list[Tensor]:
        """Per-scale token indices, K int64 tensors ``(b, h_k * w_k)``."""
        ...

    def encode_per_scale(self, latents: Tensor, scales: Scales) -> tuple[list[Tensor], list[Tensor]]:
        """The indices and the accumulated latent ``(b, d, H, W)`` after each scale (two lists of length K)."""
        ...

    def decode(self, indices: Sequence[Tensor], scales: Scales) -> Tensor:
        """The accumulated latent ``(b, d, H, W)`` of all K scales."""
        ...

    def decode_per_scale(self, indices: Sequence[Tensor], scales: Scales) -> list[Tensor]:
        """The accumulated latent after each scale (coarse-to-fine previews); the last equals :meth:`decode`."""
        ...

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors of ``indices`` ``(b, l)`` as ``(b, l, code_dim)`` float32."""
        ...

    def teacher_forcing_inputs(self, indices: Sequence[Tensor], scales: Scales) -> Tensor:
        """The transformer's inputs for scales 2..K, ``(b, L - h_1 * w_1, code_dim)``."""
        ...

    def next_scale_input(self, k: int, accumulated: Tensor, codes: Tensor, scales: Scales) -> tuple[Tensor, Tensor]:
        """One sampling step: the new accumulated latent and the next scale's input."""
        ...


class CapabilityError(RuntimeError):
    """An attention kernel was asked for something it declares it cannot do."""


@dataclass(frozen=True)
class KernelCapabilities:
    """What an attention kernel supports; callers check before calling, kernels never fall back silently."""

    mask: bool = True
    backward: bool = True
    dropout: bool = True
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
    devices: tuple[str, ...] = ("cpu", "cuda")


@dataclass(frozen=True)
class BlockCausalMask:
    """VAR's attention structure: a query of scale k sees every key of scales <= k (Sec. 3.2, Fig. 4).

    KV-cached sampling needs no mask: the queries of one scale see every cached key, all of coarser scales.
    """

    scales: Scales

    def dense(self, device: torch.device | str | None = None) -> Tensor:
        """``(L, L)`` boolean, True where attention is allowed."""
        levels = self.scales.level_ids(device)
        return levels[:, None] >= levels[None, :]

    def additive(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """``(1, 1, L, L)`` additive bias: 0 where allowed, -inf elsewhere (the reference's layout)."""
        allowed = self.dense(device)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
        return bias[None, None]


@runtime_checkable
class AttentionKernel(Protocol):
    """``(b, heads, len_q, head_dim) x (b, heads, len_k, head_dim)^2 -> (b, heads, len_q, head_dim)``."""

    name: str
    capabilities: KernelCapabilities

    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: BlockCausalMask | None = None,
        dropout_p: float = 0.0,
        scale: float | None = None,
    ) -> Tensor: ...


@runtime_checkable
class GuidanceSchedule(Protocol):
    """Classifier-free guidance weight ``t_k`` at scale ``k`` of ``num_scales`` for a nominal scale ``cfg``.

    Logits are mixed as ``(1 + t) * cond - t * uncond``.
    """

    def __call__(self, k: int, num_scales: int, cfg: float) -> float: ...
