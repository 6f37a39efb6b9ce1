"""Wiring a VAR transformer to its tokenizer: the model arguments the tokenizer decides.

Plain PyTorch; the Lightning stage, the CLI and scripts all build their :class:`~varkit.models.var.VAR` arguments
here so that scales, vocabulary and code dimension are never specified twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from varkit.models.vqvae import VQVAE

__all__ = ["TOKENIZER_KEYS", "model_arguments", "tokenizer_facts"]

logger = logging.getLogger(__name__)

#: model keys that the tokenizer decides (never specified twice)
TOKENIZER_KEYS = ("scales", "codebook_size", "code_dim", "codebook_sizes", "bits")


def tokenizer_facts(tokenizer: VQVAE) -> dict[str, Any]:
    """What the transformer takes from its tokenizer: ``scales`` (plain list), ``codebook_size``, ``code_dim``,
    ``codebook_sizes`` (per-scale vocabularies, or None) and ``bits`` (the bit count of a bit-wise quantizer, whose
    tokens the transformer then predicts bit by bit; None for the softmax head)."""
    quantizer: Any = tokenizer.quantizer
    sizes = getattr(quantizer, "codebook_sizes", None)
    return {
        "scales": tokenizer.scales.as_list(),
        "codebook_size": int(quantizer.codebook_size),
        "code_dim": int(quantizer.code_dim),
        "codebook_sizes": None if sizes is None else [int(v) for v in sizes],
        "bits": int(quantizer.bits) if getattr(quantizer, "bitwise", False) else None,
    }


def model_arguments(model: Mapping[str, Any], tokenizer: VQVAE, attention: Any = None) -> dict[str, Any]:
    """:class:`VAR` arguments: the ``model`` settings (plain mapping) with the tokenizer's scales/codebook and the
    attention kernel (a registered name or a ``name:`` mapping)."""
    arguments = {str(k): v for k, v in dict(model).items() if k != "name"}
    facts = tokenizer_facts(tokenizer)
    for key in TOKENIZER_KEYS:
        given = arguments.get(key)
        if given is not None and key != "scales" and given != facts[key]:
            logger.info("model.%s=%s replaced by the tokenizer's %s", key, given, facts[key])
        arguments[key] = facts[key]
    if attention is not None:
        arguments["attention"] = attention
    return arguments
