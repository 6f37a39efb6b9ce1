"""``auto``: pick, per call, the first capable kernel from a preference list (VAR Sec. 3.2 attention).

A training step (block-causal mask, gradients, maybe dropout) and a KV-cached sampling step (no mask, no grad)
want different kernels: on a GPU with flash-attn, FlashAttention serves both (per-scale prefix calls for the
mask), elsewhere SDPA does. ``auto`` looks at what the call needs — mask, backward, dropout, device, dtype —
and at what is installed, takes the first candidate that can do all of it, and logs the choice once per distinct
situation. It never drops a requested capability: when no candidate can serve a call, it raises a
:class:`CapabilityError` listing why each one refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from varkit.attention.base import KernelBase, needs_backward
from varkit.contracts import BlockCausalMask, CapabilityError, KernelCapabilities
from varkit.registry import ATTENTION_KERNELS

__all__ = ["AutoAttention", "Situation"]

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES: tuple[str, ...] = ("flash", "sdpa", "eager")


class Situation(NamedTuple):
    """What a call needs; ``auto`` caches its choice per distinct situation."""

    device: str
    dtype: torch.dtype
    mask: bool
    backward: bool
    dropout: bool

    def describe(self) -> str:
        needs = [n for n, on in (("mask", self.mask), ("backward", self.backward), ("dropout", self.dropout)) if on]
        return f"{self.device}/{str(self.dtype).removeprefix('torch.')} needing {', '.join(needs) or 'nothing'}"


def _refusal(kernel: Any, situation: Situation) -> str | None:
    """Why ``kernel`` cannot serve ``situation`` (``None`` when it can)."""
    available = getattr(kernel, "available", None)
    if callable(available) and not available():
        return "not installed"
    caps: KernelCapabilities = kernel.capabilities
    if situation.device not in caps.devices:
        return f"no {situation.device} support"
    on = getattr(kernel, "capabilities_on", None)
    if callable(on):
        caps = on(situation.device)
    if situation.dtype not in caps.dtypes:
        return f"no {str(situation.dtype).removeprefix('torch.')}"
    for field in ("mask", "backward", "dropout"):
        if getattr(situation, field) and not getattr(caps, field):
            return f"no {field} on {situation.device}"
    return None


@ATTENTION_KERNELS.register("auto")
class AutoAttention(KernelBase):
    """First capable kernel of ``candidates`` (names or ``{"name": ..., **kwargs}`` specs), chosen per situation."""

    name = "auto"

    def __init__(self, candidates: Sequence[str | Mapping[str, Any]] = DEFAULT_CANDIDATES) -> None:
        if not candidates:
            raise ValueError("auto attention needs at least one candidate kernel")
        self.kernels = [ATTENTION_KERNELS.build(spec) for spec in candidates]
        if any(isinstance(kernel, AutoAttention) for kernel in self.kernels):
            raise ValueError("auto attention cannot have 'auto' among its candidates")
        caps = [kernel.capabilities for kernel in self.kernels]
        self.capabilities = KernelCapabilities(
            mask=any(c.mask for c in caps),
            backward=any(c.backward for c in caps),
            dropout=any(c.dropout for c in caps),
            dtypes=tuple(dict.fromkeys(d for c in caps for d in c.dtypes)),
            devices=tuple(dict.fromkeys(d for c in caps for d in c.devices)),
        )
        self._choices: dict[Situation, Any] = {}

    def capabilities_on(self, device: torch.device | str) -> KernelCapabilities:
        kind = torch.device(device).type
        caps = [
            getattr(k, "capabilities_on", lambda _d, k=k: k.capabilities)(kind)
            for k in self.kernels
            if kind in k.capabilities.devices and getattr(k, "available", lambda: True)()
        ]
        return KernelCapabilities(
            mask=any(c.mask for c in caps),
            backward=any(c.backward for c in caps),
            dropout=any(c.dropout for c in caps),
            dtypes=tuple(dict.fromkeys(d for c in caps for d in c.dtypes)),
            devices=(kind,) if caps else (),
        )

    def choose(self, situation: Situation) -> Any:
        """The kernel serving ``situation`` (cached); raises :class:`CapabilityError` when none can."""
        chosen = self._choices.get(situation)
        if chosen is not None:
            return chosen
        refusals = []
        for kernel in self.kernels:
            why = _refusal(kernel, situation)
            if why is None:
                log.info("attention 'auto' uses %r for %s", kernel, situation.describe())
                self._choices[situation] = kernel
                return kernel
            refusals.append(f"{kernel.name}: {why}")
        raise CapabilityError(
            f"attention kernel 'auto' has no candidate for {situation.describe()} ({'; '.join(refusals)}); "
            "add a capable kernel (e.g. 'eager') to its candidates"
        )

    def check(
        self, q: Tensor, k: Tensor, v: Tensor, *, mask: BlockCausalMask | None = None, dropout_p: float = 0.0
    ) -> None:
        # nothing to check against the union of the candidates' capabilities: compute() picks a candidate that can
        # serve this exact call (or raises naming why each one cannot), and that candidate checks the call itself
        return None

    def compute(
        self, q: Tensor, k: Tensor, v: Tensor, mask: BlockCausalMask | None, dropout_p: float, scale: float | None
    ) -> Tensor:
        situation = Situation(q.device.type, q.dtype, mask is not None, needs_backward(q, k, v), dropout_p > 0.0)
        return self.choose(situation)(q, k, v, mask=mask, dropout_p=dropout_p, scale=scale)

    def __repr__(self) -> str:
        return f"AutoAttention(candidates={[k.name for k in self.kernels]})"
