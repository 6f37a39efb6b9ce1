"""Optimisers and learning-rate schedules of both stages (VAR paper, Sec. 4 "Training"; reference recipe).

The tokenizer stage uses the same parameter groups and AdamW builder with its own schedule,
:class:`WarmupCosine` (linear warm-up, cosine decay; VQGAN recipe). The transformer stage:

* AdamW (betas 0.9/0.95) over two parameter groups: weights that get weight decay, and those that do not —
  norms, biases, embeddings, start tokens, position/level embeddings, adaLN gains, attention temperatures
  (every 1-D tensor, every ``*.bias``, and names containing one of :data:`NO_DECAY_KEYS`). Decaying these only
  shrinks them towards zero without regularising anything useful.
* Learning rate scaled by the global batch: ``lr = base_lr * global_batch / 256``, with
  ``global_batch = per-device batch * devices * gradient accumulation``.
* Warm-up (linear from ``warmup_start * lr``) then a decay to ``final_ratio * lr`` at ``total_steps``; weight decay
  annealed from ``weight_decay`` to ``weight_decay_end`` with a half cosine.

Both are pure functions of the optimiser step, computed from the configured ``total_steps`` (the trainer's
``max_steps``) — never from ``trainer.estimated_stepping_batches``, which silently disables mid-epoch data-position
restoring in Lightning (upstream issue #20550).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "LR_SCHEDULES",
    "NO_DECAY_KEYS",
    "ScheduleSpec",
    "WarmupCosine",
    "build_adamw",
    "lr_factor",
    "no_decay_names",
    "param_groups",
    "scaled_learning_rate",
    "weight_decay_at",
]

#: parameter-name fragments excluded from weight decay, besides 1-D tensors, biases and the parameters of
#: ``nn.Embedding`` / normalisation layers: start tokens, position and level embeddings, the shared adaLN table,
#: and the per-head attention temperature of cosine attention
NO_DECAY_KEYS: tuple[str, ...] = ("start_tokens", "position_embedding", "block_offset", "log_scale")

_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d, nn.BatchNorm2d)

LR_SCHEDULES: tuple[str, ...] = ("lin0", "lin", "linear", "cos", "exp", "constant")


def no_decay_names(model: nn.Module, no_decay_keys: Sequence[str] = NO_DECAY_KEYS) -> set[str]:
    """Names of the parameters of ``model`` that get no weight decay."""
    exempt: set[str] = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if (
                isinstance(module, _NO_DECAY_MODULES)
                or parameter.ndim <= 1
                or name == "bias"
                or any(key in full for key in no_decay_keys)
            ):
                exempt.add(full)
    return exempt


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay_keys: Sequence[str] = NO_DECAY_KEYS,
) -> list[dict]:
    """Split the trainable parameters of ``model`` into a decayed and a non-decayed AdamW group.

    Each group keeps a ``name`` and a ``weight_decay_scale`` (1 or 0) that the weight-decay schedule multiplies.
    Frozen parameters (``requires_grad=False``) are left out; empty groups are dropped.
    """
    exempt = no_decay_names(model, no_decay_keys)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if name in exempt else decay).append(parameter)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay, "weight_decay_scale": 1.0},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "weight_decay_scale": 0.0},
    ]
    return [group for group in groups if group["params"]]


def scaled_learning_rate(base_lr: float, global_batch: int, reference_batch: int = 256) -> float:
    """The linear scaling rule used by VAR: ``base_lr * global_batch / reference_batch``."""
    if global_batch < 1 or reference_batch < 1:
        raise ValueError(f"batch sizes must be positive, got {global_batch} and {reference_batch}")
    return base_lr * global_batch / reference_batch


@dataclass(frozen=True)
class ScheduleSpec:
    """Learning-rate schedule shape; all values are fractions of the peak learning rate.

    Args:
        total_steps: optimiser steps of the whole run (the decay ends here).
        warmup_steps: linear warm-up length in optimiser steps.
        kind: ``lin0`` (reference default: flat for 5 % of the post-warm-up steps, then linear to ``final_ratio``),
            ``lin`` (same with 15 %), ``linear`` (linear from the end of warm-up), ``cos`` (half cosine),
            ``exp`` (exponential after 15 %), ``constant``.
        warmup_start: factor at step 0.
        final_ratio: factor at the last step.
    """

    total_steps: int
    warmup_steps: int = 0
    kind: str = "lin0"
    warmup_start: float = 0.005
    final_ratio: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.kind!r}; known: {', '.join(LR_SCHEDULES)}")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be positive, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}], got {self.warmup_steps}")


def lr_factor(step: int, spec: ScheduleSpec) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    if step < spec.warmup_steps:
        return spec.warmup_start + (1.0 - spec.warmup_start) * step / spec.warmup_steps
    if spec.kind == "constant":
        return 1.0
    decay_steps = max(spec.total_steps - 1 - spec.warmup_steps, 1)
    passed = min(max((step - spec.warmup_steps) / decay_steps, 0.0), 1.0)
    end = spec.final_ratio
    if spec.kind == "cos":
        return end + (1.0 - end) * (0.5 + 0.5 * math.cos(math.pi * passed))
    if spec.kind == "linear":
        return end + (1.0 - end) * (1.0 - passed)
    flat = 0.05 if spec.kind == "lin0" else 0.15
    if passed < flat:
        return 1.0
    if spec.kind == "exp":
        return math.exp((passed - flat) / (1.0 - flat) * math.log(end))
    return end + (1.0 - end) * (1.0 - passed) / (1.0 - flat)


class WarmupCosine:
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine decay to ``min_ratio`` at ``total_steps``.

    The tokenizer (VQGAN) recipe; the transformer stage uses :func:`lr_factor`. A callable object (not a lambda)
    so that ``LambdaLR`` saves and restores it with the checkpoint.

    >>> schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.0)
    >>> [round(schedule(s), 3) for s in (0, 9, 10, 60, 110, 200)]
    [0.1, 1.0, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def weight_decay_at(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine annealing of weight decay from ``start`` (step 0) to ``end`` (last step)."""
    passed = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    return end + (start - end) * (0.5 + 0.5 * math.cos(math.pi * passed))


def build_adamw(
    groups: list[dict],
    lr: float,
    betas: Sequence[float] = (0.9, 0.95),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (group weight decay is set per step by the schedule)."""
    return torch.optim.AdamW(groups, lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps, fused=fused)
