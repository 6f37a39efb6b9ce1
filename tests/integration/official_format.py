"""Random weights in the *official* VAR/VQVAE checkpoint format (what ``varkit convert`` reads), at any shape.

Not a test module. The official VQVAE names are written here by reversing varkit's import rules (and checked
against them: :func:`official_key_to_varkit` must map every written name back); the VAR names come from
:func:`varkit.checkpoint.var.official_key_map`. The tensors are a freshly initialised varkit model's, so a
conversion must reproduce them exactly. Needs no file from outside the repository.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

# varkit name -> official name (the reverse of varkit.checkpoint.vqvae.OFFICIAL_VQVAE_KEY_RULES)
_REVERSE = (
    (r"(encoder|decoder)\.stem\.(.+)", r"\1.conv_in.\2"),
    (r"(encoder|decoder)\.stages\.(\d+)\.blocks\.(\d+)\.shortcut\.(.+)", r"\1.{side}.{level}.block.\3.nin_shortcut.\4"),
    (r"(encoder|decoder)\.stages\.(\d+)\.blocks\.(\d+)\.(.+)", r"\1.{side}.{level}.block.\3.\4"),
    (r"(encoder|decoder)\.stages\.(\d+)\.attentions\.(\d+)\.proj\.(.+)", r"\1.{side}.{level}.attn.\3.proj_out.\4"),
    (r"(encoder|decoder)\.stages\.(\d+)\.attentions\.(\d+)\.(.+)", r"\1.{side}.{level}.attn.\3.\4"),
    (r"(encoder|decoder)\.stages\.(\d+)\.resample\.conv\.(.+)", r"\1.{side}.{level}.{resample}.conv.\3"),
    (r"(encoder|decoder)\.middle\.block(\d)\.(.+)", r"\1.mid.block_\2.\3"),
    (r"(encoder|decoder)\.middle\.attention\.proj\.(.+)", r"\1.mid.attn_1.proj_out.\2"),
    (r"(encoder|decoder)\.middle\.attention\.(.+)", r"\1.mid.attn_1.\2"),
    (r"(encoder|decoder)\.head_norm\.(.+)", r"\1.norm_out.\2"),
    (r"(encoder|decoder)\.head_conv\.(.+)", r"\1.conv_out.\2"),
    (r"((?:post_)?quant_conv)\.(.+)", r"\1.\2"),
    (r"quantizer\.codebook\.weight", "quantize.embedding.weight"),
    (r"quantizer\.phi\.convs\.(\d+)\.(.+)", r"quantize.quant_resi.qresi_ls.\1.\2"),
)


def _official_name(name: str, levels: int) -> str:
    for pattern, template in _REVERSE:
        match = re.fullmatch(pattern, name)
        if match is None:
            continue
        decoder = match.group(1) == "decoder" if match.lastindex else False
        stage = int(match.group(2)) if "{level}" in template else 0
        filled = template.format(
            side="up" if decoder else "down",
            level=levels - 1 - stage if decoder else stage,
            resample="upsample" if decoder else "downsample",
        )
        return match.expand(filled)
    raise KeyError(f"no official name for {name}")


def official_vqvae_state(config: dict, seed: int = 0) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(official state dict, varkit state dict)`` of a random VQVAE with reference-named ``config``."""
    from varkit.checkpoint.vqvae import (
        official_key_to_varkit,
        official_vqvae_tokenizer_config,
        vqvae_from_official_with_config,
    )
    from varkit.models.vqvae import build_vqvae

    tokenizer, quantizer, scales = official_vqvae_tokenizer_config(config)
    levels = len(tokenizer["channel_multipliers"])
    torch.manual_seed(seed)
    varkit_state = build_vqvae(tokenizer, quantizer, scales).state_dict()
    official = {_official_name(name, levels): value.clone() for name, value in varkit_state.items()}
    for name in official:  # varkit's own import rules take every written name back
        assert varkit_state.get(official_key_to_varkit(name, levels)) is not None, name
    vae, _ = vqvae_from_official_with_config(official, config)  # strict: no key missing or unexpected
    for name, value in vae.state_dict().items():
        assert torch.equal(value, varkit_state[name]), name
    return official, varkit_state


def official_var_state(depth: int, width: int, num_heads: int, num_classes: int = 1000, seed: int = 0) -> dict:
    """An official-format VAR state dict (released layout: non-shared adaLN, cosine attention)."""
    from varkit.checkpoint.var import official_key_map
    from varkit.models.var import VAR

    torch.manual_seed(seed)
    model = VAR(num_classes=num_classes, depth=depth, width=width, num_heads=num_heads)
    state = model.state_dict()
    mapping = official_key_map(depth, shared_adaln=False, qk_l2_norm=True)
    return {official: state[ours].clone() for official, ours in mapping.items()}
