"""Classifier-free guidance schedules over scales (VAR reference: guidance ramps linearly with the scale index).

Each registered factory returns a :class:`~varkit.contracts.GuidanceSchedule`: a callable ``(k, num_scales, cfg)``
giving the weight ``t_k`` used as ``logits = (1 + t_k) * cond - t_k * uncond``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from varkit.registry import CFG_SCHEDULES

__all__ = ["ConstantGuidance", "CosineGuidance", "LinearGuidance", "NoGuidance", "PowerGuidance"]


def _progress(k: int, num_scales: int) -> float:
    if not 0 <= k < num_scales:
        raise ValueError(f"scale index {k} is outside 0..{num_scales - 1}")
    return k / (num_scales - 1) if num_scales > 1 else 1.0


@CFG_SCHEDULES.register("linear")
@dataclass(frozen=True)
class LinearGuidance:
    """The reference ramp: t_k = cfg * k / (K - 1), no guidance at the first scale, full at the last."""

    def __call__(self, k: int, num_scales: int, cfg: float) -> float:
        return cfg * _progress(k, num_scales)


@CFG_SCHEDULES.register("constant")
@dataclass(frozen=True)
class ConstantGuidance:
    """t_k = cfg at every scale."""

    def __call__(self, k: int, num_scales: int, cfg: float) -> float:
        _progress(k, num_scales)
        return float(cfg)


@CFG_SCHEDULES.register("none")
@dataclass(frozen=True)
class NoGuidance:
    """t_k = 0: purely conditional sampling (the unconditional branch is skipped)."""

    def __call__(self, k: int, num_scales: int, cfg: float) -> float:
        _progress(k, num_scales)
        return 0.0


@CFG_SCHEDULES.register("cosine")
@dataclass(frozen=True)
class CosineGuidance:
    """Smooth ramp t_k = cfg * (1 - cos(pi * k / (K - 1))) / 2: gentle at coarse scales, flat at the finest."""

    def __call__(self, k: int, num_scales: int, cfg: float) -> float:
        return cfg * 0.5 * (1.0 - math.cos(math.pi * _progress(k, num_scales)))


@CFG_SCHEDULES.register("power")
@dataclass(frozen=True)
class PowerGuidance:
    """t_k = cfg * (k / (K - 1)) ** exponent; exponent 1 is the linear ramp."""

    exponent: float = 2.0

    def __post_init__(self) -> None:
        if self.exponent <= 0:
            raise ValueError(f"power guidance needs exponent > 0, got {self.exponent}")

    def __call__(self, k: int, num_scales: int, cfg: float) -> float:
        return cfg * _progress(k, num_scales) ** self.exponent
