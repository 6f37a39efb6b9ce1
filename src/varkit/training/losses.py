"""Tokenizer training losses (VAR paper, Sec. 4 "VQVAE tokenizer": the VQGAN recipe of Esser et al., 2021).

The VAR tokenizer is trained like VQGAN: ``L = l1 * |x - x̂|_1 + l2 * |x - x̂|^2 + L_quant + p * L_perceptual
+ λ * L_GAN``. This module holds the pieces as pure functions of tensors:

* :func:`reconstruction_loss` — weighted L1 and/or L2 pixel losses;
* :func:`hinge_discriminator_loss` / :func:`hinge_generator_loss` — the hinge GAN objective;
* :func:`adaptive_gan_weight` — VQGAN's λ = |∇_last L_rec| / (|∇_last L_GAN| + δ), which balances the two
  gradients at the decoder's last layer so that the GAN term neither vanishes nor dominates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "adaptive_gan_weight",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "reconstruction_loss",
]


def reconstruction_loss(
    reconstruction: Tensor, target: Tensor, l1_weight: float = 1.0, l2_weight: float = 0.0
) -> Tensor:
    """``l1_weight * mean|x̂ - x| + l2_weight * mean(x̂ - x)^2``, computed in float32.

    >>> reconstruction_loss(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), l1_weight=1.0, l2_weight=0.5).item()
    1.5
    """
    if l1_weight < 0 or l2_weight < 0 or l1_weight + l2_weight == 0:
        raise ValueError(f"reconstruction weights must be >= 0 and not both 0, got l1={l1_weight}, l2={l2_weight}")
    reconstruction, target = reconstruction.float(), target.float()
    loss = reconstruction.new_zeros(())
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(reconstruction, target)
    if l2_weight:
        loss = loss + l2_weight * F.mse_loss(reconstruction, target)
    return loss


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Hinge loss of the discriminator: ``(mean relu(1 - D(x)) + mean relu(1 + D(x̂))) / 2``.

    >>> hinge_discriminator_loss(torch.tensor([2.0]), torch.tensor([-2.0])).item()
    0.0
    """
    return 0.5 * (F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean())


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """The generator's side of the hinge GAN: ``-mean D(x̂)``."""
    return -fake_logits.float().mean()


def adaptive_gan_weight(
    reconstruction_term: Tensor,
    gan_term: Tensor,
    last_layer_weight: Tensor,
    *,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> Tensor:
    """VQGAN's adaptive weight λ (Esser et al., 2021, Eq. 7), detached.

    λ = ‖∇_w L_rec‖ / (‖∇_w L_GAN‖ + eps), clamped to ``[0, max_weight]``, where ``w`` is the weight of the
    decoder's last layer. Both losses must still have their graphs (``retain_graph`` is used so that the caller's
    backward pass works afterwards).
    """
    (rec_grad,) = torch.autograd.grad(reconstruction_term, last_layer_weight, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan_term, last_layer_weight, retain_graph=True)
    weight = rec_grad.float().norm() / (gan_grad.float().norm() + eps)
    return weight.clamp(0.0, max_weight).detach()
