"""Named VAR transformer shapes (VAR paper, Sec. 4 and Tab. 1: width 64·depth, heads = depth).

``var_d16`` .. ``var_d36`` are the released ImageNet 256px models (1000 classes, 4096 codes of dimension 32, the
``var_256`` schedule); ``var_tiny`` is for tests and ``var_demo`` for a CPU demo. Each preset is a plain dict of
:class:`~varkit.models.var.VAR` constructor arguments.
"""

from __future__ import annotations

from typing import Any

__all__ = ["VAR_PRESETS", "official_shape", "var_preset"]


def official_shape(depth: int, *, shared_adaln: bool = False) -> dict[str, Any]:
    """The reference's ``build_vae_var`` rule: width 64·depth, depth heads, drop-path 0.1·depth/24, cosine attn."""
    return {
        "num_classes": 1000,
        "depth": depth,
        "width": 64 * depth,
        "num_heads": depth,
        "mlp_ratio": 4.0,
        "drop_path": 0.1 * depth / 24,
        "qk_l2_norm": True,
        "shared_adaln": shared_adaln,
        "class_dropout": 0.1,
        "codebook_size": 4096,
        "code_dim": 32,
        "scales": "var_256",
    }


VAR_PRESETS: dict[str, dict[str, Any]] = {
    "var_d16": official_shape(16),
    "var_d20": official_shape(20),
    "var_d24": official_shape(24),
    "var_d30": official_shape(30),
    "var_d36": official_shape(36, shared_adaln=True),
    "var_tiny": {
        "num_classes": 10,
        "depth": 2,
        "width": 64,
        "num_heads": 2,
        "mlp_ratio": 4.0,
        "drop_path": 0.0,
        "qk_l2_norm": True,
        "shared_adaln": False,
        "class_dropout": 0.1,
        "codebook_size": 64,
        "code_dim": 8,
        "scales": [1, 2, 3, 4],
    },
    "var_demo": {
        "num_classes": 10,
        "depth": 6,
        "width": 256,
        "num_heads": 4,
        "mlp_ratio": 4.0,
        "drop_path": 0.025,
        "qk_l2_norm": True,
        "shared_adaln": False,
        "class_dropout": 0.1,
        "codebook_size": 512,
        "code_dim": 16,
        "scales": [1, 2, 3, 4, 6, 8],
    },
}


def var_preset(name: str, **overrides: Any) -> dict[str, Any]:
    """A copy of preset ``name`` with ``overrides`` applied; unknown names list the known ones."""
    if name not in VAR_PRESETS:
        raise KeyError(f"unknown VAR preset {name!r}; known: {', '.join(sorted(VAR_PRESETS))}")
    unknown = set(overrides) - _CONSTRUCTOR_ARGS
    if unknown:
        raise TypeError(f"unknown VAR argument(s) {sorted(unknown)}; allowed: {sorted(_CONSTRUCTOR_ARGS)}")
    return {**VAR_PRESETS[name], **overrides}


_CONSTRUCTOR_ARGS = {
    "num_classes",
    "depth",
    "width",
    "num_heads",
    "mlp_ratio",
    "dropout",
    "attention_dropout",
    "drop_path",
    "norm_eps",
    "shared_adaln",
    "qk_l2_norm",
    "class_dropout",
    "codebook_size",
    "code_dim",
    "codebook_sizes",
    "bits",
    "scales",
    "attention",
}
