"""Import of the official VAR VQVAE weights (``vae_ch160v4096z32.pth``; VAR paper, Sec. 4) into :class:`VQVAE`.

The official state dict is renamed through :data:`OFFICIAL_VQVAE_KEY_RULES`, an explicit table of patterns; every
official key must match exactly one rule (or be listed in :data:`OFFICIAL_VQVAE_IGNORED_KEYS`) and every varkit
parameter must be produced, otherwise :class:`CheckpointKeyError` lists what is wrong.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from varkit.contracts import Scales
from varkit.models.vqvae import VQVAE, build_vqvae

__all__ = [
    "OFFICIAL_VQVAE_IGNORED_KEYS",
    "OFFICIAL_VQVAE_KEY_RULES",
    "CheckpointKeyError",
    "convert_official_vqvae_state_dict",
    "load_official_vqvae",
    "official_vqvae_tokenizer_config",
    "vqvae_from_official",
    "vqvae_from_official_with_config",
]

logger = logging.getLogger(__name__)

#: the released tokenizer's fixed layout (latent-diffusion "vq-f16")
OFFICIAL_CHANNEL_MULTIPLIERS = (1, 1, 2, 2, 4)
OFFICIAL_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

#: training statistics of the official quantizer, not model state
OFFICIAL_VQVAE_IGNORED_KEYS = frozenset({"quantize.ema_vocab_hit_SV"})


class CheckpointKeyError(KeyError):
    """A state dict does not match the expected key set (lists unmatched, missing and unexpected keys)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


_RESIDUAL_PARTS = "norm1|conv1|norm2|conv2"
_PARAM = r"(weight|bias)"

Renamer = Callable[[re.Match[str], int], str]


def _decoder_stage(match: re.Match[str], levels: int) -> int:
    # official `up[i]` is level i (0 = full resolution); varkit keeps decoder stages in execution order
    return levels - 1 - int(match["level"])


#: (official key pattern, varkit name builder(match, number_of_levels)); each pattern is matched in full
OFFICIAL_VQVAE_KEY_RULES: tuple[tuple[str, Renamer], ...] = (
    # encoder
    (rf"encoder\.conv_in\.{_PARAM}", lambda m, n: f"encoder.stem.{m[1]}"),
    (
        rf"encoder\.down\.(?P<level>\d+)\.block\.(?P<block>\d+)\.(?P<part>{_RESIDUAL_PARTS})\.{_PARAM}",
        lambda m, n: f"encoder.stages.{m['level']}.blocks.{m['block']}.{m['part']}.{m[4]}",
    ),
    (
        rf"encoder\.down\.(?P<level>\d+)\.block\.(?P<block>\d+)\.nin_shortcut\.{_PARAM}",
        lambda m, n: f"encoder.stages.{m['level']}.blocks.{m['block']}.shortcut.{m[3]}",
    ),
    (
        rf"encoder\.down\.(?P<level>\d+)\.attn\.(?P<block>\d+)\.(?P<part>norm|qkv)\.{_PARAM}",
        lambda m, n: f"encoder.stages.{m['level']}.attentions.{m['block']}.{m['part']}.{m[4]}",
    ),
    (
        rf"encoder\.down\.(?P<level>\d+)\.attn\.(?P<block>\d+)\.proj_out\.{_PARAM}",
        lambda m, n: f"encoder.stages.{m['level']}.attentions.{m['block']}.proj.{m[3]}",
    ),
    (
        rf"encoder\.down\.(?P<level>\d+)\.downsample\.conv\.{_PARAM}",
        lambda m, n: f"encoder.stages.{m['level']}.resample.conv.{m[2]}",
    ),
    # decoder
    (rf"decoder\.conv_in\.{_PARAM}", lambda m, n: f"decoder.stem.{m[1]}"),
    (
        rf"decoder\.up\.(?P<level>\d+)\.block\.(?P<block>\d+)\.(?P<part>{_RESIDUAL_PARTS})\.{_PARAM}",
        lambda m, n: f"decoder.stages.{_decoder_stage(m, n)}.blocks.{m['block']}.{m['part']}.{m[4]}",
    ),
    (
        rf"decoder\.up\.(?P<level>\d+)\.block\.(?P<block>\d+)\.nin_shortcut\.{_PARAM}",
        lambda m, n: f"decoder.stages.{_decoder_stage(m, n)}.blocks.{m['block']}.shortcut.{m[3]}",
    ),
    (
        rf"decoder\.up\.(?P<level>\d+)\.attn\.(?P<block>\d+)\.(?P<part>norm|qkv)\.{_PARAM}",
        lambda m, n: f"decoder.stages.{_decoder_stage(m, n)}.attentions.{m['block']}.{m['part']}.{m[4]}",
    ),
    (
        rf"decoder\.up\.(?P<level>\d+)\.attn\.(?P<block>\d+)\.proj_out\.{_PARAM}",
        lambda m, n: f"decoder.stages.{_decoder_stage(m, n)}.attentions.{m['block']}.proj.{m[3]}",
    ),
    (
        rf"decoder\.up\.(?P<level>\d+)\.upsample\.conv\.{_PARAM}",
        lambda m, n: f"decoder.stages.{_decoder_stage(m, n)}.resample.conv.{m[2]}",
    ),
    # middle sections and output heads of both
    (
        rf"(?P<side>encoder|decoder)\.mid\.block_(?P<which>[12])\.(?P<part>{_RESIDUAL_PARTS})\.{_PARAM}",
        lambda m, n: f"{m['side']}.middle.block{m['which']}.{m['part']}.{m[4]}",
    ),
    (
        rf"(?P<side>encoder|decoder)\.mid\.attn_1\.(?P<part>norm|qkv)\.{_PARAM}",
        lambda m, n: f"{m['side']}.middle.attention.{m['part']}.{m[3]}",
    ),
    (
        rf"(?P<side>encoder|decoder)\.mid\.attn_1\.proj_out\.{_PARAM}",
        lambda m, n: f"{m['side']}.middle.attention.proj.{m[2]}",
    ),
    (rf"(?P<side>encoder|decoder)\.norm_out\.{_PARAM}", lambda m, n: f"{m['side']}.head_norm.{m[2]}"),
    (rf"(?P<side>encoder|decoder)\.conv_out\.{_PARAM}", lambda m, n: f"{m['side']}.head_conv.{m[2]}"),
    # quantizer and the 3x3 convs around it
    (rf"(?P<which>quant_conv|post_quant_conv)\.{_PARAM}", lambda m, n: f"{m['which']}.{m[2]}"),
    (r"quantize\.embedding\.weight", lambda m, n: "quantizer.codebook.weight"),
    # φ: shared (`qresi`), partially shared (`qresi_ls.i`), one per scale (`i`)
    (rf"quantize\.quant_resi\.qresi\.{_PARAM}", lambda m, n: f"quantizer.phi.convs.0.{m[1]}"),
    (rf"quantize\.quant_resi\.qresi_ls\.(\d+)\.{_PARAM}", lambda m, n: f"quantizer.phi.convs.{m[1]}.{m[2]}"),
    (rf"quantize\.quant_resi\.(\d+)\.{_PARAM}", lambda m, n: f"quantizer.phi.convs.{m[1]}.{m[2]}"),
)

_COMPILED_RULES = tuple((re.compile(pattern), rename) for pattern, rename in OFFICIAL_VQVAE_KEY_RULES)


def official_key_to_varkit(key: str, levels: int = len(OFFICIAL_CHANNEL_MULTIPLIERS)) -> str:
    """The varkit name of one official key; raises :class:`CheckpointKeyError` if no rule or several match."""
    names = [rename(m, levels) for pattern, rename in _COMPILED_RULES if (m := pattern.fullmatch(key))]
    if len(names) != 1:
        problem = "no rule matches" if not names else f"{len(names)} rules match ({names})"
        raise CheckpointKeyError(f"official VQVAE key {key!r}: {problem}")
    return names[0]


def convert_official_vqvae_state_dict(
    state_dict: Mapping[str, Tensor],
    levels: int = len(OFFICIAL_CHANNEL_MULTIPLIERS),
    dtype: torch.dtype | None = torch.float32,
) -> dict[str, Tensor]:
    """Rename an official VQVAE state dict to varkit names (floating tensors cast to ``dtype``)."""
    converted: dict[str, Tensor] = {}
    unmatched: list[str] = []
    for key, value in state_dict.items():
        if key in OFFICIAL_VQVAE_IGNORED_KEYS:
            continue
        try:
            name = official_key_to_varkit(key, levels)
        except CheckpointKeyError:
            unmatched.append(key)
            continue
        if name in converted:
            raise CheckpointKeyError(f"two official keys map to {name!r} (second: {key!r})")
        converted[name] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    if unmatched:
        raise CheckpointKeyError(
            f"{len(unmatched)} official VQVAE keys match no rule of OFFICIAL_VQVAE_KEY_RULES: {sorted(unmatched)[:20]}"
        )
    return converted


def official_vqvae_tokenizer_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Scales]:
    """(tokenizer, quantizer, scales) varkit configs from the reference constructor names.

    Understood keys: ``V``, ``Cvae``, ``ch``, ``share_quant_resi``, ``using_znorm``, ``patch_nums``,
    ``image_size`` (default 256), ``beta`` (0.25), ``quant_resi`` (0.5), ``dropout`` (0.0); others are ignored
    (the fixtures' config also describes the transformer).
    """
    patch_nums: Sequence[Any] = config.get("patch_nums") or OFFICIAL_PATCH_NUMS
    scales = Scales.of(list(patch_nums))
    tokenizer = {
        "image_size": config.get("image_size", 256),
        "base_channels": int(config.get("ch", 160)),
        "channel_multipliers": OFFICIAL_CHANNEL_MULTIPLIERS,
        "encoder_blocks": 2,
        "decoder_blocks": 3,
        "lowest_level_attention": True,
        "middle_attention": True,
        "dropout": float(config.get("dropout", 0.0)),
        "latent_channels": int(config.get("Cvae", 32)),
    }
    quantizer = {
        "name": "msvq",
        "codebook_size": int(config.get("V", 4096)),
        "code_dim": int(config.get("Cvae", 32)),
        "beta": float(config.get("beta", 0.25)),
        "normalize_codes": bool(config.get("using_znorm", False)),
        "phi_ratio": float(config.get("quant_resi", 0.5)),
        "phi_count": int(config.get("share_quant_resi", 4)),
        "num_scales": len(scales),
    }
    return tokenizer, quantizer, scales


def vqvae_from_official(state_dict: Mapping[str, Tensor], config: Mapping[str, Any]) -> VQVAE:
    """A float32 varkit :class:`VQVAE` (eval mode) holding the weights of an official-format state dict.

    ``config`` uses the reference constructor names (see :func:`official_vqvae_tokenizer_config`). Raises
    :class:`CheckpointKeyError` when a key is unknown, missing or unexpected, naming them. The returned model's
    ``config`` holds its :func:`~varkit.models.vqvae.build_vqvae` arguments.
    """
    return vqvae_from_official_with_config(state_dict, config)[0]


def vqvae_from_official_with_config(
    state_dict: Mapping[str, Tensor], config: Mapping[str, Any]
) -> tuple[VQVAE, dict[str, Any]]:
    """Like :func:`vqvae_from_official`, also returning the plain :func:`build_vqvae` arguments."""
    tokenizer, quantizer, scales = official_vqvae_tokenizer_config(config)
    vae = build_vqvae(tokenizer, quantizer, scales)
    converted = convert_official_vqvae_state_dict(state_dict, levels=len(tokenizer["channel_multipliers"]))
    expected = vae.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise CheckpointKeyError(
            f"official VQVAE state dict does not fit the configured model {dict(config)}: "
            f"missing {missing[:20]} ({len(missing)}), unexpected {unexpected[:20]} ({len(unexpected)})"
        )
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise CheckpointKeyError(f"shape mismatches (checkpoint vs model): {wrong[:20]}")
    vae.load_state_dict(converted, strict=True)
    assert vae.config is not None  # set by build_vqvae
    return vae.eval(), vae.config


def load_official_vqvae(path: str | os.PathLike[str], config: Mapping[str, Any] | None = None) -> VQVAE:
    """Load a released ``vae_ch160v4096z32.pth`` (or another official-format file) from a local path."""
    from varkit.safe_load import load_torch_file

    state_dict = load_torch_file(path, what="official VQVAE weights file")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{path}: expected a state dict, got {type(state_dict).__name__}")
    return vqvae_from_official(state_dict, config or {})
