"""``next_scale_ce``: the pre-training objective of VAR (Tian et al., NeurIPS 2024, Sec. 3.2, Eq. 6).

Next-scale prediction maximises ``log p(r_1, ..., r_K | c) = sum_k log p(r_k | r_<k, c)``: the cross-entropy of every
token of every scale given the coarser scales and the class, averaged over the ``L = sum_k h_k w_k`` tokens (the
reference ``trainer.py`` weights each token by ``1 / L``) and over the batch. Class dropout (the transformer's
``class_dropout``) trains the unconditional branch that classifier-free guidance needs.
"""

from __future__ import annotations

import torch.nn.functional as F

from varkit.objectives.base import Forward, Objective, ObjectiveBatch, ObjectiveOutput
from varkit.registry import OBJECTIVES

__all__ = ["NextScaleCrossEntropy"]


@OBJECTIVES.register("next_scale_ce")
class NextScaleCrossEntropy(Objective):
    """Cross-entropy over all scales (VAR pre-training; optional label smoothing from ``loss.label_smoothing``)."""

    def __call__(self, policy: Forward, batch: ObjectiveBatch, reference: Forward | None = None) -> ObjectiveOutput:
        logits = policy(batch.labels, batch.inputs)
        smoothing = float(batch.label_smoothing)
        if batch.token_loss is not None:  # the head's own loss: per-scale vocabularies, bit-wise heads
            per_token = batch.token_loss(logits, batch.targets, smoothing)
        else:
            per_token = F.cross_entropy(
                logits.transpose(1, 2), batch.targets, label_smoothing=smoothing, reduction="none"
            )
        loss = (per_token * batch.token_weights).sum(dim=1).mean()
        return ObjectiveOutput(loss=loss, logits=logits, per_token=per_token.detach() if smoothing == 0 else None)
