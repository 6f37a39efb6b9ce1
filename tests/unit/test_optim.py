"""One optimiser module for both stages: the tokenizer's AdamW groups come from ``varkit.training.optim``."""

from __future__ import annotations

import varkit
from varkit.nn.discriminator import PatchDiscriminator
from varkit.quantizers.codebook import codebook_of
from varkit.training.optim import build_adamw, param_groups


def test_tokenizer_groups_keep_the_codebook_biases_and_norms_undecayed() -> None:
    vae = varkit.create_tokenizer("vqvae_tiny")
    codebook = codebook_of(vae.quantizer)
    assert codebook is not None
    groups = {g["name"]: g for g in param_groups(vae, 0.01)}
    decayed = {id(p) for p in groups["decay"]["params"]}
    # the tokenizer's rule: decay exactly the >= 2-D weights other than the codebook
    expected = {id(p) for p in vae.parameters() if p.ndim >= 2 and p is not codebook.weight}
    assert decayed == expected
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 0.01
    assert len(decayed) + len(groups["no_decay"]["params"]) == len(list(vae.parameters()))


def test_discriminator_groups_and_adamw() -> None:
    disc = PatchDiscriminator()
    optimizer = build_adamw(param_groups(disc, 0.0), lr=1e-4, betas=(0.5, 0.9))
    assert optimizer.defaults["betas"] == (0.5, 0.9)
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert decayed == {id(p) for p in disc.parameters() if p.ndim >= 2}
