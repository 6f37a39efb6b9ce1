"""The training-objective contract of the transformer stage: what a loss sees and what it returns.

A training objective turns one teacher-forced batch into a scalar loss. Objectives are registered components
(:data:`varkit.registry.OBJECTIVES`, config group ``objective/``), so a post-training recipe (CCA, Chen et al.,
ICLR 2025; DPO-style alignment; distillation) is a config choice, not a fork of the Lightning module.

Plain PyTorch: the Lightning module (:class:`varkit.lit.var_module.VARModule`) owns the model, the optimiser and
the logging, and hands an objective

* ``policy`` — the trained transformer's teacher-forced forward ``(labels, inputs) -> logits (b, l, V)``;
* ``reference`` — the frozen reference model's forward (same signature), when the objective declares
  :attr:`Objective.needs_reference`; the module builds that model, keeps it out of the optimiser, the EMA and the
  checkpoints, and runs it without gradients;
* an :class:`ObjectiveBatch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Forward", "Objective", "ObjectiveBatch", "ObjectiveOutput", "sequence_log_likelihood"]

#: a teacher-forced forward: ``(labels (b,), inputs (b, l - first, code_dim)) -> logits (b, l, V)`` float32
Forward = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ObjectiveBatch:
    """One training batch as the objective sees it.

    Attributes:
        labels: ``(b,)`` class indices.
        targets: ``(b, l)`` token indices of all scales trained at this step, coarse to fine.
        inputs: ``(b, l - first, code_dim)`` teacher-forcing inputs of the transformer.
        token_weights: ``(l,)`` per-token weights of the cross-entropy (``1 / total_tokens``; progressive training
            scales the newest scale during its warm-up).
        null_class: the label of the unconditional (null) class.
        label_smoothing: the configured ``loss.label_smoothing``.
        generator: the module's per-rank random stream (restored on resume) for the objective's own draws.
        token_loss: ``(logits, targets, label_smoothing) -> (b, l)`` per-token loss of the transformer's head (the
            cross-entropy over each scale's vocabulary, or the per-bit BCE sum of a bit-wise head); ``None``: plain
            cross-entropy.
    """

    labels: Tensor
    targets: Tensor
    inputs: Tensor
    token_weights: Tensor
    null_class: int
    label_smoothing: float = 0.0
    generator: torch.Generator | None = None
    token_loss: Callable[[Tensor, Tensor, float], Tensor] | None = None


@dataclass
class ObjectiveOutput:
    """The loss to minimise and what the module logs.

    Attributes:
        loss: the scalar to back-propagate.
        logits: ``(b, l, V)`` logits of the batch's own (positive) labels, for the per-scale accuracy metrics.
        per_token: ``(b, l)`` unsmoothed cross-entropy of ``logits`` (``None``: the module computes it).
        metrics: extra scalars, logged as ``train/<name>``.
    """

    loss: Tensor
    logits: Tensor
    per_token: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Objective:
    """Base class of training objectives (subclass and register in :data:`varkit.registry.OBJECTIVES`).

    Class attributes an objective may override:

    * ``needs_reference`` — the module must build a frozen reference model (``reference`` names its source: a
      generator directory, or ``None`` for a copy of the model's initial weights);
    * ``uses_class_dropout`` — whether the transformer's own class dropout applies during training (objectives
      that build their own conditional/unconditional pairs turn it off);
    * ``supports_bitwise`` — whether it works with a bit-wise head (no per-token softmax over the vocabulary).
    """

    needs_reference: bool = False
    uses_class_dropout: bool = True
    supports_bitwise: bool = True
    reference: str | None = None

    def __call__(self, policy: Forward, batch: ObjectiveBatch, reference: Forward | None = None) -> ObjectiveOutput:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


def sequence_log_likelihood(logits: Tensor, targets: Tensor) -> Tensor:
    """``log p(x | c)`` per sample: the log-probabilities of the target tokens summed over all tokens of all scales.

    Args:
        logits: ``(b, l, V)`` teacher-forced logits.
        targets: ``(b, l)`` token indices.

    Returns:
        ``(b,)`` float32.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(2, targets.unsqueeze(2)).squeeze(2).sum(dim=1)
