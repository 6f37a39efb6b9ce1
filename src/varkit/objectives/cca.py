"""``cca``: Condition Contrastive Alignment (Chen et al., "Toward Guidance-Free AR Visual Generation via Condition
Contrastive Alignment", ICLR 2025, Sec. 3 "Condition Contrastive Alignment"; reference code ``thu-ml/CCA``,
``VAR_CCA_trainer.py``).

Classifier-free guidance samples from ``p(x|c) * (p(x|c) / p(x))^s``; CCA instead fine-tunes the model itself so
that sampling *without* guidance reaches that distribution. With the frozen pre-trained model ``p_ref`` as reference
and the log-likelihood ratio ``r_θ(x, c) = log p_θ(x|c) - log p_ref(x|c)``, the loss is

    L_CCA(θ) = - E_{p(x, c)} [ log σ( β r_θ(x, c) ) ]  -  λ E_{p(x) p(c)} [ log σ( -β r_θ(x, c⁻) ) ]

a noise-contrastive estimate: matched pairs (image tokens ``x``, their class ``c``) are pushed up relative to the
reference, mismatched pairs (the same ``x``, a class ``c⁻`` drawn from the marginal) are pushed down. Its optimum
is ``r_θ(x, c) = (1/β) log[ p(c|x) / (λ p(c)) ]``, so ``β`` and ``λ`` play the role of the guidance scale, and
``λ`` acts through ``λ p(c)``: the reference's ``λ = 50`` on ImageNet's 1000 classes is ``λ p(c) = 0.05``, which on
a 10-class data set is ``λ = 0.5`` (a ``λ p(c)`` above 1 lowers the likelihood of the matched pairs too).

As in the reference implementation:

* ``log p(x|c)`` is the sum of the token log-probabilities over **all tokens of all scales** (VAR's factorisation
  ``log p(x|c) = Σ_k log p(r_k | r_<k, c)``), and each term is averaged over the batch;
* the negative class of sample ``i`` is the class of sample ``i + 1`` of the same batch (``labels.roll(-1)``): the
  reference code prefers this to a random permutation, which biases small batches; positives and negatives go
  through the transformer as one batch of ``2b`` rows;
* the transformer's own class dropout is off. With ``uncond_ratio > 0`` (the reference VAR recipe uses 0.1) a
  fraction of the pairs gets the null class for both the positive and the negative: those, and negatives that
  happen to carry the positive's class, count as *positive* pairs in the second term with weight 1 instead of
  ``λ``, which keeps the unconditional model (so guidance still works after CCA), and the loss is divided by
  ``max(λ, 1)``. With ``uncond_ratio = 0`` the loss is exactly the formula above;
* the reference model runs in the same train/eval mode as the trained model (the reference enables dropout in it).

The reference recipe for VAR on ImageNet (``--beta=0.02 --lambda_=50 --uncond_ratio=0.1 --tblr=2e-5 --ep=1``,
d16 with drop path 0) sums over 680 tokens; shorter sequences give proportionally smaller log-likelihood ratios,
so the demo preset (130 tokens) scales ``β`` up (see ``conf/experiment/cca_var.yaml``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from varkit.objectives.base import Forward, Objective, ObjectiveBatch, ObjectiveOutput, sequence_log_likelihood
from varkit.registry import OBJECTIVES

__all__ = ["ConditionContrastiveAlignment"]


@OBJECTIVES.register("cca")
class ConditionContrastiveAlignment(Objective):
    """Condition contrastive alignment against a frozen reference (guidance-free sampling; Chen et al., 2025).

    Args:
        beta: scale of the log-likelihood ratio inside the sigmoids.
        lambda_: weight of the negative (mismatched-class) term.
        uncond_ratio: fraction of pairs trained as unconditional positives (keeps guidance usable); 0: off.
        reference: the frozen reference model: a generator directory, or ``None`` for the model's starting weights
            (``init_from`` when set).
    """

    needs_reference = True
    uses_class_dropout = False
    supports_bitwise = False  # log-likelihoods from a softmax over the vocabulary

    def __init__(
        self, beta: float = 0.02, lambda_: float = 50.0, uncond_ratio: float = 0.0, reference: str | None = None
    ) -> None:
        if beta <= 0:
            raise ValueError(f"cca: beta must be > 0, got {beta}")
        if lambda_ < 0:
            raise ValueError(f"cca: lambda_ must be >= 0, got {lambda_}")
        if not 0.0 <= uncond_ratio < 1.0:
            raise ValueError(f"cca: uncond_ratio must be in [0, 1), got {uncond_ratio}")
        self.beta = float(beta)
        self.lambda_ = float(lambda_)
        self.uncond_ratio = float(uncond_ratio)
        self.reference = None if reference is None else str(reference)

    def describe(self) -> str:
        return f"cca(beta={self.beta:g}, lambda_={self.lambda_:g}, uncond_ratio={self.uncond_ratio:g})"

    def pairs(self, batch: ObjectiveBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(positive labels, negative labels, unconditional mask or None)`` for a batch."""
        labels = batch.labels
        negatives = labels.roll(-1, dims=0)
        if self.uncond_ratio <= 0:
            return labels, negatives, None
        draws = torch.rand(labels.shape, device=labels.device, generator=batch.generator)
        masked = draws < self.uncond_ratio
        null = torch.full_like(labels, batch.null_class)
        return torch.where(masked, null, labels), torch.where(masked, null, negatives), masked

    def loss_from_ratios(
        self,
        positive: torch.Tensor,
        negative: torch.Tensor,
        labels: torch.Tensor,
        negatives: torch.Tensor,
        masked: torch.Tensor | None,
    ) -> torch.Tensor:
        """The CCA loss from the per-sample log-likelihood ratios ``r(x, c)`` and ``r(x, c⁻)`` (``(b,)`` each)."""
        if masked is None:
            return (
                -F.logsigmoid(self.beta * positive).mean() - self.lambda_ * F.logsigmoid(-self.beta * negative).mean()
            )
        as_positive = masked | (negatives == labels)
        sign = as_positive.float() * 2 - 1
        weight = torch.where(as_positive, torch.ones_like(positive), torch.full_like(positive, self.lambda_))
        loss = -F.logsigmoid(self.beta * positive).mean() - (weight * F.logsigmoid(sign * self.beta * negative)).mean()
        return loss / max(self.lambda_, 1.0)

    def __call__(self, policy: Forward, batch: ObjectiveBatch, reference: Forward | None = None) -> ObjectiveOutput:
        if reference is None:
            raise ValueError("the cca objective needs the frozen reference model")
        labels, negatives, masked = self.pairs(batch)
        size = labels.shape[0]
        both_labels = torch.cat((labels, negatives))
        both_inputs = torch.cat((batch.inputs, batch.inputs))
        both_targets = torch.cat((batch.targets, batch.targets))
        logits = policy(both_labels, both_inputs)
        with torch.no_grad():
            reference_logits = reference(both_labels, both_inputs)
        ratios = (
            sequence_log_likelihood(logits, both_targets)
            - sequence_log_likelihood(reference_logits, both_targets).detach()
        )
        positive, negative = ratios[:size], ratios[size:]
        loss = self.loss_from_ratios(positive, negative, labels, negatives, masked)
        own = logits[:size]
        with torch.no_grad():
            per_token = F.cross_entropy(own.detach().transpose(1, 2), batch.targets, reduction="none")
            metrics = {
                "cca/ratio_positive": positive.detach().mean(),
                "cca/ratio_negative": negative.detach().mean(),
                "cca/margin": (positive - negative).detach().mean(),
                "cca/pair_accuracy": (positive > negative).float().mean(),
            }
        return ObjectiveOutput(loss=loss, logits=own, per_token=per_token, metrics=metrics)
