"""Import of the official VAR transformer checkpoints (``var_d{16,20,24,30,36}.pth``, FoundationVision/VAR).

The map between the reference's parameter names and varkit's is explicit and total: every official key is either
renamed (:func:`official_key_map`) or deliberately dropped because varkit derives it (:data:`DERIVED_KEYS`: the
level ids, the attention mask and the all-zero key bias — checked, not trusted). Any other key, or a missing one,
is an error that names it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from varkit.checkpoint.vqvae import CheckpointKeyError  # one error type for every official-checkpoint import
from varkit.contracts import BlockCausalMask, Scales
from varkit.models.var import VAR

__all__ = [
    "DERIVED_KEYS",
    "CheckpointKeyError",
    "infer_official_var_config",
    "official_key_map",
    "var_config_from_official",
    "var_from_official",
    "var_state_dict_from_official",
]

logger = logging.getLogger(__name__)

# Official buffers that varkit recomputes from its configuration instead of storing.
DERIVED_KEYS = ("lvl_1L", "attn_bias_for_masking")
DERIVED_BLOCK_KEYS = ("attn.zero_k_bias",)


def var_config_from_official(config: Mapping[str, Any]) -> dict[str, Any]:
    """varkit :class:`VAR` arguments from the reference's constructor names.

    Reads ``num_classes, depth, embed_dim, num_heads, mlp_ratio, shared_aln, attn_l2_norm, patch_nums, V, Cvae``
    (plus ``drop_rate, attn_drop_rate, drop_path_rate, norm_eps, cond_drop_rate`` when present). Defaults follow the
    reference's ``build_vae_var``: heads = depth, width 64·depth, drop-path 0.1·depth/24, cosine attention.
    """
    depth = int(config["depth"])
    width = int(config.get("embed_dim", 64 * depth))
    return {
        "num_classes": int(config.get("num_classes", 1000)),
        "depth": depth,
        "width": width,
        "num_heads": int(config.get("num_heads", depth)),
        "mlp_ratio": float(config.get("mlp_ratio", 4.0)),
        "dropout": float(config.get("drop_rate", 0.0)),
        "attention_dropout": float(config.get("attn_drop_rate", 0.0)),
        "drop_path": float(config.get("drop_path_rate", 0.1 * depth / 24)),
        "norm_eps": float(config.get("norm_eps", 1e-6)),
        "shared_adaln": bool(config.get("shared_aln", False)),
        "qk_l2_norm": bool(config.get("attn_l2_norm", True)),
        "class_dropout": float(config.get("cond_drop_rate", 0.1)),
        "codebook_size": int(config.get("V", 4096)),
        "code_dim": int(config.get("Cvae", 32)),
        "scales": list(config.get("patch_nums", (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))),
    }


def infer_official_var_config(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Reference-named config read off an official VAR state dict (released ``var_d*.pth`` files need no more).

    Depth from the block count, width from ``class_emb``, heads from ``scale_mul_1H11`` (else depth, the released
    rule), the scale sizes from ``lvl_1L`` (square maps), ``V``/``Cvae`` from the head and the word embedding.
    """
    state = _strip_prefixes(state_dict)
    if "class_emb.weight" not in state or "head.weight" not in state:
        raise CheckpointKeyError("not an official VAR state dict: 'class_emb.weight' / 'head.weight' are missing")
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    rows, width = state["class_emb.weight"].shape
    log_scale = state.get("blocks.0.attn.scale_mul_1H11")
    config: dict[str, Any] = {
        "num_classes": int(rows) - 1,
        "depth": depth,
        "embed_dim": int(width),
        "num_heads": int(log_scale.shape[1]) if log_scale is not None else depth,
        "mlp_ratio": state["blocks.0.ffn.fc1.weight"].shape[0] / width,
        "shared_aln": "shared_ada_lin.1.weight" in state,
        "attn_l2_norm": log_scale is not None,
        "V": int(state["head.weight"].shape[0]),
        "Cvae": int(state["word_embed.weight"].shape[1]),
    }
    if "lvl_1L" in state:
        counts = torch.bincount(state["lvl_1L"].flatten().long()).tolist()
        sizes = [round(c**0.5) for c in counts]
        if any(s * s != c for s, c in zip(sizes, counts)):
            raise ValueError(f"non-square token maps in lvl_1L ({counts}); pass patch_nums explicitly")
        config["patch_nums"] = sizes
    return config


def official_key_map(depth: int, *, shared_adaln: bool, qk_l2_norm: bool) -> dict[str, str]:
    """``{official name: varkit name}`` for every stored parameter (derived buffers excluded)."""
    mapping = {
        "class_emb.weight": "class_embedding.weight",
        "pos_start": "start_tokens",
        "pos_1LC": "position_embedding.positions",
        "lvl_embed.weight": "position_embedding.levels.weight",
        "word_embed.weight": "word_embedding.weight",
        "word_embed.bias": "word_embedding.bias",
        "head_nm.ada_lin.1.weight": "head_norm.linear.weight",
        "head_nm.ada_lin.1.bias": "head_norm.linear.bias",
        "head.weight": "head.weight",
        "head.bias": "head.bias",
    }
    if shared_adaln:
        mapping["shared_ada_lin.1.weight"] = "shared_adaln.linear.weight"
        mapping["shared_ada_lin.1.bias"] = "shared_adaln.linear.bias"
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"blocks.{i}."
        per_block = {
            "attn.mat_qkv.weight": "attention.qkv.weight",
            "attn.q_bias": "attention.q_bias",
            "attn.v_bias": "attention.v_bias",
            "attn.proj.weight": "attention.proj.weight",
            "attn.proj.bias": "attention.proj.bias",
            "ffn.fc1.weight": "mlp.fc1.weight",
            "ffn.fc1.bias": "mlp.fc1.bias",
            "ffn.fc2.weight": "mlp.fc2.weight",
            "ffn.fc2.bias": "mlp.fc2.bias",
        }
        if qk_l2_norm:
            per_block["attn.scale_mul_1H11"] = "attention.log_scale"
        if shared_adaln:
            per_block["ada_gss"] = "adaln.block_offset"
        else:
            per_block["ada_lin.1.weight"] = "adaln.linear.weight"
            per_block["ada_lin.1.bias"] = "adaln.linear.bias"
        mapping.update({src + k: dst + v for k, v in per_block.items()})
    return mapping


def _strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop wrappers' prefixes (DDP ``module.``, ``torch.compile``'s ``_orig_mod.``) if every key has them."""
    out = dict(state_dict)
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def _check_derived(official: Mapping[str, Tensor], scales: Scales, depth: int) -> None:
    """The derived buffers, when present, must be what varkit would compute (else the config is wrong)."""
    if "lvl_1L" in official:
        expected = scales.level_ids()[None]
        if not torch.equal(official["lvl_1L"].long().cpu(), expected):
            raise ValueError("checkpoint's lvl_1L disagrees with the configured scales (patch_nums)")
    if "attn_bias_for_masking" in official:
        allowed = BlockCausalMask(scales).dense()
        if not torch.equal(official["attn_bias_for_masking"].float().cpu()[0, 0] == 0, allowed):
            raise ValueError("checkpoint's attention mask disagrees with the configured scales (patch_nums)")
    for i in range(depth):
        bias = official.get(f"blocks.{i}.attn.zero_k_bias")
        if bias is not None and bool(bias.ne(0).any()):
            raise ValueError(f"blocks.{i}.attn.zero_k_bias is not zero; varkit's key bias is fixed at zero")


def var_state_dict_from_official(
    state_dict: Mapping[str, Tensor], config: Mapping[str, Any], *, dtype: torch.dtype | None = torch.float32
) -> dict[str, Tensor]:
    """Rename an official VAR state dict to varkit names (cast to ``dtype``; ``None`` keeps it)."""
    args = var_config_from_official(config)
    official = _strip_prefixes(state_dict)
    depth = args["depth"]
    mapping = official_key_map(depth, shared_adaln=args["shared_adaln"], qk_l2_norm=args["qk_l2_norm"])
    derived = set(DERIVED_KEYS) | {f"blocks.{i}.{k}" for i in range(depth) for k in DERIVED_BLOCK_KEYS}
    missing = sorted(set(mapping) - set(official))
    unexpected = sorted(set(official) - set(mapping) - derived)
    if missing or unexpected:
        raise CheckpointKeyError(
            f"official VAR checkpoint does not match depth={depth}, shared_aln={args['shared_adaln']}, "
            f"attn_l2_norm={args['qk_l2_norm']}: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    _check_derived(official, Scales.of(args["scales"]), depth)
    out: dict[str, Tensor] = {}
    for src, dst in mapping.items():
        value = official[src]
        out[dst] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    return out


def var_from_official(
    state_dict: Mapping[str, Tensor],
    config: Mapping[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> VAR:
    """A varkit :class:`VAR` holding the official weights, in eval mode.

    ``config`` uses the reference's names (see :func:`var_config_from_official`); ``overrides`` set varkit
    arguments the checkpoint does not determine (e.g. ``attention="sdpa"``, ``class_dropout``).
    """
    args = {**var_config_from_official(config), **overrides}
    weights = var_state_dict_from_official(state_dict, config, dtype=dtype)
    model = VAR(**args)
    result = model.load_state_dict(weights, strict=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept for clarity in logs
        raise CheckpointKeyError(f"varkit VAR state mismatch: {result}")
    logger.info("imported official VAR-d%d (%d parameters)", args["depth"], model.num_parameters())
    return model.to(dtype).eval()
